"""What a DuckDB open+close of the project's file costs, and what the store's hot reads cost at a
year of history. Configurations are interleaved round-robin so machine load hits them alike.

    .venv/bin/python bench/bench_store.py [--rounds 40]

Per configuration (a new instance per open: default, extension autoloading off, also threads=1;
or `attach`: ATTACH/DETACH of the file on one long-lived in-memory instance) and kind (a read: open,
one SELECT, close; a write: open, one INSERT, close, which checkpoints the WAL into the file):
median open / statement / close ms and the CPU ms of the whole (this process, DuckDB's threads included). Then the same opens on a year's file. On a store with a year of history (bench/history.py),
the median ms of ledger_action_averages, budget_status and artifact_counts through the Store,
and the Store's opens (store.db.connect calls) per call. Prints JSON.
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
from datetime import date, timedelta
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from history import fill  # noqa: E402
from machine import machine_after, machine_before  # noqa: E402

from cass_pipelines.cli.main import main as cli  # noqa: E402
from cass_pipelines.services.runtime import open_runtime  # noqa: E402
from cass_pipelines.store import budget, db, views  # noqa: E402

NO_AUTOLOAD = {"autoload_known_extensions": False, "autoinstall_known_extensions": False}
CONFIGS = {"default": {}, "no_autoload": NO_AUTOLOAD, "no_autoload_threads1": {**NO_AUTOLOAD, "threads": 1},
           "attach": None}   # ATTACH/DETACH on one in-memory instance: what store/db.py does


class Attached:
    """The file attached to a long-lived in-memory instance; close() detaches it (and unlocks it)."""
    host = None

    def __init__(self, db: str):
        if Attached.host is None:
            Attached.host = duckdb.connect(":memory:", config=NO_AUTOLOAD)
        Attached.host.execute(f"ATTACH '{db}' AS bench_db")
        self.cursor = Attached.host.cursor()
        self.cursor.execute("USE bench_db")

    def execute(self, *args):
        return self.cursor.execute(*args)

    def close(self):
        self.cursor.close()
        Attached.host.execute("DETACH bench_db")


def open_costs(db: str, rounds: int, tag: str) -> dict:
    samples: dict[str, list[tuple[float, float, float]]] = {}
    cpu: dict[str, list[float]] = {}
    n = 0
    for _ in range(rounds):
        for name, config in CONFIGS.items():
            for kind in ("read", "write"):
                n += 1
                c0 = time.process_time()   # this process's CPU, DuckDB's threads included
                t0 = time.perf_counter()
                conn = Attached(db) if config is None else duckdb.connect(db, config=config)
                t1 = time.perf_counter()
                if kind == "read":
                    conn.execute("SELECT count(*) FROM work_units").fetchone()
                else:
                    conn.execute("INSERT INTO alerts (id, date, kind, message, created_at) "
                                 "VALUES (?, current_date, ?, 'bench', now())", [f"bench{tag}{n}", f"bench{tag}{n}"])
                t2 = time.perf_counter()
                conn.close()
                t3 = time.perf_counter()
                samples.setdefault(f"{kind}/{name}", []).append((t1 - t0, t2 - t1, t3 - t2))
                cpu.setdefault(f"{kind}/{name}", []).append(time.process_time() - c0)
    out = {}
    for key, rows in samples.items():
        med = [statistics.median(r[i] for r in rows) * 1000 for i in range(3)]
        out[key] = {"open_ms": round(med[0], 1), "statement_ms": round(med[1], 1), "close_ms": round(med[2], 1),
                    "total_ms": round(statistics.median(sum(r) for r in rows) * 1000, 1),
                    "total_cpu_ms": round(statistics.median(cpu[key]) * 1000, 1)}
    return out


def reads(rt, repeat: int) -> dict:
    opens = [0]
    real = db.connect

    def counting(*a, **kw):
        opens[0] += 1
        return real(*a, **kw)

    db.connect = counting
    day = date.today()
    calls = {"ledger_action_averages": lambda: budget.ledger_action_averages(rt.store),
             "budget_status": lambda: budget.budget_status(rt.store, rt.settings, day),
             "artifact_counts": lambda: views.artifact_counts(rt.store)}
    out = {}
    try:
        for name, call in calls.items():
            walls, cpus = [], []
            for _ in range(repeat):
                opens[0] = 0
                c0, started = time.process_time(), time.perf_counter()
                call()
                walls.append((time.perf_counter() - started) * 1000)
                cpus.append((time.process_time() - c0) * 1000)
            out[name] = {"median_ms": round(statistics.median(walls), 1),
                         "median_cpu_ms": round(statistics.median(cpus), 1), "opens": opens[0]}
    finally:
        db.connect = real
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args(argv)
    machine = machine_before()
    out: dict = {"bench": "store", "duckdb": duckdb.__version__}
    with tempfile.TemporaryDirectory(prefix="cass-bench-store-") as tmp:
        os.environ.update(CASS_HOME=tmp, CASS_LLM="offline")
        os.environ.pop("CASS_ACTIONS_FILE", None)
        with contextlib.redirect_stdout(sys.stderr):
            assert cli(["init", "--sample"]) == 0
        rt = open_runtime()
        out["sample_open_close"] = open_costs(str(rt.settings.db_path), args.rounds, "sample")
        out["sample_store"] = reads(rt, 15)
        rows = fill(rt.settings.db_path, date.today() - timedelta(days=args.days - 1), args.days)
        out["year_ledger_rows"] = rows["llm_ledger"]
        out["year_store"] = reads(rt, 15)
        out["year_open_close"] = open_costs(str(rt.settings.db_path), args.rounds // 2, "year")
    out["machine"] = machine_after(machine)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
