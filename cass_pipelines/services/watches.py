"""What the sensors look at, shared with run-day (which has no daemon): the budget watch of
budget_sensor, the batches batch_sensor collects and the idle conversations of idle_memory_sensor."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Callable

from cass_pipelines.domain.clock import Clock
from cass_pipelines.domain.settings import Settings
from cass_pipelines.llm.base import LLMClient
from cass_pipelines.llm.pricing import load_pricing
from cass_pipelines.services.metering import collect_batches
from cass_pipelines.services.recovery import Recovery, recover
from cass_pipelines.store import batches
from cass_pipelines.store.budget import watch
from cass_pipelines.store.conversations import idle_unsummarized
from cass_pipelines.store.db import Store


@dataclass(frozen=True)
class Watched:
    recovered: Recovery
    status: dict                   # the day's budget (store.budget.budget_status)
    new_alerts: list[tuple[str, str]]   # (kind, message), recorded now


def watch_budget(store: Store, settings: Settings, home: Path, day: date, now: datetime,
                 is_run_over: Callable[[str], bool], seen: set[str] | frozenset[str] = frozenset()) -> Watched:
    """Recover what dead owners left (paid answers, holds, claims), then read the day's budget and
    record the alerts that are due (once per date and kind)."""
    with store.session():
        recovered = recover(store, home, is_run_over, now)
        status, new = watch(store, settings, day, now, seen)
    return Watched(recovered, status, new)


def watch_batches(store: Store, settings: Settings, clock: Clock, is_run_over: Callable[[str], bool],
                  client: Callable[[], LLMClient]) -> dict[str, list[str]]:
    """Collect the batches whose job stopped waiting for them (its run is over, or it gave up): custom
    ids by state now. The LLM client is made only when something is in flight."""
    if not batches.pending(store):
        return {}
    return collect_batches(client(), store, settings, load_pricing(), clock, is_run_over)


def idle_conversations(store: Store, settings: Settings, now: datetime, limit: int = 50) -> list[dict]:
    """Conversations idle for the settings' threshold with messages not yet summarised."""
    return idle_unsummarized(store, now - timedelta(minutes=settings.idle_threshold_minutes), now=now, limit=limit)
