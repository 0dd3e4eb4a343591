"""tests/fake_anthropic.py's Messages API on loopback, answering after a fixed delay: the benches' stand-in
for a real API with a known latency."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_anthropic import API_KEY, FakeAnthropic, Reply  # noqa: E402
from machine import union_s  # noqa: E402


@contextmanager
def delayed_api(latency_s: float, batch_delay_s: float = 0.0, count_latency_s: float = 0.0) -> Iterator[dict[str, str]]:
    """A server answering every message after `latency_s` (a message batch ends `batch_delay_s` after its
    creation, a token count takes `count_latency_s`); yields the environment that points a run's SDK at
    it. `requests_to(env)` then says what the server was asked, and for how long it was counting."""

    class Delayed(FakeAnthropic):
        def _next_reply(self):   # every answer after the same fixed delay
            return super()._next_reply() or Reply(delay_s=latency_s)

    with Delayed(lifetime_s=3600) as server:
        server.batch_delay_s = batch_delay_s
        counting: list[tuple[float, float]] = []

        def on_count() -> None:
            started = time.time()
            time.sleep(count_latency_s)
            counting.append((started, time.time()))

        server.on_count = on_count
        _COUNTING[server.url] = counting
        _SERVERS[server.url] = server
        try:
            yield {"CASS_LLM": "anthropic", "ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": server.url}
        finally:
            del _SERVERS[server.url], _COUNTING[server.url]


_SERVERS: dict[str, FakeAnthropic] = {}
_COUNTING: dict[str, list[tuple[float, float]]] = {}   # (start, end) of each token count, per server


def requests_to(env: dict[str, str]) -> dict[str, int]:
    """What the loopback API behind `env` was asked so far: messages posted (each batched answer counts
    in its batch), token countings, batches created, looks at a batch's status."""
    server = _SERVERS[env["ANTHROPIC_BASE_URL"]]
    posted = [r for r in server.requests if r["path"].split("?")[0] == "/v1/messages"]
    return {"messages": len(posted), "count_tokens": len(server.counted), "batches": len(server.batches),
            "batch_looks": sum(server.batch_looks.values())}


def counting_s(env: dict[str, str]) -> float:
    """Seconds the loopback API behind `env` was counting tokens for someone (the union of the counts)."""
    return union_s(_COUNTING[env["ANTHROPIC_BASE_URL"]])


def api_wait_intervals(store, run_id: str, batch_delay_s: float) -> list[tuple[float, float]]:
    """(start, end) epoch seconds of the run's time the API was working for it: each interactive call
    (its ledger latency) and each batched request from its submission until its batch ended, i.e.
    `batch_delay_s` later on the loopback API (the ledger's latency of a batched answer is only its
    collection, and the time between a batch's end and the look that saw it is ours, not the API's)."""
    calls = store.all("SELECT epoch(ts) AS t, latency_ms / 1000.0 AS s FROM llm_ledger WHERE run_id = ? AND NOT batch",
                      [run_id])
    waits = store.all("SELECT epoch(submitted_at) AS a, epoch(ended_at) AS b FROM llm_batches "
                      "WHERE run_id = ? AND ended_at IS NOT NULL", [run_id])
    return [(c["t"] - c["s"], c["t"]) for c in calls] + [(w["a"], min(w["b"], w["a"] + batch_delay_s)) for w in waits]
