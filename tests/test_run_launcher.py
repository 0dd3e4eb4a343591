"""The shipped dagster.yaml's run launcher (cass_pipelines/run_launcher.py): a run the daemon launches is a
fork of one warm run worker, watched by run monitoring through its pid, terminated by SIGINT."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from support import dead_pid, started_run

from cass_pipelines.config.registry import load_registry
from cass_pipelines.config.settings import load_settings
from cass_pipelines.definitions import build_defs
from cass_pipelines.execution import LOCATION_NAME, QUIET, create_run, instance_for
from cass_pipelines.run_launcher import HOST_TAG, PID_TAG, STAMP_TAG, WarmRunLauncher
from cass_pipelines.store.claims import HOST, process_stamp

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the warm run worker forks")


def _wait_finished(instance: dg.DagsterInstance, run_id: str, timeout_s: float = 60.0) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run.is_finished:
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} still {instance.get_run_by_id(run_id).status} after {timeout_s} s")


def _forked(instance: dg.DagsterInstance, run_id: str) -> tuple[int, int, str]:
    """(worker pid, run pid, the rest) of the launcher's engine event on the run."""
    message = next(e.message for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
                   if "Forked from the run worker" in e.message)
    worker, pid, rest = re.search(r"Forked from the run worker \(pid (\d+)\) as pid (\d+)(.*)", message).groups()
    return int(worker), int(pid), rest


def _reported_pid(instance: dg.DagsterInstance, run_id: str) -> int:
    message = next(e.message for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
                   if e.message.startswith("Started process for run"))
    return int(re.search(r"pid: (\d+)", message).group(1))


def test_queued_runs_are_launched_by_the_queue_daemon_as_forks_of_one_warm_worker(sample_home):
    """Dagster's own queue daemon dequeues two memory runs; each runs in its own process, forked from the
    same worker (started once), tagged with that process's pid, and ends as a run worker's run does."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import InProcessTestWorkspaceLoadTarget
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

    settings = load_settings()
    instance, defs = instance_for(settings), build_defs(settings, load_registry())
    assert isinstance(instance.run_launcher, WarmRunLauncher)   # the shipped dagster.yaml's
    runs = [create_run(defs, instance, "memory_job", QUIET, {"cass/trigger": "sensor"}) for _ in range(2)]
    for run in runs:
        instance.submit_run(run.run_id, workspace=None)
    target = InProcessTestWorkspaceLoadTarget(InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="cass_pipelines.definitions", attribute="defs"), location_name=LOCATION_NAME))
    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
    with WorkspaceProcessContext(instance, target) as context:
        deadline = time.monotonic() + 120
        while not all(instance.get_run_by_id(r.run_id).is_finished for r in runs):   # pool cass_store: one at a time
            assert time.monotonic() < deadline, [instance.get_run_by_id(r.run_id).status for r in runs]
            list(daemon.run_iteration(context))
            time.sleep(0.1)
    forks = []
    for run in runs:
        done = instance.get_run_by_id(run.run_id)
        assert done.status == dg.DagsterRunStatus.SUCCESS
        worker, pid, rest = _forked(instance, run.run_id)
        assert (int(done.tags[PID_TAG]), done.tags[HOST_TAG]) == (pid, HOST)
        assert _reported_pid(instance, run.run_id) == pid
        assert (STAMP_TAG in done.tags) == (process_stamp(os.getpid()) is not None)   # where the system says
        assert rest == "" and pid not in (os.getpid(), worker)
        forks.append((worker, pid))
    assert forks[0][0] == forks[1][0] and forks[0][1] != forks[1][1]   # one worker, two run processes
    worker = instance.run_launcher._workers[sys.executable]
    if os.path.exists(f"/proc/{worker.pid}/cmdline"):   # the instance's settings went by pipe, not where `ps` shows
        assert "InstanceRef" not in open(f"/proc/{worker.pid}/cmdline").read()
    instance.dispose()                 # the launcher's end closes the worker's input: it exits
    assert worker.wait(timeout=10) == 0


def _probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str):
    """A launcher whose workers import the module `name` (written with `text`, on the workers' PYTHONPATH),
    registered with this test's instance; returns (module path, launcher, instance, a new memory run)."""
    module = tmp_path / "probe_code" / f"{name}.py"
    module.parent.mkdir(exist_ok=True)
    module.write_text(text)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(module.parent), os.environ.get("PYTHONPATH", "")]))
    launcher = WarmRunLauncher(preload=["dagster._cli.api", name])
    settings = load_settings()
    instance, defs = instance_for(settings), build_defs(settings, load_registry())
    launcher.register_instance(instance)
    return module, launcher, instance, lambda: create_run(defs, instance, "memory_job", QUIET, {})


def _launch(launcher: WarmRunLauncher, run: dg.DagsterRun) -> None:
    launcher.launch_run(dg._core.launcher.LaunchRunContext(dagster_run=run, workspace=None))


def _launch_to_success(launcher: WarmRunLauncher, instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    """Launch `run`, see it succeed, and stop the launcher's workers."""
    try:
        _launch(launcher, run)
        assert _wait_finished(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS
    finally:
        launcher.dispose()


def test_a_worker_whose_code_changed_on_disk_is_replaced_before_it_forks(sample_home, tmp_path, monkeypatch):
    """A module the worker imported changes (an upgrade, an edit): the next run starts in a fresh worker that
    imported the new code, and the run's event log says why."""
    module, launcher, instance, new_run = _probe(tmp_path, monkeypatch, "cass_probe_module", "VERSION = 1\n")
    try:
        first = new_run()
        _launch(launcher, first)
        assert _wait_finished(instance, first.run_id).status == dg.DagsterRunStatus.SUCCESS
        module.write_text("VERSION = 2\n")
        stamp = os.stat(module).st_mtime + 5
        os.utime(module, (stamp, stamp))   # a later mtime, whatever the file system's resolution
        second = new_run()
        _launch(launcher, second)
        assert _wait_finished(instance, second.run_id).status == dg.DagsterRunStatus.SUCCESS
    finally:
        launcher.dispose()
    old_worker, _, _ = _forked(instance, first.run_id)
    new_worker, _, why = _forked(instance, second.run_id)
    assert new_worker != old_worker
    assert why == f"; a new run worker, because {module} changed since it started"


def test_a_file_changed_while_the_worker_imported_it_makes_that_worker_stale(sample_home, tmp_path, monkeypatch):
    """An edit saved while a worker was still importing (its 2-3 s of warm-up): what the worker holds may be the
    old code, though the file's time is the one it recorded; its first launch starts a new worker instead."""
    module, launcher, instance, new_run = _probe(tmp_path, monkeypatch, "cass_probe_edited", "VERSION = 1\n")
    marker = tmp_path / "edit-once"
    marker.write_text("")
    # A module the worker imports after the first, which stands for the editor: it saves the first once.
    (module.parent / "cass_probe_editor.py").write_text(
        f"import os, pathlib\nmarker = pathlib.Path({str(marker)!r})\n"
        f"if marker.exists():\n    os.utime({str(module)!r})\n    marker.unlink()\n")
    launcher._preload.append("cass_probe_editor")
    run = new_run()
    _launch_to_success(launcher, instance, run)
    assert not marker.exists()
    assert _forked(instance, run.run_id)[2] == f"; a new run worker, because {module} changed since it started"


def test_a_worker_that_cannot_import_the_code_fails_the_launch_with_the_codes_error(sample_home, tmp_path, monkeypatch):
    """The code on disk is broken (an edit with a syntax error, a missing dependency): the launch fails at once
    with that error, which the daemon writes to the run's event log, not with "the run worker exited" (the
    error only on the daemon's terminal)."""
    module, launcher, instance, new_run = _probe(tmp_path, monkeypatch, "cass_probe_broken", "VERSION = (\n")
    run = new_run()
    try:
        with pytest.raises(RuntimeError) as failed:
            _launch(launcher, run)
    finally:
        launcher.dispose()
    assert "SyntaxError" in str(failed.value) and str(module) in str(failed.value)


def test_a_worker_stuck_in_its_imports_fails_the_launch_at_its_deadline_and_is_stopped(sample_home, tmp_path,
                                                                                     monkeypatch):
    """Code that hangs on import (a lock, a network call at import time): the launch fails after the answer
    deadline, naming it, instead of holding every later launch of the daemon; the stuck worker is killed."""
    from cass_pipelines import run_launcher

    monkeypatch.setattr(run_launcher, "ANSWER_DEADLINE_S", 2.0)
    _, launcher, instance, new_run = _probe(tmp_path, monkeypatch, "cass_probe_stuck",
                                            "import time\ntime.sleep(3600)\n")
    run = new_run()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="did not answer in 2 s"):
        _launch(launcher, run)
    assert time.monotonic() - started < 30 and not launcher._workers
    launcher.dispose()


def test_code_that_prints_while_the_worker_imports_it_does_not_garble_the_workers_answers(sample_home, tmp_path,
                                                                                           monkeypatch):
    """A module that prints on import (a banner, a debug print): the worker's answers to the launcher are not
    its stdout, so the run is launched as any other."""
    _, launcher, instance, new_run = _probe(tmp_path, monkeypatch, "cass_probe_chatty",
                                            "print('cass probe says hello')\n")
    run = new_run()
    _launch_to_success(launcher, instance, run)


def test_a_run_is_forked_from_a_worker_of_its_code_locations_interpreter(sample_home, tmp_path):
    """The code location's interpreter (its environment, its package versions) runs the run, as Dagster's own
    launcher would: a run whose origin names another interpreter gets a worker of that one."""
    from cass_pipelines.execution import job_origins

    marker = tmp_path / "started-by-wrapper"
    wrapper = tmp_path / "python-of-another-location"
    wrapper.write_text(f"#!/bin/sh\necho started >> {marker}\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    settings = load_settings()
    instance, defs = instance_for(settings), build_defs(settings, load_registry())
    job = defs.resolve_job_def("memory_job")
    remote, python = job_origins("memory_job")
    other = python._replace(repository_origin=python.repository_origin._replace(executable_path=str(wrapper)))
    runs = [instance.create_run_for_job(job_def=job, run_config=QUIET, remote_job_origin=remote, job_code_origin=origin)
            for origin in (python, other)]
    for run in runs:
        instance.launch_run(run.run_id, workspace=None)
        assert _wait_finished(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS
    workers = [_forked(instance, run.run_id)[0] for run in runs]
    assert workers[0] != workers[1] and marker.read_text() == "started\n"   # one worker each, started once
    instance.dispose()


def test_run_monitoring_fails_a_run_whose_process_is_gone_and_leaves_others_running(sample_home):
    """Dagster's run monitoring asks the launcher: a run it launched whose process died is failed at once
    (not after the 3-hour runtime limit); a live one, another host's, or a CLI run (no worker tag) runs on."""
    from dagster._core.launcher import WorkerStatus
    from dagster._daemon.monitoring.run_monitoring import monitor_started_run

    settings = load_settings()
    instance, defs = instance_for(settings), build_defs(settings, load_registry())
    dead = dead_pid()

    def started(tags: dict[str, str]) -> dg.DagsterRun:
        return started_run(defs, instance, tags)

    gone = started({PID_TAG: str(dead), HOST_TAG: HOST})
    others = [started({PID_TAG: str(os.getpid()), HOST_TAG: HOST}),
              started({PID_TAG: str(dead), HOST_TAG: "elsewhere"}),
              started({"cass/pid": str(os.getpid())})]
    launcher = instance.run_launcher
    assert launcher.check_run_worker_health(gone).status == WorkerStatus.FAILED
    assert {launcher.check_run_worker_health(r).status for r in others} == {WorkerStatus.RUNNING}
    for run in (gone, *others):
        monitor_started_run(instance, None, instance.get_run_record_by_id(run.run_id), logging.getLogger("test"))
    failed = instance.get_run_by_id(gone.run_id)
    assert failed.status == dg.DagsterRunStatus.FAILURE
    assert any(f"its run process (pid {dead}) is gone" in (e.message or "") for e in instance.all_logs(gone.run_id))
    assert {instance.get_run_by_id(r.run_id).status for r in others} == {dg.DagsterRunStatus.STARTED}
    # The UI's Terminate of a run whose process is already gone ends it cancelled at once (not after the
    # 3-minute cancel timeout of run monitoring).
    lost = started({PID_TAG: str(dead), HOST_TAG: HOST})
    assert launcher.terminate(lost.run_id)
    assert instance.get_run_by_id(lost.run_id).status == dg.DagsterRunStatus.CANCELED


@pytest.mark.skipif(process_stamp(os.getpid()) is None, reason="the system does not say when a process started")
def test_a_pid_another_process_has_now_is_not_taken_for_the_runs_process(sample_home):
    """After a reboot (or once pids wrapped) a run's pid may be another process's: that run is gone for run
    monitoring, and Terminate ends it without signalling the stranger (here this test's own process)."""
    from dagster._core.launcher import WorkerStatus

    settings = load_settings()
    instance, defs = instance_for(settings), build_defs(settings, load_registry())
    launcher = instance.run_launcher
    me = str(os.getpid())
    runs = {name: started_run(defs, instance, {PID_TAG: me, HOST_TAG: HOST, STAMP_TAG: stamp})
            for name, stamp in (("ours", process_stamp(os.getpid())), ("reused", "another-boot:1"))}
    assert launcher.check_run_worker_health(runs["ours"]).status == WorkerStatus.RUNNING
    assert launcher.check_run_worker_health(runs["reused"]).status == WorkerStatus.FAILED
    assert launcher.terminate(runs["reused"].run_id)          # a SIGINT here would stop this test
    assert instance.get_run_by_id(runs["reused"].run_id).status == dg.DagsterRunStatus.CANCELED


def test_terminating_a_launched_run_cancels_it_while_it_waits_for_a_batch(sample_home, fake_anthropic, monkeypatch):
    """The UI's Terminate: the launcher interrupts the run's process (SIGINT), the step waiting for the memory
    catch-up's batch stops waiting, and the run ends cancelled; the worker is untouched."""
    monkeypatch.setenv("CASS_LLM", "anthropic")
    fake_anthropic.batch_delay_s = 60.0     # the batch runs for a minute: the run waits on it
    settings = load_settings()
    instance, defs = instance_for(settings), build_defs(settings, load_registry())
    run = create_run(defs, instance, "memory_job", QUIET, {})
    instance.launch_run(run.run_id, workspace=None)
    deadline = time.monotonic() + 60
    while not fake_anthropic.batches:          # the run sent its batch and waits
        assert time.monotonic() < deadline and not instance.get_run_by_id(run.run_id).is_finished
        time.sleep(0.05)
    assert instance.run_launcher.terminate(run.run_id)
    assert _wait_finished(instance, run.run_id, timeout_s=30).status == dg.DagsterRunStatus.CANCELED
    assert instance.run_launcher._workers[sys.executable].poll() is None
    assert not instance.run_launcher.terminate(run.run_id)   # a finished run: nothing to terminate
    instance.dispose()


def test_the_worker_ignores_ctrl_c_of_the_daemon_and_ends_with_its_input(cass_env):
    """Ctrl-C of `dagster dev` reaches its whole process group: the worker stays (the daemon decides when it
    ends); once the daemon's process ends, its pipe to the worker closes and the worker exits."""
    import signal

    from dagster._serdes import serialize_value

    instance = instance_for(load_settings())
    worker = subprocess.Popen([sys.executable, "-m", "cass_pipelines.run_launcher", "dagster._cli.api"],
                              stdin=subprocess.PIPE, text=True)
    worker.stdin.write(serialize_value(instance.get_ref()) + "\n")
    worker.stdin.flush()
    time.sleep(1.0)
    worker.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert worker.poll() is None
    worker.stdin.close()
    assert worker.wait(timeout=30) == 0
