"""What the machine was doing while a bench ran, so that figures from a shared, loaded machine can be
read: wall time next to CPU time, and the load average at the start and the end.

On an idle machine a bench's wall time is about its CPU time plus what it waits for (the API's latency,
disk); on a loaded one the wall time grows with the load while the CPU time stays. So every figure a
bench prints in seconds of wall has its CPU seconds next to it (this process plus its finished
children, user + system: `os.times()`), and the bench says how loaded the machine was.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def cpu_s() -> float:
    """CPU seconds (user + system) of this process and of its children that have been waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Span:
    """Wall and CPU seconds of a block (`with measured() as span:`; then `span.figures()`)."""

    def __init__(self) -> None:
        self.wall_s = self.cpu_s = 0.0
        self._wall0 = self._cpu0 = 0.0

    def figures(self) -> dict:
        return {"wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3)}


@contextmanager
def measured():
    span = Span()
    span._wall0, span._cpu0 = time.perf_counter(), cpu_s()
    try:
        yield span
    finally:
        span.wall_s = time.perf_counter() - span._wall0
        span.cpu_s = cpu_s() - span._cpu0


def machine_before() -> dict:
    return {"cpus": os.cpu_count(), "load_at_start": load(), "_wall0": time.perf_counter(), "_cpu0": cpu_s()}


def machine_after(before: dict) -> dict:
    """The machine section of a bench's JSON: cpus, load at start and end, the bench's own wall and CPU."""
    return {"cpus": before["cpus"], "load_at_start": before["load_at_start"], "load_at_end": load(),
            "bench_wall_s": round(time.perf_counter() - before["_wall0"], 2),
            "bench_cpu_s": round(cpu_s() - before["_cpu0"], 2)}


def union_s(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one (start, end) interval: time with a call in flight, when calls
    overlap (concurrent summaries) the sum of their latencies would count the same second twice."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def count_store_opens() -> list[int]:
    """From now on, count every store open of this process (store.db.connect: one file lock window);
    returns the live counter, a one-element list."""
    from cass_pipelines.store import db

    opens = [0]
    real_connect = db.connect

    def counting_connect(*a, **kw):
        opens[0] += 1
        return real_connect(*a, **kw)

    db.connect = counting_connect   # every store open goes through it
    return opens
