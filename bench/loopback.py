"""tests/fake_anthropic.py's Messages API on loopback, answering after a fixed delay: the benches' stand-in
for a real API with a known latency."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_anthropic import API_KEY, FakeAnthropic, Reply  # noqa: E402


@contextmanager
def delayed_api(latency_s: float, batch_delay_s: float = 0.0) -> Iterator[dict[str, str]]:
    """A server answering every message after `latency_s` (a message batch ends `batch_delay_s` after its
    creation); yields the environment that points a run's SDK at it."""

    class Delayed(FakeAnthropic):
        def _next_reply(self):   # every answer after the same fixed delay
            return super()._next_reply() or Reply(delay_s=latency_s)

    with Delayed(lifetime_s=3600) as server:
        server.batch_delay_s = batch_delay_s
        yield {"CASS_LLM": "anthropic", "ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": server.url}
