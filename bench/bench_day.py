"""Wall time of an offline day through Dagster, split into Dagster's own overhead per step,
our steps' bookkeeping (planning, summaries, store writes), and handler time.

    .venv/bin/python bench/bench_day.py [--date 2026-11-20]

Each run is timed around execute_in_process; step times come from the run's STEP_START /
STEP_SUCCESS events in the instance; handler time from the action runs' start/finish in DuckDB.
"""
import argparse
import os
import sys
import tempfile
import time
from datetime import date

import dagster as dg

from cass_pipelines.cli.main import main as cli
from cass_pipelines.core.categories import PHASES
from cass_pipelines.core.runtime import open_runtime
from cass_pipelines.definitions import build_defs
from cass_pipelines.execution import instance_for, run_journal, run_memory, run_phase


def step_seconds(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float]:
    starts: dict[str, float] = {}
    total, steps = 0.0, 0
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key in starts:
            total += entry.timestamp - starts.pop(event.step_key)
            steps += 1
    return steps, total


def handler_seconds(rt, run_id: str) -> float:
    return float(rt.store.scalar(
        "SELECT coalesce(sum(epoch(finished_at) - epoch(started_at)), 0) FROM action_runs WHERE run_id = ?",
        [run_id]))


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--date", default="2026-11-20")
    day = date.fromisoformat(parser.parse_args(argv).date)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(CASS_HOME=os.path.join(tmp, "cass"), CASS_LLM="offline",
                          DAGSTER_HOME=os.path.join(tmp, "dagster"))
        os.makedirs(os.environ["DAGSTER_HOME"])
        cli(["init", "--sample"])
        rt = open_runtime()
        instance, defs = instance_for(rt.settings), build_defs(rt.settings, rt.registry)
        jobs = [("memory", lambda: run_memory(defs, instance))]
        jobs += [(p, lambda p=p: run_phase(defs, instance, day, p)) for p in PHASES]
        jobs.append(("journal", lambda: run_journal(defs, instance, day)))
        rows = []
        for name, launch in jobs:
            started = time.perf_counter()
            result = launch()
            wall = time.perf_counter() - started
            steps, in_steps = step_seconds(instance, result.run_id)
            handlers = handler_seconds(rt, result.run_id)
            rows.append((name, result.success, wall, steps, in_steps - handlers, handlers, wall - in_steps))
    print(f"{'run':<10} {'ok':<3} {'wall s':>7} {'steps':>6} {'step code s':>12} {'handlers s':>11} "
          f"{'dagster s':>10} {'dagster ms/step':>16}")
    for name, ok, wall, steps, ours, handlers, framework in rows:
        print(f"{name:<10} {'y' if ok else 'N':<3} {wall:>7.2f} {steps:>6} {ours:>12.2f} {handlers:>11.2f} "
              f"{framework:>10.2f} {framework / max(steps, 1) * 1000:>16.0f}")
    wall, steps = sum(r[2] for r in rows), sum(r[3] for r in rows)
    framework = sum(r[6] for r in rows)
    print(f"{'total':<10} {'':<3} {wall:>7.2f} {steps:>6} {sum(r[4] for r in rows):>12.2f} "
          f"{sum(r[5] for r in rows):>11.2f} {framework:>10.2f} {framework / max(steps, 1) * 1000:>16.0f}")


if __name__ == "__main__":
    run(sys.argv[1:])
