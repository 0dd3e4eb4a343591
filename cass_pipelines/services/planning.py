"""Planning a phase: the first phase run of a day plans every remaining phase (the day plan);
each phase, when it opens, takes its units from the stored plan, adds deferred work, and
re-checks budget, pause and idle. Re-running a phase keeps its plan unless asked to re-plan."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Callable

from cass_pipelines.domain.budget_rules import calibrated_costs, degradation
from cass_pipelines.domain.categories import PHASES
from cass_pipelines.domain.phase_offer import PhaseSnapshot, offer_phase
from cass_pipelines.domain.phases import phase_window, remaining_phases
from cass_pipelines.domain.plan_rules import (
    TYPICAL_PROMPT_TOKENS,
    PlanInputs,
    PlannedUnit,
)
from cass_pipelines.domain.states import DeferKind, UnitOrigin, UnitStatus
from cass_pipelines.llm import holds
from cass_pipelines.llm.base import LLMClient, PromptCount, prefix_key
from cass_pipelines.services import approvals
from cass_pipelines.services.decision import DECISION_TIERS, Decision, DecisionContext, decide
from cass_pipelines.services.failpoints import failpoint
from cass_pipelines.services.handlers.calls import system_prefix
from cass_pipelines.services.lookback import deferred_since, not_paused, supersede_waiting
from cass_pipelines.services.once import claim_or_wait
from cass_pipelines.services.runtime import Runtime
from cass_pipelines.services.week import week_context
from cass_pipelines.store import batches, claims, conversations, persona, plans
from cass_pipelines.store import goals as goal_store
from cass_pipelines.store.budget import budget_status, ledger_action_averages, pooled_used
from cass_pipelines.store.claims import Owner, never_over
from cass_pipelines.store.control import paused_reason, paused_scopes
from cass_pipelines.store.ledger import CallSizes, call_sizes, phase_call_span, prefix_last_used


@dataclass
class PhasePlan:
    day: date
    phase: str
    revision: int
    source: str
    day_intention: str
    planned_now: bool                 # this run asked the agent (or the fallback) for a day plan
    made_day_plan: dict | None        # the whole day plan when this run made it
    units: list[dict]                 # this phase's units after opening
    dropped: list[dict] = field(default_factory=list)
    deferred_now: list[tuple[str, str]] = field(default_factory=list)
    reoffered: list[str] = field(default_factory=list)
    error: str | None = None


def idle_at(rt: Runtime, moment: datetime) -> tuple[bool, datetime | None]:
    last = conversations.last_activity(rt.store, moment)
    threshold = timedelta(minutes=rt.settings.idle_threshold_minutes)
    return (last is None or moment - last >= threshold), last


def plan_inputs(rt: Runtime, day: date, phases: list[str], idle: bool,
                now: datetime) -> tuple[PlanInputs, dict, bool]:
    with rt.store.session():  # bookkeeping only: no LLM call inside
        status = budget_status(rt.store, rt.settings, day, phases[0])
        degraded, skip = degradation(status, rt.settings)
        sizes, by_model = call_sizes(rt.store, day)
        averages = ledger_action_averages(rt.store)
        warm = warm_tiers(rt, day, phases[0], now)
        # An action never run yet is estimated at its call's useful hold when that is below the
        # registry's figure (a worst case): admission then refuses only what cannot be paid.
        holds_by_action = {a.id: call_hold(rt, a, sizes.get(a.id) or by_model.get(rt.settings.models[a.model_tier]),
                                           warm=a.model_tier in warm)
                           for a in rt.registry.actions.values() if a.model_tier != "none"}
        costs = calibrated_costs(rt.registry, averages, holds_by_action)
        edges = persona.growth_edges(rt.store, limit=5)
        inputs = PlanInputs(
            registry=rt.registry, phases=phases,
            category_remaining={k: v["remaining_usd"] for k, v in status["categories"].items()},
            action_costs=costs, idle=idle, skip_priorities=frozenset(skip),
            max_units_per_phase=rt.settings.max_units_per_phase,
            recent_templates=plans.recent_templates(rt.store, rt.settings.history_window,
                                                    before=day + timedelta(days=1)),
            growth_edges=[e["area"] for e in edges],
            open_questions=[q["question"] for q in persona.open_questions(rt.store, limit=6)],
            largest_call={t: max((holds_by_action[a.id] for a in rt.registry.template_actions(t)
                                  if a.model_tier != "none"), default=0.0) for t in rt.registry.templates},
            measured=frozenset(a for a, cost in averages.items() if cost.executions))
        return inputs, status, degraded


def warm_tiers(rt: Runtime, day: date, phase: str, now: datetime) -> set[str]:
    """The model tiers whose stable prefix the ledger saw cached within its TTL as of `now`: their
    calls are priced at the cache-read rate, as the metered client will price them now."""
    ttl = holds.phase_ttl(phase_call_span(rt.store, phase, day), rt.settings.cache_ttl)
    fresh = timedelta(seconds=holds.TTL_SECONDS[ttl] - holds.WARM_SLACK_S)
    warm: set[str] = set()
    for tier in {a.model_tier for a in rt.registry.actions.values() if a.model_tier != "none"}:
        model = rt.settings.models[tier]
        last = prefix_last_used(rt.store, prefix_key(model, system_prefix(rt.store, rt.registry, rt.llm, tier)))
        if last is not None and now - last < fresh:
            warm.add(str(tier))
    return warm


def call_hold(rt: Runtime, action, sizes: CallSizes | None, warm: bool = False) -> float:
    """The least reservation one call of the action must get, as the metered client computes it
    (llm/holds.py) with the output bound lowered to the action's useful minimum, which is when the call
    is refused: for a prompt the size of earlier calls' (a high percentile of the action's; for an action
    never called, of its model's calls; without any, a typical prompt) whose prefix is `warm` or written."""
    rates = rt.pricing.rates(rt.settings.models[action.model_tier])
    tokens = (math.ceil(holds.percentile(sizes.prompts, holds.OUTPUT_PERCENTILE)) if sizes and sizes.prompts
              else TYPICAL_PROMPT_TOKENS)
    prompt = PromptCount(tokens, min(rates.min_cacheable_tokens, tokens))
    bound = holds.output_bound(action.max_output_tokens, sizes.outputs if sizes else [])
    return (holds.input_usd(rates, prompt, warm=warm, ttl=rt.settings.cache_ttl)
            + holds.output_usd(rates, bound.minimum))


def decision_context(rt: Runtime, day: date, phases: list[str], idle: bool,
                     last: datetime | None, now: datetime) -> DecisionContext:
    with rt.store.session():  # bookkeeping only: no LLM call inside
        inputs, status, degraded = plan_inputs(rt, day, phases, idle, now)
        edges = [{**e, "observations": [o["text"] for o in persona.edge_observations(rt.store, e["id"], limit=2)]}
                 for e in persona.growth_edges(rt.store, limit=5)]
        journal = plans.latest_journal(rt.store, day)
        deferred = plans.pending_deferred(rt.store, deferred_since(rt.store, rt.settings, rt.registry, day), day,
                                          PHASES.index(phases[0]))
        week = week_context(rt, day)
        inputs.learned = week.template_scores
        inputs.week_templates = [u["template_id"] for u in goal_store.week_units(rt.store, week.week_start, day)]
        inputs.called_for = frozenset(t for g in week.goals for t in g["templates"])
        return DecisionContext(
            day=day, phases=phases, growth_edges=edges, open_questions=inputs.open_questions,
            recent_work=plans.recent_summaries(rt.store, rt.settings.history_window, through=day),
            journal_tone=journal["tone"] if journal else None, idle=idle,
            last_activity=last.isoformat(timespec="minutes") if last else None,
            deferred=deferred, budget=status, degraded=degraded, inputs=inputs,
            week=week if week.intention or week.goals or week.threads or week.digest else None)


def claim_plan_call(rt: Runtime, day: date, revision: int, owner: Owner, is_run_over: Callable[[str], bool],
                    now: datetime, wait_s: float) -> bool:
    """Claim the decision call of (day, revision): True when this run makes it. While another live
    run holds the claim, wait for its plan (False once stored); take over if that run dies."""
    return claim_or_wait(rt.store, claims.plan_key(day, revision), owner, is_run_over, now,
                         lambda: plans.day_plan_revisions(rt.store, day) >= revision, wait_s,
                         f"planning {day} (revision {revision})")


def make_day_plan(rt: Runtime, llm: LLMClient, day: date, phases: list[str], now: datetime,
                  owner: Owner, is_run_over: Callable[[str], bool], revision: int) -> Decision | None:
    """Ask the agent for `phases` and store the plan as `revision`; None when another run of the
    same partition planned it (its plan is used instead: one plan, paid for once)."""
    if not claim_plan_call(rt, day, revision, owner, is_run_over, now,
                           wait_s=rt.settings.request_timeout_s * 2 + 60):
        return None
    failpoint("plan_claimed")
    reference = phase_window(day, phases[0], rt.settings)[0]
    with rt.store.session():  # what the decision reads: one open, no LLM call inside
        idle, last = idle_at(rt, reference)
        ctx = decision_context(rt, day, phases, idle, last, now)
        prefixes = {tier: system_prefix(rt.store, rt.registry, llm, tier) for tier in DECISION_TIERS}
        recent = plans.recent_templates(rt.store, 1, before=day)
    decision = decide(llm, prefixes, ctx, previous_template=recent[0] if recent else None)
    all_units = [u for p in phases for u in decision.units[p]]
    with rt.store.session():  # the plan and its units' goal links: one open
        stored = plans.save_day_plan(rt.store, day=day, revision=revision, source=decision.source,
                                     intention=decision.day_intention, from_phase=phases[0], phases=phases,
                                     units=all_units, dropped=[d.as_dict() for d in decision.dropped],
                                     deferred=[(d.unit, d.kind, d.reason) for d in decision.deferred],
                                     offline=decision.offline, now=now)
        if stored:
            link_units(rt, day, revision, phases, all_units + [d.unit for d in decision.deferred], now)
    return decision if stored else None


def link_units(rt: Runtime, day: date, revision: int, phases: list[str], units: list[PlannedUnit],
               now: datetime) -> None:
    """Record the goal each stored unit serves and the thread it continues. save_day_plan numbers a
    phase's units in the order given (planned, then deferred), so the rows pair up by phase and order."""
    rows = [u for u in plans.units_for_day(rt.store, day) if u["plan_revision"] == revision and u["origin"] == "plan"]
    links = []
    for phase in phases:
        stored = [r for r in rows if r["phase"] == phase]
        links += [(r["id"], u.goal_id, u.goal_note, u.continues)
                  for r, u in zip(stored, [u for u in units if u.phase == phase])]
    goal_store.link_units(rt.store, links, now)


def unplanned_phases(day_phases: set[str], phase: str) -> list[str]:
    """From `phase` up to the next phase some revision already planned: what a late first run
    (a backfill, a daemon outage) left without a plan."""
    later = PHASES[PHASES.index(phase):]
    end = next((i for i, p in enumerate(later) if p in day_phases), len(later))
    return list(later[:end])


def open_phase(rt: Runtime, day: date, phase: str, revision: int, now: datetime) -> tuple[list, list]:
    """Decide what this phase runs (domain.phase_offer, from one snapshot) and record it. Returns the
    units deferred now as (id, reason) and the templates taken up again; ([], []) when another run of
    this partition opened the phase first."""
    with rt.store.session():  # bookkeeping only: no LLM call inside
        supersede_waiting(rt.store, rt.settings, rt.registry, now)   # never offered again
        reference = max(phase_window(day, phase, rt.settings)[0], min(now, phase_window(day, phase, rt.settings)[1]))
        idle, _ = idle_at(rt, reference)
        inputs, status, _ = plan_inputs(rt, day, [phase], idle, now)
        own = plans.units_for_phase(rt.store, day, phase)
        waiting = plans.pending_deferred(rt.store, deferred_since(rt.store, rt.settings, rt.registry, day), day, PHASES.index(phase))
        snapshot = PhaseSnapshot(
            day=day, phase=phase, own=own, waiting=waiting,
            completed=plans.completed_positions(rt.store, [u["id"] for u in own + waiting]),
            paused=paused_scopes(rt.store), idle=idle, max_units=rt.settings.max_units_per_phase,
            day_room=status["remaining_usd"], pooled_used=pooled_used(rt.store, day),
            open_elsewhere=frozenset(u["category"] for u in plans.units_for_day(rt.store, day)
                                     if u["status"] == UnitStatus.RUNNING or (
                                         u["status"] == UnitStatus.PLANNED
                                         and PHASES.index(u["phase"]) > PHASES.index(phase))))
    offer = offer_phase(snapshot, inputs)
    if not plans.open_phase(rt.store, day=day, phase=phase, revision=revision, idle=idle,
                            deferrals=offer.deferrals, reoffers=offer.reoffers, now=now, reopened=offer.reopened,
                            still_deferred=offer.still_deferred):
        return [], []
    reopened = {u["id"]: u["template_id"] for u in snapshot.own if u["id"] in offer.reopened}
    return [(uid, reason) for uid, _, reason in offer.deferrals], offer.offered_templates + list(reopened.values())


class UnplannedWhilePaused(Exception):
    """A phase of a day with no plan yet, while everything is paused: planning now would store a fallback
    plan for good, so the day is planned after `resume`."""


def plan_phase(rt: Runtime, llm: LLMClient, day: date, phase: str, now: datetime, replan: bool = False, *,
               owner: Owner | None = None, is_run_over: Callable[[str], bool] = never_over) -> PhasePlan:
    # One open for its reads and the phase's opening; a day plan to make keeps it up to its model call
    # (metering lets it go for the call) and takes it up again to store the plan and open the phase.
    with rt.store.session():
        paused = paused_reason(rt.store, None)
        planned = plans.planned_phases(rt.store, day)
        if paused and not planned:
            raise UnplannedWhilePaused(f"paused: {paused}. Nothing planned for {day}; run `cass-pipelines resume` first.")
        approvals.expire(rt, now)   # work no one approved in time is cancelled, whether anyone looks or not
        # The revision this run would make, read with what it decided from: a run of the same partition
        # that stores its plan in between then holds or has ended this revision's claim, so its plan is
        # used, not paid for a second time as the next revision.
        next_revision = plans.day_plan_revisions(rt.store, day) + 1
        to_plan = remaining_phases(day, phase) if replan or not planned else unplanned_phases(planned, phase)
        decision = (make_day_plan(rt, llm, day, to_plan, now, owner or Owner.here(None), is_run_over, next_revision)
                    if to_plan else None)
        existing = plans.latest_day_plan(rt.store, day)
        assert existing is not None
        revision = existing["revision"]
        opening = plans.phase_opening(rt.store, day, phase)
        deferred_now: list[tuple[str, str]] = []
        reoffered: list[str] = []
        if opening is None or opening["plan_revision"] != revision:
            deferred_now, reoffered = open_phase(rt, day, phase, revision, now)
        take_back_waiting(rt, day, phase, now)   # (after a new revision's opening too: it leaves them deferred)
        units = plans.units_for_phase(rt.store, day, phase)
    return PhasePlan(
        day=day, phase=phase, revision=revision, source=existing["source"],
        day_intention=existing["day_intention"], planned_now=decision is not None,
        made_day_plan=existing["plan"] if decision is not None else None, units=units,
        dropped=[d for d in existing["dropped"] if d["phase"] == phase] if decision is None else existing["dropped"],
        deferred_now=deferred_now, reoffered=reoffered, error=decision.error if decision else None)


MAX_UNANSWERED = 3   # times one batched request of a unit came back without an answer before it is offered anew


def take_back_waiting(rt: Runtime, day: date, phase: str, now: datetime) -> list[str]:
    """A phase run again takes back the units its pause deferred (after `resume`) and those whose call
    waited for its message batch (unless paused): they resume under their own id, so their prompts are
    the same and the answer paid for them is used, not asked for again. One whose template is gone from
    the registry is deferred as gone instead (it cannot run); one with a batched request that came back
    without an answer MAX_UNANSWERED times (each after the wait ran out) and none still pending is offered
    again as new work instead (an answer it holds is abandoned: the metrics count it)."""
    with rt.store.session():
        units = not_paused(rt.store, rt.registry, [u for u in plans.units_for_phase(rt.store, day, phase)
                                if u["status"] == UnitStatus.DEFERRED
                                and u["defer_kind"] in (DeferKind.PAUSED, DeferKind.BATCH)
                                and u["origin"] != UnitOrigin.JOB and not u["reoffered_as"]])
        unanswered = batches.unanswered(rt.store, [u["id"] for u in units])
        ids = []
        for u in units:
            if u["template_id"] not in rt.registry.templates:
                plans.set_unit_status(rt.store, u["id"], UnitStatus.DEFERRED, now, defer_kind=DeferKind.GONE,
                                      reason=f"template '{u['template_id']}' is no longer in the registry")
            elif (trouble := unanswered.get(u["id"])) and trouble["times"] >= MAX_UNANSWERED \
                    and not trouble["pending"]:
                plans.set_unit_status(rt.store, u["id"], UnitStatus.DEFERRED, now, defer_kind=DeferKind.BATCH_FAILED,
                                      reason=f"a request of it came back from its message batch without an answer "
                                             f"{trouble['times']} times; offered again as new work")
            else:
                ids.append(u["id"])
        plans.reopen_units(rt.store, ids)
    return ids


def phase_skip_reason(store, settings, day: date) -> str | None:
    """Why no new phase should start for `day` (paused, or the day's budget spent), or None.
    The phase schedules, run-day and run-phase all apply this one rule."""
    paused = paused_reason(store, None)
    if paused:
        return f"paused: {paused}"
    status = budget_status(store, settings, day)
    if status["exhausted"]:
        return (f"daily budget exhausted for {day}: spent ${status['spent_usd']:.2f} of "
                f"${status['daily_limit_usd']:.2f}; phases resume tomorrow")
    return None
