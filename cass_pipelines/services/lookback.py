"""How far back deferred work is still offered again, kept, or (a journal) caught up: a number of days
that were not paused (domain.pauses.look_back), read from the pauses the store keeps."""
from __future__ import annotations

from datetime import date
from typing import Sequence

from cass_pipelines.domain.categories import Category
from cass_pipelines.domain.pauses import look_back
from cass_pipelines.domain.plan_rules import DEFERRED_LOOKBACK_DAYS
from cass_pipelines.domain.settings import Settings
from cass_pipelines.store.control import pause_spans
from cass_pipelines.store.db import Store

JOURNAL_CATCH_UP_DAYS = 7   # deferred journals this recent are tried again


def unpaused_days_back(store: Store, settings: Settings, day: date, days: int, categories: Sequence[str] = ()) -> date:
    """The first of the `days` days before `day` (in the agent's timezone) that no global pause, nor one of
    `categories`, held (a category's own pause stops only its clock: a look-back for all work counts
    global pauses)."""
    spans = [(began.astimezone(settings.tz).date(), lifted.astimezone(settings.tz).date() if lifted else day)
             for began, lifted in pause_spans(store, categories)]
    return look_back(day, days, spans)


def deferred_since(store: Store, settings: Settings, day: date) -> date:
    """The first date whose deferred work `day` still offers again (and keeps from expiring)."""
    return unpaused_days_back(store, settings, day, DEFERRED_LOOKBACK_DAYS)


def journals_since(store: Store, settings: Settings, day: date, today: date) -> date:
    """The first date whose deferred journal is still tried again from `day` (and in the partition window)."""
    return max(unpaused_days_back(store, settings, day, JOURNAL_CATCH_UP_DAYS, [Category.JOURNAL.value]),
               settings.first_date(today))
