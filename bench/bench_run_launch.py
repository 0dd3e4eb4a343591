"""What a run costs before and after its work, as `run-day` runs it and as the daemon does, side by side:
a memory_job run with nothing to summarise (its step builds the runtime, recovers, looks for work and
ends), on the same instance, with the API mode on (a loopback server: the run imports the anthropic SDK
as a run with a key does, and calls nothing).

    .venv/bin/python bench/bench_run_launch.py [--repeat 5]

- `in_process`: `execution.execute` in this process, as `run-day`, `run-phase` and `trigger` run every
  run; the first run pays the process's one-time costs (the SDK's import among them), listed apart.
- `run_worker`: the run created as the daemon creates it, then executed by the command Dagster's
  DefaultRunLauncher starts for each run (`dagster api execute_run`, a new process), timed from the
  run's creation to the process's exit: the Python start, Dagster's import, the instance, the code
  location's load, the SDK's import and the run itself.
- `warm_worker`: the run created the same way and launched by the shipped launcher (run_launcher.py: a
  fork of a worker that imported all that once), timed from the run's creation until it finished (as the
  instance records it, polled every 10 ms); the first launch also starts the worker, listed apart.
Prints JSON: per way, each run's wall seconds, the median (of the warm in-process runs, of the warm
worker's runs after its first), the run status, `worker_over_in_process_s`, what a run launched by
Dagster's DefaultRunLauncher costs more than one run in-process, and `warm_worker_over_in_process_s`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from launching import forked, spawned
from loopback import delayed_api
from machine import machine_after, machine_before


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    before = machine_before()
    home = Path(tempfile.mkdtemp(prefix="bench-launch-"))
    os.environ.update(CASS_HOME=str(home / "cass"), DAGSTER_HOME=str(home / "dagster"))
    (home / "dagster").mkdir(parents=True)
    with delayed_api(2.0) as api:
        os.environ.update(api)
        from cass_pipelines.cli.main import main as cli
        from cass_pipelines.definitions import build_defs
        from cass_pipelines.execution import QUIET, create_run, instance_for, run_memory, run_tags
        from cass_pipelines.run_launcher import WarmRunLauncher
        from cass_pipelines.services.runtime import open_runtime

        with contextlib.redirect_stdout(sys.stderr):   # stdout carries only the JSON figures
            assert cli(["init"]) == 0   # no sample: nothing idle, the run makes no call
        rt = open_runtime()
        instance, defs = instance_for(rt.settings), build_defs(rt.settings, rt.registry)
        launcher = WarmRunLauncher()
        launcher.register_instance(instance)
        in_process, worker, warm = [], [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            result = run_memory(defs, instance)
            in_process.append({"wall_s": round(time.perf_counter() - started, 3), "ok": result.success})
            started = time.perf_counter()
            run = create_run(defs, instance, "memory_job", QUIET, run_tags(trigger="bench"))
            proc = spawned(instance, run)
            worker.append({"wall_s": round(time.perf_counter() - started, 3), "ok": proc.returncode == 0,
                           "status": instance.get_run_by_id(run.run_id).status.value})
            if proc.returncode:
                sys.exit(f"the run worker failed:\n{proc.stderr[-3000:]}")
            started = time.perf_counter()
            run = create_run(defs, instance, "memory_job", QUIET, {"cass/trigger": "bench"})
            done = forked(launcher, instance, run)
            warm.append({"wall_s": round(time.perf_counter() - started, 3), "ok": done.status.value == "SUCCESS",
                         "status": done.status.value})
        launcher.dispose()
    warm_s = statistics.median(r["wall_s"] for r in in_process[1:]) if len(in_process) > 1 else in_process[0]["wall_s"]
    launched = statistics.median(r["wall_s"] for r in worker)
    warm_worker_s = statistics.median(r["wall_s"] for r in warm[1:]) if len(warm) > 1 else warm[0]["wall_s"]
    print(json.dumps({
        "bench": "run_launch", "repeat": args.repeat,
        "in_process": {"runs": in_process, "first_s": in_process[0]["wall_s"], "median_warm_s": warm_s},
        "run_worker": {"runs": worker, "median_s": launched},
        "warm_worker": {"runs": warm, "first_s": warm[0]["wall_s"], "median_warm_s": warm_worker_s},
        "worker_over_in_process_s": round(launched - warm_s, 3),
        "warm_worker_over_in_process_s": round(warm_worker_s - warm_s, 3),
        "machine": machine_after(before)}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
