"""Executing one action of one work unit: the step body behind each fanned-out Dagster op.

Order of business: a completed action is never run again (a replayed step re-spends nothing);
pause is checked before starting (of the unit's category, or of a step it has still to run); the
action is claimed for this run in the same transaction that marks it running, so two runs of a
partition never both execute it (a live claim elsewhere is
skipped, a dead owner's is taken over); the handler gets a metered LLM client (reserve, call,
ledger, settle); budget refusal defers the unit; a handler error fails the unit (recorded,
dead-lettered) without raising, so the rest of the phase is still summarised and costed.
"""
from __future__ import annotations

import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from typing import Callable

from cass_pipelines.config.registry import resolve_handler
from cass_pipelines.domain.clock import Clock
from cass_pipelines.domain.pauses import unit_pause_reason
from cass_pipelines.domain.plan_rules import PlannedUnit
from cass_pipelines.domain.registry import SUMMARY_ACTION_ID
from cass_pipelines.domain.states import (
    ActionStatus,
    ClaimOutcome,
    ClaimState,
    DeadLetterKind,
    DeferKind,
    UnitOrigin,
    UnitStatus,
)
from cass_pipelines.llm.base import redact
from cass_pipelines.services import approvals
from cass_pipelines.services.handlers.base import ActionResult, HandlerContext
from cass_pipelines.services.handlers.handoff import keep_left_over
from cass_pipelines.services.metering import BudgetRefused, MeterContext, MeteredClient
from cass_pipelines.services.runtime import Runtime
from cass_pipelines.services.summaries import summarize_unit
from cass_pipelines.services.week import record_progress
from cass_pipelines.store import batches, claims, dead_letters, plans
from cass_pipelines.store.claims import Owner, never_over
from cass_pipelines.store.control import paused_scopes


@dataclass(frozen=True)
class StepOutcome:
    work_unit_id: str
    position: int
    action_id: str
    status: ActionStatus
    message: str
    cost_usd: float = 0.0
    unit_done: bool = False   # no further actions of this unit should run

    def as_dict(self) -> dict:
        return {**self.__dict__, "status": self.status.value}


def metered(rt: Runtime, clock: Clock, ctx: "MeterContext") -> "MeteredClient":
    """The LLM client a piece of work uses: every call reserved, recorded in the ledger, settled."""
    return MeteredClient(rt.llm, rt.store, rt.settings, rt.pricing, ctx, clock)


# The (budget day, phase) a piece of work run on another day or phase than its unit's (approved, retried,
# caught up) is charged to and funded as; None: the one its unit's work was last paid from (see paid_from).
Budget = tuple[date, str] | None


def paid_from(rt: Runtime, unit: dict, budget: Budget) -> tuple[date, str]:
    """The (budget day, phase) the unit's work is paid from now: `budget` when given, else the one its work
    was last paid from, else the unit's own date and phase. Called once its work goes ahead (claimed: a run
    skipped or held by a pause pays nothing), it remembers a `budget` on the unit, so that its resumes (a
    batch's answer taken up by its phase's run, a pause lifted) pay from it too and use the answer paid
    for them there."""
    kept = (unit["paid_day"], unit["paid_phase"]) if unit["paid_day"] else (unit["date"], unit["phase"])
    if budget is None or (budget[0], budget[1]) == kept:
        return kept
    plans.set_paid_from(rt.store, unit["id"], budget[0], budget[1])
    return budget[0], budget[1]


def run_action(rt: Runtime, unit_id: str, position: int, clock: Clock, *, run_id: str | None = None,
               step_key: str | None = None, log=lambda msg: None,
               is_run_over: Callable[[str], bool] = never_over, budget: Budget = None) -> StepOutcome:
    """Run action `position` of the unit. Its calls are charged to the unit's date and funded as its phase
    unless `budget` names the day and phase it runs on (approved or retried work, a job catching up), or an
    earlier run of the unit was paid from another (`paid_from`). The action's bookkeeping (claim, the
    handler's reads and writes, holds, settlements, its end) shares one open of the file between model
    calls: metering lets it go for each call and each wait for a batch."""
    with rt.store.session():
        return _run_action(rt, unit_id, position, clock, run_id=run_id, step_key=step_key, log=log,
                           is_run_over=is_run_over, budget=budget)


def _run_action(rt: Runtime, unit_id: str, position: int, clock: Clock, *, run_id: str | None,
                step_key: str | None, log, is_run_over: Callable[[str], bool], budget: Budget) -> StepOutcome:
    unit = plans.get_unit(rt.store, unit_id)
    if unit is None:
        raise ValueError(f"work unit {unit_id!r} does not exist")
    template = rt.registry.templates[unit["template_id"]]
    action = rt.registry.actions[template.action_sequence[position]]
    last = position == len(template.action_sequence) - 1
    runs = {r["position"]: r for r in plans.action_runs(rt.store, unit_id)}

    def outcome(status: ActionStatus, message: str, cost: float = 0.0, unit_done: bool = False) -> StepOutcome:
        return StepOutcome(unit_id, position, action.id, status, message, cost, unit_done or last)

    def finish(status: ActionStatus, message: str, unit_status: UnitStatus | None, **kw) -> None:
        plans.finish_action(rt.store, uid=unit_id, position=position, action_id=action.id, status=status,
                            message=message, unit_status=unit_status, now=clock.now(), run_id=run_id,
                            step_key=step_key, **kw)

    if position in runs and runs[position]["status"] == ActionStatus.COMPLETED:
        return outcome(ActionStatus.COMPLETED, "already completed; not run again", runs[position]["cost_usd"])
    if any(runs.get(p, {}).get("status") != ActionStatus.COMPLETED for p in range(position)):
        # Template order: another run is still on an earlier action, or it ended the unit.
        return outcome(ActionStatus.SKIPPED, "an earlier action of the unit has not completed", unit_done=True)
    if UnitStatus(unit["status"]).final:
        return outcome(ActionStatus.SKIPPED, f"unit is {unit['status']}", unit_done=True)

    forced = unit["origin"] == UnitOrigin.FORCED
    # (a step still to run that a pause would stop holds the unit now, as its phase's opening does)
    paused = None if forced else unit_pause_reason(paused_scopes(rt.store), rt.registry, template.id, unit["category"],
                                                   [p for p, r in runs.items() if r["status"] == ActionStatus.COMPLETED])
    held = (DeferKind.PAUSED, f"paused: {paused}") if paused else None
    if not held and approvals.gated(template, action, unit, rt.store):
        reason = approvals.hold(rt, unit, template, action, clock.now())
        return outcome(ActionStatus.SKIPPED, reason, unit_done=True)
    if held:
        kind, why = held
        finish(ActionStatus.DEFERRED, why, UnitStatus.DEFERRED, unit_reason=why, defer_kind=kind)
        return outcome(ActionStatus.DEFERRED, why, unit_done=True)
    claim = plans.start_action(rt.store, uid=unit_id, position=position, action_id=action.id,
                               me=Owner.here(run_id), is_run_over=is_run_over, now=clock.now(),
                               step_key=step_key)
    if not claim.ours:
        owner = claim.holder
        note = ("completed by another run; not run again" if claim.outcome is ClaimOutcome.DONE else
                f"being run by {'run ' + owner.run_id[:8] if owner and owner.run_id else 'another process'}"
                f" (pid {owner.pid if owner else '?'}); not run twice")
        return outcome(ActionStatus.SKIPPED, note, unit_done=True)

    day = unit["date"] if isinstance(unit["date"], date) else date.fromisoformat(str(unit["date"]))

    def dead_letter(error: str) -> None:   # the unit failed: a person sees it in `dlq list` and may retry it
        dead_letters.add(rt.store, dl_id=f"{unit_id}_{position}_{run_id or 'local'}", kind=DeadLetterKind.ACTION,
                         day=day, phase=unit["phase"], work_unit_id=unit_id, action_id=action.id, run_id=run_id,
                         error=error, now=clock.now())

    pays_day, pays_phase = paid_from(rt, unit, budget)
    meter = metered(rt, clock, MeterContext.waiting_for_no_one(
        rt.settings, date=pays_day, phase=pays_phase, category=action.category, priority=action.priority,
        work_unit_id=unit_id, action_id=action.id, run_id=run_id, step_key=step_key, ignore_pause=forced,
        used_when_action_ends=True, tried_before=position in runs))
    earlier = {p: ActionResult.model_validate(runs[p]["result"]) for p in sorted(runs)
               if p < position and runs[p]["result"]}
    previous = list(earlier.values())
    about_day, about_phase = plans.planned_for(rt.store, unit)
    ctx = HandlerContext(action=action, work_unit_id=unit_id, template_id=template.id, focus=unit["focus"],
                         motivation=unit["motivation"], date=day, phase=unit["phase"], about_day=about_day,
                         about_phase=about_phase, now=clock.now(),
                         store=rt.store, llm=meter, settings=rt.settings, registry=rt.registry, previous=previous,
                         log=log)
    try:
        result = resolve_handler(action.handler)(ctx)
    except BudgetRefused as exc:
        # A pause that lands mid-action is a pause like any other, so `resume` takes the unit back;
        # a call waiting for its message batch is taken up when its phase runs again (take_back_waiting).
        kind = {"pause": DeferKind.PAUSED, "batch": DeferKind.BATCH,
                "batch_failed": DeferKind.BATCH_FAILED}.get(exc.scope, DeferKind.BUDGET)
        reason = exc.reason if kind is not DeferKind.BUDGET else f"budget: {exc.reason}"
        finish(ActionStatus.DEFERRED, reason, UnitStatus.DEFERRED, unit_reason=reason, defer_kind=kind,
               cost_usd=meter.cost_usd)
        return outcome(ActionStatus.DEFERRED, reason, meter.cost_usd, unit_done=True)
    except BaseException as exc:  # a handler's failure fails its unit, never the phase
        error = redact(f"{type(exc).__name__}: {exc}"[:1000])
        log(f"{action.id} failed: {error}\n{redact(traceback.format_exc(limit=12))}")   # callers log it at debug
        if not isinstance(exc, KeyboardInterrupt):   # (a person stopping it: a retry keeps them)
            error += _keep_left_over(ctx, earlier, log)
        finish(ActionStatus.FAILED, error, UnitStatus.FAILED, unit_error=f"{action.id}: {error}",
               error=redact(traceback.format_exc(limit=12)), cost_usd=meter.cost_usd)
        dead_letter(error)
        if isinstance(exc, KeyboardInterrupt):   # a person stopping the process: recorded, then stop
            raise
        return outcome(ActionStatus.FAILED, error, meter.cost_usd, unit_done=True)

    result = result.model_copy(update={"usage": dict(zip(
        ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"),
        meter.usage.astuple())), "cost_usd": round(meter.cost_usd, 9), "offline": result.offline or meter.offline})
    status = ActionStatus.COMPLETED if result.success else ActionStatus.FAILED
    done = last or result.abort_sequence or not result.success
    message = result.message
    if not result.success:   # before the steps that own what its earlier ones left: kept now (not what this
        message += _keep_left_over(ctx, earlier, log)   # failed step left: its run again makes it anew)
    elif result.abort_sequence and not last:   # done early: what this step left too
        earlier[position] = result
        message += _keep_left_over(ctx, earlier, log)
        result = earlier[position]
    if not result.success:   # a failure the handler reported: a dead letter as for one it raised
        finish(status, message, UnitStatus.FAILED, unit_error=f"{action.id}: {message}",
               result=result.model_dump(mode="json"), cost_usd=result.cost_usd)
        dead_letter(redact(message[:1000]))
    else:
        finish(status, message, UnitStatus.COMPLETED if done else None,
               unit_reason=f"sequence stopped early by {action.id}" if result.abort_sequence and not last else None,
               result=result.model_dump(mode="json"), cost_usd=result.cost_usd)
    return outcome(status, message, result.cost_usd, unit_done=done)


def _keep_left_over(ctx: HandlerContext, results: dict[int, ActionResult], log) -> str:
    """The unit ends here, before the steps that own what its earlier steps left (handoff.py): that is
    kept now, done and paid for as it is. Returns what to add to the action's message."""
    done, failed = keep_left_over(ctx, results)
    failed = [redact(why)[:300] for why in failed]
    for why in failed:
        log(f"{ctx.action.id}: could not keep what earlier steps left for later ones: {why}")
    return "".join([f"; kept {', '.join(done)} left for later steps" if done else "",
                    f"; could not keep {'; '.join(failed)}" if failed else ""])


def next_position(rt: Runtime, unit: dict) -> int | None:
    """Where a unit resumes: its first action not completed; None when there is nothing to run."""
    if UnitStatus(unit["status"]).final:
        return None
    done = {r["position"] for r in plans.action_runs(rt.store, unit["id"]) if r["status"] == ActionStatus.COMPLETED}
    length = len(rt.registry.templates[unit["template_id"]].action_sequence)
    return next((p for p in range(length) if p not in done), None)


def run_unit(rt: Runtime, unit_id: str, clock: Clock, *, run_id: str | None = None,
             log=lambda msg: None, is_run_over: Callable[[str], bool] = never_over,
             budget: Budget = None) -> list[StepOutcome]:
    """All remaining actions of one unit in order, in this process (journal, memory jobs)."""
    with rt.store.session():
        unit = plans.get_unit(rt.store, unit_id)
        position = next_position(rt, unit) if unit else None
    outcomes: list[StepOutcome] = []
    while position is not None:
        outcome = run_action(rt, unit_id, position, clock, run_id=run_id, log=log, is_run_over=is_run_over,
                             budget=budget)
        outcomes.append(outcome)
        if outcome.unit_done:
            break
        position += 1
    return outcomes


SUMMARISED = (UnitStatus.COMPLETED, UnitStatus.FAILED)


def summarize(rt: Runtime, unit: dict, clock: Clock, run_id: str | None = None,
              is_run_over: Callable[[str], bool] = never_over, budget: Budget = None) -> dict | None:
    """The unit's work summary from its actual action results (a metered fast-tier call), made once:
    claimed per (unit, status), so two runs of a partition never both pay for it. Charged as its actions
    were (`budget`)."""

    if unit["status"] not in SUMMARISED:
        return None
    with rt.store.session():   # its bookkeeping in one open between model calls (metering lets it go for each)
        return _summarize_once(rt, unit, clock, run_id, is_run_over, budget)


def _summarize_once(rt: Runtime, unit: dict, clock: Clock, run_id: str | None,
                    is_run_over: Callable[[str], bool], budget: Budget) -> dict | None:
    key = claims.summary_key(unit["id"], unit["status"])
    taken = claims.claim(rt.store, key, Owner.here(run_id), is_run_over, clock.now())
    if taken.outcome is ClaimOutcome.HELD_ELSEWHERE:
        return None
    summary = None
    try:
        summary = _summarize(rt, unit, clock, run_id, budget)
        record_progress(rt, unit, summary, clock.now())   # the goal it served hears how it went
        return summary
    finally:   # (a run that dies first leaves its batched answer, paid, to the next run's summary)
        # A summary written while its call waited for its batch is written again by the next run.
        again = summary is not None and summary["awaiting_batch"]
        with rt.store.transaction() as conn:
            claims.end(conn, key, ClaimState.RELEASED if again else ClaimState.DONE, clock.now())
            batches.used_by_action(conn, unit["id"], SUMMARY_ACTION_ID)


def summarize_all(rt: Runtime, units: list[dict], clock: Clock, run_id: str | None = None,
                  is_run_over: Callable[[str], bool] = never_over) -> list[dict]:
    """The summaries of a phase's units, made side by side (`llm_concurrency` calls at a time: at night
    their batches run together instead of one after another), returned in the units' order."""
    with ThreadPoolExecutor(max_workers=max(1, min(rt.settings.llm_concurrency, len(units)))) as pool:
        made = list(pool.map(lambda unit: summarize(rt, unit, clock, run_id, is_run_over), units))
    return [summary for summary in made if summary]


def _summarize(rt: Runtime, unit: dict, clock: Clock, run_id: str | None, budget: Budget) -> dict:
    results = [ActionResult.model_validate(r["result"]) for r in plans.action_runs(rt.store, unit["id"])
               if r["result"]]
    pays_day, pays_phase = paid_from(rt, unit, budget)
    llm = metered(rt, clock, MeterContext.waiting_for_no_one(
        rt.settings, date=pays_day, phase=pays_phase, category=unit["category"], priority="high",
        work_unit_id=unit["id"], action_id=SUMMARY_ACTION_ID, run_id=run_id,
        ignore_pause=unit["origin"] == UnitOrigin.FORCED, used_when_action_ends=True,
        tried_before=budget is not None or unit["paid_day"] is not None))   # (funded otherwise than before?)
    return summarize_unit(rt.store, llm, rt.settings, rt.registry, unit, results, clock.now())


def job_unit(rt: Runtime, day: date, phase: str, template_id: str, tag: str, focus: str, now: datetime,
             origin: UnitOrigin = UnitOrigin.JOB) -> str:
    """The unit a job runs; created once per tag, so a re-run resumes it instead of paying twice.
    A job unit deferred earlier (budget, pause) is taken up again: jobs retry their own work (phases
    never re-offer it)."""
    uid = plans.unit_id(day, phase, tag)
    unit = plans.get_unit(rt.store, uid)
    if unit is not None and unit["status"] == UnitStatus.DEFERRED:
        plans.reopen_units(rt.store, [uid])
    if unit is None:
        t = rt.registry.templates[template_id]
        why = f"run by its job: {t.description}" if origin is UnitOrigin.JOB else f"asked for by hand: {t.description}"
        plans.add_manual_unit(rt.store, day=day, phase=phase, tag=tag, now=now, origin=origin, unit=PlannedUnit(
            phase, t.id, t.category, t.priority, focus, why, rt.registry.template_cost(t.id)))
    return uid
