"""A backfill's runs start in day and phase order, whatever order the backfill submits them in and
whenever the queue daemon looks: Dagster submits a backfill's runs alphabetically by partition key
(afternoon, evening, morning, night), one by one, while the daemon dequeues every few seconds.

The shipped dagster.yaml on a real instance, the coordinator of run_queue.py, and the queue daemon's
own choice of what to launch (`_get_runs_to_dequeue`). bench/bench_backfill.py measures the same with a
live webserver, daemon and a backfill launched through the UI's GraphQL API."""
from datetime import timedelta

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.storage.tags import BACKFILL_ID_TAG
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from support import NOW, SAMPLE_DAY

from cass_pipelines.domain.categories import PHASES
from cass_pipelines.domain.states import QueueHold
from cass_pipelines.run_queue import HOLD_TAG, key_priority, releasable

DAYS = [SAMPLE_DAY, SAMPLE_DAY + timedelta(days=1)]
IN_DAY_ORDER = [f"{d}|{p}" for d in DAYS for p in PHASES]
AS_SUBMITTED = sorted(IN_DAY_ORDER)              # what Dagster's backfills do: by partition key
PHASE_ASSETS = [dg.AssetKey(k) for k in ("phase_plan", "phase_work", "work_summaries", "cost_records")]


@pytest.fixture
def queue(cass_env):
    from cass_pipelines.config.registry import load_registry
    from cass_pipelines.config.settings import load_settings
    from cass_pipelines.definitions import build_defs
    from cass_pipelines.execution import instance_for, prepare_instance

    settings = load_settings()
    prepare_instance(settings)          # what `init` does to the instance
    return instance_for(settings), build_defs(settings, load_registry(None))


def add_backfill(instance, defs, kind: str) -> str:
    if kind == "job":    # the phase_job's Partitions tab
        backfill = PartitionBackfill("bf_job", status=BulkActionStatus.REQUESTED, from_failure=False, tags={},
                                     backfill_timestamp=NOW.timestamp(), partition_names=AS_SUBMITTED)
    else:                # the asset graph's Materialize: the daemon stores what it is about to submit first
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id="bf_assets", asset_graph=defs.resolve_asset_graph(), backfill_timestamp=NOW.timestamp(),
            tags={}, asset_selection=PHASE_ASSETS, partition_names=AS_SUBMITTED, dynamic_partitions_store=instance,
            all_partitions=False, title=None, description=None, run_config=None)
        requests = [dg.RunRequest(partition_key=k, asset_selection=PHASE_ASSETS) for k in AS_SUBMITTED]
        backfill = backfill.with_submitting_run_requests(requests, [f"r{n}" for n in range(len(requests))])
    instance.add_backfill(backfill)
    return backfill.backfill_id


def submit(instance, defs, key: str, backfill_id: str | None) -> dg.DagsterRun:
    from cass_pipelines.execution import job_origins

    job = defs.resolve_job_def("phase_job")
    day, phase = key.split("|")
    tags = {**job.partitions_def.get_tags_for_partition_key(dg.MultiPartitionKey({"date": day, "phase": phase})),
            **({BACKFILL_ID_TAG: backfill_id} if backfill_id else {})}
    remote_origin, python_origin = job_origins("phase_job")
    run = instance.create_run_for_job(job_def=job, tags=tags, remote_job_origin=remote_origin,
                                      job_code_origin=python_origin)
    return instance.submit_run(run.run_id, workspace=None)


def daemon_picks(instance) -> list[str]:
    """The partitions the queue daemon would launch now, in its order."""
    daemon = QueuedRunCoordinatorDaemon(interval_seconds=5)
    return [r.tags.get("dagster/partition", r.job_name) for r in
            daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), fixed_iteration_time=None)]


@pytest.mark.parametrize("kind", ["job", "asset"])
def test_a_backfill_starts_in_day_order_whenever_the_daemon_looks(queue, kind):
    instance, defs = queue
    backfill_id = add_backfill(instance, defs, kind)
    seen = []
    for key in AS_SUBMITTED:
        submit(instance, defs, key, backfill_id)
        seen.append(daemon_picks(instance))
    # Before the first day's morning is queued nothing may start; from then on only it, the earliest.
    first = IN_DAY_ORDER[0]
    assert seen[:AS_SUBMITTED.index(first)] == [[]] * AS_SUBMITTED.index(first)
    assert all(picks == [first] for picks in seen[AS_SUBMITTED.index(first):])
    runs = instance.get_runs(dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill_id}))
    assert {r.tags[HOLD_TAG] for r in runs} == {QueueHold.READY}     # all released once all are queued
    # The daemon then launches one run at a time (pool cass_store, one per date), in day order.
    started = []
    while picks := daemon_picks(instance):
        assert len(picks) == 1
        started.append(picks[0])
        [run] = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": picks[0]}))
        instance.report_run_failed(run)                  # done: the next one may go
    assert started == IN_DAY_ORDER


def test_runs_outside_a_backfill_are_never_held(queue):
    instance, defs = queue
    run = submit(instance, defs, f"{SAMPLE_DAY}|afternoon", None)   # a schedule's or the launchpad's run
    assert HOLD_TAG not in run.tags
    assert daemon_picks(instance) == [f"{SAMPLE_DAY}|afternoon"]


def test_a_held_run_waits_only_for_earlier_targets():
    morning, afternoon, night = (key_priority(f"2026-11-20|{p}") for p in ("morning", "afternoon", "night"))
    journal, next_morning = key_priority("2026-11-20"), key_priority("2026-11-21|morning")
    assert morning > afternoon > night > journal > next_morning         # higher starts first
    targets = {morning, afternoon, night}
    assert not releasable(afternoon, {afternoon}, targets)              # its morning has no run yet
    assert releasable(afternoon, {afternoon, morning}, targets)
    assert releasable(morning, {afternoon}, targets)                    # nothing before it
    assert releasable(night, {night}, set())                            # the backfill submitted everything
    assert releasable(next_morning, {next_morning, morning, afternoon, night}, targets | {next_morning})


def test_a_manual_run_and_a_phase_run_take_turns_on_the_store(queue):
    """manual_work_job (trigger, the launchpad) is in pool cass_store like the phase runs: the queue
    starts one of them at a time, whatever their dates."""
    from cass_pipelines.execution import job_origins

    instance, defs = queue
    submit(instance, defs, f"{SAMPLE_DAY}|morning", None)
    job = defs.resolve_job_def("manual_work_job")
    remote_origin, python_origin = job_origins("manual_work_job")
    config = {"ops": {"start_manual_work": {"config": {"template_id": "reflection_block", "focus": "f"}}}}
    run = instance.create_run_for_job(job_def=job, run_config=config, remote_job_origin=remote_origin,
                                      job_code_origin=python_origin)
    instance.submit_run(run.run_id, workspace=None)
    assert len(daemon_picks(instance)) == 1
