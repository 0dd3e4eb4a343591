"""Retrying a dead letter: the failed work runs again through the same claim and the same budget
(charged to the budget day it runs on). Retrying work that has since succeeded does nothing and
says so; a retry that fails again leaves a new dead letter of its own."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Callable

from cass_pipelines.domain.clock import Clock
from cass_pipelines.domain.phases import phase_at
from cass_pipelines.domain.registry import SUMMARY_RETRY_TEMPLATE
from cass_pipelines.domain.states import DeadLetterKind, DeadLetterState, RetryStatus, UnitStatus
from cass_pipelines.services.runner import job_unit, run_unit, summarize
from cass_pipelines.services.runtime import Runtime
from cass_pipelines.store import dead_letters, failures, memory, plans
from cass_pipelines.store.claims import never_over


@dataclass(frozen=True)
class RetryOutcome:
    dead_letter_id: str
    status: RetryStatus
    message: str
    work_unit_id: str | None = None

    def as_dict(self) -> dict:
        return {**self.__dict__, "status": self.status.value}


def retry_dead_letter(rt: Runtime, dl_id: str, clock: Clock, *, run_id: str | None = None,
                      is_run_over: Callable[[str], bool] = never_over, log=lambda msg: None) -> RetryOutcome:
    letter = dead_letters.get(rt.store, dl_id)
    if letter is None:
        return RetryOutcome(dl_id, RetryStatus.NOTHING_TO_DO, f"no dead letter {dl_id!r} (see `cass-pipelines dlq list`)")
    if letter["state"] != DeadLetterState.OPEN.value:
        return RetryOutcome(dl_id, RetryStatus.NOTHING_TO_DO, f"dead letter {dl_id} is already {letter['state']}")
    today = phase_at(clock.now(), rt.settings)[0]
    if letter["kind"] == DeadLetterKind.CONVERSATION.value:
        return _retry_conversation(rt, letter, clock, today, run_id, is_run_over, log)
    return _retry_unit(rt, letter, clock, today, run_id, is_run_over, log)


def _close(rt: Runtime, letter: dict, state: DeadLetterState, status: RetryStatus, message: str, clock: Clock,
           unit_id: str | None) -> RetryOutcome:
    dead_letters.set_state(rt.store, letter["id"], state, message, clock.now())
    return RetryOutcome(letter["id"], status, message, unit_id)


def _retry_unit(rt: Runtime, letter: dict, clock: Clock, today: date, run_id, is_run_over, log) -> RetryOutcome:
    uid = letter["work_unit_id"]
    unit = plans.get_unit(rt.store, uid)
    if unit is None:
        return _close(rt, letter, DeadLetterState.DISCARDED, RetryStatus.NOTHING_TO_DO,
                      f"work unit {uid} no longer exists", clock, uid)
    if unit["status"] == UnitStatus.COMPLETED:
        return _close(rt, letter, DeadLetterState.RESOLVED, RetryStatus.NOTHING_TO_DO,
                      f"nothing to do: unit {uid} has since completed", clock, uid)
    if unit["status"] == UnitStatus.DEFERRED and unit["reoffered_as"]:   # its work goes on as another unit
        return _close(rt, letter, DeadLetterState.RESOLVED, RetryStatus.NOTHING_TO_DO,
                      f"nothing to do: unit {uid} was offered again as {unit['reoffered_as']}", clock, uid)
    if unit["status"] == UnitStatus.SUPERSEDED:   # a later unit did its work (the reason names it)
        return _close(rt, letter, DeadLetterState.RESOLVED, RetryStatus.NOTHING_TO_DO,
                      f"nothing to do: unit {uid} was {unit['reason']}", clock, uid)
    if unit["status"] == UnitStatus.FAILED:
        plans.reopen_failed(rt.store, uid, f"retry of dead letter {letter['id']}", clock.now())
    elif unit["status"] == UnitStatus.DEFERRED:   # an earlier retry was deferred (a pause, money): again now
        plans.reopen_units(rt.store, [uid])
    now_at = phase_at(clock.now(), rt.settings)   # paid from the day and as the phase it runs in
    outcomes = run_unit(rt, uid, clock, run_id=run_id, log=log, is_run_over=is_run_over, budget=now_at)
    unit = plans.get_unit(rt.store, uid)
    if unit and unit["status"] == UnitStatus.COMPLETED:
        summarize(rt, unit, clock, run_id, budget=now_at)
        return _close(rt, letter, DeadLetterState.RETRIED, RetryStatus.SUCCEEDED,
                      f"retried: unit {uid} completed ({len(outcomes)} action(s) run)", clock, uid)
    why = unit["error"] or unit["reason"] or unit["status"]
    if unit["status"] == UnitStatus.FAILED:   # the new failure has its own dead letter; this one is done with
        return _close(rt, letter, DeadLetterState.RETRIED, RetryStatus.FAILED, f"retried: failed again: {why}",
                      clock, uid)
    return RetryOutcome(letter["id"], RetryStatus.FAILED, f"not run now ({unit['status']}): {why}", uid)


def _retry_conversation(rt: Runtime, letter: dict, clock: Clock, today: date, run_id, is_run_over,
                        log) -> RetryOutcome:
    cid = letter["item_id"]
    if memory.conversation(rt.store, cid) is None:
        return _close(rt, letter, DeadLetterState.DISCARDED, RetryStatus.NOTHING_TO_DO,
                      f"conversation {cid} no longer exists", clock, None)
    if not memory.unsummarized(rt.store, [cid])[cid][0]:
        failures.clear(rt.store, "conversation", cid)
        return _close(rt, letter, DeadLetterState.RESOLVED, RetryStatus.NOTHING_TO_DO,
                      f"nothing to do: conversation {cid} has since been summarised", clock, None)
    failures.clear(rt.store, "conversation", cid)   # a fresh start: it may fail its attempts again
    now = clock.now()
    uid = job_unit(rt, today, phase_at(now, rt.settings)[1], SUMMARY_RETRY_TEMPLATE,
                   f"dlq{now:%H%M%S%f}", cid, now)
    run_unit(rt, uid, clock, run_id=run_id, log=log, is_run_over=is_run_over, budget=(today, phase_at(now, rt.settings)[1]))
    if not memory.unsummarized(rt.store, [cid])[cid][0]:
        return _close(rt, letter, DeadLetterState.RETRIED, RetryStatus.SUCCEEDED,
                      f"retried: conversation {cid} summarised", clock, uid)
    unit = plans.get_unit(rt.store, uid)
    return _close(rt, letter, DeadLetterState.RETRIED, RetryStatus.FAILED,
                  f"retried: conversation {cid} still not summarised: {unit['error'] or unit['reason'] or ''}",
                  clock, uid)
