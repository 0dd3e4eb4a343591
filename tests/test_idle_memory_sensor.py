"""idle_memory_sensor asks for memory_job when conversations went idle with unsummarised messages."""
import dagster as dg

from cass_pipelines.definitions import build_defs
from cass_pipelines.services.runtime import open_runtime


def evaluate(defs):
    sensor = defs.resolve_sensor_def("idle_memory_sensor")
    with dg.DagsterInstance.ephemeral() as instance:
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
