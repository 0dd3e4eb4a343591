"""Budget rules as pure functions: limits, whether a reservation fits, worst-case and calibrated
estimates, the day's status, degradation and alert thresholds. The store gathers the numbers
(inside one transaction where it matters); everything decided from them is decided here.

The budget day is the plan's `date` partition in the configured timezone (the night of D counts
against D); a new date simply has no spend yet, so a fresh budget needs no job.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Iterable, Mapping, Sequence

from cass_pipelines.domain.categories import PHASES, Category, Phase, Priority
from cass_pipelines.domain.registry import Registry
from cass_pipelines.domain.settings import Settings

EPS = 1e-9
# The cap the Anthropic backend puts on server-side web searches per call; bounds a call's worst case.
WEB_SEARCH_MAX_USES = 3
# A bound on tokens per prompt: real tokenizers average ~4 characters per token for English and
# about one per character for CJK text (3 UTF-8 bytes), so 3 bytes per token errs on the high side.
BYTES_PER_TOKEN_BOUND = 3
# A web-search call adds searches (at most the backend's max_uses) and their result pages as input;
# the tokens per result page are an assumption, and the calibrated estimate raises the bar if higher.
WEB_RESULT_TOKENS_PER_SEARCH = 8_000
SKIPPED_WHEN_DEGRADED = frozenset({Priority.LOW.value, Priority.IDLE.value})

# The decision call (the agent planning its day). It is funded before any work: see `funding`.
PLAN_ACTION_ID = "plan.decide"
# From this phase on, room that no open work unit can use any more is pooled for the others.
POOL_FROM_PHASE = Phase.EVENING
# Categories whose work is run by jobs outside the plan (the daily journal after the night, memory
# summarising when conversations go idle, maintenance and re-plans) keep their room for those jobs ...
STANDING_CATEGORIES = frozenset({Category.JOURNAL.value, Category.MEMORY.value, Category.SYSTEM.value})
# ... until this phase: from then on only the journal does (the daily journal follows the night). Memory
# summarising that no longer fits is deferred to the next catch-up, and a re-plan's decision call may
# use the reserve, so the money the user gave is not left unused at the end of the day.
POOL_STANDING_FROM_PHASE = Phase.NIGHT
KEPT_TO_THE_END = frozenset({Category.JOURNAL.value})


class Funding(StrEnum):
    """Where a reservation's money comes from (kept on the reservation and its ledger rows)."""
    CATEGORY = "category"   # the category's own share
    POOLED = "pooled"       # from POOL_FROM_PHASE on: unused room of categories with no open work
    RESERVE = "reserve"     # the decision call, when its category has no room: may use the reserve


@dataclass(frozen=True)
class Reservation:
    id: str
    date: date
    category: str
    amount_usd: float
    funding: "Funding" = None  # type: ignore[assignment]   # set by reserve; see Funding


@dataclass(frozen=True)
class Refusal:
    reason: str
    scope: str          # "day" | "category" | "pause"
    amount_usd: float
    room_usd: float
    reservation_id: str | None = None   # the refused row store.budget.reserve keeps (none for a pause)


@dataclass(frozen=True)
class ActionCost:
    """Recent actual cost of one action, from the ledger."""
    executions: int        # recent runs of the action (one work unit in one Dagster run)
    mean_usd: float        # average cost of one execution (all its calls)
    calls: int
    mean_call_usd: float   # average cost of one call


def money(x: float) -> float:
    return round(float(x), 9)


def prompt_tokens_bound(*texts: str) -> int:
    return math.ceil(sum(len(t.encode("utf-8")) for t in texts) / BYTES_PER_TOKEN_BOUND)


def web_search_bound(web_search: bool) -> tuple[int, int]:
    """(searches, extra input tokens) to assume for a call that may search the web."""
    return (WEB_SEARCH_MAX_USES, WEB_SEARCH_MAX_USES * WEB_RESULT_TOKENS_PER_SEARCH) if web_search else (0, 0)


def pooling(phase: str | None) -> bool:
    """Whether unused category room is pooled for a call made in `phase`."""
    return phase in PHASES and PHASES.index(phase) >= PHASES.index(POOL_FROM_PHASE)


def kept_categories(phase: str | None) -> frozenset[str]:
    """The categories whose room is not pooled in `phase` (see STANDING_CATEGORIES)."""
    late = phase in PHASES and PHASES.index(phase) >= PHASES.index(POOL_STANDING_FROM_PHASE)
    return KEPT_TO_THE_END if late else STANDING_CATEGORIES


def pooled_room(unused: Mapping[str, float], idle: Iterable[str], category: str, pooled_used: float,
                phase: str | None, day_room: float) -> float:
    """The room pooled for `category` in `phase` (reservations and phase openings apply this one rule):
    what the categories with no open work unit today (`idle`; other than `category` itself, and but those
    kept in the phase) have left unused of their shares, less what pooled calls already use. Shares add
    up to more than the day's room above the reserve (`day_room`), so the pool never takes what the kept
    categories have left of it either."""
    kept = kept_categories(phase)
    spare = sum(unused.get(c, 0.0) for c in idle if c != category and c not in kept)
    kept_room = sum(unused.get(c, 0.0) for c in kept if c != category)
    return max(min(spare - pooled_used, day_room - kept_room), 0.0)


def pool_room(settings: Settings, category: str, idle_categories: Sequence[str],
              category_used: Mapping[str, float], pooled_used: float, phase: str | None, day_used: float) -> float:
    """`pooled_room` from the day's figures: each category's own spend and holds, what pooled calls
    use, and all of the day's spend and holds (`day_used`)."""
    unused = {str(c): max(settings.category_limit(c) - category_used.get(c, 0.0), 0.0) for c in settings.category_shares}
    return pooled_room(unused, idle_categories, category, pooled_used, phase,
                       settings.daily_budget_usd - settings.reserve_usd - day_used)


def funding(settings: Settings, *, amount: float, category: str, priority: str, day_spent: float,
            day_held: float, category_spent: float, category_held: float, pooled_room: float | None = None,
            may_use_reserve: bool = False) -> Funding | Refusal:
    """Where a reservation of `amount` is funded from, or why it does not fit. In order:
    1. its category's own share (category spend counts only category-funded calls);
    2. with `pooled_room` (evening and night), the pool of unused room of idle categories;
    3. with `may_use_reserve` (the decision call), the emergency reserve: the whole day's room.
    Ordinary work always leaves the emergency reserve untouched; critical work may use it, within
    its category. Nothing is ever funded beyond the daily limit."""
    whole = settings.daily_budget_usd - day_spent - day_held
    floor = 0.0 if priority == Priority.CRITICAL else settings.reserve_usd
    day_room = whole - floor
    limit = settings.category_limit(category)
    category_room = limit - category_spent - category_held
    if amount <= day_room + EPS:
        if amount <= category_room + EPS:
            return Funding.CATEGORY
        if pooled_room is not None and amount <= pooled_room + EPS:
            return Funding.POOLED
    if may_use_reserve and amount <= whole + EPS:
        return Funding.RESERVE
    if amount > day_room + EPS:
        kept = "" if floor == 0 or may_use_reserve else f", ${floor:.2f} emergency reserve kept"
        room = max(whole if may_use_reserve else day_room, 0.0)
        return Refusal(f"day budget: needs ${amount:.4f}, ${room:.4f} left of "
                       f"${settings.daily_budget_usd:.2f}{kept}", "day", amount, room)
    pooled = f" (pooled room ${pooled_room:.4f})" if pooled_room is not None else ""
    room = min(max(category_room, pooled_room or 0.0, 0.0), max(day_room, 0.0))
    return Refusal(f"category {category}: needs ${amount:.4f}, ${max(category_room, 0.0):.4f} left of "
                   f"${limit:.4f}{pooled}", "category", amount, max(room, whole if may_use_reserve else 0.0))


def calibrated_costs(registry: Registry, history: Mapping[str, ActionCost],
                     first_call: Mapping[str, float] | None = None) -> dict[str, float]:
    """Per action: the recent average actual cost where the ledger has history, else the registry's
    estimate, or the hold of its first call (`first_call`) when that is lower."""
    first_call = first_call or {}
    return {a.id: round(history[a.id].mean_usd, 6) if a.id in history and history[a.id].executions
            else round(min(a.estimated_cost_usd, first_call.get(a.id, a.estimated_cost_usd)), 6)
            for a in registry.actions.values()}


def is_exhausted(settings: Settings, spent_by_category: Mapping[str, float], cheapest_ask: Mapping[str, float],
                 beyond_shares_spent: float = 0.0, pooled_room: float | None = None,
                 cheapest_granted: Mapping[str, float] | None = None) -> bool:
    """The day can fund nothing more: no room is left above the reserve, or no category has room
    for a call. A category that asked today needs the cheapest amount it asked; one that has not
    asked needs the cheapest call its share funded this week (`cheapest_granted`), else the cheapest
    amount anyone asked today: a single category running dry (say memory on a small budget) does not end
    the day for the others, and once a category has a week's history, another's dear ask refused says
    nothing of what it needs. Only settled spend counts, so calls in flight do not end the day early.
    Pooled room (evening and night) counts for every category."""
    day_room = (settings.daily_budget_usd - settings.reserve_usd - sum(spent_by_category.values())
                - beyond_shares_spent)
    if day_room < EPS:
        return True
    if not cheapest_ask:
        return False
    smallest, granted = min(cheapest_ask.values()), cheapest_granted or {}

    def room(c: str) -> float:
        return min(max(settings.category_limit(c) - spent_by_category.get(c, 0.0), pooled_room or 0.0), day_room)

    return all(room(c) < cheapest_ask.get(c, granted.get(c, smallest)) - EPS for c in settings.category_shares)


def day_status(settings: Settings, day: date, *, categories: Mapping[str, tuple[float, float]],
               cheapest_ask: Mapping[str, float], paused: Mapping[str | None, str],
               beyond_shares: tuple[float, float] = (0.0, 0.0), pooled_room: float | None = None,
               pooling: bool = False, cheapest_granted: Mapping[str, float] | None = None) -> dict:
    """The `budget` JSON shape (README: budget --json) plus details, from (spent, held) per category funded by
    its own share, and (spent, held) funded beyond the shares (pooled room, the reserve).
    remaining_usd is what ordinary work may still reserve today (the reserve excluded); a
    category's remaining is capped by the day's."""
    spent = sum(s for s, _ in categories.values()) + beyond_shares[0]
    held = sum(h for _, h in categories.values()) + beyond_shares[1]
    remaining = max(settings.daily_budget_usd - settings.reserve_usd - spent - held, 0.0)
    cats = {}
    for c in Category:
        c_spent, c_held = categories.get(c.value, (0.0, 0.0))
        limit = settings.category_limit(c.value)
        cats[c.value] = {"limit_usd": limit, "spent_usd": money(c_spent), "reserved_usd": money(c_held),
                         "remaining_usd": money(max(min(limit - c_spent - c_held, remaining), 0.0)),
                         "paused": paused.get(c.value)}
    return {
        "date": day.isoformat(), "timezone": settings.timezone,
        "daily_limit_usd": settings.daily_budget_usd, "reserve_usd": settings.reserve_usd,
        "spent_usd": money(spent), "reserved_usd": money(held), "remaining_usd": money(remaining),
        "reserve_left_usd": money(max(min(settings.reserve_usd, settings.daily_budget_usd - spent - held), 0.0)),
        "spent_share": round(spent / settings.daily_budget_usd, 6),
        "spent_beyond_shares_usd": money(beyond_shares[0]),
        "pooled_room_usd": None if pooled_room is None else money(pooled_room),
        "utilisation": utilisation(settings, spent),
        "exhausted": is_exhausted(settings, {k: s for k, (s, _) in categories.items()}, cheapest_ask,
                                  beyond_shares[0], pooled_room if pooling else None, cheapest_granted),
        "paused": None in paused, "pause_reason": paused.get(None),
        "categories": cats,
    }


def utilisation(settings: Settings, spent: float) -> float:
    """How much of the money the user gave for work was used: spent / (daily limit - reserve)."""
    usable = settings.daily_budget_usd - settings.reserve_usd
    return round(spent / usable, 4) if usable > 0 else 0.0


def degradation(status: Mapping, settings: Settings) -> tuple[bool, set[str]]:
    """Below `degrade_below_share` of the day's usable budget left, the planner is told to prefer
    cheaper templates and low/idle-priority work is skipped first."""
    usable = settings.daily_budget_usd - settings.reserve_usd
    degraded = bool(status["exhausted"]) or status["remaining_usd"] < settings.degrade_below_share * usable - EPS
    return degraded, set(SKIPPED_WHEN_DEGRADED) if degraded else set()


def due_alerts(status: Mapping, settings: Settings) -> list[tuple[str, str]]:
    """(kind, message) for each threshold the day has crossed: the soft share, and exhaustion."""
    out = []
    if status["spent_usd"] >= settings.soft_alert_share * settings.daily_budget_usd - EPS:
        out.append(("soft_limit", f"{status['date']}: spent ${status['spent_usd']:.4f}, "
                                  f"{status['spent_share']:.0%} of the ${settings.daily_budget_usd:.2f} daily budget "
                                  f"(alert at {settings.soft_alert_share:.0%})"))
    if status["exhausted"]:
        out.append(("exhausted", f"{status['date']}: daily budget exhausted: spent ${status['spent_usd']:.4f} of "
                                 f"${settings.daily_budget_usd:.2f} (${settings.reserve_usd:.2f} emergency reserve "
                                 "kept) and no category has room for another call; new work is deferred until "
                                 "tomorrow"))
    return out
