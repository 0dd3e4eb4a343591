"""Work no one waits for goes through Message Batches: at the wire (the real SDK against the loopback
API's batch endpoints) and offline. Each answer is settled through the same hold, write-ahead log
and ledger path at the batch price; a batch that outlives its submitter is collected later and its
answer used without paying twice; one that never answers releases its hold."""
from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import BaseModel
from test_reliability import api_home  # noqa: F401  (fixture: the sample agent on the real SDK, loopback API)
from test_spending import Ticking

from cass_pipelines.config.settings import load_settings
from cass_pipelines.domain.batching import BatchState, no_one_waits
from cass_pipelines.domain.settings import Settings
from cass_pipelines.llm import holds
from cass_pipelines.llm.anthropic_backend import AnthropicBackend
from cass_pipelines.llm.base import BatchAnswer, BatchItem, LLMError, LLMRequest, Usage
from cass_pipelines.llm.offline import OfflineBackend
from cass_pipelines.llm.pricing import load_pricing
from cass_pipelines.services.batch_window import BatchWindow
from cass_pipelines.services.metering import BatchPending, MeterContext, MeteredClient, collect_batches
from cass_pipelines.store import batches
from cass_pipelines.store import budget as sb
from cass_pipelines.store.db import Store
from cass_pipelines.store.schema import migrate

DAY = date(2026, 11, 26)
NOW = datetime(2026, 11, 26, 23, tzinfo=timezone.utc)
PREFIX = "I am Cass. " + "These are the values and the catalogue I work from. " * 900   # above every minimum


class Summary(BaseModel):
    summary: str
    topics: list[str]


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path, daily_budget_usd=2.0, reserve_usd=0.1, batch_poll_s=0.01, batch_wait_s=5)


@pytest.fixture
def store(settings) -> Store:
    s = Store(settings.db_path)
    migrate(s)
    return s


def meter(store, settings, inner, run_id="run_1", **ctx) -> MeteredClient:
    base = dict(date=DAY, phase="night", category="memory", priority="normal", work_unit_id="wu_1",
                action_id="memory.summarize_conversation", run_id=run_id, step_key="step_1")
    return MeteredClient(inner, store, settings, load_pricing(), MeterContext.waiting_for_no_one(
        settings, **{**base, **ctx}), Ticking(NOW))


def ask(client: MeteredClient, prompt: str = "- the conversation about rest\n- what to follow up"):
    return client.structured(LLMRequest(tier="fast", system_prefix=PREFIX, prompt=prompt, max_tokens=600), Summary)


def ledger(store) -> list[dict]:
    return store.all("SELECT request_id, cost_usd, reserved_usd, batch, model, input_tokens, output_tokens, "
                     "cache_creation_input_tokens, cache_read_input_tokens, cache_creation_1h_input_tokens "
                     "FROM llm_ledger ORDER BY ts")


def list_cost(row: dict) -> float:
    return load_pricing().cost(row["model"], Usage(row["input_tokens"], row["output_tokens"],
                                                   row["cache_creation_input_tokens"], row["cache_read_input_tokens"],
                                                   row["cache_creation_1h_input_tokens"]))


def test_memory_and_night_work_wait_for_no_one_but_daytime_work_and_the_plan_do():
    assert no_one_waits("memory", "morning") and no_one_waits("research", "night")
    assert not no_one_waits("research", "afternoon") and not no_one_waits("system", "evening")


def test_a_batched_call_at_the_wire_is_settled_at_half_price_under_its_hold(store, settings, fake_anthropic):
    inner = AnthropicBackend(settings, load_pricing())
    out = ask(meter(store, settings, inner))
    assert out.parsed.summary
    # Sent as a batch (not to /v1/messages), its prefix cached for an hour (batches may run long).
    sent = [r for r in fake_anthropic.requests if r["path"].startswith("/v1/messages/batches")]
    assert len(sent) == 1 and not [r for r in fake_anthropic.requests if r["path"] == "/v1/messages"]
    params = sent[0]["body"]["requests"][0]["params"]
    assert params["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert params["output_config"]["format"]["type"] == "json_schema"
    [row] = ledger(store)
    assert row["batch"] and row["request_id"] == fake_anthropic.answered[0].request_id
    assert fake_anthropic.answered[0].batch
    assert row["cost_usd"] == pytest.approx(list_cost(row) * 0.5)
    assert row["cost_usd"] <= row["reserved_usd"] <= 3 * row["cost_usd"]   # held at batch rates, never below
    assert out.cost_usd == pytest.approx(row["cost_usd"])
    assert store.one("SELECT state, used FROM llm_batches") == {"state": "collected", "used": True}
    assert store.scalar("SELECT count(*) FROM reservations WHERE status = 'reconciled'") == 1
    assert (settings.home / "paid").is_dir()                                 # write-ahead log first


def test_a_batched_structured_answer_after_a_web_search_is_read_from_its_last_text_block(store, settings,
                                                                                        fake_anthropic):
    """With the search tool the answer narrates the search in a text block before the JSON one; a batched
    answer is parsed from its last text block, as an interactive one is (night research searches, batched)."""
    searching = settings.model_copy(update={"web_search": True})
    inner = AnthropicBackend(searching, load_pricing())
    out = meter(store, searching, inner, category="research", action_id="research.run_single").structured(
        LLMRequest(tier="fast", system_prefix=PREFIX, prompt="- what is known about rest", max_tokens=600,
                   web_search=True), Summary)
    assert out.parsed.summary and out.usage.web_search_requests == 1
    assert [r for r in fake_anthropic.requests if r["path"].startswith("/v1/messages/batches")]


def test_a_batch_outliving_its_run_is_collected_later_and_its_answer_used_once(store, settings, fake_anthropic):
    inner = AnthropicBackend(settings, load_pricing())
    fake_anthropic.batch_delay_s = 3600          # still processing when the job stops waiting
    waiting = replace_wait(settings, 0.05)
    with pytest.raises(BatchPending, match="waiting for message batch"):
        ask(meter(store, waiting, inner, run_id="run_gone"))
    assert store.scalar("SELECT state FROM llm_batches") == BatchState.SUBMITTED
    # Its run ends: the stale-hold sweep leaves the hold alone (an answer may still be billed).
    assert sb.release_stale(store, lambda run: True, NOW) == []
    assert store.scalar("SELECT status FROM reservations") == "held"
    assert collect_batches(inner, store, settings, load_pricing(), Ticking(NOW), lambda run: True)[BatchState.SUBMITTED]
    # The batch ends; batch_sensor's pass settles it at the batch price under the same hold.
    fake_anthropic.batch_delay_s = 0
    done = collect_batches(inner, store, settings, load_pricing(), Ticking(NOW), lambda run: True)
    assert len(done[BatchState.COLLECTED]) == 1
    [row] = ledger(store)
    assert row["batch"] and row["cost_usd"] <= row["reserved_usd"]
    assert store.scalar("SELECT status FROM reservations") == "reconciled"
    # Collecting again records nothing twice.
    assert collect_batches(inner, store, settings, load_pricing(), Ticking(NOW), lambda run: True)[BatchState.COLLECTED] == []
    # The work's re-run takes the stored answer: no new batch, no new ledger row, no prompt counted.
    counted = len(fake_anthropic.counted)
    again = ask(meter(store, settings, inner, run_id="run_2"))
    assert again.parsed.summary and again.request_id == row["request_id"]
    assert len(fake_anthropic.batches) == 1 and len(ledger(store)) == 1 and len(fake_anthropic.counted) == counted
    # A third run asks afresh (the answer was used once).
    ask(meter(store, settings, inner, run_id="run_3"))
    assert len(fake_anthropic.batches) == 2 and len(ledger(store)) == 2


def test_an_actions_answer_is_used_when_the_action_ends_and_an_unusable_one_at_once(store, settings, fake_anthropic):
    """An action's answer stays for a re-run until the action ends (store.plans.finish_action marks it);
    one it cannot use (here: a refusal, not the schema) is used at once, so a re-run asks afresh."""
    inner = AnthropicBackend(settings, load_pricing())
    ask(meter(store, settings, inner, used_when_action_ends=True))
    assert store.scalar("SELECT bool_or(used) FROM llm_batches") is False
    fake_anthropic.refuse_when.append("the refused one")
    with pytest.raises(LLMError, match="did not match Summary"):
        ask(meter(store, settings, inner, used_when_action_ends=True), "- the refused one")
    assert [r["used"] for r in store.all("SELECT used FROM llm_batches ORDER BY submitted_at")] == [False, True]
    with store.transaction() as conn:   # what finish_action does for an action that completed or failed
        batches.used_by_action(conn, "wu_1", "memory.summarize_conversation")
    assert store.scalar("SELECT bool_and(used) FROM llm_batches") is True


def test_a_batch_that_never_answers_releases_its_hold_and_the_work_asks_again(store, settings, fake_anthropic):
    inner = AnthropicBackend(settings, load_pricing())
    fake_anthropic.expire_batches = True
    with pytest.raises(BatchPending, match="returned no answer") as refused:
        ask(meter(store, settings, inner))
    assert not refused.value.answer_coming and refused.value.scope == "batch_failed"   # offered again, afresh
    assert store.one("SELECT state, error FROM llm_batches") == {"state": "failed", "error": "expired"}
    assert store.scalar("SELECT status FROM reservations") == "released"
    assert ledger(store) == []
    fake_anthropic.expire_batches = False
    assert ask(meter(store, settings, inner)).parsed.summary
    assert len(fake_anthropic.batches) == 2 and len(ledger(store)) == 1


def test_a_submitter_that_died_before_storing_the_batch_id_keeps_its_hold_until_expiry(store, settings):
    inner = OfflineBackend(settings, load_pricing())
    client = meter(store, settings, inner, run_id="run_gone")
    held = sb.reserve(store, day=DAY, category="memory", amount_usd=0.01, settings=settings, priority="normal",
                      run_id="run_gone", now=NOW)
    batches.add(store, batches.NewBatchRequest(
        custom_id="cass_lost", request_key="k", reservation_id=held.id, date=DAY, phase="night", category="memory",
        priority="normal", work_unit_id="wu_1", action_id="a", run_id="run_gone", step_key=None,
        model=client.model_for("fast"), request={}, pid=1, submitted_at=NOW))
    assert sb.release_stale(store, lambda run: True, NOW) == []
    late = Ticking(NOW + timedelta(hours=25))
    done = collect_batches(inner, store, settings, load_pricing(), late, lambda run: True)
    assert done[BatchState.LOST] == ["cass_lost"]
    assert store.scalar("SELECT status FROM reservations") == "released"


def test_offline_batches_are_deterministic_and_priced_as_batches(store, settings):
    first = ask(meter(store, settings, OfflineBackend(settings, load_pricing()), work_unit_id="wu_a"))
    second = ask(meter(store, settings, OfflineBackend(settings, load_pricing()), work_unit_id="wu_b"))
    assert first.text == second.text and first.offline
    rows = ledger(store)
    assert [r["batch"] for r in rows] == [True, True]
    assert all(r["cost_usd"] == pytest.approx(list_cost(r) * 0.5) for r in rows)
    assert rows[0]["request_id"].startswith("offline_cass_")


def test_with_no_wait_a_batch_is_still_looked_at_once(store, settings):
    """batch_wait_s = 0: no waiting, but a batch that has already ended (offline: at once) is collected."""
    answer = ask(meter(store, replace_wait(settings, 0), OfflineBackend(settings, load_pricing())))
    assert answer.parsed is not None and [r["batch"] for r in ledger(store)] == [True]


def test_daytime_work_is_answered_at_once_at_the_list_price(store, settings):
    client = meter(store, settings, OfflineBackend(settings, load_pricing()), phase="morning", category="research",
                   action_id="session.research")
    assert not client.ctx.batch
    ask(client)
    [row] = ledger(store)
    assert not row["batch"] and row["cost_usd"] == pytest.approx(list_cost(row))
    assert store.scalar("SELECT count(*) FROM llm_batches") == 0


def test_a_phase_whose_calls_spanned_more_than_five_minutes_caches_for_an_hour(store, settings, fake_anthropic):
    assert holds.phase_ttl(None, "5m") == "5m" and holds.phase_ttl(299, "5m") == "5m"
    assert holds.phase_ttl(301, "5m") == "1h"
    inner = AnthropicBackend(settings, load_pricing())
    earlier = datetime(2026, 11, 25, 9, tzinfo=timezone.utc)
    for minutes in (0, 20):   # yesterday's morning calls were twenty minutes apart
        client = meter(store, settings, inner, date=DAY - timedelta(days=1), phase="morning", category="research",
                       action_id="session.research")
        client.clock = Ticking(earlier + timedelta(minutes=minutes))
        ask(client, f"- question {minutes}")
    ask(meter(store, settings, inner, phase="morning", category="research", action_id="session.research"))
    controls = [r["body"]["system"][0]["cache_control"] for r in fake_anthropic.requests if r["path"] == "/v1/messages"]
    assert controls == [{"type": "ephemeral"}, {"type": "ephemeral"}, {"type": "ephemeral", "ttl": "1h"}]


def replace_wait(settings: Settings, seconds: float) -> Settings:
    return settings.model_copy(update={"batch_wait_s": seconds})


def test_batch_states_are_listed(store, settings):
    ask(meter(store, settings, OfflineBackend(settings, load_pricing())))
    [row] = batches.listing(store, DAY)
    assert row["state"] == "collected" and row["billed_usd"] <= row["reserved_usd"]
    assert batches.counts(store, DAY)["collected"] == 1
    assert json.dumps(row, default=str)


def test_batch_sensor_settles_a_batch_whose_run_ended_and_lists_states(store, settings, fake_anthropic):
    import dagster as dg
    from dagster._core.test_utils import create_run_for_test

    from cass_pipelines.config.registry import load_registry
    from cass_pipelines.defs.budget.batch_sensor import build_batch_sensor
    from cass_pipelines.defs.resources import cass_resource

    inner = AnthropicBackend(settings, load_pricing())
    fake_anthropic.batch_delay_s = 3600
    with dg.instance_for_test() as instance:
        run = create_run_for_test(instance, job_name="phase_job", status=dg.DagsterRunStatus.STARTED)
        with pytest.raises(BatchPending):
            ask(meter(store, replace_wait(settings, 0.05), inner, run_id=run.run_id))
        cass = cass_resource(settings, fixed_now=NOW.isoformat())   # auto mode: the API key is set

        def tick():
            with dg.build_sensor_context(instance=instance, resources={"cass": cass}) as ctx:
                return build_batch_sensor(settings, load_registry()).evaluate_tick(ctx).skip_message

        fake_anthropic.batch_delay_s = 0
        assert "submitted 1" in tick()                   # its run is alive: it collects its own
        instance.report_run_failed(instance.get_run_by_id(run.run_id))
        message = tick()
        assert "collected now: cass_" in message and "submitted 0" in message
    [row] = ledger(store)
    assert row["batch"] and store.scalar("SELECT status FROM reservations") == "reconciled"


def test_a_day_sends_memory_and_night_work_as_batches_and_reports_them(sample_home, capsys):
    from support import SAMPLE_DAY, invariant_violations

    from cass_pipelines.cli.main import main as cli_main

    assert cli_main(["run-day", "--date", SAMPLE_DAY.isoformat(), "--json"]) == 0
    capsys.readouterr()
    assert cli_main(["budget", "--date", SAMPLE_DAY.isoformat(), "--json"]) == 0
    budget = json.loads(capsys.readouterr().out)
    assert budget["batches"]["collected"] >= 1 and budget["batches"]["submitted"] == 0
    assert budget["reserved_usd"] == 0 and budget["reservation_vs_bill"]["breaches"] == 0
    assert cli_main(["batches", "--date", SAMPLE_DAY.isoformat(), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {r["state"] for r in listed} == {"collected"}
    assert all(r["billed_usd"] <= r["reserved_usd"] for r in listed)
    # Exactly the calls no one waits for were batched: memory work, and everything at night.
    store = Store(load_settings().db_path)
    kinds = store.all("SELECT DISTINCT phase, category, batch FROM llm_ledger WHERE date = ?", [SAMPLE_DAY])
    assert kinds and all(r["batch"] == no_one_waits(r["category"], r["phase"]) for r in kinds), kinds
    assert any(r["batch"] for r in kinds) and any(not r["batch"] for r in kinds)
    # Every batched answer was used by the action or the summary that asked, when it ended.
    assert store.scalar("SELECT count(*) FROM llm_batches WHERE action_id = 'summary.work_unit'") >= 1
    assert store.scalar("SELECT count(*) FROM llm_batches WHERE NOT used") == 0
    assert not invariant_violations(store)["ended_actions_answers_unused"]


def test_a_memory_run_sends_its_conversations_in_one_batch_and_one_look_serves_them_all(api_home):  # noqa: F811
    """The sample's 56 conversations go out in one Message Batch (not one batch per conversation, eight
    at a time), a few status looks serve every call waiting on it, and each answer is settled once, at
    the batch price, under its own hold."""
    from cass_pipelines.definitions import build_defs
    from cass_pipelines.execution import instance_for, run_memory
    from cass_pipelines.services.runtime import open_runtime

    env, server = api_home
    server.batch_delay_s = 1.0   # looked at 0, 0.25, 0.625, 1.19, 2.03 s after its creation
    rt = open_runtime()
    assert run_memory(build_defs(rt.settings, rt.registry), instance_for(rt.settings)).success
    [(batch_id, batch)] = server.batches.items()
    assert len(batch["requests"]) == 56
    assert len(server.counted) == 56 + 2   # each prompt, and the shared prefix probed once (with and without)
    # A few status looks (4 or 5 as the machine goes), not one loop per conversation; the SDK's
    # results() reads the batch once more to find its results URL.
    assert 4 <= server.batch_looks[batch_id] - 1 <= 5
    assert rt.store.scalar("SELECT count(DISTINCT conversation_id) FROM conversation_summaries") == 56
    rows = rt.store.all("SELECT l.batch, l.cost_usd, r.amount_usd, r.status FROM llm_ledger l "
                        "JOIN reservations r ON r.id = l.reservation_id")
    assert len(rows) == 56 and len({r["status"] for r in rows}) == 1 and rows[0]["status"] == "reconciled"
    assert all(r["batch"] and r["cost_usd"] <= r["amount_usd"] for r in rows)
    assert rt.store.scalar("SELECT count(*) FROM llm_batches WHERE batch_id = ? AND state = 'collected'",
                           [batch_id]) == 56


def test_an_outage_while_looking_at_the_catchups_batch_defers_it_and_nothing_is_paid_twice(api_home):  # noqa: F811
    """The API answers 529 to every look at the catch-up's batch for longer than the SDK retries: the batch
    goes on and bills, so the catch-up keeps looking, and when the outage outlasts its wait it is
    deferred for its batch with its holds kept (not failed: a failed unit is never taken up again, and
    the next catch-up would pay for every conversation a second time). Once the batch is collected, the
    next run uses its answers."""
    import time

    from cass_pipelines.definitions import build_defs
    from cass_pipelines.domain.clock import clock_from_env
    from cass_pipelines.execution import instance_for, run_memory
    from cass_pipelines.services.runtime import open_runtime
    from cass_pipelines.services.watches import watch_batches

    env, server = api_home
    server.batch_delay_s, server.looks_fail_s = 0.5, 3.0
    config = Path(env["CASS_HOME"]) / "cass.toml"
    config.write_text("batch_wait_s = 1.0\n" + config.read_text(encoding="utf-8"), encoding="utf-8")
    rt = open_runtime()
    defs, instance = build_defs(rt.settings, rt.registry), instance_for(rt.settings)
    assert run_memory(defs, instance).success
    unit = rt.store.one("SELECT status, defer_kind, reason FROM work_units WHERE template_id = 'conversation_catchup'")
    assert (unit["status"], unit["defer_kind"]) == ("deferred", "batch"), unit
    assert "its last look failed" in unit["reason"] and "529" in unit["reason"]
    assert rt.store.scalar("SELECT count(*) FROM reservations WHERE status = 'held'") == 56
    created = max(b["created"] for b in server.batches.values())   # (a loaded machine may send two)
    time.sleep(max(0.0, created + server.looks_fail_s - time.monotonic()))   # the outage is over
    watch_batches(rt.store, rt.settings, clock_from_env(), lambda run_id: True, lambda: rt.llm)
    assert run_memory(defs, instance).success
    assert sum(len(b["requests"]) for b in server.batches.values()) == 56   # asked once
    assert rt.store.scalar("SELECT count(DISTINCT conversation_id) FROM conversation_summaries") == 56
    assert rt.store.scalar("SELECT count(*) FROM llm_batches WHERE state = 'collected' AND NOT used") == 0
    assert rt.store.scalar("SELECT count(*) FROM llm_ledger") == 56


def side_by_side(n: int, call) -> dict[int, object]:
    """call(k) for k < n, each on its own thread, all at once: what each returned, or the exception it raised."""
    import threading

    out: dict[int, object] = {}

    def run(k: int) -> None:
        try:
            out[k] = call(k)
        except Exception as exc:   # noqa: BLE001 - what each caller gets is the subject of the tests
            out[k] = exc

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def asked_together(client: MeteredClient, n: int) -> dict[int, object]:
    """n threads ask through one client at once (as the memory catch-up does): what each got."""
    with client.coming(n):
        return side_by_side(n, lambda k: ask(client, prompt=f"- conversation {k}"))


def test_a_batchs_answers_are_settled_together_and_its_id_stored_once(store, settings, monkeypatch):
    """The window stores a new batch's id for all its requests in one statement and settles every answer
    one look brings in in one transaction; each caller still gets its own answer, paid once."""
    from cass_pipelines.services import metering

    stored, settled = [], []
    real_submitted, real_settle_all = batches.submitted, metering.settle_all
    monkeypatch.setattr(batches, "submitted", lambda st, ids, b: stored.append(len(ids)) or real_submitted(st, ids, b))
    monkeypatch.setattr(metering, "settle_all", lambda st, rows, now: settled.append(len(rows)) or
                        real_settle_all(st, rows, now))
    got = asked_together(meter(store, settings, OfflineBackend(settings, load_pricing())), 6)
    assert all(r.parsed.summary for r in got.values())
    assert stored == [6] and settled == [6]
    rows = ledger(store)
    assert len(rows) == 6 and len({r["request_id"] for r in rows}) == 6 and all(r["batch"] for r in rows)
    assert store.scalar("SELECT count(*) FROM reservations WHERE status = 'reconciled'") == 6
    assert store.scalar("SELECT count(*) FROM llm_batches WHERE state = 'collected' AND used") == 6


def test_a_batch_id_the_window_cannot_store_is_stored_by_each_caller(store, settings, monkeypatch):
    """The window's store of the batch id fails: each caller stores its own. Callers after the first store
    theirs late, once the first one's look has settled their answers: a settled row keeps its state, and
    the batch id comes with the settlement."""
    import threading
    import time

    real, own = batches.submitted, []
    guard = threading.Lock()

    def refuse_the_group(st, ids, batch_id):
        if len(ids) > 1:
            raise RuntimeError("the file is busy")
        with guard:
            own.append(ids[0])
            late = len(own) > 1
        if late:
            time.sleep(0.5)
        real(st, ids, batch_id)

    monkeypatch.setattr(batches, "submitted", refuse_the_group)
    got = asked_together(meter(store, settings, OfflineBackend(settings, load_pricing())), 4)
    assert all(not isinstance(r, Exception) and r.parsed.summary for r in got.values()), got
    assert len(own) == 4
    assert store.one("SELECT count(*) AS n, count(DISTINCT batch_id) AS batches, count(batch_id) AS with_id "
                     "FROM llm_batches WHERE state = 'collected' AND used") == {"n": 4, "batches": 1, "with_id": 4}
    assert len(ledger(store)) == 4
    assert store.scalar("SELECT count(*) FROM reservations WHERE status = 'reconciled'") == 4


def test_a_settlement_that_fails_fails_the_looker_alone_and_its_answer_is_collected_later(store, settings,
                                                                                         monkeypatch):
    """The waiter whose look brought the answers in gets the error; the others look again and settle
    theirs; the looker's answer stays with its stored request until batch_sensor (or run-day) settles it."""
    from cass_pipelines.services import metering

    real, calls = metering.settle_all, []

    def fail_once(st, rows, now):
        calls.append(len(rows))
        if len(calls) == 1:
            raise RuntimeError("disk full")
        return real(st, rows, now)

    monkeypatch.setattr(metering, "settle_all", fail_once)
    inner = OfflineBackend(settings, load_pricing())
    got = asked_together(meter(store, settings, inner, run_id="run_gone"), 5)
    failed = [k for k, r in got.items() if isinstance(r, Exception)]
    assert len(failed) == 1 and "disk full" in str(got[failed[0]])
    assert calls == [5, 4] and len(ledger(store)) == 4
    assert store.scalar("SELECT count(*) FROM reservations WHERE status = 'held'") == 1
    done = collect_batches(inner, store, settings, load_pricing(), Ticking(NOW), lambda run: True)
    assert len(done[BatchState.COLLECTED]) == 1 and len(ledger(store)) == 5
    assert store.scalar("SELECT count(*) FROM reservations WHERE status = 'reconciled'") == 5


class Recording:
    """A BatchClient that records the batches it is asked to create (or refuses them) and answers each
    item once its batch has been looked at `ends_after` times."""

    def __init__(self, fail: Exception | None = None, ends_after: int = 1):
        self.created: list[list[str]] = []
        self.looks: list[tuple[str, int]] = []
        self.fail, self.ends_after = fail, ends_after

    def submit_batch(self, items):
        if self.fail:
            raise self.fail
        self.created.append([i.custom_id for i in items])
        return f"batch_{len(self.created)}"

    def collect_batch(self, batch_id, items):
        self.looks.append((batch_id, len(items)))
        if sum(1 for b, _ in self.looks if b == batch_id) < self.ends_after:
            return None
        return {i.custom_id: BatchAnswer(i.custom_id, None, f"answer to {i.custom_id}") for i in items}


def gathered(window: BatchWindow, n: int) -> dict[str, object]:
    """n threads announce themselves, reserve (a short, uneven pause) and send one item each, then wait
    for its answer; returns what each got (an answer's error text, or the exception it raised)."""
    import threading
    import time

    together = threading.Barrier(n)

    def call(k: int) -> object:
        item = BatchItem(f"c{k}", LLMRequest(tier="fast", system_prefix="", prompt=str(k), max_tokens=10), None)
        window.expect()
        together.wait()   # all on their way before any sends
        time.sleep(0.002 * (k % 5))
        answer = window.answer(window.send(item).batch_id, item, time.monotonic() + 10)
        return answer and answer.error

    return {f"c{k}": got for k, got in side_by_side(n, call).items()}


def test_calls_made_together_go_out_in_one_batch_and_share_its_looks():
    client = Recording(ends_after=3)
    window = BatchWindow(client, poll_s=0.05, gather_s=5.0)
    got = gathered(window, 20)
    assert len(client.created) == 1
    assert sorted(client.created[0]) == sorted(f"c{k}" for k in range(20))   # one batch: no one waited 5 s
    assert got == {f"c{k}": f"answer to c{k}" for k in range(20)}
    assert len(client.looks) == 3 and client.looks[-1] == ("batch_1", 20)    # every waiter served by 3 looks


def test_calls_that_arrive_steadily_or_start_late_still_share_one_batch():
    """On a loaded machine the memory catch-up's reservations arrive one after another over more than
    the gather time, and a thread may start after the others have sent: promised calls and calls still
    arriving (each within the gather time of the last) go out in one batch."""
    import threading
    import time

    client = Recording()
    window = BatchWindow(client, poll_s=0.05, gather_s=0.6)
    window.promise(12)

    def call(k: int) -> None:
        time.sleep(0.1 * k)   # 1.1 s from the first to the last: nearly twice the gather time
        window.expect()
        window.send(BatchItem(f"c{k}", LLMRequest(tier="fast", system_prefix="", prompt=str(k), max_tokens=10)))

    threads = [threading.Thread(target=call, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    window.unpromise()
    assert client.created == [[f"c{k}" for k in range(12)]]
    # A promised call that never starts holds the batch back only until the promise is taken back.
    window = BatchWindow(client, poll_s=0.05, gather_s=30.0)
    window.promise(2)
    window.expect()
    sent = threading.Thread(target=window.send, args=(
        BatchItem("alone", LLMRequest(tier="fast", system_prefix="", prompt="x", max_tokens=10)),))
    started = time.monotonic()
    sent.start()
    sent.join(0.3)
    assert sent.is_alive()   # waiting for the other promised call
    window.unpromise()
    sent.join(5)
    assert client.created[-1] == ["alone"] and time.monotonic() - started < 5


def test_a_batch_that_cannot_be_created_fails_every_call_in_it_and_the_window_stays_usable():
    client = Recording(fail=LLMError("Anthropic API error 529 submitting a message batch", retryable=True))
    window = BatchWindow(client, poll_s=0.05)
    got = gathered(window, 6)
    assert all(isinstance(e, LLMError) and "529" in str(e) for e in got.values()), got
    client.fail = None
    assert gathered(window, 2) == {"c0": "answer to c0", "c1": "answer to c1"}


def test_a_request_that_refuses_the_whole_batch_fails_alone():
    """A 400 for the batch (one bad request in it): each item is sent again alone, so only the bad one's
    call fails; an outage (retryable) fails every call of the batch at once, as it concerns all."""
    class RefusesBad(Recording):
        def submit_batch(self, items):
            if any(i.custom_id == "c3" for i in items):
                raise LLMError("Anthropic API error 400 submitting a message batch: c3 is invalid", status=400)
            return super().submit_batch(items)

    client = RefusesBad()
    got = gathered(BatchWindow(client, poll_s=0.05, gather_s=5.0), 6)
    assert isinstance(got.pop("c3"), LLMError)
    assert got == {f"c{k}": f"answer to c{k}" for k in (0, 1, 2, 4, 5)}
    assert sorted(map(len, client.created)) == [1, 1, 1, 1, 1]   # the batch refused, then one by one


def test_a_look_the_api_cannot_answer_is_a_look_at_a_running_batch():
    """An outage while looking at a batch (a 529 after the SDK's retries): the batch goes on and bills, so its
    waiters look again, and at their deadline wait for it like a running one (the work is deferred for
    its batch, never failed and asked again); an error that will not pass goes to the waiter that looked."""
    import time

    class Flaky(Recording):
        def __init__(self, failures: list[LLMError]):
            super().__init__()
            self.failures = failures

        def collect_batch(self, batch_id, items):
            if self.failures:
                self.looks.append((batch_id, -1))
                raise self.failures.pop(0)
            return super().collect_batch(batch_id, items)

    outage = [LLMError("Anthropic API error 529 reading message batch batch_1: Overloaded", status=529,
                       retryable=True) for _ in range(3)]
    client = Flaky(list(outage))
    window = BatchWindow(client, poll_s=0.05)
    assert gathered(window, 4) == {f"c{k}": f"answer to c{k}" for k in range(4)}
    assert [n for _, n in client.looks] == [-1, -1, -1, 4] and window.trouble == {}

    client = Flaky(list(outage) * 100)   # longer than the wait: every waiter gives up at its deadline
    window = BatchWindow(client, poll_s=1.0)   # looks at 0, 0.25 and 0.5 s
    items = [BatchItem(f"c{k}", LLMRequest(tier="fast", system_prefix="", prompt=str(k), max_tokens=10), None)
             for k in range(8)]
    for _ in items:
        window.expect()
    sent = side_by_side(8, lambda k: window.send(items[k]))
    deadline = time.monotonic() + 0.5
    assert side_by_side(8, lambda k: window.answer(sent[k].batch_id, items[k], deadline)) == dict.fromkeys(range(8))
    assert "529" in window.trouble["batch_1"]
    assert len(client.looks) <= 4, client.looks   # not one more by each waiter as its deadline passed

    client = Flaky([LLMError("Anthropic API error 404 reading message batch batch_1: not found", status=404)])
    window = BatchWindow(client, poll_s=0.05)
    item = items[0]
    window.expect()
    sent = window.send(item)
    with pytest.raises(LLMError, match="404"):
        window.answer(sent.batch_id, item, time.monotonic() + 5)


def test_a_settlement_that_fails_at_the_deadline_fails_the_looker_and_the_others_look_again(monkeypatch):
    """A look whose settlement failed is no look for the other waiters, and once a look saw the batch ended
    none of them gives up on it: past their deadline, they look once more and take their answers. (Every
    waiter is waiting before the first look, the order in which they gave up.)"""
    import time

    from cass_pipelines.services import stopping

    failures = [RuntimeError("settle failed (a DuckDB hiccup)")]

    def on_answers(batch_id, answers):
        if failures:
            raise failures.pop()

    client = Recording(ends_after=2)   # running at the first look, ended at the second
    window = BatchWindow(client, poll_s=1.0, on_answers=on_answers)
    real_pause = stopping.pause

    def pause(seconds):   # the first look lets the other three come to wait first (with the fix, any order passes)
        if not client.looks:
            time.sleep(0.05)
        return real_pause(seconds)

    monkeypatch.setattr(stopping, "pause", pause)
    items = [BatchItem(f"c{k}", LLMRequest(tier="fast", system_prefix="", prompt=str(k), max_tokens=10), None)
             for k in range(4)]
    for _ in items:
        window.expect()
    sent = side_by_side(4, lambda k: window.send(items[k]))
    deadline = time.monotonic() + 0.2   # the second look is made at it (its pause is cut to the deadline)
    got = side_by_side(4, lambda k: window.answer(sent[k].batch_id, items[k], deadline))
    assert len([v for v in got.values() if isinstance(v, RuntimeError)]) == 1
    assert sorted(v.error for v in got.values() if not isinstance(v, RuntimeError)) == [
        f"answer to c{k}" for k in range(4) if not isinstance(got[k], RuntimeError)]


def test_a_call_that_withdraws_does_not_hold_back_the_batch():
    import time

    client = Recording()
    window = BatchWindow(client, poll_s=0.05, gather_s=30.0)
    window.expect()
    window.expect()
    window.withdraw()   # its hold was refused: it will never send
    started = time.monotonic()
    item = BatchItem("only", LLMRequest(tier="fast", system_prefix="", prompt="x", max_tokens=10), None)
    assert window.send(item).batch_id == "batch_1" and time.monotonic() - started < 5


def test_a_run_killed_between_submitting_and_collecting_a_batch_loses_nothing_paid(api_home):  # noqa: F811
    """SIGKILL right after a night call's batch id is stored: the re-run (or batch_sensor) collects
    that batch, settles it under the hold the dead run took, and the work uses it without a second
    batch; every answer the server billed is in the ledger once, and no hold is left."""
    from support import SAMPLE_DAY
    from test_reliability import KILLED, check_invariants, cli, one_call_at_a_time

    from cass_pipelines.services.runtime import open_runtime

    env, server = api_home
    one_call_at_a_time(env)   # the kill comes after the one batch in flight
    killed = cli(env, "run-phase", "night", "--date", SAMPLE_DAY.isoformat(), failpoint="batch_submitted")
    assert killed.returncode == KILLED, killed.stderr[-1500:]
    rt = open_runtime()
    [pending] = rt.store.all("SELECT custom_id, state, reservation_id FROM llm_batches")
    assert pending["state"] == BatchState.SUBMITTED and len(server.batches) == 1
    again = cli(env, "run-phase", "night", "--date", SAMPLE_DAY.isoformat())
    assert again.returncode == 0, again.stderr[-2000:]
    check_invariants(server, allow=("actions_paid_by_two_runs",))   # the killed run's batch, settled by the next
    first = rt.store.one("SELECT state, used, request_id FROM llm_batches WHERE custom_id = ?", [pending["custom_id"]])
    assert first["state"] == BatchState.COLLECTED and first["used"]
    assert rt.store.scalar("SELECT status FROM reservations WHERE id = ?", [pending["reservation_id"]]) == "reconciled"
    assert rt.store.scalar("SELECT count(*) FROM llm_ledger WHERE request_id = ?", [first["request_id"]]) == 1
    # One batch per request: the killed call's request was not sent again.
    keys = rt.store.all("SELECT request_key, count(*) AS n FROM llm_batches GROUP BY ALL HAVING count(*) > 1")
    assert keys == []


def test_run_day_collects_a_killed_runs_batch_whose_work_is_not_asked_again(api_home):  # noqa: F811
    """Without the daemon (no batch_sensor), `run-day` settles what a killed run's batch answered even
    when no run asks for that work again (here the night is not run again): paid once, no hold left.
    While the Batches API cannot answer for it, the day goes on with a warning."""
    from support import SAMPLE_DAY
    from test_reliability import KILLED, cli, one_call_at_a_time

    from cass_pipelines.services.runtime import open_runtime

    env, server = api_home
    one_call_at_a_time(env)
    killed = cli(env, "run-phase", "night", "--date", SAMPLE_DAY.isoformat(), failpoint="batch_submitted")
    assert killed.returncode == KILLED, killed.stderr[-1500:]
    rt = open_runtime()
    [pending] = rt.store.all("SELECT custom_id, reservation_id FROM llm_batches")
    hidden = dict(server.batches)
    server.batches.clear()   # the API answers 404 for the batch
    day = cli(env, "run-day", "--date", SAMPLE_DAY.isoformat(), "--phases", "morning", "--no-journal")
    assert day.returncode == 0, day.stderr[-2000:]
    assert "collecting message batches failed" in day.stderr
    assert rt.store.scalar("SELECT count(*) FROM work_units WHERE phase = 'morning' AND status = 'completed'") >= 1
    server.batches.update(hidden)
    day = cli(env, "run-day", "--date", SAMPLE_DAY.isoformat(), "--phases", "morning", "--no-journal")
    assert day.returncode == 0, day.stderr[-2000:]
    row = rt.store.one("SELECT state, request_id FROM llm_batches WHERE custom_id = ?", [pending["custom_id"]])
    assert row["state"] == BatchState.COLLECTED
    assert rt.store.scalar("SELECT count(*) FROM llm_ledger WHERE request_id = ?", [row["request_id"]]) == 1
    assert rt.store.scalar("SELECT status FROM reservations WHERE id = ?", [pending["reservation_id"]]) == "reconciled"


def test_the_nights_units_and_their_summaries_send_their_batches_side_by_side(api_home):  # noqa: F811
    """At night every call goes through a batch: the units' calls are in flight together, and so are
    their summaries' (one after another, a night waited for as many batches as it had calls, each
    minutes to hours on the real API). The ledger still holds each answer the server billed, once."""
    from support import SAMPLE_DAY, seed_plan
    from test_reliability import check_invariants, cli

    from cass_pipelines.services.runtime import open_runtime

    env, server = api_home
    server.batch_delay_s = 0.5
    # Two night units whatever the agent would choose (its choice follows its week: one unit some weeks).
    seed_plan(open_runtime(), SAMPLE_DAY, "night", ["meta_reflection", "open_question_review"])
    done = cli(env, "run-day", "--date", SAMPLE_DAY.isoformat(), "--phases", "night")
    assert done.returncode == 0, done.stderr[-2000:]
    check_invariants(server)
    rows = open_runtime().store.all(
        "SELECT action_id = 'summary.work_unit' AS summary, work_unit_id, epoch(submitted_at) AS sent, "
        "epoch(ended_at) AS ended FROM llm_batches WHERE phase = 'night' AND state = 'collected'")
    for summary in (False, True):
        group = [r for r in rows if r["summary"] == summary and "journal" not in r["work_unit_id"]]
        assert len({r["work_unit_id"] for r in group}) >= 2, rows
        assert max(r["sent"] for r in group) < min(r["ended"] for r in group), group


def test_work_that_outwaited_its_batch_resumes_under_its_own_ids_and_uses_the_answers_paid(api_home):  # noqa: F811
    """Batches that outlast the wait (minutes to hours on the real API): the night's units are deferred
    waiting for them, and a summary is written without its answer. Once the batches end, the next
    run-day runs that night again (what batch_sensor asks for under the daemon): the units resume under
    their own ids, so their prompts are the same and each answer paid for is used, none asked for twice
    and none re-offered as new work."""
    from support import SAMPLE_DAY
    from test_reliability import check_invariants, cli

    from cass_pipelines.services.runtime import open_runtime

    env, server = api_home
    config = Path(env["CASS_HOME"]) / "cass.toml"
    config.write_text("batch_wait_s = 0.5\n" + config.read_text(encoding="utf-8"), encoding="utf-8")
    server.batch_delay_s = 3
    day = cli(env, "run-day", "--date", SAMPLE_DAY.isoformat(), "--no-journal")
    assert day.returncode == 0, day.stderr[-2000:]
    rt = open_runtime()
    waiting = rt.store.all("SELECT id FROM work_units WHERE phase = 'night' AND defer_kind = 'batch' "
                           "UNION SELECT work_unit_id FROM work_summaries WHERE awaiting_batch")
    assert waiting, "the night waited for no batch"
    assert rt.store.all("SELECT date, phase FROM work_units WHERE deferred_from IN (SELECT unnest(?::TEXT[]))",
                        [[w["id"] for w in waiting]]) == []          # not re-offered as new units
    server.batch_delay_s = 0
    after = cli(env, "run-day", "--date", (SAMPLE_DAY + timedelta(days=1)).isoformat(), "--phases", "morning",
                "--no-journal")
    assert after.returncode == 0, after.stderr[-2000:]
    assert f"run night     of {SAMPLE_DAY.isoformat()} (resumed) ok" in after.stdout
    units = rt.store.all("SELECT u.status, s.awaiting_batch FROM work_units u LEFT JOIN work_summaries s "
                         "ON s.work_unit_id = u.id WHERE u.id IN (SELECT unnest(?::TEXT[]))", [[w["id"] for w in waiting]])
    assert units and all(u["status"] == "completed" and u["awaiting_batch"] is False for u in units), units
    assert rt.store.scalar("SELECT count(*) FROM llm_batches WHERE state = 'collected' AND NOT used") == 0
    # None asked for twice, but an answer cut at its measured output bound (asked again by design: llm/holds.py).
    assert rt.store.all("SELECT b.request_key FROM llm_batches b LEFT JOIN llm_ledger l ON l.request_id = b.request_id "
                        "WHERE l.output_tokens IS NULL OR l.output_tokens < l.max_tokens "
                        "GROUP BY ALL HAVING count(*) > 1") == []
    check_invariants(server)
    assert rt.store.all("SELECT * FROM work_units WHERE status = 'deferred' AND defer_kind = 'batch'") == []


def test_a_summary_written_without_its_answer_is_written_again_from_it_paid_once(api_home):  # noqa: F811
    """A unit's summary whose batch outlasts the wait is written from the unit's record and marked
    `awaiting_batch`; once the batch ends, the partition's next run (batch_sensor asks for it) writes it
    again from the answer already paid for: no second batch, one ledger row."""
    import dagster as dg
    from support import SAMPLE_DAY

    from cass_pipelines.definitions import build_defs
    from cass_pipelines.domain.clock import FixedClock
    from cass_pipelines.domain.plan_rules import PlannedUnit
    from cass_pipelines.services.runner import summarize
    from cass_pipelines.services.runtime import open_runtime
    from cass_pipelines.services.watches import batch_resumes
    from cass_pipelines.store import goals, plans, summaries

    env, server = api_home
    config = Path(env["CASS_HOME"]) / "cass.toml"
    config.write_text("batch_wait_s = 0.2\n" + config.read_text(encoding="utf-8"), encoding="utf-8")
    rt = open_runtime()
    clock = FixedClock(datetime.combine(SAMPLE_DAY, datetime.min.time(), timezone.utc).replace(hour=23))
    template = rt.registry.templates["meta_reflection"]
    plans.add_manual_unit(rt.store, day=SAMPLE_DAY, phase="night", tag="t", now=clock.now(), origin="manual",
                          unit=PlannedUnit("night", template.id, template.category, template.priority, "rest",
                                           "a test", 0.01))
    uid = plans.unit_id(SAMPLE_DAY, "night", "t")
    plans.record_action(rt.store, uid=uid, position=0, action_id=template.action_sequence[0], status="completed",
                        message="reflected on rest", result={"success": True, "message": "reflected on rest",
                                                             "usage": {"output_tokens": 300}, "cost_usd": 0.004},
                        cost_usd=0.004, now=clock.now())
    plans.set_unit_status(rt.store, uid, "completed", clock.now())
    goal = goals.add_goal(rt.store, title="rest well", success_criterion="rested", source="agent", origin_ref=None,
                          templates=[template.id], offline=False, day=SAMPLE_DAY, now=clock.now())
    goals.link_units(rt.store, [(uid, goal, "rest", None)], clock.now())
    server.batch_delay_s = 3600
    first = summarize(rt, plans.get_unit(rt.store, uid), clock, run_id="run_gone")
    assert first["awaiting_batch"] and "waiting for message batch" in first["narrative"]
    [first_note] = goals.progress(rt.store, goal)      # from the unit's record
    assert batch_resumes(rt.store, rt.settings, rt.registry, clock.now()) == []             # its batch is still running
    server.batch_delay_s = 0
    assert collect_batches(rt.llm, rt.store, rt.settings, rt.pricing, clock, lambda run: True)[BatchState.COLLECTED]
    assert [(r.date, r.phase) for r in batch_resumes(rt.store, rt.settings, rt.registry, clock.now())] == [(SAMPLE_DAY, "night")]
    # Under the daemon, batch_sensor asks for that night's run again (once per partition and requests).
    defs = build_defs(rt.settings, rt.registry)
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def(),
                                     resources=defs.resources) as ctx:
            [request] = defs.resolve_sensor_def("batch_sensor").evaluate_tick(ctx).run_requests
    assert request.run_key.startswith(f"batch-resume|{SAMPLE_DAY.isoformat()}|night|1|")
    assert request.partition_key == f"{SAMPLE_DAY.isoformat()}|night" and request.job_name in (None, "phase_job")
    again = summarize(rt, plans.get_unit(rt.store, uid), clock, run_id="run_2")
    assert not again["awaiting_batch"] and "waiting for message batch" not in again["narrative"]
    assert summaries.get(rt.store, uid)["narrative"] == again["narrative"]
    [noted] = goals.progress(rt.store, goal)                                   # the goal hears the answer
    lead = (again["key_insights"] or [again["narrative"]])[0]
    assert noted["note"] != first_note["note"] and lead[:100] in noted["note"]
    assert len(server.batches) == 1                                            # not asked for again
    assert rt.store.scalar("SELECT count(*) FROM llm_ledger WHERE work_unit_id = ?", [uid]) == 1
    assert rt.store.scalar("SELECT bool_and(used) FROM llm_batches") is True
    assert batch_resumes(rt.store, rt.settings, rt.registry, clock.now()) == []
