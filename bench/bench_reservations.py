"""What budgeting adds to each LLM call: reserve + settle latency, alone and with N processes
contending for the DuckDB file. Usage: .venv/bin/python bench/bench_reservations.py [calls] [processes]"""
import multiprocessing
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

from cass_pipelines.domain.budget_rules import Refusal
from cass_pipelines.domain.settings import Settings
from cass_pipelines.store.budget import reserve, settle
from cass_pipelines.store.db import Store
from cass_pipelines.store.ledger import LedgerRow
from cass_pipelines.store.schema import migrate

DAY = date(2026, 11, 26)
NOW = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)


def calls(home: str, name: str, n: int) -> list[float]:
    """n reserve+settle pairs; returns each pair's wall time in seconds."""
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


def report(label: str, times: list[float], wall: float) -> None:
    times = sorted(times)
    print(f"{label}: {len(times)} calls in {wall:.2f}s; per call median {times[len(times) // 2] * 1e3:.1f} ms, "
          f"p95 {times[int(len(times) * 0.95)] * 1e3:.1f} ms, max {times[-1] * 1e3:.1f} ms")


def main(n: int = 100, processes: int = 4) -> None:
    with tempfile.TemporaryDirectory() as home:
        migrate(Store(Settings(home=Path(home)).db_path))
        started = time.perf_counter()
        report("1 process", calls(home, "solo", n), time.perf_counter() - started)
        started = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            results = pool.starmap(calls, [(home, f"p{k}", n // processes) for k in range(processes)])
        report(f"{processes} processes", [t for r in results for t in r], time.perf_counter() - started)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
