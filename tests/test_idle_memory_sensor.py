"""idle_memory_sensor asks for memory_job when conversations went idle with unsummarised messages."""
from contextlib import nullcontext

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG
from dagster._core.test_utils import create_run_for_test

from cass_pipelines.definitions import build_defs
from cass_pipelines.services.runtime import open_runtime


def evaluate(defs, instance: dg.DagsterInstance | None = None):
    sensor = defs.resolve_sensor_def("idle_memory_sensor")
    with dg.DagsterInstance.ephemeral() if instance is None else nullcontext(instance) as instance:
        with dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def(),
                                     resources=defs.resources) as ctx:
            return sensor.evaluate_tick(ctx)


def test_requests_memory_job_for_idle_conversations_then_skips_once_summarised(sample_home):
    rt = open_runtime()
    defs = build_defs(rt.settings, rt.registry)
    result = evaluate(defs)
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    assert request.run_key.startswith("memory|")
    assert int(request.tags["cass/conversations"]) > 0
    # The same idle batch gives the same run key: Dagster launches it once.
    assert evaluate(defs).run_requests[0].run_key == request.run_key

    job = defs.resolve_job_def("memory_job")
    for _ in range(5):   # each run summarises a bounded batch
        assert job.execute_in_process(instance=dg.DagsterInstance.get()).success
        result = evaluate(defs)
        if not result.run_requests:
            break
    assert not result.run_requests
    assert "no idle conversations" in result.skip_message


def test_a_catchup_left_waiting_is_run_once_even_with_nothing_idle(sample_home):
    from datetime import datetime, timezone

    from cass_pipelines.services.runner import job_unit
    from cass_pipelines.store import plans

    rt = open_runtime()
    defs = build_defs(rt.settings, rt.registry)
    job = defs.resolve_job_def("memory_job")
    for _ in range(5):   # everything summarised: nothing idle
        assert job.execute_in_process(instance=dg.DagsterInstance.get()).success
        if not evaluate(defs).run_requests:
            break
    # A run died mid-catch-up: recovery put its unit back to planned (its paid answers wait for its end).
    now = datetime(2026, 11, 20, 9, tzinfo=timezone.utc)
    uid = job_unit(rt, now.date(), "morning", "conversation_catchup", "mem_dead_run", "idle conversations", now)
    request = evaluate(defs).run_requests[0]
    assert request.run_key == f"memory|waiting|{uid}" and request.tags["cass/catchup"] == uid
    assert job.execute_in_process(instance=dg.DagsterInstance.get()).success   # it takes the unit up and ends it
    assert plans.get_unit(rt.store, uid)["status"] == "completed"
    assert "no idle conversations" in evaluate(defs).skip_message


def test_idle_conversations_whose_memory_run_failed_are_asked_for_again_up_to_three_times(sample_home):
    """Dagster never launches a run key twice, whatever its run became: after a failed memory run (an API
    outage), the same idle conversations are asked for under a new key, three times at most, then the tick
    says to run it by hand."""
    rt = open_runtime()
    defs, instance = build_defs(rt.settings, rt.registry), dg.DagsterInstance.get()
    keys = []
    for _ in range(3):
        [request] = evaluate(defs, instance).run_requests
        assert request.run_key not in keys
        keys.append(request.run_key)
        # The daemon launched it; it failed before summarising anything.
        create_run_for_test(instance, job_name="memory_job", status=dg.DagsterRunStatus.FAILURE,
                            tags={**request.tags, RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: "idle_memory_sensor"})
    assert keys[1:] == [f"{keys[0]}|retry 1", f"{keys[0]}|retry 2"]
    given_up = evaluate(defs, instance)
    assert not given_up.run_requests and "failed 3 times" in given_up.skip_message


def test_no_second_memory_run_while_a_retry_or_re_execution_of_the_failed_one_is_queued(sample_home):
    """A daemon retry (dagster.yaml: a run whose worker crashed) or a UI re-execution copies the failed run's
    tags: while it is queued or running, the sensor does not ask for the same work under a new key."""
    from dagster._core.storage.tags import PARENT_RUN_ID_TAG

    from cass_pipelines.execution import job_origins

    rt = open_runtime()
    defs, instance = build_defs(rt.settings, rt.registry), dg.DagsterInstance.get()
    [request] = evaluate(defs, instance).run_requests
    failed = create_run_for_test(instance, job_name="memory_job", status=dg.DagsterRunStatus.FAILURE,
                                 tags={**request.tags, RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: "idle_memory_sensor"})
    retry = create_run_for_test(instance, job_name="memory_job", status=dg.DagsterRunStatus.QUEUED,
                                tags={**request.tags, PARENT_RUN_ID_TAG: failed.run_id},
                                remote_job_origin=job_origins("memory_job")[0])
    waiting = evaluate(defs, instance)
    assert not waiting.run_requests and "queued or running" in waiting.skip_message
    instance.report_run_canceled(retry)
    assert [r.run_key for r in evaluate(defs, instance).run_requests] == [f"{request.run_key}|retry 1"]


def test_memory_paused_asks_for_no_run_and_the_backlog_is_asked_for_again_once_resumed(sample_home):
    """While memory is paused the tick asks for nothing and says why. A run launched just before the pause
    leaves its catch-up deferred as paused: once the pause is lifted, the same idle conversations are asked
    for under a new key (Dagster never launches a key twice), and that run summarises them."""
    from cass_pipelines.cli.main import main
    from cass_pipelines.services.handlers.memory import waiting_catchup

    rt = open_runtime()
    defs, instance = build_defs(rt.settings, rt.registry), dg.DagsterInstance.get()
    [first] = evaluate(defs, instance).run_requests
    assert main(["pause", "--category", "memory", "--reason", "moving house"]) == 0
    paused = evaluate(defs, instance)
    assert not paused.run_requests and "paused: moving house" in paused.skip_message
    # The run asked for before the pause starts now: its catch-up is deferred by the pause.
    job = defs.resolve_job_def("memory_job")
    assert job.execute_in_process(instance=instance, tags={RUN_KEY_TAG: first.run_key}).success
    assert waiting_catchup(rt.store)["defer_kind"] == "paused"
    assert main(["resume", "--category", "memory"]) == 0
    [again] = evaluate(defs, instance).run_requests
    assert again.run_key != first.run_key
    assert job.execute_in_process(instance=instance, tags={RUN_KEY_TAG: again.run_key}).success
    assert waiting_catchup(rt.store) is None
    assert rt.store.scalar("SELECT count(*) FROM conversation_summaries") > 0
