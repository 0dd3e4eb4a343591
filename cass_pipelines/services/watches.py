"""What the sensors and schedules look at, shared with run-day (which has no daemon): the budget watch of
budget_sensor, the batches batch_sensor collects and the phases it runs again for work that waited for
them, the idle conversations of idle_memory_sensor and the deferred journals journal_schedule writes again."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Callable

from cass_pipelines.domain.clock import Clock
from cass_pipelines.domain.goals import week_end
from cass_pipelines.domain.registry import JOURNAL_TEMPLATE, Registry
from cass_pipelines.domain.settings import Settings
from cass_pipelines.domain.states import UnitOrigin
from cass_pipelines.llm.base import LLMClient
from cass_pipelines.llm.pricing import load_pricing
from cass_pipelines.services.lookback import journals_since, not_paused
from cass_pipelines.services.metering import collect_batches
from cass_pipelines.services.recovery import Recovery, recover
from cass_pipelines.store import batches
from cass_pipelines.store.budget import watch
from cass_pipelines.store.conversations import idle_unsummarized
from cass_pipelines.store.db import Store
from cass_pipelines.store.plans import batch_waiting, deferred_job_dates, tagged

JOURNAL_TAG = "journal"     # a day's own journal unit (a rewrite has its own tag, and is not retried)


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


def waiting_journals(store: Store, settings: Settings, day: date, today: date) -> list[date]:
    """Days before `day` (services.lookback.journals_since: a week of unpaused days, in the partition window) whose journal is deferred:
    its budget could not pay for it, or its message batch outlasted the wait (a re-run takes up the answer
    paid for it)."""
    since = journals_since(store, settings, day, today)
    return [d for d in deferred_job_dates(store, JOURNAL_TEMPLATE, JOURNAL_TAG, since) if d < day]


def journals_coming(store: Store, settings: Settings, week: date, today: date) -> list[date]:
    """Days of the week (from its Monday) whose own journal is deferred and still tried again (waiting_journals'
    window): it is still to be written, so the week's journal waits for it. One no catch-up will write any
    more is not waited for."""
    since = max(week, journals_since(store, settings, today, today))
    return [d for d in deferred_job_dates(store, JOURNAL_TEMPLATE, JOURNAL_TAG, since) if d <= week_end(week)]


MAX_RESUME_FAILURES = 3   # a resume whose run failed this often for the same requests is left to a person


@dataclass(frozen=True)
class Resume:
    """A phase partition to run again: its work waited for message batches that have all ended."""
    date: date
    phase: str
    requests: int
    hour: str

    @property
    def attempt(self) -> str:
        """What its runs are tagged with (`cass/resume`): the partition and its work's requests."""
        return f"{self.date.isoformat()}|{self.phase}|{self.requests}"

    @property
    def run_key(self) -> str:
        """Changes with the hour: a resume that failed or was cancelled is asked for again the next hour."""
        return f"batch-resume|{self.attempt}|{self.hour}"


def batch_resumes(store: Store, settings: Settings, registry: Registry, now: datetime) -> list[Resume]:
    """The partitions whose work waits for message batches that have all ended (batch_sensor asks for
    their runs, run-day runs them first): a run takes that work back under its own ids and it uses the
    answers paid for it. Left out: a partition with a request still pending, work a pause holds (of its
    category, or of a step it has still to run: asked for once it is resumed), dates before the partition
    window, and dates whose journal waits for its own batch (written again first: the resumed work's new
    summaries would change its prompt, so it would ask again instead of taking up the answer paid for it)."""
    first = settings.first_date(now.astimezone(settings.tz).date())
    rows = batch_waiting(store)
    journal_waits = {r["date"] for r in rows if _own_journal(r)}
    by_partition: dict[tuple[date, str], list[dict]] = {}
    for row in rows:
        if row["origin"] != UnitOrigin.JOB:
            by_partition.setdefault((row["date"], row["phase"]), []).append(row)
    out = []
    for (day, phase), units in by_partition.items():
        ready = not_paused(store, registry, units)
        if day < first or day in journal_waits or not ready or any(u["pending"] for u in units):
            continue
        out.append(Resume(day, phase, sum(u["requests"] for u in units), f"{now:%Y-%m-%dT%H}"))
    return out


def batch_journals(store: Store, settings: Settings, now: datetime) -> list[tuple[date, int]]:
    """Days (in the partition window) whose journal waits for message batches that have all ended, with
    the number of its batched requests: journal_resume_sensor writes them again, taking up the answer paid
    for them (and batch_resumes then resumes that day's phases, which waited for the journal)."""
    first = settings.first_date(now.astimezone(settings.tz).date())
    return [(r["date"], r["requests"]) for r in batch_waiting(store)
            if _own_journal(r) and r["date"] >= first and not r["pending"]]


def _own_journal(row: dict) -> bool:
    """A row of store.plans.batch_waiting that is a day's own journal unit (journal_job's, not a rewrite)."""
    return row["origin"] == UnitOrigin.JOB and tagged(row, JOURNAL_TAG)
