"""What a phase runs when it opens, decided from one snapshot of the store (no I/O here).

The phase's planned units, its own units deferred at plan time, and work deferred earlier (not yet
offered again) that is allowed in the phase are taken in priority order (planned units first within a
priority, then the oldest deferred), each checked against pause, idle and the money left, up to the
phase's unit limit. From the evening on (budget_rules.POOL_FROM_PHASE) a unit its category cannot pay
for may use the pooled room. What does not fit is deferred, or stays deferred, with the kind and reason
of this latest offer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Mapping

from cass_pipelines.domain.categories import Priority
from cass_pipelines.domain.pauses import pause_reason
from cass_pipelines.domain.plan_rules import NOT_IDLE_REASON, PlanInputs, PlannedUnit
from cass_pipelines.domain.states import DeferKind, UnitOrigin, UnitStatus

Deferral = tuple[str, DeferKind, str]   # (unit id, kind, reason)


@dataclass(frozen=True)
class PhaseSnapshot:
    day: date
    phase: str
    own: list[dict]                     # the phase's units
    waiting: list[dict]                 # deferred units of earlier phases and days, not yet offered again
    paused: Mapping[str | None, str]    # control_flags: None (everything) or a category -> reason
    idle: bool                          # no conversation within the idle threshold
    pool: float | None                  # pooled room (from the evening on), else None
    max_units: int


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
    registry, left, pool = inputs.registry, dict(inputs.category_remaining), s.pool

    def refusal(template_id: str, category: str, cost: float) -> tuple[DeferKind, str] | None:
        nonlocal pool
        template = registry.templates.get(template_id)
        if template is None:
            return DeferKind.GONE, f"template '{template_id}' is no longer in the registry"
        paused = pause_reason(s.paused, category)
        if paused:
            return DeferKind.PAUSED, f"paused: {paused}"
        if template.requires_idle and not s.idle:
            return DeferKind.NOT_IDLE, NOT_IDLE_REASON
        if template.priority in inputs.skip_priorities:
            return DeferKind.BUDGET, f"budget running low: {template.priority}-priority work skipped"
        short = inputs.unaffordable(template_id, category, left.get(category, 0.0))
        if short and pool is not None and inputs.unaffordable(template_id, category, pool) is None:
            pool -= cost
            return None
        if short:
            return DeferKind.BUDGET, short
        left[category] = left.get(category, 0.0) - cost
        return None

    held_back = [u for u in s.own if u["status"] == UnitStatus.DEFERRED and u["origin"] == UnitOrigin.PLAN
                 and not u["started_at"] and not u["reoffered_as"] and u["defer_kind"] != DeferKind.PAUSED]
    waiting = [u for u in s.waiting if u["template_id"] in registry.templates
               and s.phase in registry.templates[u["template_id"]].preferred_phases]
    candidates = ([("own", u) for u in s.own if u["status"] == UnitStatus.PLANNED]
                  + [("held_back", u) for u in held_back] + [("waiting", u) for u in waiting])
    offer, slots = PhaseOffer(), s.max_units
    for kind, u in sorted(candidates, key=lambda c: -reoffer_rank(inputs, c[1]["template_id"])):   # stable sort
        cost = inputs.cost(u["template_id"]) if u["template_id"] in registry.templates else 0.0
        reason = (refusal(u["template_id"], u["category"], cost) if slots > 0
                  else (DeferKind.PHASE_FULL, f"{s.phase} already has {s.max_units} units"))
        if kind == "own" and reason:
            offer.deferrals.append((u["id"], *reason))
        elif reason:
            offer.still_deferred.append((u["id"], reason[0], f"offered again {s.day} {s.phase}: {reason[1]}"))
        elif kind == "held_back":
            offer.reopened.append(u["id"])
        elif kind == "waiting":
            t = registry.templates[u["template_id"]]
            offer.reoffers.append((u, PlannedUnit(s.phase, t.id, t.category, t.priority, u["focus"],
                                                  f"re-offered: {u['reason']}", cost)))
        slots -= 0 if reason else 1
    return offer
