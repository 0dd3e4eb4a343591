"""The decision engine: the agent plans its own day, in its own voice, from a bounded self-model.

The LLM sees the stable prefix (persona, catalogue, rules; cached) and a volatile context whose
size does not grow with history (every list is capped and every text truncated). It answers with
structured output whose template ids are enums per phase, so it cannot name unknown work; the
answer is validated again by core.plan. Any failure falls back to the deterministic scorer:
planning never raises.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, Literal, Mapping

from pydantic import BaseModel, Field, ValidationError, create_model

from cass_pipelines.domain.plan_rules import (
    Deferred,
    Dropped,
    PlanInputs,
    PlannedUnit,
    ProposedUnit,
    fallback_plan,
    validate_plan,
)
from cass_pipelines.llm.base import LLMClient, LLMError, LLMRequest, LLMResult
from cass_pipelines.services.handlers.quoting import NOTICE, quote
from cass_pipelines.services.metering import BudgetRefused

if TYPE_CHECKING:
    from cass_pipelines.services.week import WeekContext

MAX_EDGES, MAX_OBSERVATIONS, MAX_QUESTIONS, MAX_DEFERRED = 5, 2, 6, 5
CLIP = 220


def clip(text: Any, limit: int = CLIP) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class DecisionContext:
    """The bounded slice of the self-model and the day's state the agent plans from."""
    day: date
    phases: list[str]
    growth_edges: list[dict]          # {area, current_state, desired_state, observations[]}
    open_questions: list[str]
    recent_work: list[dict]           # {date, phase, template_id, status, narrative, key_insights}
    journal_tone: str | None
    idle: bool
    last_activity: str | None
    deferred: list[dict]              # {template_id, focus, reason}
    budget: dict                      # budget_status shape
    degraded: bool
    inputs: PlanInputs
    week: "WeekContext | None" = None     # the week's intention, goals, threads, what worked lately

    def render(self) -> str:
        """The volatile prompt. Text that came from conversations or earlier model output (edges'
        observations, questions, past work, journal tone, deferred focus) is quoted data."""
        reg = self.inputs.registry
        edges = []
        for e in self.growth_edges[:MAX_EDGES]:
            edges.append(f"- {clip(e['area'], 80)}: now '{clip(e['current_state'], 160)}'; "
                         f"aiming for '{clip(e['desired_state'], 160)}'")
            edges += [f"    observed: {clip(o, 160)}" for o in e.get("observations", [])[:MAX_OBSERVATIONS]]
        work = []
        for w in self.recent_work[: self.inputs.max_units_per_phase * 2 + 4]:
            insights = w.get("key_insights") or []
            if isinstance(insights, str):
                insights = json.loads(insights)
            work.append(f"- {w['date']} {w['phase']} {w['template_id']} ({w['status']}): {clip(w['narrative'], 180)}"
                        + (f" Insight: {clip(insights[0], 140)}" if insights else ""))
        deferred = [f"- {d['template_id']} on '{clip(d['focus'], 80)}' ({clip(d['reason'], 100)})"
                    for d in self.deferred[:MAX_DEFERRED]]
        b = self.budget
        lines = [f"Today is {self.day:%A %Y-%m-%d}. I am planning these phases of my day: "
                 f"{', '.join(self.phases)}.", NOTICE, "",
                 quote("my growth edges, most important first", "\n".join(edges) or "(none)"),
                 quote("my open questions", "\n".join(f"- {clip(q, 200)}" for q in
                                                      self.open_questions[:MAX_QUESTIONS]) or "(none)"),
                 quote("my recent work, newest first", "\n".join(work) or "(nothing yet)"),
                 quote("my latest journal's tone", clip(self.journal_tone, 120) if self.journal_tone else "none yet"),
                 quote("work deferred earlier, waiting", "\n".join(deferred) or "(none)"), "",
                 f"Conversations: {'idle' if self.idle else 'someone is talking with me right now'}"
                 f" (last message {self.last_activity or 'never'}).", "",
                 f"Budget today: ${b['remaining_usd']:.2f} of ${b['daily_limit_usd']:.2f} left "
                 f"(${b['reserve_usd']:.2f} is an emergency reserve I cannot plan with)."]
        lines += [f"- {name}: ${c['remaining_usd']:.3f} left" for name, c in sorted(b["categories"].items())]
        if self.degraded:
            lines.append("My budget is running low: I should prefer cheaper templates and skip low-priority work.")
        if self.week is not None:
            lines += ["", self.week.render()]
        lines += ["", "Templates I can choose, with estimated cost per unit (from my recent actual costs):"]
        for t in sorted(reg.templates.values(), key=lambda t: t.id):
            allowed = [p for p in self.phases if p in t.preferred_phases]
            if allowed and t.plannable:
                lines.append(f"- {t.id} [{t.category}, {t.priority}] ${self.inputs.cost(t.id):.3f}; "
                             f"phases: {', '.join(allowed)}" + ("; needs idle" if t.requires_idle else ""))
        lines += ["", f"Plan up to {self.inputs.max_units_per_phase} units per phase (zero is fine: rest is "
                      "allowed). For each unit give the template, a concrete focus drawn from my edges, questions "
                      "or recent work, and my motivation in one sentence. Do not repeat a template back to back. "
                      "Also give my intention for the day in one or two sentences, in my own voice."]
        return "\n".join(lines)


def plan_schema(inputs: PlanInputs, week: "WeekContext | None" = None) -> type[BaseModel]:
    """A response model whose template ids are an enum per phase: only work allowed in that phase
    (and, with a week, the goal each unit serves and the thread it continues)."""
    fields: dict[str, Any] = {"day_intention": (str, Field(description="my intention for the day, first person"))}
    for phase in inputs.phases:
        allowed = sorted(t.id for t in inputs.registry.templates_for_phase(phase))
        unit = create_model(
            f"{phase.capitalize()}Unit",
            template_id=(Literal[tuple(allowed)], ...),  # type: ignore[valid-type,arg-type]
            focus=(str, Field(description="what exactly this unit works on")),
            motivation=(str, Field(description="why I choose this, one sentence")),
            **(week.unit_fields() if week is not None else {}),
        )
        # No max_length: the API cannot enforce it, and one unit too many must not void the plan;
        # validate_plan drops the extra units with a reason instead.
        fields[phase] = (list[unit], Field(default_factory=list))  # type: ignore[valid-type]
    return create_model("DayPlanChoice", **fields)


@dataclass
class Decision:
    source: str                              # "llm" | "fallback"
    day_intention: str
    units: dict[str, list[PlannedUnit]]
    dropped: list[Dropped]
    offline: bool
    error: str | None = None                 # why the LLM plan was not used
    deferred: list[Deferred] = field(default_factory=list)   # allowed, but not for today's money (yet)


# The decision call's tiers, best first. The call is funded by its category (system) when the
# category can pay for it on one of these tiers (the best such tier is used); otherwise it is made
# on the cheapest tier and funded from the emergency reserve (MeterContext.may_use_reserve).
DECISION_TIERS = ("deep", "fast")
DECISION_MAX_TOKENS = 1500
DECISION_CATEGORY = "system"


def ask(llm: LLMClient, prefixes: Mapping[str, str], context: DecisionContext, schema: type[BaseModel]) -> LLMResult:
    """The decision call on the best tier its category can fund, else on the cheapest tier."""
    prompt = context.render()
    requests = [LLMRequest(tier=tier, system_prefix=prefixes[tier], prompt=prompt, max_tokens=DECISION_MAX_TOKENS,
                           purpose="plan") for tier in DECISION_TIERS]
    room = context.budget["categories"].get(DECISION_CATEGORY, {}).get("remaining_usd", 0.0)
    estimate = getattr(llm, "estimate", None)   # a metered client knows what each tier would hold
    chosen = next((r for r in requests if estimate is None or estimate(r, schema) <= room), requests[-1])
    return llm.structured(chosen, schema)


def settle(week: "WeekContext | None", unit: ProposedUnit) -> ProposedUnit:
    """The unit's goal checked against the week's (WeekContext.settle); with no week planned yet no goal is
    held, and the unit says so."""
    if week is not None:
        return week.settle(unit)
    return unit.model_copy(update={"goal_id": None, "goal_note": clip(unit.goal_note.strip() or "no goal named", 300),
                                   "continues": None})


def decide(llm: LLMClient, prefixes: Mapping[str, str], context: DecisionContext,
           previous_template: str | None = None) -> Decision:
    """Ask the agent for its plan; validate it; fall back to the scorer when the call fails (the model,
    the network, the budget) or its answer is unusable. `prefixes` holds the stable prefix per model tier.
    A bug of ours (in the schema or the rules) raises: it must not pass for the agent's choice."""
    inputs = context.inputs
    schema = plan_schema(inputs, context.week)
    try:
        result = ask(llm, prefixes, context, schema)
        choice = result.parsed
        proposed = {p: [settle(context.week, ProposedUnit(**u.model_dump())) for u in getattr(choice, p)]
                    for p in inputs.phases}
    except (LLMError, BudgetRefused, ValidationError) as exc:   # the day must still be planned
        error = f"{type(exc).__name__}: {clip(exc, 300)}"
    else:
        if any(proposed.values()) or not any(inputs.registry.templates_for_phase(p) for p in inputs.phases):
            units, dropped, deferred = validate_plan(proposed, inputs, previous_template)
            return Decision("llm", choice.day_intention.strip(), units, dropped, result.offline, deferred=deferred)
        error = "the plan had no units"
    proposed, intention = fallback_plan(inputs)
    if context.week is not None:
        proposed = {p: [context.week.assign(u) for u in us] for p, us in proposed.items()}
    units, dropped, deferred = validate_plan(proposed, inputs, previous_template)
    return Decision("fallback", intention, units, dropped, offline=False, error=error, deferred=deferred)
