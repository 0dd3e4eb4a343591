"""tests/fake_anthropic.py's Messages API on loopback, answering after a fixed delay: the benches' stand-in
for a real API with a known latency."""
from __future__ import annotations

import json
import os
import sys
import tempfile
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

    created = tempfile.NamedTemporaryFile("a", prefix="cass-bench-batches-", suffix=".jsonl", delete=False)

    class Delayed(FakeAnthropic):
        def _next_reply(self):   # every answer after the same fixed delay
            return super()._next_reply() or Reply(delay_s=latency_s)

        def create_batch(self, body: dict) -> dict:   # when the API began each batch, for the bench's process
            batch = super().create_batch(body)
            created.write(json.dumps({"id": batch["id"], "created": time.time()}) + "\n")
            created.flush()
            return batch

    with created, Delayed(lifetime_s=3600) as server:
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
            yield {"CASS_LLM": "anthropic", "ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": server.url,
                   BATCHES_CREATED_ENV: created.name}
        finally:
            del _SERVERS[server.url], _COUNTING[server.url]
            os.unlink(created.name)


BATCHES_CREATED_ENV = "CASS_BENCH_BATCHES_CREATED"   # the loopback API's log of when it created each batch
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
    (its ledger latency) and each of its message batches from the API's creation of it (as the loopback API
    logged it: BATCHES_CREATED_ENV) until it ended, `batch_delay_s` later (the ledger's latency of a batched
    answer is only its collection; the time a request waited to be sent, and the time between a batch's end
    and the look that saw it, are ours, not the API's)."""
    calls = store.all("SELECT epoch(ts) AS t, latency_ms / 1000.0 AS s FROM llm_ledger WHERE run_id = ? AND NOT batch",
                      [run_id])
    ended = store.all("SELECT batch_id, max(epoch(ended_at)) AS b FROM llm_batches "
                      "WHERE run_id = ? AND ended_at IS NOT NULL GROUP BY batch_id", [run_id])
    began = {row["id"]: row["created"] for row in map(json.loads, Path(os.environ[BATCHES_CREATED_ENV]).read_text().splitlines())}
    return ([(c["t"] - c["s"], c["t"]) for c in calls]
            + [(began[w["batch_id"]], min(w["b"], began[w["batch_id"]] + batch_delay_s)) for w in ended])
