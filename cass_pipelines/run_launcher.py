"""The run launcher of the shipped dagster.yaml: every run the daemon launches starts as a fork of a warm
worker, instead of a new Python process per run.

Dagster's DefaultRunLauncher has the code server spawn `dagster api execute_run` for each run: a new
interpreter that imports Dagster, the code location and the anthropic SDK again. That cost 3.1-3.2 s per run
on the 2-core machines (bench/bench_run_launch.py; 0.47 s forked from the warm worker), paid by every
scheduled phase and every memory catch-up the sensor starts, against 0.09 s for an idle run's own work.
Here one worker process, started by the launcher on first use, imports those once (`preload`) and then
waits; for each run it forks, and the fork runs exactly what `dagster api execute_run` runs, with the
modules already in memory. The definitions are still built in each run (`defs()` reads the settings and
the registry then), and a worker whose imported code changed on disk since it started is replaced before
it forks; code that no longer imports fails the launch with its error, which the daemon writes to the
run's event log.

The run's process is the worker's child in a session of its own: it finishes its work if the daemon stops
(as at Ctrl-C of `dagster dev`), and the worker collects it when it ends. Its pid, host and (on Linux) start
are tagged on the run (`cass/worker_pid`, `cass/worker_host`, `cass/worker_stamp`): the daemon's run
monitoring asks `check_run_worker_health`, and a run whose process is gone (killed, out of memory; its pid
another process's since) is failed at the next check instead of after `max_runtime_seconds`, and retried
by the run retries. `terminate` sends the process SIGINT, which Dagster turns into a cancelled run.

The worker reads the instance's reference, then one request per line, on its stdin, and answers on its
stdout (what the code prints goes to stderr); it exits when its stdin closes (the launcher's process
ended). POSIX only (fork): elsewhere remove the entry to use Dagster's.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import pkgutil
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import Array, DagsterInstance, Field, StringSource
from dagster._core.instance.ref import InstanceRef
from dagster._core.launcher.base import (
    CheckRunHealthResult,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, deserialize_value, serialize_value
from dagster._serdes.config_class import ConfigurableClassData

from cass_pipelines.store.claims import HOST, process_is, process_stamp

PID_TAG, HOST_TAG, STAMP_TAG = "cass/worker_pid", "cass/worker_host", "cass/worker_stamp"
ANSWER_DEADLINE_S = 300.0   # a worker's warm-up takes 2-3 s here (imports); one silent this long is stuck
# What `dagster api execute_run` imports anyway, and what a run of this code location imports (`.*`: the
# package and all its modules, as the definitions' defs folder loads them by name).
DEFAULT_PRELOAD = ("dagster._cli.api", "cass_pipelines.*", "anthropic", "duckdb")


class WarmRunLauncher(RunLauncher, ConfigurableClass):
    def __init__(self, preload: Sequence[str] = DEFAULT_PRELOAD, inst_data: ConfigurableClassData | None = None):
        self._preload = list(preload)
        self._inst_data = inst_data
        self._lock = threading.Lock()   # one request at a time on the workers' pipes
        self._workers: dict[str, subprocess.Popen] = {}   # per interpreter of the code (its environment)
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict:
        return {"preload": Field(Array(StringSource), is_required=False, default_value=list(DEFAULT_PRELOAD))}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> WarmRunLauncher:
        return cls(preload=config_value.get("preload", DEFAULT_PRELOAD), inst_data=inst_data)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if run.job_code_origin is None:
            raise ValueError(f"run {run.run_id} has no code origin: it cannot be launched in a run worker")
        args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id,
                              instance_ref=self._instance.get_ref(), set_exit_code_on_failure=True)
        # The code location's interpreter, as Dagster's launcher would start it: its packages, its versions.
        pid, worker, replaced = self._fork(run.job_code_origin.executable_path or sys.executable,
                                           serialize_value(args))
        stamp = process_stamp(pid)
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(pid), HOST_TAG: HOST,
                                                 **({STAMP_TAG: stamp} if stamp else {})})
        self._instance.report_engine_event(
            f"Forked from the run worker (pid {worker}) as pid {pid}"
            + (f"; a new run worker, because {replaced}" if replaced else ""), run, cls=self.__class__)

    def _fork(self, executable: str, args_json: str) -> tuple[int, int, str]:
        """(the new run process's pid, its worker's, why an earlier worker was replaced first: its code
        changed on disk, or it died)."""
        replaced = ""
        with self._lock:
            for _ in range(2):
                worker = self._workers.get(executable)
                if worker is None or worker.poll() is not None:
                    worker = self._workers[executable] = subprocess.Popen(
                        [executable, "-m", "cass_pipelines.run_launcher", *self._preload],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                    # The instance's settings by pipe, not in the command line anyone may read (`ps`).
                    assert worker.stdin is not None
                    worker.stdin.write(serialize_value(self._instance.get_ref()) + "\n")
                assert worker.stdin is not None and worker.stdout is not None
                try:
                    worker.stdin.write(json.dumps({"args": args_json}) + "\n")
                    worker.stdin.flush()
                    # A worker that hangs (in its imports) must not hold up every launch after this one.
                    if not select.select([worker.stdout], [], [], ANSWER_DEADLINE_S)[0]:
                        del self._workers[executable]
                        worker.kill()
                        worker.wait()
                        raise RuntimeError(f"the run worker did not answer in {ANSWER_DEADLINE_S:g} s (stuck importing "
                                           "the code?): stopped; the next launch starts a new one")
                    answer = json.loads(worker.stdout.readline() or '{"stale": "the run worker exited"}')
                except (BrokenPipeError, ValueError) as exc:
                    answer = {"stale": f"the run worker failed: {exc}"}
                if "pid" in answer:
                    return int(answer["pid"]), worker.pid, replaced
                self._stop_worker(executable)   # the next pass starts a fresh one
                if "import_error" in answer:   # a fresh one would fail the same way
                    raise RuntimeError(f"the run worker could not import the code: {answer['import_error']}")
                replaced = answer["stale"]
            raise RuntimeError(f"the run worker could not start the run: {replaced}")

    def _stop_worker(self, executable: str) -> None:
        worker = self._workers.pop(executable, None)
        if worker is not None:
            if worker.stdin is not None:
                with contextlib.suppress(BrokenPipeError):   # it died meanwhile
                    worker.stdin.close()   # a waiting worker exits at the end of its input
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:   # stuck (or busy importing): not worth waiting for
                worker.kill()
                worker.wait()

    def dispose(self) -> None:
        with self._lock:
            for executable in list(self._workers):
                self._stop_worker(executable)

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished or _ours(run) is None:
            return False
        self._instance.report_run_canceling(run)
        try:
            if not _ours(run):
                raise ProcessLookupError   # its pid is another process's now: never signalled
            os.kill(int(run.tags[PID_TAG]), signal.SIGINT)   # Dagster's interrupt: the run ends cancelled
        except (ProcessLookupError, PermissionError):   # gone (its pid free, or another user's now)
            self._instance.report_run_canceled(run, f"its run process (pid {run.tags[PID_TAG]}) was already gone")
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        """A run this launcher started on this host is running while its process is; any other run (one a
        CLI process runs, which recovery watches by its own pid) is left to the run timeout."""
        if _ours(run) is not False:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(WorkerStatus.FAILED,
                                    f"its run process (pid {run.tags[PID_TAG]}) is gone: killed or crashed")


def _ours(run) -> bool | None:
    """Whether the process a run of this launcher on this host was started in still runs it (the same pid and,
    where the system tells, the same process); None for any other run."""
    pid = run.tags.get(PID_TAG, "")
    if run.tags.get(HOST_TAG) != HOST or not pid.isdigit():
        return None
    return process_is(int(pid), run.tags.get(STAMP_TAG))


# ---- the worker (python -m cass_pipelines.run_launcher MODULE ...) ----------------------------------------

def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:   # gone: changed, unless it was gone already
        return -1.0


def _code_stamps() -> dict[str, float]:
    """The modification time of every imported module's file: a changed one means the code on disk is not
    the code in memory any more."""
    return {path: _mtime(path) for module in list(sys.modules.values())
            if (path := getattr(module, "__file__", None))}


def _changed(stamps: dict[str, float]) -> str | None:
    return next((path for path, mtime in stamps.items() if _mtime(path) != mtime), None)


def _run(args_json: str) -> None:
    """In the run's process (never returns): what `dagster api execute_run` runs."""
    os.setsid()   # the run finishes if the launcher's process group is interrupted (Ctrl-C of `dagster dev`)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)   # Dagster's interrupt: `terminate`
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    code = 1
    try:
        from dagster._cli.api import api_cli

        api_cli.main(["execute_run", args_json], prog_name="dagster api", standalone_mode=False)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap(*_: object) -> None:
    """Collect the runs' processes that ended (the worker is their parent while it lives)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _warm_up(instance_ref_json: str, preload: Sequence[str]) -> None:
    """Import what a run imports: the modules named, and the instance's storage classes (an instance made and
    disposed: nothing of it is open when the worker forks). The definitions are not built here: a run
    builds them from the settings, registry and persona of its time."""
    for name in preload:
        package = name.removesuffix(".*")
        module = importlib.import_module(package)
        if name.endswith(".*"):
            for found in pkgutil.walk_packages(module.__path__, f"{package}."):
                if not found.name.endswith("__main__"):
                    importlib.import_module(found.name)
    with DagsterInstance.from_ref(deserialize_value(instance_ref_json, InstanceRef)):
        pass


def _serve(preload: Sequence[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the worker ends with its input, not with Ctrl-C of the daemon
    # The answers to the launcher go on a copy of stdout; stdout itself is stderr, for whatever the code
    # prints on import and the runs print (where they log).
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    instance_ref_json = sys.stdin.readline()
    if not instance_ref_json:
        return
    began = time.time()
    try:
        _warm_up(instance_ref_json, preload)
    except Exception:   # broken code on disk: the launch fails with its error, which lands in the run's log
        print(json.dumps({"import_error": traceback.format_exc()}), file=answers, flush=True)
        sys.exit(1)
    stamps = _code_stamps()
    # A file written while the worker imported it may be in memory old or new: the worker is stale from birth.
    ended = time.time()
    during = next((path for path, mtime in stamps.items() if began <= mtime <= ended), None)
    signal.signal(signal.SIGCHLD, _reap)
    for line in sys.stdin:
        changed = during or _changed(stamps)
        if changed:
            print(json.dumps({"stale": f"{changed} changed since it started"}), file=answers, flush=True)
            return
        pid = os.fork()
        if pid == 0:
            os.close(answers.fileno())   # the launcher sees the worker's end, not the runs'
            _run(json.loads(line)["args"])
        print(json.dumps({"pid": pid}), file=answers, flush=True)


if __name__ == "__main__":
    _serve(sys.argv[1:])
