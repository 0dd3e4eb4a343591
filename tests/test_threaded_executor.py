"""The executor of every job (cass_pipelines/defs/threaded_executor.py): ready steps run side by side on
threads, up to the limit; a step waits for the steps it depends on; a failure skips its followers and
the rest of the run goes on. Runs go through Dagster's own execute_run on a real SQLite instance, as
the CLI's runs do (`execute_in_process` would swap in its own executor)."""
import os
import signal
import threading
import time
from pathlib import Path

import dagster as dg
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import execute_run
from support import SAMPLE_DAY

from cass_pipelines.cli.main import main
from cass_pipelines.defs.threaded_executor import threaded_executor

WAIT_S = 10.0   # how long a step waits to meet another (only ever reached when steps do not overlap)


def run(job: dg.JobDefinition, instance: dg.DagsterInstance):
    return execute_run(InMemoryJob(job), instance.create_run_for_job(job_def=job), instance)


def step_times(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict[str, float]]:
    times: dict[str, dict[str, float]] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event and event.step_key and event.event_type_value in ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE"):
            times.setdefault(event.step_key, {})[event.event_type_value] = entry.timestamp
    return times


def test_ready_steps_run_side_by_side_up_to_the_limit(cass_env):
    """Three independent steps, two at a time: the first two meet (each waits for the other to be in
    flight), the third runs after, and never are three in flight."""
    lock, met = threading.Lock(), threading.Event()
    in_flight, most = [0], [0]

    @dg.op(out=dg.Out(dg.Nothing))
    def meet(context: dg.OpExecutionContext) -> None:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            if in_flight[0] == 2:
                met.set()
        met.wait(WAIT_S)
        time.sleep(0.05)   # a third step would be in flight now if the limit let it start
        with lock:
            in_flight[0] -= 1

    @dg.job(executor_def=threaded_executor.configured({"max_concurrent": 2}))
    def three():
        for name in ("a", "b", "c"):
            meet.alias(name)()

    with dg.DagsterInstance.get() as instance:
        result = run(three, instance)
    assert result.success
    assert met.is_set() and most[0] == 2


def test_a_step_waits_for_its_upstream_and_a_failure_stops_only_its_followers(cass_env):
    order: list[str] = []

    @dg.op(out=dg.Out(dg.Nothing))
    def fails() -> None:
        order.append("fails")
        raise ValueError("the handler broke: unit u1")

    @dg.op(ins={"after": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing))
    def after_failure() -> None:
        order.append("after_failure")

    @dg.op(out=dg.Out(dg.Nothing))
    def first() -> None:
        time.sleep(0.05)
        order.append("first")

    @dg.op(ins={"after": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing))
    def second() -> None:
        order.append("second")

    @dg.job(executor_def=threaded_executor.configured({"max_concurrent": 4}))
    def chains():
        after_failure(fails())
        second(first())

    with dg.DagsterInstance.get() as instance:
        result = run(chains, instance)
        events = instance.all_logs(result.run_id)
    assert not result.success
    assert order.index("first") < order.index("second") and "after_failure" not in order
    by_step = {(e.dagster_event.step_key, e.dagster_event.event_type_value) for e in events
               if e.dagster_event and e.dagster_event.step_key}
    assert {("second", "STEP_SUCCESS"), ("fails", "STEP_FAILURE")} <= by_step
    assert not {kind for step, kind in by_step if step == "after_failure"}   # never started: abandoned
    assert any("Dependencies for step after_failure failed" in e.message for e in events)
    failure = next(e.dagster_event for e in events if e.dagster_event and e.dagster_event.is_step_failure)
    assert "the handler broke: unit u1" in failure.step_failure_data.error.to_string()


def afternoon_chains(concurrency: int | None) -> list[list[dict[str, float]]]:
    """Run the sample's afternoon through `run-phase` (with `step_concurrency` set in cass.toml, if given);
    each unit's action steps in order, with their start and end times."""
    if concurrency is not None:
        config = Path(os.environ["CASS_HOME"]) / "cass.toml"
        config.write_text(f"step_concurrency = {concurrency}\n" + config.read_text(encoding="utf-8"), encoding="utf-8")
    assert main(["run-phase", "afternoon", "--date", SAMPLE_DAY.isoformat()]) == 0
    with dg.DagsterInstance.get() as instance:
        times = step_times(instance, instance.get_runs(limit=1)[0].run_id)
    units: dict[str, dict[int, dict[str, float]]] = {}
    for key, t in times.items():
        if ".action_" in key:
            assert t.get("STEP_SUCCESS"), key
            k = int(key.split(".action_")[1].split("_of_")[0])
            units.setdefault(key.split("[")[1], {})[k] = t
    for chain in units.values():
        assert sorted(chain) == list(range(1, len(chain) + 1))
    return [[chain[k] for k in sorted(chain)] for chain in units.values()]


def test_a_phases_units_run_side_by_side_each_in_template_order(sample_home, capsys):
    """The default: the units' first actions all start before any of them ends; within a unit, action
    k+1 starts after action k ended."""
    chains = afternoon_chains(None)
    assert len(chains) >= 2
    firsts = [chain[0] for chain in chains]
    assert max(t["STEP_START"] for t in firsts) < min(t["STEP_SUCCESS"] for t in firsts)
    for chain in chains:
        assert all(b["STEP_START"] >= a["STEP_SUCCESS"] for a, b in zip(chain, chain[1:]))


def test_step_concurrency_1_runs_one_step_at_a_time(sample_home, capsys):
    steps = sorted((t for chain in afternoon_chains(1) for t in chain), key=lambda t: t["STEP_START"])
    assert len(steps) >= 2
    assert all(b["STEP_START"] >= a["STEP_SUCCESS"] for a, b in zip(steps, steps[1:]))


def test_a_step_retried_while_others_run_runs_again_after_its_first_attempt(cass_env):
    """A retry policy's second attempt starts only once the first attempt's thread is done, and the run
    goes on around it (two submissions of one step never overlap)."""
    attempts: list[int] = []

    @dg.op(out=dg.Out(dg.Nothing), retry_policy=dg.RetryPolicy(max_retries=2))
    def flaky(context: dg.OpExecutionContext) -> None:
        attempts.append(context.retry_number)
        if context.retry_number == 0:
            raise ValueError("the API hiccupped")

    @dg.op(out=dg.Out(dg.Nothing))
    def slow() -> None:
        time.sleep(0.5)

    @dg.op(ins={"after": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing))
    def after_flaky() -> None:
        attempts.append(-1)

    @dg.job(executor_def=threaded_executor.configured({"max_concurrent": 4}))
    def retried():
        after_flaky(flaky())
        slow()

    with dg.DagsterInstance.get() as instance:
        result = run(retried, instance)
        events = [e.dagster_event.event_type_value for e in instance.all_logs(result.run_id)
                  if e.dagster_event and e.dagster_event.step_key == "flaky"]
    assert result.success
    assert attempts == [0, 1, -1]
    assert events.count("STEP_UP_FOR_RETRY") == 1 and events.count("STEP_SUCCESS") == 1


class EndsNever:
    """A Message Batches API whose batch is still processing whenever it is looked at."""
    looks = 0

    def submit_batch(self, items):
        return "batch_1"

    def collect_batch(self, batch_id, items):
        self.looks += 1
        return None


def test_a_termination_starts_no_new_step_and_a_step_waiting_for_a_batch_stops_waiting(cass_env):
    """SIGINT (Dagster's termination) while one step waits for a batch (for up to a minute) and another
    is about to follow: the wait ends within a look, the follower never starts, the run ends interrupted,
    and the next run starts with no stop pending."""
    from cass_pipelines.llm.base import BatchItem, LLMRequest
    from cass_pipelines.services import stopping
    from cass_pipelines.services.batch_window import BatchWindow

    waited: list[tuple[object, float]] = []

    @dg.op(out=dg.Out(dg.Nothing))
    def waits_for_batch() -> None:
        window = BatchWindow(EndsNever(), poll_s=5.0)
        item = BatchItem("c1", LLMRequest(tier="fast", system_prefix="", prompt="x", max_tokens=10), None)
        window.expect()
        batch_id = window.send(item).batch_id
        started = time.monotonic()
        os.kill(os.getpid(), signal.SIGINT)   # what the run worker gets when the run is terminated
        waited.append((window.answer(batch_id, item, started + 60.0), time.monotonic() - started))

    @dg.op(ins={"after": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing))
    def follower() -> None:
        waited.append(("follower ran", 0.0))

    @dg.job(executor_def=threaded_executor.configured({"max_concurrent": 2}))
    def interrupted():
        follower(waits_for_batch())

    with dg.DagsterInstance.get() as instance:
        result = run(interrupted, instance)
        messages = [e.message for e in instance.all_logs(result.run_id)]
    assert not result.success
    [(answer, seconds)] = waited
    assert answer is None and seconds < 5.0
    assert any("Termination requested" in m for m in messages)
    assert not stopping.requested()
