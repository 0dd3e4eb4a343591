"""The shipped dagster.yaml, the instance `init` creates, CLI runs under their job, the queue's order,
in-process execution for the UI's jobs, observations of the source assets, and history bounded by the
partition's date. Real Dagster instances (SQLite) and real DuckDB files throughout."""
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.tags import PRIORITY_TAG, REPOSITORY_LABEL_TAG
from dagster._core.workspace.load import location_origins_from_yaml_paths
from sqlalchemy import event as sqlalchemy_event

from cass_pipelines.cli.main import main
from cass_pipelines.compute_logs import TeeComputeLogManager, tee
from cass_pipelines.event_log import KEPT_RUN_SHARDS, PooledSqliteEventLogStorage
from cass_pipelines.execution import EARLIER_DAGSTER_YAMLS, SHIPPED_DAGSTER_YAML, install_dagster_yaml
from cass_pipelines.run_queue import PhaseOrderedRunCoordinator, queue_priority

ROOT = Path(__file__).resolve().parent.parent
from support import SAMPLE_DAY, dead_pid, started_run

DAY = SAMPLE_DAY
LEGACY = """\
# Written by cass-pipelines. Runs sharing the DuckDB file are serialised by one pool slot
# (enforced by the run queue for daemon-launched runs); telemetry stays off.
concurrency:
  pools:
    default_limit: 1
    granularity: run
telemetry:
  enabled: false
"""


def test_init_installs_the_shipped_dagster_yaml_and_creates_the_instance(cass_env, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME")            # default: the instance lives in CASS_HOME/dagster
    assert main(["init", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    home = tmp_path / "cass" / "dagster"
    assert out["dagster_home"] == str(home) and out["dagster_yaml"] == "installed"
    assert (home / "dagster.yaml").read_text() == SHIPPED_DAGSTER_YAML.read_text()
    assert (home / "history" / "runs.db").exists()           # storage created by init, not by the first run
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_coordinator, PhaseOrderedRunCoordinator)
        queue = instance.get_concurrency_config().run_queue_config
        limits = {(lim["key"], json.dumps(lim.get("value"))): lim["limit"] for lim in queue.tag_concurrency_limits}
        assert limits == {("dagster/partition", '{"applyLimitPerUniqueValue": true}'): 1,
                          ("dagster/partition/date", '{"applyLimitPerUniqueValue": true}'): 1,
                          ("cass/queue", '"held"'): 0}
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 1 and pools.pool_granularity.value == "run"
        assert {(p.name, p.limit) for p in instance.event_log_storage.get_pool_limits()} == {("cass_store", 1)}
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_resume_run_attempts == 0
        assert instance.run_monitoring_max_runtime_seconds > 0
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert not instance.run_retries_retry_on_asset_or_op_failure
        assert not instance.telemetry_enabled
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
    assert main(["init", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dagster_yaml"] == "current"


@pytest.mark.parametrize("existing, verdict, kept", [(LEGACY, "upgraded", False),
                                                      (LEGACY + "# my own note\n", "kept", True)])
def test_init_upgrades_only_a_dagster_yaml_cass_wrote(tmp_path, existing, verdict, kept):
    (tmp_path / "dagster.yaml").write_text(existing)
    assert install_dagster_yaml(tmp_path) == verdict
    assert ((tmp_path / "dagster.yaml").read_text() == existing) is kept
    assert hashlib.sha256(LEGACY.encode()).hexdigest() in EARLIER_DAGSTER_YAMLS   # the versions cass wrote


def test_concurrent_first_use_of_a_fresh_dagster_home(tmp_path):
    """Three processes open a DAGSTER_HOME that has no storage yet, at the same moment (each waits at a
    barrier of files until all three have imported Dagster)."""
    env = {**os.environ, "CASS_HOME": str(tmp_path / "cass"), "DAGSTER_HOME": str(tmp_path / "fresh")}
    code = ("import sys, time, pathlib\n"
            "from cass_pipelines.config.settings import load_settings\n"
            "from cass_pipelines.execution import instance_for\n"
            "barrier = pathlib.Path(sys.argv[1]); (barrier / sys.argv[2]).touch()\n"
            "while len(list(barrier.iterdir())) < 3: time.sleep(0.002)\n"
            "instance_for(load_settings()).get_runs(limit=1)\n")
    (tmp_path / "barrier").mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "barrier"), str(n)], env=env,
                              stderr=subprocess.PIPE, text=True) for n in range(3)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors


def test_cli_runs_are_listed_under_their_job_in_the_ui(sample_home, capsys):
    assert main(["run-phase", "morning", "--date", DAY.isoformat(), "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["runs"][0]["run_id"]
    [origin] = location_origins_from_yaml_paths([str(ROOT / "workspace.yaml")])
    label = f"__repository__@{origin.location_name}"       # what the job's Runs tab filters on
    instance = dg.DagsterInstance.get()
    listed = instance.get_runs(dg.RunsFilter(job_name="phase_job", tags={REPOSITORY_LABEL_TAG: label}))
    assert [r.run_id for r in listed] == [run_id]
    run = listed[0]
    assert run.tags["dagster/partition"] == f"{DAY}|morning" and run.tags["dagster/partition/phase"] == "morning"
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.job_code_origin.repository_origin.code_pointer.module == "cass_pipelines.definitions"
    # No pickled step outputs: every asset keeps its data in DuckDB, steps pass theirs in memory.
    files = [p for p in (Path(os.environ["DAGSTER_HOME"]) / "storage").rglob("*") if p.is_file()]
    assert files and not [p for p in files if "compute_logs" not in p.parts]   # logs only


def test_the_event_log_keeps_its_connections_and_writes_what_dagsters_own_class_reads(sample_home, capsys):
    """A run's events go through the pooled event log into the files Dagster's own SQLite event log
    reads (the run's shard and the asset index), so removing the dagster.yaml entry loses nothing."""
    from dagster._core.storage.event_log import SqliteEventLogStorage

    assert main(["run-phase", "morning", "--date", DAY.isoformat(), "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["runs"][0]["run_id"]
    instance = dg.DagsterInstance.get()
    assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
    own = SqliteEventLogStorage(str(Path(os.environ["DAGSTER_HOME"]) / "history" / "runs"))
    logs = own.get_logs_for_run(run_id)
    assert [(e.timestamp, e.dagster_event_type) for e in logs] == [
        (e.timestamp, e.dagster_event_type) for e in instance.all_logs(run_id)]
    assert sum(e.dagster_event_type == dg.DagsterEventType.STEP_SUCCESS for e in logs if e.dagster_event) >= 7
    plan = own.get_latest_materialization_events([dg.AssetKey("phase_plan")])[dg.AssetKey("phase_plan")]
    assert plan is not None and plan.run_id == run_id


def _shard(path: Path) -> tuple:
    with sqlite3.connect(path) as conn:
        return (sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")),
                conn.execute("SELECT version_num FROM alembic_version").fetchall(),
                conn.execute("PRAGMA journal_mode").fetchall())


def test_a_new_runs_shard_is_the_one_dagsters_own_class_makes_and_commits_are_not_fsynced(tmp_path, monkeypatch):
    """The pooled storage makes a run's shard itself (the migrations read once per process): the same
    tables, indexes, WAL journal and alembic stamp as Dagster's `_initdb`, which `dagster instance
    migrate` reads, and a shard Dagster's class made is used as it is. Its connections commit without
    an fsync per event (synchronous NORMAL) in WAL mode only."""
    from dagster._core.storage.event_log import SqliteEventLogStorage
    from sqlalchemy import create_engine

    from cass_pipelines import event_log

    # Dagster's own `_initdb` never runs for a run's shard: the project's path is the one tested.
    dagsters = SqliteEventLogStorage._initdb

    def index_only(self, engine, for_index_shard=False):
        assert engine.url.database.endswith("index.db"), "Dagster's _initdb ran for a run's shard"
        dagsters(self, engine, for_index_shard)

    monkeypatch.setattr(PooledSqliteEventLogStorage, "_initdb", index_only)
    ours, theirs = PooledSqliteEventLogStorage(str(tmp_path / "ours")), SqliteEventLogStorage(str(tmp_path / "theirs"))
    for storage in (ours, theirs):
        with storage.run_connection("run_1") as conn:
            conn.exec_driver_sql("SELECT 1")
    made = _shard(tmp_path / "ours" / "run_1.db")
    assert made == _shard(tmp_path / "theirs" / "run_1.db")
    assert made[1] and made[2] == [("wal",)] and len(made[0]) > 10
    with ours.run_connection("run_1") as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1   # NORMAL
    with theirs.run_connection("run_2") as conn:   # a shard Dagster's class made first: used as it is
        conn.exec_driver_sql("SELECT 1")
    (tmp_path / "theirs" / "run_2.db").rename(tmp_path / "ours" / "run_2.db")
    with ours.run_connection("run_2") as conn:
        conn.exec_driver_sql("SELECT 1")
    assert _shard(tmp_path / "ours" / "run_2.db") == made
    ours.dispose()
    plain = create_engine(f"sqlite:///{tmp_path / 'plain.db'}")   # not WAL: SQLite's default sync stays
    sqlalchemy_event.listen(plain, "connect", event_log._wal_commits_without_fsync)
    with plain.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2   # FULL


def test_a_runs_output_lands_in_dagsters_compute_logs_and_no_process_is_started_for_it(sample_home, monkeypatch):
    """What a step writes to stdout and stderr (a child process's too) is in the files the UI reads, and
    still goes where it went before; capturing it starts no process (Dagster's class starts four)."""
    assert main(["init"]) == 0
    instance = dg.DagsterInstance.get()
    assert isinstance(instance.compute_log_manager, TeeComputeLogManager)
    started: list[list[str]] = []

    class Recorded(subprocess.Popen):
        def __init__(self, args, *rest, **kwargs):
            started.append(list(args))
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", Recorded)

    @dg.op
    def speaks() -> None:
        print("said on stdout", flush=True)
        print("said on stderr", file=sys.stderr, flush=True)
        subprocess.run(["sh", "-c", "echo said by a child"], stdout=sys.stdout, check=True)

    @dg.job
    def talker():
        speaks()

    result = talker.execute_in_process(instance=instance)
    assert result.success and started == [["sh", "-c", "echo said by a child"]]
    captured = [e.dagster_event for e in instance.all_logs(result.run_id)
                if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.LOGS_CAPTURED]
    key = instance.compute_log_manager.build_log_key_for_run(result.run_id, captured[0].logs_captured_data.file_key)
    logs = instance.compute_log_manager.get_log_data(key)
    assert logs.stdout is not None and logs.stderr is not None
    assert b"said on stdout" in logs.stdout and b"said by a child" in logs.stdout
    assert b"said on stderr" in logs.stderr and b"said on stdout" not in logs.stderr
    assert instance.compute_log_manager.is_capture_complete(key)


def test_a_terminal_that_does_not_read_never_holds_up_what_a_step_writes(tmp_path):
    """The step's output goes straight to its file; only the copy to the terminal waits for it."""
    import threading

    _, unread = os.pipe()   # a terminal no one reads: it takes 64 KiB, then a writer to it would block
    terminal = os.fdopen(unread, "w")

    def write() -> None:
        with tee(terminal, str(tmp_path / "out")):
            for _ in range(50):
                os.write(terminal.fileno(), b"x" * 10_000)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(60)
    assert not writer.is_alive() and (tmp_path / "out").stat().st_size == 500_000


def test_the_event_log_keeps_a_bounded_number_of_engines_and_a_forked_child_opens_its_own(tmp_path):
    storage = PooledSqliteEventLogStorage(str(tmp_path))
    for shard in ["index", *(f"run_{n}" for n in range(KEPT_RUN_SHARDS + 4))]:
        with storage._connect(shard) as conn:
            conn.exec_driver_sql("SELECT 1")
    assert list(storage._engines) == ["index", *(f"run_{n}" for n in range(4, KEPT_RUN_SHARDS + 4))]
    pid = os.fork()
    if pid == 0:   # the child: no engine of its parent's, and it can still write
        try:
            fresh = not storage._engines
            with storage._connect("run_child") as conn:
                conn.exec_driver_sql("SELECT 1")
            os._exit(0 if fresh else 3)
        except BaseException:
            os._exit(4)
    assert os.waitpid(pid, 0)[1] == 0
    assert len(storage._engines) == KEPT_RUN_SHARDS + 1   # the parent's engines are untouched
    storage.wipe()   # deletes the run shards' files: the next write creates a new one
    with storage._connect("run_5") as conn:
        conn.exec_driver_sql("CREATE TABLE written (x INTEGER)")
    assert (tmp_path / "run_5.db").exists()
    storage.dispose()
    assert not storage._engines


def test_the_queue_starts_a_days_phases_in_day_order(cass_env):
    """Runs submitted alphabetically (as a backfill does) get priorities the queue daemon sorts by."""
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

    from cass_pipelines.config.registry import load_registry
    from cass_pipelines.config.settings import load_settings
    from cass_pipelines.definitions import build_defs
    from cass_pipelines.defs.partitions import phase_key
    from cass_pipelines.execution import instance_for, job_origins

    settings = load_settings()
    instance = instance_for(settings)
    job = build_defs(settings, load_registry(None)).resolve_job_def("phase_job")
    for day, phases in ((DAY + timedelta(days=1), ["morning"]), (DAY, ["morning", "afternoon", "evening", "night"])):
        for phase in sorted(phases):
            tags = job.partitions_def.get_tags_for_partition_key(phase_key(day.isoformat(), phase))
            remote_origin, python_origin = job_origins("phase_job")
            run = instance.create_run_for_job(job_def=job, tags=tags, remote_job_origin=remote_origin,
                                              job_code_origin=python_origin)
            instance.submit_run(run.run_id, workspace=None)
    queued = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]))
    assert len(queued) == 5 and all(PRIORITY_TAG in r.tags for r in queued)
    order = [r.tags["dagster/partition"] for r in
             QueuedRunCoordinatorDaemon(interval_seconds=5)._priority_sort(reversed(queued))]
    assert order == [f"{DAY}|{p}" for p in ("morning", "afternoon", "evening", "night")] + [
        f"{DAY + timedelta(days=1)}|morning"]
    assert queue_priority({"dagster/partition": DAY.isoformat()}) < queue_priority(
        {"dagster/partition": f"{DAY}|night", "dagster/partition/date": DAY.isoformat(),
         "dagster/partition/phase": "night"})          # the journal after its night
    assert queue_priority({}) is None


def test_the_ui_jobs_run_in_process_on_threads_and_keep_no_pickles(cass_env):
    from cass_pipelines.config.registry import load_registry
    from cass_pipelines.config.settings import load_settings
    from cass_pipelines.definitions import build_defs

    defs = build_defs(load_settings(), load_registry(None))
    jobs = [defs.resolve_implicit_global_asset_job_def(),
            *(defs.resolve_job_def(n) for n in ("phase_job", "journal_job", "memory_job", "manual_work_job"))]
    assert {j.executor_def.name for j in jobs} == {"threads"}
    assert all(j.resource_defs["io_manager"] is dg.mem_io_manager for j in jobs)


def test_source_observation_sensor_observes_conversations_and_self_model(sample_home):
    from cass_pipelines.config.registry import load_registry
    from cass_pipelines.config.settings import load_settings
    from cass_pipelines.definitions import build_defs

    defs = build_defs(load_settings(), load_registry(None))
    sensor = defs.resolve_sensor_def("source_observation_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=dict(defs.resources),
                                     repository_def=defs.get_repository_def()) as ctx:
            first = sensor.evaluate_tick(ctx)
        events = {e.asset_key.to_user_string(): e for e in first.asset_events}
        assert set(events) == {"conversations", "self_model"}
        assert events["conversations"].metadata["messages"].value > 0
        assert events["conversations"].tags["dagster/data_version"]
        with dg.build_sensor_context(instance=instance, resources=dict(defs.resources), cursor=first.cursor,
                                     repository_def=defs.get_repository_def()) as ctx:
            again = sensor.evaluate_tick(ctx)
        assert not again.asset_events and "unchanged" in again.skip_message


def test_a_backfilled_day_sees_only_its_past(sample_home):
    """Work of a later day exists; planning an earlier day shows none of it."""
    from cass_pipelines.services.planning import decision_context
    from cass_pipelines.services.runtime import open_runtime
    from cass_pipelines.store import plans

    later = DAY + timedelta(days=2)
    assert main(["run-phase", "morning", "--date", later.isoformat()]) == 0
    rt = open_runtime()
    assert {r["date"] for r in plans.recent_summaries(rt.store, 50, through=later)} == {later}
    ctx = decision_context(rt, DAY, ["morning", "afternoon", "evening", "night"], idle=True, last=None,
                           now=datetime.combine(DAY, time(6), tzinfo=timezone.utc))
    assert ctx.recent_work == []
    assert not set(ctx.inputs.recent_templates)


def test_an_exhausted_budget_fails_the_budget_check(sample_home, monkeypatch):
    from cass_pipelines.definitions import build_defs
    from cass_pipelines.execution import instance_for, run_phase
    from cass_pipelines.services.runtime import open_runtime

    monkeypatch.setenv("CASS_DAILY_BUDGET_USD", "0.01")
    rt = open_runtime()
    result = run_phase(build_defs(rt.settings, rt.registry), instance_for(rt.settings), DAY, "morning")
    assert result.success                            # refused work is deferred, the run itself succeeds
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "budget_not_exhausted"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "exhausted" in check.description


# ---- CLI runs whose process is gone, and their re-executions -------------------------------------------

def test_a_killed_cli_run_is_marked_failed_and_not_retried_by_the_daemon(sample_home):
    """`run-phase` killed (kill -9, a crash): its run stays STARTED in Dagster until recovery sees its
    process gone and marks it failed; the daemon's run retries (dagster.yaml: max_retries 1) leave it alone,
    its user saw it end."""
    from dagster._core.storage.tags import WILL_RETRY_TAG

    from cass_pipelines.config.registry import load_registry
    from cass_pipelines.config.settings import load_settings
    from cass_pipelines.definitions import build_defs
    from cass_pipelines.defs.resources import fail_dead_runs
    from cass_pipelines.execution import instance_for, run_tags

    settings = load_settings()
    defs, instance = build_defs(settings, load_registry()), instance_for(settings)
    run = started_run(defs, instance, {**run_tags(trigger="cli"), "cass/pid": str(dead_pid())})
    assert fail_dead_runs(instance) == [run.run_id]
    failed = instance.get_run_by_id(run.run_id)
    assert failed.status == dg.DagsterRunStatus.FAILURE and failed.tags.get(WILL_RETRY_TAG) != "true"


def test_a_cli_runs_pid_that_another_process_has_now_does_not_keep_the_run_alive(sample_home):
    """After a reboot (or once pids wrapped) a killed `run-phase`'s pid may be another live process's: its run
    is still marked failed (the run's tags say when its process started: cass/stamp), and `status` says so
    without Dagster; a run whose process is the one it was started in is left alone."""
    from cass_pipelines.config.registry import load_registry
    from cass_pipelines.config.settings import load_settings
    from cass_pipelines.definitions import build_defs
    from cass_pipelines.defs.resources import fail_dead_runs
    from cass_pipelines.execution import instance_dir, instance_for, run_tags
    from cass_pipelines.store.claims import process_stamp
    from cass_pipelines.store.dagster_runs import runs_of_dead_processes

    if process_stamp(os.getpid()) is None:
        pytest.skip("the system does not say when a process started")
    settings = load_settings()
    defs, instance = build_defs(settings, load_registry()), instance_for(settings)
    ours = started_run(defs, instance, run_tags(trigger="cli")).run_id   # this process, its own stamp
    assert runs_of_dead_processes(instance_dir(settings)) is False
    reused = started_run(defs, instance, {**run_tags(trigger="cli"), "cass/stamp": "another-boot:1"}).run_id
    assert runs_of_dead_processes(instance_dir(settings)) is True
    assert fail_dead_runs(instance) == [reused]
    assert instance.get_run_by_id(ours).status == dg.DagsterRunStatus.STARTED


def test_a_ui_reexecution_of_a_finished_cli_run_is_not_failed_for_its_parents_pid(sample_home):
    """The UI's Re-execute (and a retry) copies the parent's tags, the CLI's pid with them: the new run, in
    a run worker while that CLI process is long gone, must not be marked failed by its own first step."""
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.api import execute_run
    from dagster._core.execution.plan.resume_retry import ReexecutionStrategy
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import InProcessTestWorkspaceLoadTarget
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext

    from cass_pipelines.config.registry import load_registry
    from cass_pipelines.config.settings import load_settings
    from cass_pipelines.definitions import build_defs
    from cass_pipelines.execution import LOCATION_NAME, QUIET, execute, instance_for, run_tags

    settings = load_settings()
    defs, instance = build_defs(settings, load_registry()), instance_for(settings)
    parent = execute(defs, instance, "memory_job", QUIET, run_tags(trigger="cli")).dagster_run
    dead = str(dead_pid())
    instance.add_run_tags(parent.run_id, {"cass/pid": dead})   # the CLI process has exited since
    parent = instance.get_run_by_id(parent.run_id)
    target = InProcessTestWorkspaceLoadTarget(InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="cass_pipelines.definitions", attribute="defs"), location_name=LOCATION_NAME))
    with WorkspaceProcessContext(instance, target) as process_context:
        request = process_context.create_request_context()
        location = request.get_code_location(LOCATION_NAME)
        remote_job = location.get_repository("__repository__").get_full_job("memory_job")
        child = instance.create_reexecuted_run(parent_run=parent, request_context=request, code_location=location,
                                               remote_job=remote_job, strategy=ReexecutionStrategy.ALL_STEPS,
                                               use_parent_run_tags=True)
    assert child.tags["cass/pid"] == dead
    result = execute_run(InMemoryJob(defs.resolve_job_def("memory_job")), child, instance)
    assert result.success
    assert not instance.all_logs(child.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)


def test_status_fast_path_leaves_a_reexecution_of_a_cli_run_alone_as_recovery_does(sample_home):
    """`status` reads Dagster's run storage without Dagster to tell whether a crashed run needs marking
    failed (store.dagster_runs): it agrees with recovery about a re-execution running with its parent's pid,
    or every `status` meanwhile would import Dagster for nothing."""
    from dagster._core.storage.tags import PARENT_RUN_ID_TAG
    from dagster._core.test_utils import create_run_for_test

    from cass_pipelines.config.settings import load_settings
    from cass_pipelines.defs.resources import fail_dead_runs
    from cass_pipelines.execution import instance_for, run_tags
    from cass_pipelines.store import dagster_runs

    settings = load_settings()
    instance = instance_for(settings)
    parent = create_run_for_test(instance, job_name="memory_job", status=dg.DagsterRunStatus.SUCCESS,
                                 tags=run_tags(trigger="cli"))
    create_run_for_test(instance, job_name="memory_job", status=dg.DagsterRunStatus.STARTED,
                        tags={**run_tags(trigger="cli"), "cass/pid": str(dead_pid()), PARENT_RUN_ID_TAG: parent.run_id})
    home = dagster_runs.dagster_home_path(settings.home)
    assert fail_dead_runs(instance) == [] and dagster_runs.runs_of_dead_processes(home) is False
    create_run_for_test(instance, job_name="memory_job", status=dg.DagsterRunStatus.STARTED,   # a CLI run, crashed
                        tags={**run_tags(trigger="cli"), "cass/pid": str(dead_pid())})
    assert dagster_runs.runs_of_dead_processes(home) is True


@pytest.mark.parametrize("storage", [SqliteEventLogStorage, PooledSqliteEventLogStorage], ids=["dagster", "pooled"])
def test_the_ui_sees_a_running_runs_events_as_they_are_stored(tmp_path, storage):
    """The webserver follows a live run by watching its shard's file (Dagster's SqliteEventLogStorageWatchdog);
    the run worker's kept connection leaves events in the WAL file, so the shard is touched after each one."""
    import time as clock

    from dagster._core.events.log import EventLogEntry
    from dagster._core.test_utils import instance_for_test

    overrides = {"event_log_storage": {"module": storage.__module__, "class": storage.__name__,
                                       "config": {"base_dir": str(tmp_path / "history" / "runs")}}}
    run_id = "0b1e5a5e-0000-4000-8000-000000000000"

    def event(text: str) -> EventLogEntry:
        return EventLogEntry(error_info=None, level="INFO", user_message=text, run_id=run_id, timestamp=clock.time())

    with instance_for_test(temp_dir=str(tmp_path), overrides=overrides) as worker, \
            instance_for_test(temp_dir=str(tmp_path), overrides=overrides) as webserver:
        worker.event_log_storage.store_event(event("first"))
        seen: list[str] = []
        webserver.event_log_storage.watch(run_id, None, lambda entry, _cursor: seen.append(entry.user_message))
        try:
            clock.sleep(0.5)   # the watcher is up
            for i in range(3):
                worker.event_log_storage.store_event(event(f"step {i}"))
            deadline = clock.monotonic() + 10
            while "step 2" not in seen and clock.monotonic() < deadline:
                clock.sleep(0.1)
            assert [m for m in seen if m.startswith("step")] == ["step 0", "step 1", "step 2"], seen
        finally:
            webserver.event_log_storage.dispose()
