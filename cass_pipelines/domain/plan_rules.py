"""Plan validation and the deterministic fallback planner (pure functions).

Whatever proposes a plan — the agent through the LLM, or the fallback scorer — the same rules
decide what is kept. A unit that breaks a rule (an unknown template, one not allowed in the phase
or not planned at all, the same template back to back) is dropped with its reason. A unit that is
fine but cannot run now (today's money, degradation, idle-only work while someone talks, a phase
already full) is deferred with its reason: stored, shown, and offered again later in priority order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from cass_pipelines.domain.categories import Priority
from cass_pipelines.domain.registry import SUMMARY_ACTION_ID, SUMMARY_ESTIMATE_USD, Registry
from cass_pipelines.domain.states import DeferKind


class ProposedUnit(BaseModel):
    template_id: str
    focus: str = Field(default="", max_length=300)
    motivation: str = Field(default="", max_length=600)
    goal_id: str | None = None          # the week's goal it serves (None: goal_note says why none)
    goal_note: str = ""
    continues: str | None = None        # yesterday's unit this one continues (a thread of work)


@dataclass(frozen=True)
class PlannedUnit:
    phase: str
    template_id: str
    category: str
    priority: str
    focus: str
    motivation: str
    estimated_cost_usd: float
    goal_id: str | None = None
    goal_note: str = ""
    continues: str | None = None

NOT_IDLE_REASON = "requires idle, but a conversation is active"


@dataclass(frozen=True)
class Dropped:
    template_id: str
    phase: str
    reason: str

    def as_dict(self) -> dict:
        return {"template_id": self.template_id, "phase": self.phase, "reason": self.reason}


@dataclass(frozen=True)
class Deferred:
    unit: PlannedUnit
    kind: DeferKind
    reason: str


@dataclass
class PlanInputs:
    """Everything the rules need; built by the decision engine from the store."""
    registry: Registry
    phases: list[str]                          # remaining phases, in order
    category_remaining: dict[str, float]       # USD left per category today
    action_costs: dict[str, float] = field(default_factory=dict)   # calibrated per-action estimates
    idle: bool = True                          # no conversation activity within the idle threshold
    skip_priorities: frozenset[str] = frozenset()  # priorities skipped under budget degradation
    max_units_per_phase: int = 4
    recent_templates: list[str] = field(default_factory=list)      # most recent first
    growth_edges: list[str] = field(default_factory=list)          # areas, most important first
    open_questions: list[str] = field(default_factory=list)
    largest_call: dict[str, float] = field(default_factory=dict)   # per template: its dearest call's reservation
    learned: dict[str, float] = field(default_factory=dict)        # per template: how well it went lately (0..1)
    week_templates: list[str] = field(default_factory=list)        # this week's units so far (their templates)
    called_for: frozenset[str] = frozenset()                       # templates the week's goals call for
    measured: frozenset[str] = frozenset()                         # actions whose cost the ledger has measured

    def cost(self, template_id: str) -> float:
        """A unit's estimate: its actions plus the work-summary call that follows it."""
        summary = self.action_costs.get(SUMMARY_ACTION_ID, SUMMARY_ESTIMATE_USD)
        return round(self.registry.template_cost(template_id, self.action_costs) + summary, 6)

    def unaffordable(self, template_id: str, category: str, room: float, pool: float = 0.0) -> str | None:
        """Why `room` (and `pool`, pooled room it may also use) cannot pay for a unit: its estimate, or its
        dearest call's reservation (held in full before that call, from one of them), does not fit. A
        unit with an action never measured is admitted on its dearest call alone: its estimate is a
        guess, every call is reserved before it is made, and a unit refused midway keeps its completed
        actions when it is offered again."""
        cost, call = self.cost(template_id), self.largest_call.get(template_id, 0.0)
        known = all(a.id in self.measured for a in self.registry.template_actions(template_id)
                    if a.model_tier != "none")
        if call <= max(room, pool) + 1e-9 and (not known or cost <= room + pool + 1e-9):
            return None
        need = f"unit needs ${cost:.4f}" if known and cost >= call else f"its dearest call reserves ${call:.4f}"
        pooled = f" and the pool ${pool:.4f}" if pool > 0 else ""
        return f"over budget: category {category} has ${room:.4f} left{pooled}, {need}"


def validate_plan(proposed: dict[str, list[ProposedUnit]], inputs: PlanInputs, previous_template: str | None = None
                  ) -> tuple[dict[str, list[PlannedUnit]], list[Dropped], list[Deferred]]:
    """Keep what is allowed and fits; defer what is allowed but cannot run now; drop what breaks a
    rule. Each not kept has its reason. Budget is consumed in plan order."""
    kept: dict[str, list[PlannedUnit]] = {p: [] for p in inputs.phases}
    dropped: list[Dropped] = []
    deferred: list[Deferred] = []
    left = dict(inputs.category_remaining)
    last = previous_template
    week = list(inputs.week_templates)
    for phase in inputs.phases:
        for unit in proposed.get(phase, []):
            template = inputs.registry.templates.get(unit.template_id)
            broken = None
            if template is None:
                broken = f"unknown template '{unit.template_id}'"
            elif not template.plannable:
                broken = "template is run by its own job, not planned"
            elif phase not in template.preferred_phases:
                broken = f"template not allowed in {phase} (allowed: {', '.join(template.preferred_phases)})"
            elif unit.template_id == last:
                broken = "same template as the unit before it"
            else:
                broken = over_week_share(unit.template_id, week, inputs.called_for)
            if broken:
                dropped.append(Dropped(unit.template_id, phase, broken))
                continue
            assert template is not None
            cost = inputs.cost(template.id)
            planned = PlannedUnit(phase, template.id, template.category, template.priority,
                                  unit.focus.strip() or template.name, unit.motivation.strip(), cost,
                                  unit.goal_id, unit.goal_note, unit.continues)
            wait: tuple[DeferKind, str | None]
            if template.requires_idle and not inputs.idle and phase == inputs.phases[0]:
                wait = DeferKind.NOT_IDLE, NOT_IDLE_REASON
            elif template.priority in inputs.skip_priorities:
                wait = DeferKind.BUDGET, f"budget running low: {template.priority}-priority work skipped"
            elif len(kept[phase]) >= inputs.max_units_per_phase:
                wait = DeferKind.PHASE_FULL, f"{phase} already has {inputs.max_units_per_phase} units"
            else:
                wait = DeferKind.BUDGET, inputs.unaffordable(template.id, template.category,
                                                             left.get(template.category, 0.0))
            if wait[1]:
                deferred.append(Deferred(planned, wait[0], wait[1]))
                continue
            left[template.category] = left.get(template.category, 0.0) - cost
            kept[phase].append(planned)
            week.append(template.id)
            last = template.id
    return kept, dropped, deferred


# No template takes more than this share of a week's units unless the week's goals call for it;
# the rule applies from this many units on (one day's first units are not a week's distribution).
MAX_TEMPLATE_SHARE = 0.4
MIN_UNITS_FOR_SHARE = 5


def over_week_share(template_id: str, week: list[str], called_for: frozenset[str]) -> str | None:
    """Why one more unit of the template would take over the week, or None."""
    count, total = week.count(template_id) + 1, len(week) + 1
    if template_id in called_for or total < MIN_UNITS_FOR_SHARE or count / total <= MAX_TEMPLATE_SHARE:
        return None
    return (f"would be {count} of this week's {total} units (over {MAX_TEMPLATE_SHARE:.0%}), and the week's goals "
            "do not call for it")


# A plan-time guess of the prompt of an action's call never made (the cached prefix, sized to the
# model's minimum cacheable length, plus the volatile context) for pricing its reservation; a measured
# action is priced from its calls' prompts. The metered client reserves on the counted prompt, so a
# low guess only defers later.
TYPICAL_PROMPT_TOKENS = 6000

# Deferred work is offered again for this many days; system.queue_maintenance expires it after.
DEFERRED_LOOKBACK_DAYS = 7

# Fallback scorer weights. A template's score in a phase is the weighted sum of:
#   window    its preference weight for the phase (0..1)
#   growth    growth-category work when the agent has growth edges
#   curiosity curiosity/research work when it has open questions
#   variety   1 if not among the recent units, 0.5 if it ran once recently, else 0
#   priority  priority rank / 4 (critical = 1)
#   cost      minus cost relative to the day's most expensive template (matters under degradation)
#   learned   how well the template went lately (completion, failures, my rating, insight; 0.5 neutral)
WEIGHTS = {"window": 3.0, "growth": 1.0, "curiosity": 0.8, "variety": 1.5, "priority": 1.0, "cost": 0.5,
           "learned": 1.0}
FALLBACK_UNITS_PER_PHASE = 2


def score_template(template_id: str, phase: str, inputs: PlanInputs, recent: list[str]) -> float:
    t = inputs.registry.templates[template_id]
    most_expensive = max(inputs.cost(x) for x in inputs.registry.templates) or 1.0
    uses = recent.count(template_id)
    return round(
        WEIGHTS["window"] * t.preferred_phases.get(phase, 0.0)
        + WEIGHTS["growth"] * (t.category == "growth" and bool(inputs.growth_edges))
        + WEIGHTS["curiosity"] * (t.category in ("curiosity", "research") and bool(inputs.open_questions))
        + WEIGHTS["variety"] * (1.0 if uses == 0 else 0.5 if uses == 1 else 0.0)
        + WEIGHTS["priority"] * Priority(t.priority).rank / 4
        - WEIGHTS["cost"] * inputs.cost(template_id) / most_expensive
        + WEIGHTS["learned"] * (inputs.learned.get(template_id, 0.5) - 0.5), 4)


def _fallback_focus(template_id: str, inputs: PlanInputs, n: int) -> str:
    t = inputs.registry.templates[template_id]
    if t.category == "growth" and inputs.growth_edges:
        return inputs.growth_edges[n % len(inputs.growth_edges)]
    if t.category in ("curiosity", "research") and inputs.open_questions:
        return inputs.open_questions[n % len(inputs.open_questions)]
    return t.name


def fallback_plan(inputs: PlanInputs) -> tuple[dict[str, list[ProposedUnit]], str]:
    """A deterministic plan from the documented weights, for when the agent could not plan."""
    recent = list(inputs.recent_templates)
    plan: dict[str, list[ProposedUnit]] = {}
    chosen = 0
    for phase in inputs.phases:
        units: list[ProposedUnit] = []
        for _ in range(min(FALLBACK_UNITS_PER_PHASE, inputs.max_units_per_phase)):
            candidates = [t.id for t in inputs.registry.templates_for_phase(phase)
                          if t.id != (units[-1].template_id if units else None)
                          and not (t.requires_idle and not inputs.idle)
                          and t.priority not in inputs.skip_priorities]
            if not candidates:
                break
            best = max(sorted(candidates), key=lambda tid: score_template(tid, phase, inputs, recent))
            units.append(ProposedUnit(
                template_id=best, focus=_fallback_focus(best, inputs, chosen),
                motivation=f"fallback scorer: {score_template(best, phase, inputs, recent):.2f} "
                           f"(phase fit, growth, curiosity, variety, priority, cost, what worked lately)"))
            recent.insert(0, best)
            chosen += 1
        plan[phase] = units
    intention = "Keep a steady day: " + ", ".join(
        f"{p}: {', '.join(u.template_id for u in us) or 'rest'}" for p, us in plan.items())
    return plan, intention
