"""Spending the budget well: the decision call is funded first (its category, then the reserve),
work the day cannot pay for is deferred (not dropped) and offered again, holds are close to bills
and never below them (a breach is an alert), unused room is pooled from the evening, and every
tier's cached prefix is long enough to be cached."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone

import pytest
from pydantic import BaseModel
from support import SAMPLE_DAY, ledger_row

from cass_pipelines.cli.main import main as cli_main
from cass_pipelines.config.settings import load_settings
from cass_pipelines.domain import budget_rules as rules
from cass_pipelines.domain.budget_rules import Funding, Refusal
from cass_pipelines.domain.plan_rules import PlannedUnit
from cass_pipelines.llm import holds
from cass_pipelines.llm.base import LLMRequest, PromptCount
from cass_pipelines.llm.offline import OfflineBackend
from cass_pipelines.llm.pricing import load_pricing
from cass_pipelines.llm.simulate import estimate_tokens
from cass_pipelines.services.handlers.calls import system_prefix
from cass_pipelines.services.metering import BudgetRefused, MeterContext, MeteredClient
from cass_pipelines.store import budget as sb
from cass_pipelines.store import plans
from cass_pipelines.store.control import alerts
from cass_pipelines.store.db import Store

DAY = date(2026, 11, 26)
NOW = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)




@dataclass
class Ticking:
    """A clock that moves on a second per reading (ledger rows keep their order)."""
    at: datetime = NOW

    def now(self) -> datetime:
        self.at += timedelta(seconds=1)
        return self.at


def meter(store, settings, inner, clock=None, **ctx) -> MeteredClient:
    base = dict(date=DAY, phase="morning", category="research", priority="normal", work_unit_id="wu_1",
                action_id="session.research", run_id="run_1", step_key="step_1")
    return MeteredClient(inner, store, settings, load_pricing(), MeterContext(**{**base, **ctx}), clock or Ticking())


# ---- funding: category, pooled room, reserve -----------------------------------------------------

def test_funding_takes_the_category_then_the_pool_then_for_the_decision_call_the_reserve(settings):
    kw = dict(category="system", priority="high", day_spent=0.0, day_held=0.0, category_spent=0.0,
              category_held=0.0)
    assert rules.funding(settings, amount=0.04, **kw) == Funding.CATEGORY
    assert rules.funding(settings, amount=0.06, pooled_room=0.1, **kw) == Funding.POOLED
    refused = rules.funding(settings, amount=0.06, **kw)
    assert isinstance(refused, Refusal) and refused.scope == "category"
    # The decision call may use the whole day, reserve included, but never more.
    assert rules.funding(settings, amount=0.95, may_use_reserve=True, **kw) == Funding.RESERVE
    over = rules.funding(settings, amount=1.01, may_use_reserve=True, **kw)
    assert isinstance(over, Refusal) and over.scope == "day" and over.room_usd == pytest.approx(1.0)
    # Ordinary work never touches the reserve, pooled room or not.
    assert isinstance(rules.funding(settings, amount=0.95, pooled_room=5.0, **kw), Refusal)


def test_pooled_room_opens_in_the_evening_from_idle_plannable_categories_and_at_night_from_memory_and_system(
        store, settings):
    unit = PlannedUnit("evening", "synthesis", "reflection", "normal", "f", "m", 0.01)
    plans.add_manual_unit(store, day=DAY, phase="evening", tag="open", unit=unit, now=NOW)   # reflection is busy
    ask = dict(day=DAY, category="research", settings=settings, priority="normal", now=NOW)
    assert isinstance(sb.reserve(store, amount_usd=0.3, phase="afternoon", **ask), Refusal)   # research: $0.25
    held = sb.reserve(store, amount_usd=0.3, phase="evening", **ask)
    assert not isinstance(held, Refusal) and held.funding == Funding.POOLED
    sb.settle(store, held.id, ledger_row("pooled_1", 0.3, "research"), NOW)
    # For creative: research .25 + growth .15 + curiosity .10 idle room, .30 of it used; reflection is busy.
    creative = {**ask, "category": "creative"}
    assert isinstance(sb.reserve(store, amount_usd=0.3, phase="evening", **creative), Refusal)
    # At night memory .10 and system .05 join the pool (the journal keeps its room).
    at_night = sb.reserve(store, amount_usd=0.3, phase="night", **creative)
    assert not isinstance(at_night, Refusal) and at_night.funding == Funding.POOLED
    sb.release(store, at_night.id, NOW)
    standing = ["journal", "memory", "system"]
    assert rules.pool_room(settings, "research", standing, {}, 0.0, "evening", 0.0) == 0.0   # kept for their jobs
    # From the night on only the journal keeps its room (the daily journal follows the night) ...
    assert rules.pool_room(settings, "research", standing, {"memory": 0.04}, 0.0, "night", 0.04) == pytest.approx(
        settings.category_limit("memory") - 0.04 + settings.category_limit("system"))
    # ... of its share and of the day: the pool never takes the day's last room the journal needs.
    journal_left = settings.daily_budget_usd - settings.reserve_usd - settings.category_limit("journal")
    assert rules.pool_room(settings, "research", standing, {"memory": 0.04}, 0.0, "night", journal_left) < 1e-9
    figures = sb.spend_figures(store, DAY, "evening")
    assert figures["day_spent_usd"] == pytest.approx(0.3) and "research" not in figures["category_spent_usd"]
    status = sb.budget_status(store, settings, DAY)
    assert status["spent_beyond_shares_usd"] == pytest.approx(0.3)
    assert status["utilisation"] == pytest.approx(0.3 / 0.9, abs=1e-4)


def test_a_unit_paid_from_today_keeps_its_category_out_of_todays_pool(store, settings):
    """Yesterday's research unit approved (or retried) today is paid from today while it runs: research is
    today's open work, so its unused room is not pooled for others; yesterday it no longer counts."""
    unit = PlannedUnit("evening", "research_deep_dive", "research", "normal", "f", "m", 0.01)
    yesterday = DAY - timedelta(days=1)
    plans.add_manual_unit(store, day=yesterday, phase="evening", tag="approved", unit=unit, now=NOW)
    uid = plans.unit_id(yesterday, "evening", "approved")
    busy = PlannedUnit("evening", "synthesis", "reflection", "normal", "f", "m", 0.01)
    plans.add_manual_unit(store, day=DAY, phase="evening", tag="open", unit=busy, now=NOW)   # reflection is busy
    ask = dict(category="creative", settings=settings, priority="normal", now=NOW, phase="evening")
    room = sb.reserve(store, day=DAY, amount_usd=0.3, **ask)   # research .25 + growth .15 + curiosity .10 idle
    assert not isinstance(room, Refusal) and room.funding == Funding.POOLED
    sb.release(store, room.id, NOW)
    plans.set_paid_from(store, uid, DAY, "morning")
    assert isinstance(sb.reserve(store, day=DAY, amount_usd=0.3, **ask), Refusal)   # growth + curiosity: .25
    held = sb.reserve(store, day=yesterday, amount_usd=0.3, **ask)
    assert not isinstance(held, Refusal) and held.funding == Funding.POOLED


def test_a_call_refused_after_a_hold_of_it_is_refused_money_and_one_lowered_to_fit_is_not(store, settings):
    """refused_money says whether a day refused a unit's call. A call held at a lower bound after its full ask
    was refused was paid for (`lowered`); a re-ask refused after a hold of the same call (its answer cut at
    the lowered bound) was refused, whatever the order of their timestamps (a fixed clock gives one)."""
    unit, action = "20261126_night_journal", "journal.generate_daily"
    ask = dict(day=DAY, category="journal", settings=settings, priority="high", work_unit_id=unit,
               action_id=action, run_id="run_1", phase="night", now=NOW)
    full = sb.reserve(store, amount_usd=50.0, **ask)
    assert isinstance(full, Refusal) and full.reservation_id
    held = sb.reserve(store, amount_usd=0.01, lowers=[full.reservation_id], **ask)
    assert not isinstance(held, Refusal)
    assert store.scalar("SELECT status FROM reservations WHERE id = ?", [full.reservation_id]) == "lowered"
    assert sb.refused_money(store, unit, DAY) is False
    assert sb.budget_status(store, settings, DAY)["refused_calls"] == 0
    assert isinstance(sb.reserve(store, amount_usd=50.0, **ask), Refusal)   # the re-ask, at the same instant
    assert sb.refused_money(store, unit, DAY) is True


# ---- holds close to bills ------------------------------------------------------------------------

def test_holds_use_counted_tokens_and_the_warm_prefix_and_never_fall_below_the_bill(
        store, settings, runtime, fake_anthropic):
    from cass_pipelines.llm.anthropic_backend import AnthropicBackend

    backend = AnthropicBackend(settings, load_pricing())
    prefix = system_prefix(runtime.store, runtime.registry, backend, "fast")
    clock = Ticking()
    request = LLMRequest(tier="fast", system_prefix=prefix, prompt="Think about budgets.", max_tokens=600)
    yesterday = meter(store, settings, backend, clock, date=DAY - timedelta(days=1))
    for _ in range(3):
        yesterday.text(request)
    today = meter(store, settings, backend, clock)
    for _ in range(2):
        today.text(request)
    rows = store.all("SELECT reserved_usd, cost_usd, max_tokens, cache_read_input_tokens, "
                     "cache_creation_input_tokens, output_tokens, funding FROM llm_ledger ORDER BY ts")
    assert fake_anthropic.counted, "the SDK's token counting was not used"
    assert all(r["cost_usd"] <= r["reserved_usd"] + 1e-12 for r in rows)
    assert rows[0]["cache_creation_input_tokens"] > 0 and rows[1]["cache_read_input_tokens"] > 0
    assert rows[1]["reserved_usd"] < rows[0]["reserved_usd"]          # a warm prefix is held at the read rate
    # Once three outputs of earlier days are measured, the bound sent is their high percentile plus a margin.
    outputs = [r["output_tokens"] for r in rows[:3]]
    assert rows[3]["max_tokens"] == holds.output_bound(600, outputs).max_tokens < 600
    assert fake_anthropic.requests[-1]["body"]["max_tokens"] == rows[4]["max_tokens"]
    assert rows[3]["reserved_usd"] < rows[1]["reserved_usd"]          # both warm: the lower bound holds less
    status = sb.budget_status(store, settings, DAY)
    assert status["reservation_vs_bill"]["calls"] == 2 and status["reservation_vs_bill"]["breaches"] == 0
    assert status["cache"]["read_share"] > 0.5


def test_offline_count_is_what_the_offline_backend_bills(store, settings, runtime):
    offline = OfflineBackend(settings, load_pricing())
    request = LLMRequest(tier="deep", system_prefix=system_prefix(runtime.store, runtime.registry, offline, "deep"),
                         prompt="What did I learn today?", max_tokens=300)
    count = offline.count_tokens(request)
    usage = meter(store, settings, offline).text(request).usage
    assert count.total == usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens
    assert count.prefix == usage.cache_creation_input_tokens == estimate_tokens(request.system_prefix)


def test_output_bound_is_lowered_to_fit_the_room_and_refused_below_a_useful_minimum(store, settings, runtime):
    offline = OfflineBackend(settings, load_pricing())
    request = LLMRequest(tier="deep", system_prefix="", prompt="Write about frugality. " * 20, max_tokens=1800)
    client = meter(store, settings, offline)
    rates = load_pricing().rates(settings.models["deep"])
    input_usd = holds.input_usd(rates, offline.count_tokens(request), warm=False, ttl="5m")
    # Leave the research category room for the prompt and 1,200 output tokens (asked: 1,800; minimum 900).
    filler = sb.reserve(store, day=DAY, category="research", settings=settings, priority="normal", now=NOW,
                        amount_usd=settings.category_limit("research") - input_usd - 1200 * rates.output / 1e6)
    client.text(request)
    sent = store.one("SELECT max_tokens, reserved_usd, cost_usd FROM llm_ledger")
    assert 1190 <= sent["max_tokens"] <= 1200 and sent["cost_usd"] <= sent["reserved_usd"]
    sb.release(store, filler.id, NOW)
    sb.reserve(store, day=DAY, category="research", settings=settings, priority="normal", now=NOW,
               amount_usd=settings.category_limit("research") - sent["cost_usd"] - input_usd
               - 500 * rates.output / 1e6)
    with pytest.raises(BudgetRefused, match="category research"):
        client.text(request)


def test_a_bill_above_its_hold_is_a_breach_alert_and_both_figures_are_kept(store, settings):
    held = sb.reserve(store, day=DAY, category="research", amount_usd=0.01, settings=settings, priority="normal",
                      now=NOW)
    sb.settle(store, held.id, ledger_row("over_1", 0.02, "research"), NOW)
    assert [a["kind"] for a in alerts(store, DAY)] == ["reservation_breach"]
    assert store.one("SELECT reserved_usd, cost_usd FROM llm_ledger") == {"reserved_usd": 0.01, "cost_usd": 0.02}
    assert sb.budget_status(store, settings, DAY)["reservation_vs_bill"]["breaches"] == 1


def test_answers_settled_together_each_reconcile_their_hold_and_a_replay_adds_nothing(store, settings):
    holds_ = [sb.reserve(store, day=DAY, category="research", amount_usd=0.01, settings=settings, priority="normal",
                         now=NOW) for _ in range(3)]
    rows = [replace(ledger_row(f"req_{n}", cost, "research"), reservation_id=h.id)
            for n, (h, cost) in enumerate(zip(holds_, (0.004, 0.02, 0.006)))]
    # The same answer twice in one settlement (a batch collected by two looks) is recorded once.
    assert sb.settle_all(store, [*rows, rows[0]], NOW) == [True, True, True, False]
    assert sb.settle_all(store, rows[:1], NOW) == [False]   # a replay of a recorded answer
    settled = {r["id"]: r for r in store.all("SELECT id, status, actual_usd FROM reservations")}
    assert [(settled[h.id]["status"], settled[h.id]["actual_usd"]) for h in holds_] == [
        ("reconciled", 0.004), ("reconciled", 0.02), ("reconciled", 0.006)]
    assert store.all("SELECT request_id, reserved_usd, funding FROM llm_ledger ORDER BY request_id") == [
        {"request_id": f"req_{n}", "reserved_usd": 0.01, "funding": "category"} for n in range(3)]
    assert [a["message"].split("(request ")[1][:5] for a in alerts(store, DAY)] == ["req_1"]   # only its hold breached


def test_output_bound_rule():
    assert holds.output_bound(1800, []) == holds.OutputBound(1800, 900)                # no history: the ask
    assert holds.output_bound(1800, [100, 200]).max_tokens == 200 * 1.5 + 64            # the longest, wide margin
    bound = holds.output_bound(1800, [300, 320, 340, 360, 380])
    assert bound.max_tokens == 410 + 32                 # p90 of 300..380 is 372; x 1.1, rounded up
    assert bound.minimum < bound.max_tokens
    assert holds.output_bound(200, [300] * 10).max_tokens == 200                      # never above the ask
    rates = load_pricing().rates("claude-haiku-5-5")
    cold = holds.input_usd(rates, PromptCount(6000, 5000), warm=False, ttl="1h")
    warm = holds.input_usd(rates, PromptCount(6000, 5000), warm=True, ttl="1h")
    short = holds.input_usd(rates, PromptCount(6000, 1000), warm=True, ttl="1h")     # below 4,096: not cached
    assert warm < short < cold


def test_an_action_never_called_is_bounded_by_its_models_measured_outputs(store):
    """Its first call is sent with a bound from the model's answers on earlier days, not half its own limit."""
    from cass_pipelines.store.ledger import call_sizes, insert_rows, output_history

    yesterday = NOW.date() - timedelta(days=1)
    with store.transaction() as conn:
        for n, out in enumerate((120, 80, 100)):
            insert_rows(conn, [replace(ledger_row(f"r{n}", 0.001, day=yesterday), output_tokens=out)])
    assert output_history(store, "research.search", "claude-haiku-5-5", NOW.date()) == [80, 100, 120]   # its own
    assert output_history(store, "session.curiosity", "claude-haiku-5-5", NOW.date()) == [80, 100, 120]  # the model's
    assert output_history(store, "session.curiosity", "claude-sonnet-5-5", NOW.date()) == []
    assert output_history(store, "research.search", "claude-haiku-5-5", yesterday) == []    # whole earlier days only
    by_action, by_model = call_sizes(store, NOW.date())
    assert by_action["research.search"].outputs == by_model["claude-haiku-5-5"].outputs == [80, 100, 120]
    assert by_model["claude-haiku-5-5"].prompts == [100, 100, 100]


def test_every_tier_prefix_is_above_its_models_minimum_cacheable_length(runtime):
    pricing = load_pricing()
    for tier, model in runtime.settings.models.items():
        prefix = system_prefix(runtime.store, runtime.registry, runtime.llm, tier)
        assert estimate_tokens(prefix) >= pricing.rates(model).min_cacheable_tokens, tier
        assert prefix == system_prefix(runtime.store, runtime.registry, runtime.llm, tier)   # byte-stable


# ---- a tiny day, through Dagster ----------------------------------------------------------------

def test_a_five_cent_day_is_planned_by_the_agent_and_defers_what_it_cannot_pay(sample_home, monkeypatch, capsys):
    monkeypatch.setenv("CASS_DAILY_BUDGET_USD", "0.05")
    assert cli_main(["run-day", "--date", SAMPLE_DAY.isoformat(), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["plan"]["source"] == "llm"
    store = Store(load_settings().db_path)
    day_units = plans.units_for_day(store, SAMPLE_DAY)
    assert any(u["status"] == "completed" for u in day_units)
    status = sb.budget_status(store, load_settings(), SAMPLE_DAY)
    assert status["spent_usd"] <= 0.05 and status["reservation_vs_bill"]["breaches"] == 0
    deferred = [u for u in day_units if u["status"] == "deferred"]
    assert deferred and all(u["reason"] for u in deferred)
    assert {u["status"] for u in day_units} <= {"completed", "deferred"}, [(u["phase"], u["template_id"], u["status"], u["reason"]) for u in day_units if u["status"] not in ("deferred",)]
    # Only rule violations are dropped, never work for want of money.
    assert not any("budget" in d["reason"] for d in plans.latest_day_plan(store, SAMPLE_DAY)["dropped"])

    assert cli_main(["run-day", "--date", (SAMPLE_DAY + timedelta(days=1)).isoformat(), "--json"]) == 0
    after = {u["id"]: u for u in plans.units_for_day(store, SAMPLE_DAY)}
    offered = [u for u in deferred if after[u["id"]]["reoffered_as"]
               or (after[u["id"]]["reason"] or "").startswith(f"offered again {SAMPLE_DAY + timedelta(days=1)}")]
    assert offered, [after[u["id"]]["reason"] for u in deferred]


def test_deferred_work_is_offered_again_in_priority_order(runtime):
    rt = runtime
    from cass_pipelines.services.planning import open_phase

    yesterday = DAY - timedelta(days=1)
    low = PlannedUnit("afternoon", "research_batch", "research", "low", "old low", "m", 0.01)
    high = PlannedUnit("morning", "growth_edge_work", "growth", "high", "newer high", "m", 0.01)
    for tag, unit in (("low", low), ("high", high)):
        uid = plans.add_manual_unit(rt.store, day=yesterday, phase=unit.phase, tag=tag, unit=unit, now=NOW)
        plans.set_unit_status(rt.store, uid, "deferred", NOW, reason="over budget: test")
    rt = replace(rt, settings=rt.settings.model_copy(update={"max_units_per_phase": 1}))
    plans.save_day_plan(rt.store, day=DAY, revision=1, source="llm", intention="i", from_phase="afternoon",
                        phases=["afternoon"], units=[], dropped=[], offline=True, now=NOW)
    _, reoffered = open_phase(rt, DAY, "afternoon", 1, NOW)
    assert reoffered == ["growth_edge_work"]                         # high priority first, one slot
    waiting = plans.units_for_day(rt.store, yesterday)
    assert [u["reason"] for u in waiting if u["template_id"] == "research_batch"][0].startswith(
        f"offered again {DAY} afternoon: afternoon already has 1 units")


def test_an_answer_cut_at_the_measured_bound_is_asked_again_with_the_callers_limit(store, settings, fake_anthropic):
    """The loopback API cuts a structured answer at max_tokens, as the real one does: the cut answer
    is paid and recorded, then the call is made once more with the caller's own limit."""
    from cass_pipelines.llm.anthropic_backend import AnthropicBackend

    class Note(BaseModel):
        text: str

    for n, out in enumerate((10, 10, 10)):   # earlier days measured tiny outputs: a tight bound today
        sb.settle(store, sb.reserve(store, day=DAY - timedelta(days=1), category="research", amount_usd=0.01,
                                    settings=settings, priority="normal", now=NOW).id,
                  replace(ledger_row(f"req_old{n}", 0.001, "research", DAY - timedelta(days=1)),
                          action_id="session.research", output_tokens=out), NOW)
    client = meter(store, settings, AnthropicBackend(settings, load_pricing()))
    result = client.structured(LLMRequest(tier="fast", system_prefix="", prompt="- a long thought\n- another",
                                          max_tokens=800), Note)
    assert result.parsed.text
    sent = [r["body"]["max_tokens"] for r in fake_anthropic.requests]
    assert sent == [holds.output_bound(800, [10, 10, 10]).max_tokens, 800]
    rows = store.all("SELECT output_tokens, max_tokens, cost_usd, reserved_usd FROM llm_ledger "
                     "WHERE date = ? ORDER BY ts", [DAY])
    assert [r["max_tokens"] for r in rows] == sent and rows[0]["output_tokens"] == sent[0]   # the cut one is paid
    assert all(r["cost_usd"] <= r["reserved_usd"] for r in rows)


def test_admission_prices_a_tiers_prefix_warm_only_while_the_ledger_saw_it_cached(runtime):
    """Planning prices the dearest call as the metered client will: the prefix at the read rate while
    its last cached use is within the TTL, at the write rate after."""
    from cass_pipelines.llm.base import prefix_key
    from cass_pipelines.services.planning import call_hold, warm_tiers
    from cass_pipelines.store.ledger import insert_rows

    rt = runtime
    model = rt.settings.models["deep"]
    key = prefix_key(model, system_prefix(rt.store, rt.registry, rt.llm, "deep"))
    used = replace(ledger_row("warm_1", 0.001, day=DAY), model=model, ts=NOW, prefix_key=key,
                   cache_read_input_tokens=3000)
    with rt.store.transaction() as conn:
        insert_rows(conn, [used])
    assert warm_tiers(rt, DAY, "morning", NOW + timedelta(minutes=2)) == {"deep"}
    assert warm_tiers(rt, DAY, "morning", NOW + timedelta(hours=2)) == set()
    action = rt.registry.actions["session.reflection"]
    assert call_hold(rt, action, None, warm=True) < call_hold(rt, action, None, warm=False)
