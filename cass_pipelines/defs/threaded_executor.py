"""The executor of every job: Dagster's in-process execution, with steps that are ready at the same
time running side by side on up to `max_concurrent` threads.

A phase's units are independent chains of action steps whose time is mostly spent waiting for the
API; Dagster's in-process executor runs them one after another (a phase of six units at 2 s per call
waited 6 × its calls), and its multiprocess executor starts a process per step (~2 s each here). On
threads, the chains run at once: each action still claims its (unit, position) and reserves and
settles each of its calls on its own in the store, so the ledger and the budget are exactly as
before, and a unit's own actions still run in template order (each step waits for the one before).

Each step runs Dagster's own step sequence (`dagster_event_sequence_for_step`: events, retries,
hooks' inputs, failures) in its thread; the executor's thread alone drives the plan (what is ready,
what a failure skips), as the multiprocess executor does with its children. A termination signal
starts nothing new; steps already running finish (an action in flight is recorded, not cut in half;
one waiting for a batch stops waiting, services/stopping.py), then the run stops as interrupted.

Uses Dagster's plan internals (`dagster._core`): dagster is pinned to 1.13.x in pyproject.toml.
"""
from __future__ import annotations

import contextvars
import os
import queue
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import cast

import dagster as dg
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.api import ExecuteRunWithPlanIterable
from dagster._core.execution.compute_logs import create_compute_log_file_key
from dagster._core.execution.context.system import PlanExecutionContext, PlanOrchestrationContext, StepExecutionContext
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan.execute_plan import _trigger_hook, dagster_event_sequence_for_step
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.retries import RetryMode, get_retries_config
from dagster._core.executor.base import Executor

from cass_pipelines.services import stopping

DEFAULT_MAX_CONCURRENT = 8
POLL_S = 0.2       # the longest the executor's thread waits for a step's event before looking around
_DONE = object()   # a step's thread has yielded its last event


class ThreadedExecutor(Executor):
    def __init__(self, retries: RetryMode, max_concurrent: int):
        self._retries = retries
        self.max_concurrent = max_concurrent

    @property
    def retries(self) -> RetryMode:
        return self._retries

    def execute(self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan) -> Iterator[DagsterEvent]:
        keys = execution_plan.step_keys_to_execute
        yield DagsterEvent.engine_event(
            plan_context, f"Executing steps in process (pid: {os.getpid()}), up to {self.max_concurrent} at once",
            event_specific_data=EngineEventData.in_process(os.getpid(), keys))
        yield from iter(ExecuteRunWithPlanIterable(
            execution_plan=plan_context.execution_plan,
            iterator=self._iterate,
            execution_context_manager=PlanExecutionContextManager(
                job=plan_context.job, retry_mode=plan_context.retry_mode, execution_plan=plan_context.execution_plan,
                run_config=plan_context.run_config, dagster_run=plan_context.dagster_run,
                instance=plan_context.instance, raise_on_error=plan_context.raise_on_error,
                output_capture=plan_context.output_capture)))
        yield DagsterEvent.engine_event(plan_context, f"Finished steps in process (pid: {os.getpid()})",
                                        event_specific_data=EngineEventData.in_process(os.getpid(), keys))

    def _iterate(self, job_context: PlanExecutionContext, execution_plan: ExecutionPlan) -> Iterator[DagsterEvent]:
        """Dagster's `inner_plan_execution_iterator`, with each ready step handed to a thread."""
        logs = job_context.instance.compute_log_manager
        step_keys = [step.key for step in execution_plan.get_steps_to_execute_in_topo_order()]
        with ExitStack() as stack:
            concurrency = stack.enter_context(InstanceConcurrencyContext(job_context.instance, job_context.dagster_run))
            active = stack.enter_context(execution_plan.start(
                retry_mode=job_context.retry_mode, max_concurrent=self.max_concurrent,
                instance_concurrency_context=concurrency, step_dependency_config=job_context.step_dependency_config))
            log_key = logs.build_log_key_for_run(job_context.run_id, create_compute_log_file_key())
            log_context = stack.enter_context(logs.capture_logs(log_key))
            yield DagsterEvent.capture_logs(job_context, step_keys, log_key, log_context)
            # Last in, first out: the pool is shut down (its running steps waited for) before the log
            # capture and the plan close, whatever ends the loop.
            stopping.clear()
            stack.callback(stopping.clear)   # after the pool's exit below: once its threads are done
            pool = stack.enter_context(ThreadPoolExecutor(self.max_concurrent, thread_name_prefix="cass-step"))
            stack.callback(stopping.request)   # however the loop ends, before the pool waits for its steps
            events: queue.SimpleQueue = queue.SimpleQueue()
            running: dict[str, _Running] = {}   # step key -> its submission (one at a time per key)
            stop = False
            while running or (not stop and not active.is_complete):
                if not stop and active.check_for_interrupts():
                    stop = True
                    stopping.request()   # a step waiting for a batch stops waiting (collected when it ends)
                    active.mark_interrupted()
                    yield DagsterEvent.engine_event(
                        job_context, "Termination requested: no new step starts; waiting for the running ones",
                        EngineEventData.interrupted(list(running)))
                if not stop:
                    for step in active.get_steps_to_execute(limit=self.max_concurrent - len(running)):
                        step_context = job_context.for_step(step, active.get_known_state())
                        running[step.key] = _Running(step_context)
                        # In the run's context: Dagster's partition loading context (execution.execute
                        # ends partitions by CASS_NOW) is a context variable, which a new thread lacks.
                        pool.submit(contextvars.copy_context().run, _run_step, step.key, step_context, events)
                    yield from active.concurrency_event_iterator(job_context)
                if not running:
                    if not stop:
                        active.sleep_til_ready()
                    continue
                try:   # not blocking: a termination, a retry's delay or a pool's free slot is seen meanwhile
                    key, item = events.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if isinstance(item, BaseException):
                    raise item
                run = running[key]
                if item is not _DONE:
                    run.events.append(item)
                    yield item
                    if item.is_step_up_for_retry:   # re-queued once this attempt's thread is done, not before
                        run.retry = item
                    else:
                        active.handle_event(item)
                    continue
                del running[key]
                if run.retry is not None:
                    active.handle_event(run.retry)
                active.verify_complete(job_context, key)
                for event in active.plan_events_iterator(job_context):
                    run.events.append(event)
                    yield event
                yield from _trigger_hook(run.context, run.events)
            if stop:
                raise DagsterExecutionInterruptedError()


@dataclass
class _Running:
    """A step's attempt on a thread: its context, its events so far, and its retry event (if it asked
    for one), handled when the thread is done so that the next attempt never overlaps this one."""
    context: StepExecutionContext
    events: list[DagsterEvent] = field(default_factory=list)
    retry: DagsterEvent | None = None


def _run_step(key: str, step_context, events: queue.SimpleQueue) -> None:
    """One step's whole event sequence, posted to the executor's thread (which logs nothing twice:
    Dagster stores each event when it is created, here)."""
    try:
        for event in dagster_event_sequence_for_step(step_context):
            events.put((key, event))
    except BaseException as exc:   # noqa: BLE001 - re-raised in the executor's thread
        events.put((key, exc.with_traceback(sys.exc_info()[2])))
        return
    events.put((key, _DONE))


@dg.executor(name="threads", config_schema={
    "retries": get_retries_config(),
    "max_concurrent": dg.Field(int, default_value=DEFAULT_MAX_CONCURRENT, is_required=False,
                               description="Steps running at once (a phase's units run side by side)."),
})
def threaded_executor(init_context: dg.InitExecutorContext) -> ThreadedExecutor:
    config = init_context.executor_config
    retries = RetryMode.from_config(cast("dict", config["retries"])) or RetryMode.ENABLED   # the schema's default
    return ThreadedExecutor(retries=retries, max_concurrent=max(1, cast("int", config["max_concurrent"])))
