"""How pauses and later work bear on deferred work: how far back it is still offered again, kept, or (a
journal) caught up (a number of days that were not paused, domain.pauses.look_backs, per category, read
from the pauses the store keeps), which waiting units a pause still holds (not_paused), and which waiting
work a later unit made moot (superseded), whatever its age."""
from __future__ import annotations

from datetime import date, datetime

from cass_pipelines.domain.categories import Category
from cass_pipelines.domain.pauses import LookBacks, look_backs, unit_pause_reason
from cass_pipelines.domain.phase_offer import superseded
from cass_pipelines.domain.plan_rules import DEFERRED_LOOKBACK_DAYS
from cass_pipelines.domain.registry import Registry
from cass_pipelines.domain.settings import Settings
from cass_pipelines.store import plans
from cass_pipelines.store.control import pause_spans, paused_scopes
from cass_pipelines.store.db import Store

JOURNAL_CATCH_UP_DAYS = 7   # deferred journals this recent are tried again


def unpaused_days_back(store: Store, settings: Settings, day: date, days: int) -> LookBacks:
    """Per category, the first of the `days` days before `day` (in the agent's timezone) that no global
    pause, nor the category's own, held."""
    return look_backs(day, days, [
        (category, began.astimezone(settings.tz).date(), lifted.astimezone(settings.tz).date() if lifted else day)
        for category, began, lifted in pause_spans(store)])


def deferred_since(store: Store, settings: Settings, registry: Registry, day: date) -> LookBacks:
    """Per category (and template held by a pause of a step's category), the first date whose deferred work
    `day` still offers again (and keeps from expiring)."""
    return unpaused_days_back(store, settings, day, DEFERRED_LOOKBACK_DAYS).with_templates(registry)


def journals_since(store: Store, settings: Settings, day: date, today: date) -> date:
    """The first date whose deferred journal is still tried again from `day` (and in the partition window)."""
    return max(unpaused_days_back(store, settings, day, JOURNAL_CATCH_UP_DAYS).of(Category.JOURNAL.value),
               settings.first_date(today))


def not_paused(store: Store, registry: Registry, units: list[dict]) -> list[dict]:
    """The units no pause holds: neither one of their category nor one of a step they have still to run
    (domain.pauses.unit_pause_reason; a unit whose template is gone is kept, for its caller to judge)."""
    paused = paused_scopes(store)
    if not paused:
        return units
    completed = plans.completed_positions(store, [u["id"] for u in units])
    return [u for u in units if not unit_pause_reason(paused, registry, u["template_id"], u["category"],
                                                      completed.get(u["id"], ()))]


def supersede_waiting(store: Store, settings: Settings, registry: Registry, now: datetime) -> list[str]:
    """Mark superseded the deferred units whose work a later unit of their template did (`reoffer: latest`,
    domain.phase_offer.superseded); a phase opening does it before it reads the waiting work, the upkeep
    before it expires any, so the memory job's catch-ups between phases count. Returns the ids marked."""
    if not registry.superseding:
        return []
    found = superseded(plans.deferred_of(store, registry.superseding), plans.last_completed(store, registry.superseding),
                       registry, settings)
    return plans.supersede(store, found, now) if found else []
