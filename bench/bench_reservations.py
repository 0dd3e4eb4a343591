"""What budgeting adds to each LLM call: the latency of a reserve + settle pair (each its own open of the
DuckDB file, as metering does around a call), in one process and with N processes contending for the file
(each doing its pairs back to back: the worst case for a process that wants the file once).

    .venv/bin/python bench/bench_reservations.py [--calls 200] [--processes 4] [--repeat 2]
    .venv/bin/python bench/bench_reservations.py --before /path/to/old/checkout   # that code too, interleaved

Prints JSON: per checkout (`this`, and `before` with --before) and repeat, for `one_process` and
`n_processes`: calls, wall seconds, and per pair the median, p95 and max in ms. The max under contention
is what a process waits at worst for its turn at the file (store/db.py: processes take turns); the wall
for all pairs is the file's throughput. Runs of the two checkouts alternate, so both see the same machine
(`machine`: its load at the start and the end).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

from machine import machine_after, machine_before

ROOT = Path(__file__).resolve().parent.parent

DAY = date(2026, 11, 26)
NOW = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)


def pairs(home: str, name: str, n: int) -> list[float]:
    """n reserve+settle pairs; returns each pair's wall seconds."""
    from cass_pipelines.domain.budget_rules import Refusal
    from cass_pipelines.domain.settings import Settings
    from cass_pipelines.store.budget import reserve, settle
    from cass_pipelines.store.db import Store
    from cass_pipelines.store.ledger import LedgerRow

    settings = Settings(home=Path(home), daily_budget_usd=1000.0)
    store, times = Store(settings.db_path), []
    for i in range(n):
        started = time.perf_counter()
        held = reserve(store, day=DAY, category="research", amount_usd=0.01, settings=settings, priority="normal",
                       now=NOW, honour_pause=True)
        assert not isinstance(held, Refusal), held.reason
        settle(store, held.id, LedgerRow(f"{name}_{i}", NOW, DAY, "morning", None, None, None, "research.search",
                                         "research", "claude-haiku-5-5", 1000, 200, 0, 0, 0, 0.002, True, 1, 1), NOW)
        times.append(time.perf_counter() - started)
    return times


def figures(times: list[float], wall: float) -> dict:
    times = sorted(times)
    return {"calls": len(times), "wall_s": round(wall, 2), "median_ms": round(times[len(times) // 2] * 1e3, 1),
            "p95_ms": round(times[int(len(times) * 0.95)] * 1e3, 1), "max_ms": round(times[-1] * 1e3, 1)}


def child(calls: int, processes: int) -> None:
    """One measurement with the code on this process's path; prints one JSON line."""
    from cass_pipelines.domain.settings import Settings
    from cass_pipelines.store.db import Store
    from cass_pipelines.store.schema import migrate

    with tempfile.TemporaryDirectory() as home:
        migrate(Store(Settings(home=Path(home)).db_path))
        started = time.perf_counter()
        one = figures(pairs(home, "solo", calls), time.perf_counter() - started)
        started = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            results = pool.starmap(pairs, [(home, f"p{k}", calls // processes) for k in range(processes)])
        many = figures([t for r in results for t in r], time.perf_counter() - started)
    print(json.dumps({"one_process": one, "n_processes": {"processes": processes, **many}}))


def measure(code: str | None, calls: int, processes: int) -> dict:
    # This checkout's code unless told another: the installed package may be another checkout's (editable).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([code or str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, __file__, "--child", "--calls", str(calls), "--processes", str(processes)],
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--before", help="a checkout's directory to compare with (put first on PYTHONPATH)")
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        return child(args.calls, args.processes)
    before = machine_before()
    out: dict = {"this": [], **({"before": []} if args.before else {})}
    for _ in range(args.repeat):
        out["this"].append(measure(None, args.calls, args.processes))
        if args.before:
            out["before"].append(measure(args.before, args.calls, args.processes))
    out["machine"] = machine_after(before)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
