"""A paid response that is unusable (structured output that does not validate, or was cut off) is
still money spent: the metered client records it in the ledger and settles its reservation to it,
then re-raises. Tested at the wire, against the local Messages-API server."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import UTC, date, datetime

import duckdb
import pytest
from fake_anthropic import Reply
from pydantic import BaseModel

from cass_pipelines.config.settings import load_settings
from cass_pipelines.domain.clock import FixedClock
from cass_pipelines.llm.base import BatchAnswer, LLMError, LLMRequest, LLMResult, Usage
from cass_pipelines.llm.factory import make_client
from cass_pipelines.llm.pricing import load_pricing
from cass_pipelines.services.metering import MeterContext, MeteredClient
from cass_pipelines.store import paid_log
from cass_pipelines.store.budget import budget_status
from cass_pipelines.store.db import Store, open_connection
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
    one_look = threading.Lock()   # the prompt and its prefix's probes are counted at once: one opener at a time

    def look() -> None:
        with one_look:
            free.append(other_process_opens(store.path))

    fake_anthropic.on_count = look
    client.text(LLMRequest(tier="fast", system_prefix="I am Cass.", prompt="Think.", max_tokens=50))
    assert free and all(free), free
    assert store.scalar("SELECT count(*) FROM llm_ledger") == 1


def test_a_request_estimated_then_made_is_counted_once(fake_anthropic, tmp_path):
    """The decision estimates its call (the hold each tier would need), then makes it: one count, not two
    round trips before the call."""
    settings = load_settings().model_copy(update={"max_retries": 0})
    store = Store(tmp_path / "cass.duckdb")
    migrate(store)
    ctx = MeterContext(date=DAY, phase="morning", category="system", priority="high", work_unit_id=None,
                       action_id="plan.decide", run_id="run_1", step_key="step_1")
    client = MeteredClient(make_client(settings, "anthropic"), store, settings, load_pricing(), ctx, FixedClock(NOW))
    request = LLMRequest(tier="fast", system_prefix="I am Cass.", prompt="Plan my day.", max_tokens=50)
    held = client.estimate(request)
    client.text(request)
    prompts = [b for b in fake_anthropic.counted if b["messages"][0]["content"] == "Plan my day."]
    assert len(prompts) == 1 and held >= store.scalar("SELECT cost_usd FROM llm_ledger")


# ---- the file taken up again after a call: never before the answer is in the write-ahead log ----------
# A model call made inside a session (run_action's) lets the file go (Store.released); the next statement
# opens it again. If that open fails (another process held the file past OPEN_DEADLINE_S, or this one is
# killed while it waits), the answer billed must already be in the paid log, and a batch the API created
# must stay pending with its hold.

class LockedOut:
    """connect_fn: the next open after `arm()` fails as an open does once OPEN_DEADLINE_S ran out while
    another process (the UI, the CLI) held the file."""

    def __init__(self, path):
        self.path, self.armed = path, 0

    def arm(self, opens: int = 1):
        self.armed = opens

    @contextmanager
    def __call__(self):
        if self.armed:
            self.armed -= 1
            raise duckdb.IOException(f'IO Error: Could not set lock on file "{self.path}": Conflicting lock is held')
        with open_connection(self.path) as conn:
            yield conn


def paid(request_id: str) -> LLMResult:
    return LLMResult(text="a paid answer", parsed=None, usage=Usage(input_tokens=1000, output_tokens=500),
                     model=MODEL, request_id=request_id, latency_ms=5, attempts=1, offline=False, cost_usd=0.0)


@pytest.fixture
def store_and_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("CASS_HOME", str(tmp_path / "cass"))
    (tmp_path / "cass").mkdir()
    lock = LockedOut(tmp_path / "cass" / "cass.duckdb")
    store = Store(lock.path, connect_fn=lock)
    migrate(store)
    return store, lock


def test_a_paid_answer_is_not_lost_when_the_session_cannot_be_taken_up_again(store_and_lock):
    store, lock = store_and_lock
    settings = load_settings().model_copy(update={"daily_budget_usd": 5.0, "reserve_usd": 0.5})

    class Backend:
        mode = "anthropic"

        def model_for(self, tier):
            return MODEL

        def text(self, request):
            lock.arm()   # the answer is billed; meanwhile another process took the file for > OPEN_DEADLINE_S
            return paid("req_paid_1")

    ctx = MeterContext(date=DAY, phase="morning", category="reflection", priority="normal", work_unit_id="wu_1",
                       action_id="reflection.think", run_id="run_1", step_key="s1")
    client = MeteredClient(Backend(), store, settings, load_pricing(), ctx, FixedClock(NOW))
    with pytest.raises(duckdb.IOException), store.session():   # run_action's session
        client.text(LLMRequest(tier="deep", system_prefix="I am Cass.", prompt="Think.", max_tokens=500))

    rows = [line for f in paid_log.log_dir(settings.home).glob("*.jsonl") for line in f.read_text().splitlines()]
    ledger = store.all("SELECT request_id FROM llm_ledger")
    reservation = store.one("SELECT status FROM reservations")
    # The provider billed req_paid_1: it must be in the write-ahead log (recovery settles it) or the ledger.
    assert rows or ledger, (f"billed answer lost: paid log {rows}, ledger {ledger}, hold {reservation}")


def test_a_created_batch_is_not_taken_for_unsent_when_the_session_cannot_be_taken_up_again(store_and_lock):
    store, lock = store_and_lock
    settings = load_settings().model_copy(update={"daily_budget_usd": 5.0, "reserve_usd": 0.5, "batch_work": True})

    class Batches:
        mode = "anthropic"

        def model_for(self, tier):
            return MODEL

        def submit_batch(self, items):
            lock.arm(2)   # the batch exists (its answers will be billed); the window's id store and the re-open fail
            return "msgbatch_1"

        def collect_batch(self, batch_id, items):
            return {i.custom_id: BatchAnswer(i.custom_id, paid("req_b1")) for i in items}

    ctx = MeterContext(date=DAY, phase="night", category="memory", priority="normal", work_unit_id="wu_1",
                       action_id="memory.summarize", run_id="run_1", step_key="s1", batch=True)
    client = MeteredClient(Batches(), store, settings, load_pricing(), ctx, FixedClock(NOW))
    assert client.batching
    with pytest.raises(duckdb.IOException), store.session():
        client.text(LLMRequest(tier="deep", system_prefix="I am Cass.", prompt="Summarise.", max_tokens=500))
    row = store.one("SELECT state, batch_id, error FROM llm_batches")
    hold = store.one("SELECT status, actual_usd FROM reservations")
    # msgbatch_1 was created: its request must stay pending (collected and settled later), its hold kept.
    assert row["state"] in ("submitting", "submitted") and hold["status"] == "held", (row, hold)
