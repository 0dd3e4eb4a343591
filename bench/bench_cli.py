"""CLI read latency as a user sees it (each command a fresh subprocess), on a store with no history
and on one with a year of it (bench/history.py: every history table, 150 ledger rows a day, so
54,750 ledger rows), plus a no-op `memory_job` run (nothing idle to summarise).

    .venv/bin/python bench/bench_cli.py [--repeat 7] [--days 365] [--before /path/to/old/checkout]

Prints JSON: per code (this checkout; with --before, also that one), store and command the
median/min wall and median CPU (the child's user + system) in ms over `repeat` runs taken round-robin, the ratio year/empty, the
interpreter's own start-up (`python -c pass`) and `import duckdb, pydantic` for reference, and the no-op memory run's wall
(in one process, after one warm-up run).

Each measured checkout's package is compiled to bytecode first, as pip does for a regular install
and Python on a user's first run: where PYTHONDONTWRITEBYTECODE is set (these machines) an editable
checkout would otherwise be compiled from source by every command (~50 ms).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from history import fill  # noqa: E402
from machine import cpu_s, machine_after, machine_before, measured  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [["status", "--json"], ["budget", "--json"], ["plan", "--json"], ["ledger", "--json"]]
CLI = [str(Path(sys.executable).parent / "cass-pipelines")]   # the installed entry point, as a user runs it


def run_once(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall and CPU milliseconds of one command (the child's user + system time)."""
    cpu0, started = cpu_s(), time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - started, cpu_s() - cpu0
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return wall * 1000, cpu * 1000


def figures(samples: list[tuple[float, float]]) -> dict:
    walls, cpus = [w for w, _ in samples], [c for _, c in samples]
    return {"median_ms": round(statistics.median(walls), 1), "min_ms": round(min(walls), 1),
            "median_cpu_ms": round(statistics.median(cpus), 1)}


def memory_child() -> None:
    """A no-op memory_job run: median of 3 after a warm-up, in this process."""
    from cass_pipelines.definitions import build_defs
    from cass_pipelines.execution import instance_for, run_memory
    from cass_pipelines.services.runtime import open_runtime

    rt = open_runtime()
    instance, defs = instance_for(rt.settings), build_defs(rt.settings, rt.registry)
    run_memory(defs, instance)
    spans = []
    for _ in range(3):
        with measured() as span:
            assert run_memory(defs, instance).success
        spans.append(span)
    print(json.dumps({"memory_noop_run_ms": round(statistics.median(s.wall_s for s in spans) * 1000, 1),
                      "memory_noop_run_cpu_ms": round(statistics.median(s.cpu_s for s in spans) * 1000, 1)}))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--before", help="a checkout's directory to compare with (put first on PYTHONPATH)")
    parser.add_argument("--memory-child", action="store_true")
    args = parser.parse_args(argv)
    if args.memory_child:
        return memory_child()
    machine = machine_before()
    out: dict = {"bench": "cli"}
    # This checkout's code unless told another: the installed package may be another checkout's (editable).
    codes = {"after": str(ROOT), **({"before": args.before} if args.before else {})}
    for path in codes.values():
        package = Path(path or Path(__file__).resolve().parent.parent) / "cass_pipelines"
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", str(package)], check=True,
                       capture_output=True)
    with tempfile.TemporaryDirectory(prefix="cass-bench-cli-") as tmp:
        base = {k: v for k, v in os.environ.items() if k not in ("CASS_ACTIONS_FILE", "ANTHROPIC_API_KEY", "PYTHONPATH")}
        envs = {}
        for name in ("empty", "year"):
            env = {**base, "CASS_HOME": str(Path(tmp) / name), "DAGSTER_HOME": str(Path(tmp) / name / "dagster"),
                   "CASS_LLM": "offline"}
            subprocess.run([*CLI, "init", "--sample"], env=env, check=True, capture_output=True)
            if name == "year":
                from cass_pipelines.config.settings import load_settings
                from cass_pipelines.domain.clock import SystemClock

                settings = load_settings(env)
                today = SystemClock().now().astimezone(settings.tz).date()
                rows = fill(settings.db_path, today - timedelta(days=args.days - 1), args.days)
                out["year_rows"] = {"llm_ledger": rows["llm_ledger"], "reservations": rows["reservations"],
                                    "work_units": rows["work_units"], "messages": rows["messages"]}
            for code, path in codes.items():
                envs[(code, name)] = {**env, **({"PYTHONPATH": path} if path else {})}
        # Round-robin: every (code, store, command) once per round, so load drift hits all alike.
        walls: dict[tuple, list[tuple[float, float]]] = {}
        startup: list[tuple[float, float]] = []
        floor: list[tuple[float, float]] = []
        for _ in range(args.repeat):
            startup.append(run_once([sys.executable, "-c", "pass"], base))
            floor.append(run_once([sys.executable, "-c", "import duckdb, pydantic"], base))
            for (code, name), env in envs.items():
                for c in COMMANDS:
                    walls.setdefault((code, name, " ".join(c)), []).append(run_once([*CLI, *c], env))
        out["python_startup"] = figures(startup)
        out["import_duckdb_pydantic"] = figures(floor)   # what any read command pays first
        for code in codes:
            stores = {name: {" ".join(c): figures(walls[(code, name, " ".join(c))]) for c in COMMANDS}
                      for name in ("empty", "year")}
            out[code] = {"stores": stores, "year_over_empty": {
                c: round(stores["year"][c]["median_ms"] / stores["empty"][c]["median_ms"], 2) for c in stores["empty"]}}
        for code in codes:
            env = {**envs[(code, "empty")]}
            proc = subprocess.run([sys.executable, __file__, "--memory-child"], env=env, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(proc.stderr[-3000:])
            out[code].update(json.loads(proc.stdout.strip().splitlines()[-1]))
    out["machine"] = machine_after(machine)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
