"""A paid response that is unusable (structured output that does not validate, or was cut off) is
still money spent: the metered client records it in the ledger and settles its reservation to it,
then re-raises. Tested at the wire, against the local Messages-API server."""
from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from fake_anthropic import Reply
from pydantic import BaseModel

from cass_pipelines.config.settings import load_settings
from cass_pipelines.domain.clock import FixedClock
from cass_pipelines.llm.base import LLMError, LLMRequest, Usage
from cass_pipelines.llm.factory import make_client
from cass_pipelines.llm.pricing import load_pricing
from cass_pipelines.services.metering import MeterContext, MeteredClient
from cass_pipelines.store.budget import budget_status
from cass_pipelines.store.db import Store
from cass_pipelines.store.schema import migrate

DAY = date(2026, 11, 26)
NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
MODEL = "claude-sonnet-5-5"   # the default deep tier
USAGE = {"input_tokens": 120, "output_tokens": 400, "cache_creation_input_tokens": 1500,
         "cache_read_input_tokens": 0,
         "cache_creation": {"ephemeral_5m_input_tokens": 1500, "ephemeral_1h_input_tokens": 0}}
# sonnet: $3 input, $15 output, $3.75 5-minute cache write, per million tokens
EXACT_COST = (120 * 3.0 + 400 * 15.0 + 1500 * 3.75) / 1e6


class Thought(BaseModel):
    topic: str
    depth: int


def paid_reply(text: str, stop_reason: str) -> Reply:
    return Reply(200, {"id": "msg_paid_but_unusable", "type": "message", "role": "assistant", "model": MODEL,
                       "content": [{"type": "text", "text": text}], "stop_reason": stop_reason,
                       "stop_sequence": None, "usage": USAGE})


@pytest.mark.parametrize("reply", [
    paid_reply('{"topic": "budgets", "depth": "very"}', "end_turn"),   # valid JSON, wrong schema
    paid_reply('{"topic": "budg', "max_tokens"),                        # cut off mid-answer
], ids=["invalid", "cut_off"])
def test_a_billed_but_unusable_response_is_recorded_and_settles_its_hold(fake_anthropic, tmp_path, reply):
    settings = load_settings().model_copy(update={"max_retries": 0, "request_timeout_s": 10.0,
                                                  "daily_budget_usd": 5.0, "reserve_usd": 0.5})
    store = Store(tmp_path / "cass.duckdb")
    migrate(store)
    ctx = MeterContext(date=DAY, phase="morning", category="reflection", priority="normal", work_unit_id="wu_1",
                       action_id="reflection.think", run_id="run_1", step_key="step_1")
    client = MeteredClient(make_client(settings, "anthropic"), store, settings, load_pricing(), ctx, FixedClock(NOW))
    fake_anthropic.script(reply)

    with pytest.raises(LLMError, match="did not match Thought") as info:
        client.structured(LLMRequest(tier="deep", system_prefix="I am Cass. " * 600, prompt="Think.", max_tokens=400),
                          Thought)

    assert len(fake_anthropic.requests) == 1                         # one paid call, not retried here
    assert load_pricing().cost(MODEL, Usage(input_tokens=120, output_tokens=400,
                                            cache_creation_input_tokens=1500)) == pytest.approx(EXACT_COST)
    rows = store.all("SELECT * FROM llm_ledger")
    assert len(rows) == 1
    row = rows[0]
    assert row["request_id"] == info.value.request_id and row["request_id"].startswith("req_")
    assert (row["input_tokens"], row["output_tokens"], row["cache_creation_input_tokens"],
            row["cache_read_input_tokens"], row["cache_creation_1h_input_tokens"]) == (120, 400, 1500, 0, 0)
    assert row["cost_usd"] == pytest.approx(EXACT_COST, abs=1e-9)
    assert (row["model"], row["offline"], row["attempts"], row["category"], row["date"]) == (
        MODEL, False, 1, "reflection", DAY)
    assert (row["work_unit_id"], row["action_id"], row["run_id"], row["step_key"], row["phase"]) == (
        "wu_1", "reflection.think", "run_1", "step_1", "morning")
    assert row["latency_ms"] >= 0

    res = store.one("SELECT id, status, amount_usd, actual_usd FROM reservations")
    assert res["status"] == "reconciled" and row["reservation_id"] == res["id"]
    assert res["actual_usd"] == pytest.approx(row["cost_usd"], abs=1e-9)

    status = budget_status(store, settings, DAY)
    assert status["spent_usd"] == pytest.approx(EXACT_COST, abs=1e-6) and status["reserved_usd"] == 0
    assert status["categories"]["reflection"]["spent_usd"] == pytest.approx(EXACT_COST, abs=1e-6)
    # The client's own sums (what a failed action reports as its cost) include the paid call.
    assert (client.calls, client.cost_usd) == (1, pytest.approx(EXACT_COST, abs=1e-9))
    assert info.value.billed.cost_usd == pytest.approx(EXACT_COST, abs=1e-9)


def test_the_store_file_is_free_while_the_prompt_is_counted(fake_anthropic, tmp_path):
    """Counting a prompt's tokens is an API call (seconds at worst): the DuckDB file is not held
    meanwhile, so the UI, the daemon and the CLI can open it; the hold is taken after."""
    from test_store_access import other_process_opens

    settings = load_settings().model_copy(update={"max_retries": 0, "request_timeout_s": 30.0})
    store = Store(tmp_path / "cass.duckdb")
    migrate(store)
    ctx = MeterContext(date=DAY, phase="morning", category="reflection", priority="normal", work_unit_id="wu_1",
                       action_id="reflection.think", run_id="run_1", step_key="step_1")
    client = MeteredClient(make_client(settings, "anthropic"), store, settings, load_pricing(), ctx, FixedClock(NOW))
    free: list[bool] = []
    fake_anthropic.on_count = lambda: free.append(other_process_opens(store.path))
    client.text(LLMRequest(tier="fast", system_prefix="I am Cass.", prompt="Think.", max_tokens=50))
    assert free and all(free), free
    assert store.scalar("SELECT count(*) FROM llm_ledger") == 1
