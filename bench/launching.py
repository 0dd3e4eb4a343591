"""A run started as the daemon starts one, for the benches; each returns once the run ended."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def spawned(instance, run) -> subprocess.CompletedProcess:
    """`run` in a new process running `dagster api execute_run`: what Dagster's DefaultRunLauncher has its code
    server start for each run (the venv's `dagster` first on PATH)."""
    from dagster._grpc.types import ExecuteRunArgs

    args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=instance.get_ref(),
                          set_exit_code_on_failure=True)
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return subprocess.run(args.get_command_args(), capture_output=True, text=True, env={**os.environ, "PATH": path})


def forked(launcher, instance, run):
    """`run` launched by `launcher` (cass_pipelines.run_launcher.WarmRunLauncher: a fork of its warm worker),
    until the instance records it finished (looked at every 10 ms); returns the finished run."""
    from dagster._core.launcher import LaunchRunContext

    launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    while not (done := instance.get_run_by_id(run.run_id)).is_finished:
        time.sleep(0.01)
    return done
