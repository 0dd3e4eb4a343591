"""What a phase runs when it opens, decided from one snapshot of the store (no I/O here).

The phase's planned units, its own units deferred at plan time, and work deferred earlier (not yet
offered again) that is allowed in the phase are taken in priority order (planned units first within a
priority, then the oldest deferred), each checked against pause, idle and the money left, up to the
phase's unit limit. From the evening on (budget_rules.POOL_FROM_PHASE) a unit its category cannot pay
for may use the pooled room, which includes the room of categories this offer leaves with no work.
What does not fit is deferred, or stays deferred, with the kind and reason of this latest offer.

A phase takes up at most one waiting unit of a template, and none when it already has one of its own
(planned and admitted, running, done, or waiting for approval, whatever its origin): the others stay
deferred (`same_template`) for later phases, the oldest offered first, so none is run twice in one phase.
A waiting unit of a template whose work is whatever is pending when it runs (`reoffer: latest`: a
conversation catch-up) is superseded once a later unit of its template has completed (`superseded`,
applied before the snapshot is read and before expiry); a unit of work of its own (a focus: a growth
edge, a question) waits, and one the later phases cannot take up in time expires as before. A unit offered
again works as of the day it runs, but for work about a day, which stays about the day it was planned
for (HandlerContext.about_day).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Iterable, Mapping

from cass_pipelines.domain.budget_rules import pooled_room, pooling
from cass_pipelines.domain.categories import Priority
from cass_pipelines.domain.pauses import unit_pause_reason
from cass_pipelines.domain.phases import phase_window
from cass_pipelines.domain.plan_rules import NOT_IDLE_REASON, PlanInputs, PlannedUnit
from cass_pipelines.domain.registry import Registry
from cass_pipelines.domain.settings import Settings
from cass_pipelines.domain.states import DeferKind, UnitOrigin, UnitStatus

Deferral = tuple[str, DeferKind, str]   # (unit id, kind, reason)
# A unit in one of these states is the phase's work of its template: no waiting one of it is offered too.
_IN_THE_PHASE = (UnitStatus.RUNNING, UnitStatus.COMPLETED, UnitStatus.AWAITING_APPROVAL)


@dataclass(frozen=True)
class PhaseSnapshot:
    day: date
    phase: str
    own: list[dict]                     # the phase's units
    waiting: list[dict]                 # deferred units of earlier phases and days, not yet offered again
    paused: Mapping[str | None, str]    # control_flags: None (everything) or a category -> reason
    idle: bool                          # no conversation within the idle threshold
    max_units: int
    day_room: float = float("inf")      # what ordinary work may still reserve today (the reserve excluded)
    open_elsewhere: frozenset[str] = frozenset()   # categories with a unit to run today outside this phase
    pooled_used: float = 0.0            # what today's calls funded from the pool spent and hold
    completed: Mapping[str, frozenset[int]] = field(default_factory=dict)   # unit id -> its actions completed


@dataclass
class PhaseOffer:
    deferrals: list[Deferral] = field(default_factory=list)      # planned units that cannot run now
    reopened: list[str] = field(default_factory=list)            # own deferred units that fit now
    still_deferred: list[Deferral] = field(default_factory=list)  # waiting units offered again, and refused
    reoffers: list[tuple[dict, PlannedUnit]] = field(default_factory=list)   # (deferred unit, its new unit)

    @property
    def offered_templates(self) -> list[str]:
        return [new.template_id for _, new in self.reoffers]


def reoffer_rank(inputs: PlanInputs, template_id: str) -> int:
    """Deferred work is offered again in priority order (critical first), oldest first within one."""
    template = inputs.registry.templates.get(template_id)
    return Priority(template.priority).rank if template else -1


def offer_phase(s: PhaseSnapshot, inputs: PlanInputs) -> PhaseOffer:
    """Two passes over the candidates in priority order. First each is checked against the rules and
    its category's own room, up to the phase's unit limit. Then, from POOL_FROM_PHASE on, units short
    of money may use the pool (budget_rules.pooled_room, the rule reservations apply): the room of the
    categories this opening leaves with no unit to run today, so room no planned unit can use goes to
    the others."""
    registry, left = inputs.registry, dict(inputs.category_remaining)
    waiting = [u for u in s.waiting if u["template_id"] in registry.templates
               and s.phase in registry.templates[u["template_id"]].preferred_phases]
    held_back = [u for u in s.own if u["status"] == UnitStatus.DEFERRED and u["origin"] == UnitOrigin.PLAN
                 and not u["started_at"] and not u["reoffered_as"] and u["defer_kind"] != DeferKind.PAUSED]
    candidates = sorted([("own", u) for u in s.own if u["status"] == UnitStatus.PLANNED]
                        + [("held_back", u) for u in held_back] + [("waiting", u) for u in waiting],
                        key=lambda c: -reoffer_rank(inputs, c[1]["template_id"]))   # stable sort
    cost = [inputs.cost(u["template_id"]) if u["template_id"] in registry.templates else 0.0 for _, u in candidates]
    verdicts: list[tuple[DeferKind, str] | None] = []
    short_of_money: list[int] = []
    slots, day_left = s.max_units, s.day_room
    # The templates the phase has a unit of (own units planned are added once admitted, below).
    taken = {u["template_id"] for u in s.own if u["status"] in _IN_THE_PHASE}

    def same_template(kind: str, u: dict) -> tuple[DeferKind, str] | None:
        if kind != "waiting" or u["template_id"] not in taken:
            return None
        return DeferKind.SAME_TEMPLATE, (f"{s.phase} already has a unit of {u['template_id']}; "
                                         "waits for a later phase")

    for i, (kind, u) in enumerate(candidates):
        # (the rules first, as at plan time: a unit a pause still holds stays deferred by it, in a full phase
        # too, so `resume` takes it back)
        reason = _ruled_out(s, inputs, u) or (
            same_template(kind, u) if slots > 0 else (DeferKind.PHASE_FULL, f"{s.phase} already has {s.max_units} units"))
        short = None if reason else inputs.unaffordable(u["template_id"], u["category"], left.get(u["category"], 0.0))
        if short:
            reason = DeferKind.BUDGET, short
            short_of_money.append(i)
        if reason is None:
            taken.add(u["template_id"])
            left[u["category"]] = left.get(u["category"], 0.0) - cost[i]
            day_left -= cost[i]
            slots -= 1
        verdicts.append(reason)

    if pooling(s.phase) and short_of_money and slots > 0:
        # The categories with no unit to run today once this opening is written: their room is pooled.
        idle = set(inputs.category_remaining) - s.open_elsewhere - {
            candidates[i][1]["category"] for i, v in enumerate(verdicts) if v is None}
        pooled_used = s.pooled_used
        for i in short_of_money:
            if slots == 0:
                break
            kind, u = candidates[i]
            if duplicate := same_template(kind, u):
                verdicts[i] = duplicate
                continue
            c = u["category"]
            own_room = max(left.get(c, 0.0), 0.0)
            pool = pooled_room({k: max(v, 0.0) for k, v in left.items()}, idle, c, pooled_used, s.phase, day_left)
            short = inputs.unaffordable(u["template_id"], c, own_room, pool=pool)
            if short:
                verdicts[i] = DeferKind.BUDGET, short
                continue
            idle.discard(c)   # a category with work gives no room to the pool
            taken.add(u["template_id"])
            left[c] = own_room - min(own_room, cost[i])
            pooled_used += max(cost[i] - own_room, 0.0)
            day_left -= cost[i]
            slots -= 1
            verdicts[i] = None

    offer = PhaseOffer()
    # Work still planned for an earlier phase that never opened, which this phase does not allow: deferred
    # now (not left `planned`), to wait for a phase that allows it.
    for u in s.waiting:
        if u["status"] == UnitStatus.PLANNED and not any(u is w for w in waiting):
            offer.still_deferred.append(
                (u["id"], DeferKind.SKIPPED, f"{u['date']} {u['phase']} did not run; waits for a phase that allows it")
                if u["template_id"] in registry.templates else
                (u["id"], DeferKind.GONE, f"template '{u['template_id']}' is no longer in the registry"))
    for (kind, u), reason in zip(candidates, verdicts):
        if kind == "own" and reason:
            offer.deferrals.append((u["id"], *reason))
        elif reason:
            offer.still_deferred.append((u["id"], reason[0], f"offered again {s.day} {s.phase}: {reason[1]}"))
        elif kind == "held_back":
            offer.reopened.append(u["id"])
        elif kind == "waiting":
            t = registry.templates[u["template_id"]]
            offer.reoffers.append((u, PlannedUnit(s.phase, t.id, t.category, t.priority, u["focus"],
                                                  f"re-offered: {u['reason'] or 'its phase did not run'}", inputs.cost(t.id))))
    return offer


def superseded(waiting: Iterable[dict], done: Mapping[str, dict], registry: Registry,
               settings: Settings) -> list[tuple[str, str]]:
    """The waiting units whose work a later unit did, as (id, reason naming that unit): units of a template
    whose work is whatever is pending when it runs (`registry.superseding`), when `done` (the last completed
    unit of each such template: id, date, phase, started_at) started once the waiting unit was due (made,
    and its phase begun): it found all the waiting unit would have found."""
    out = []
    for u in waiting:
        by = done.get(u["template_id"]) if u["template_id"] in registry.superseding else None
        if by and by["id"] != u["id"] and by["started_at"] >= max(
                u["created_at"], phase_window(u["date"], u["phase"], settings)[0]):
            out.append((u["id"], f"superseded by {by['id']} ({by['date']} {by['phase']}), which did its work: "
                                 f"{u['template_id']} does whatever is pending when it runs"))
    return out


def _ruled_out(s: PhaseSnapshot, inputs: PlanInputs, u: dict) -> tuple[DeferKind, str] | None:
    """Why a unit cannot run in this phase whatever the money: gone, paused (its category, or a step it has
    still to run), not idle, or degraded."""
    template = inputs.registry.templates.get(u["template_id"])
    if template is None:
        return DeferKind.GONE, f"template '{u['template_id']}' is no longer in the registry"
    paused = unit_pause_reason(s.paused, inputs.registry, template.id, u["category"], s.completed.get(u["id"], ()))
    if paused:
        return DeferKind.PAUSED, f"paused: {paused}"
    if template.requires_idle and not s.idle:
        return DeferKind.NOT_IDLE, NOT_IDLE_REASON
    if template.priority in inputs.skip_priorities:
        return DeferKind.BUDGET, f"budget running low: {template.priority}-priority work skipped"
    return None
