"""Reservations, settlement, release, stale release, budget status, pause/resume, the metered
client, calibrated estimates and degradation."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import pytest
from support import count_statements, ledger_row

from cass_pipelines.cli.main import main as cli_main
from cass_pipelines.config.registry import load_registry
from cass_pipelines.domain.budget_rules import (
    ActionCost,
    Refusal,
    Reservation,
    calibrated_costs,
    degradation,
    due_alerts,
)
from cass_pipelines.domain.clock import FixedClock
from cass_pipelines.llm.base import LLMError, LLMRequest, LLMResult, Usage
from cass_pipelines.llm.offline import OfflineBackend
from cass_pipelines.llm.pricing import load_pricing
from cass_pipelines.services.metering import BudgetRefused, MeterContext, MeteredClient
from cass_pipelines.store import budget as sb
from cass_pipelines.store.control import alerts, pause, paused_reason, record_alert, resume

DAY = date(2026, 11, 26)
NOW = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)
BUDGET_KEYS = {"date", "timezone", "daily_limit_usd", "reserve_usd", "spent_usd", "reserved_usd", "remaining_usd",
               "exhausted", "paused", "categories"}




def hold(store, settings, amount, category="research", priority="normal", **kw):
    return sb.reserve(store, day=kw.pop("day", DAY), category=category, amount_usd=amount, settings=settings,
                      priority=priority, now=NOW, **kw)


# ---- reserve / settle / release -----------------------------------------------------------------

def test_reservation_needs_room_in_the_category_and_above_the_reserve(store, settings):
    assert isinstance(hold(store, settings, 0.20), Reservation)
    refused = hold(store, settings, 0.06)                    # 0.20 held of the 0.25 research share
    assert isinstance(refused, Refusal) and refused.scope == "category"
    assert "category research" in refused.reason and "$0.0500 left" in refused.reason
    assert isinstance(hold(store, settings, 0.05), Reservation)
    # Fill the day up to the reserve from other categories: ordinary work stops at $0.90.
    for category, amount in [("reflection", 0.2), ("growth", 0.15), ("memory", 0.1), ("curiosity", 0.1),
                             ("creative", 0.1)]:
        assert isinstance(hold(store, settings, amount, category), Reservation)
    day_refusal = hold(store, settings, 0.05, "system")
    assert isinstance(day_refusal, Refusal) and day_refusal.scope == "day"
    assert "emergency reserve kept" in day_refusal.reason
    # Critical work may draw on the reserve, but never past its category's share.
    assert isinstance(hold(store, settings, 0.05, "system", priority="critical"), Reservation)
    assert isinstance(hold(store, settings, 0.01, "system", priority="critical"), Refusal)


def test_holds_asked_together_each_see_the_ones_before_them_in_one_statement(store, settings, monkeypatch):
    ask = {"day": DAY, "category": "research", "priority": "normal"}
    lowered = hold(store, settings, 0.30)   # (a refused ask of a call asked again lower below)
    asks = [sb.Ask(amount_usd=0.10, **ask), sb.Ask(amount_usd=0.10, **ask), sb.Ask(amount_usd=0.10, **ask),
            sb.Ask(amount_usd=0.05, lowers=[lowered.reservation_id], **ask), sb.Ask(amount_usd=0.01, **ask)]
    statements = count_statements(monkeypatch)
    held = sb.reserve_many(store, asks, settings, NOW)   # the research share is $0.25
    assert [type(h).__name__ for h in held] == ["Reservation", "Reservation", "Refusal", "Reservation", "Refusal"]
    assert "$0.0500 left" in held[2].reason and held[2].scope == "category"
    assert sum(s.startswith("INSERT INTO reservations") for s in statements) == 1
    status = {r["id"]: r["status"] for r in store.all("SELECT id, status FROM reservations")}
    assert [status[h.reservation_id if isinstance(h, Refusal) else h.id] for h in held] == [
        "held", "held", "refused", "held", "refused"]
    assert status[lowered.reservation_id] == "lowered"


def test_settle_records_the_ledger_row_once_and_reconciles_to_real_cost(store, settings):
    r = hold(store, settings, 0.2)
    assert sb.settle(store, r.id, ledger_row("req_1", 0.03), NOW) is True
    assert sb.settle(store, r.id, ledger_row("req_1", 0.03), NOW) is False          # replayed response
    assert store.scalar("SELECT count(*) FROM llm_ledger") == 1
    res = store.one("SELECT status, actual_usd FROM reservations WHERE id = ?", [r.id])
    assert res == {"status": "reconciled", "actual_usd": 0.03}
    # A replay under a new reservation (a retried step) reconciles that one to nothing.
    r2 = hold(store, settings, 0.2)
    assert sb.settle(store, r2.id, ledger_row("req_1", 0.03), NOW) is False
    assert store.scalar("SELECT actual_usd FROM reservations WHERE id = ?", [r2.id]) == 0
    status = sb.budget_status(store, settings, DAY)
    assert status["spent_usd"] == pytest.approx(0.03) and status["reserved_usd"] == 0


def test_release_gives_the_hold_back(store, settings):
    r = hold(store, settings, 0.25)
    assert isinstance(hold(store, settings, 0.01), Refusal)
    assert sb.release(store, r.id, NOW) is True
    assert sb.release(store, r.id, NOW) is False
    assert isinstance(hold(store, settings, 0.25), Reservation)


def test_stale_reservations_of_finished_runs_and_dead_processes_are_released(store, settings):
    over = hold(store, settings, 0.05, run_id="run_over")
    live = hold(store, settings, 0.05, run_id="run_live")
    dead = hold(store, settings, 0.05)
    mine = hold(store, settings, 0.05)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    store.execute("UPDATE reservations SET pid = ? WHERE id = ?", [int(gone.stdout), dead.id])
    released = sb.release_stale(store, lambda run_id: run_id == "run_over", NOW)
    assert sorted(released) == sorted([over.id, dead.id])
    states = {r["id"]: r["status"] for r in store.all("SELECT id, status FROM reservations")}
    assert states == {over.id: "abandoned", dead.id: "abandoned", live.id: "held", mine.id: "held"}


# ---- status, alerts, days ------------------------------------------------------------------------

def test_budget_status_shape_and_a_new_day_starts_fresh(store, settings):
    r = hold(store, settings, 0.1)
    sb.settle(store, r.id, ledger_row("a", 0.08), NOW)
    hold(store, settings, 0.05, "memory")
    s = sb.budget_status(store, settings, DAY)
    assert BUDGET_KEYS <= set(s)
    assert set(s["categories"]) == {"system", "journal", "memory", "research", "reflection", "growth",
                                    "curiosity", "creative"}
    assert {"limit_usd", "spent_usd", "remaining_usd"} <= set(s["categories"]["research"])
    assert (s["spent_usd"], s["reserved_usd"], s["remaining_usd"]) == (0.08, 0.05, pytest.approx(0.77))
    assert s["categories"]["research"]["remaining_usd"] == pytest.approx(0.17)
    assert s["exhausted"] is False and s["paused"] is False
    tomorrow = sb.budget_status(store, settings, DAY + timedelta(days=1))
    assert tomorrow["spent_usd"] == 0 and tomorrow["remaining_usd"] == pytest.approx(0.9)


def test_exhausted_when_no_category_has_room_for_a_call(store, settings):
    def spend(category, amount, actual, n=[0]):
        n[0] += 1
        r = hold(store, settings, amount, category)
        sb.settle(store, r.id, ledger_row(f"req_{n[0]}", actual, category), NOW)

    def exhausted():
        return sb.budget_status(store, settings, DAY)["exhausted"]

    assert exhausted() is False                               # a new day: nothing asked yet
    spend("research", .1, .1)
    spend("system", .01, .01)
    assert exhausted() is False
    spend("research", .1, .1)                                 # research: $0.05 left < its cheapest ask $0.10
    assert exhausted() is False                               # system can still pay for its $0.01 call
    spend("system", .04, .04)
    s = sb.budget_status(store, settings, DAY)
    # Categories that never asked can still pay for the cheapest call anyone asked for ($0.01):
    # one category running dry does not end the day for the others.
    assert s["exhausted"] is False and s["categories"]["creative"]["remaining_usd"] == 0.1
    for category in ("creative", "reflection", "growth", "memory", "curiosity", "journal"):
        room = s["categories"][category]["remaining_usd"]
        assert isinstance(hold(store, settings, room + .05, category), Refusal)   # a refused ask counts too
    s = sb.budget_status(store, settings, DAY)
    assert s["exhausted"] is True
    assert [k for k, _ in due_alerts(s, settings)] == ["exhausted"]
    assert sb.budget_status(store, settings, DAY + timedelta(days=1))["exhausted"] is False


def test_exhausted_when_the_day_is_spent_down_to_the_reserve(store, settings):
    for i, category in enumerate(["research", "reflection", "growth", "memory", "curiosity", "creative"]):
        r = hold(store, settings, settings.category_limit(category), category)
        sb.settle(store, r.id, ledger_row(f"r{i}", settings.category_limit(category), category), NOW)
    s = sb.budget_status(store, settings, DAY)                # $0.90 spent: only the reserve is left
    assert s["exhausted"] is True and s["remaining_usd"] == 0 and s["reserve_left_usd"] == pytest.approx(0.1)
    assert [k for k, _ in due_alerts(s, settings)] == ["soft_limit", "exhausted"]


def test_alerts_are_recorded_once_per_day_and_kind(store):
    assert record_alert(store, DAY, "soft_limit", "80%", NOW) is True
    assert record_alert(store, DAY, "soft_limit", "again", NOW) is False
    assert [a["message"] for a in alerts(store, DAY)] == ["80%"]


# ---- pause / resume ------------------------------------------------------------------------------

def test_pause_and_resume_global_and_per_category(store, settings):
    assert paused_reason(store, "research") is None
    pause(store, "research", "too many searches", NOW)
    assert paused_reason(store, "research") == "too many searches (category research paused)"
    assert paused_reason(store, "growth") is None and paused_reason(store, None) is None
    pause(store, None, None, NOW)
    assert paused_reason(store, "growth") == "paused by the operator"
    s = sb.budget_status(store, settings, DAY)
    assert s["paused"] is True and s["categories"]["research"]["paused"] == "too many searches"
    assert resume(store, None, NOW) == ["global"]
    assert paused_reason(store, "research") is not None
    assert resume(store, None, NOW, everything=True) == ["category:research"]
    assert paused_reason(store, "research") is None


# ---- metered client --------------------------------------------------------------------------------

class FakeLLM:
    mode = "offline"

    def __init__(self, usage=Usage(input_tokens=1000, output_tokens=200), error=None, during=None):
        self.usage, self.error, self.during, self.n = usage, error, during, 0

    def model_for(self, tier):
        return "claude-haiku-5-5"

    def text(self, request):
        self.n += 1
        if self.during:
            self.during()
        if self.error:
            raise self.error
        return LLMResult(text="ok", parsed=None, usage=self.usage, model="claude-haiku-5-5",
                         request_id=f"req_{self.n}_{id(self)}", latency_ms=5, attempts=2, offline=True,
                         cost_usd=123.0)   # a backend's own figure is not what the ledger records


def meter(store, settings, inner, **ctx):
    base = dict(date=DAY, phase="morning", category="research", priority="normal", work_unit_id="wu_1",
                action_id="research.search", run_id="run_1", step_key="step_1")
    return MeteredClient(inner, store, settings, load_pricing(), MeterContext(**{**base, **ctx}), FixedClock(NOW))


REQUEST = LLMRequest(tier="fast", system_prefix="You are Cass." * 50, prompt="Think about budgets.", max_tokens=500)


def test_metered_call_reserves_worst_case_and_records_real_cost(store, settings):
    client = meter(store, settings, FakeLLM())
    estimate = client.estimate(REQUEST)
    result = client.text(REQUEST)
    real = load_pricing().cost("claude-haiku-5-5", Usage(input_tokens=1000, output_tokens=200))
    assert result.cost_usd == pytest.approx(real) and estimate > 500 * 5 / 1e6
    ledger = store.one("SELECT * FROM llm_ledger")
    assert ledger["cost_usd"] == pytest.approx(real) and ledger["attempts"] == 2 and ledger["offline"]
    assert (ledger["work_unit_id"], ledger["action_id"], ledger["run_id"], ledger["step_key"], ledger["phase"]) == (
        "wu_1", "research.search", "run_1", "step_1", "morning")
    res = store.one("SELECT amount_usd, actual_usd, status FROM reservations")
    assert res["amount_usd"] == pytest.approx(estimate) and res["status"] == "reconciled"
    assert res["actual_usd"] == pytest.approx(real)
    assert (client.calls, client.cost_usd, client.offline, client.usage.input_tokens) == (1, pytest.approx(real), True,
                                                                                          1000)


def test_metered_call_error_releases_the_hold(store, settings):
    client = meter(store, settings, FakeLLM(error=LLMError("overloaded", status=529, retryable=True)))
    with pytest.raises(LLMError):
        client.text(REQUEST)
    assert store.one("SELECT status FROM reservations")["status"] == "released"
    assert store.scalar("SELECT count(*) FROM llm_ledger") == 0


def test_metered_refusal_and_pause(store, settings):
    client = meter(store, settings, FakeLLM(), category="system")
    big = replace(REQUEST, max_tokens=20_000)                # worst case $0.10 > system's $0.05
    with pytest.raises(BudgetRefused, match="category system"):
        client.text(big)
    pause(store, "research", "quiet day", NOW)
    with pytest.raises(BudgetRefused, match="paused: quiet day"):
        meter(store, settings, FakeLLM()).text(REQUEST)
    assert meter(store, settings, FakeLLM(), ignore_pause=True).text(REQUEST).text == "ok"


def test_a_call_in_flight_finishes_when_paused_meanwhile(store, settings):
    inner = FakeLLM(during=lambda: pause(store, None, "stop", NOW))
    client = meter(store, settings, inner)
    assert client.text(REQUEST).text == "ok"
    assert store.one("SELECT status FROM reservations")["status"] == "reconciled"
    with pytest.raises(BudgetRefused):
        client.text(REQUEST)


def test_metered_offline_backend_structured(store, settings):
    from pydantic import BaseModel

    class Thought(BaseModel):
        text: str

    offline = OfflineBackend(settings, load_pricing())
    client = meter(store, settings, offline)
    result = client.structured(REQUEST, Thought)
    assert isinstance(result.parsed, Thought) and result.offline
    assert store.one("SELECT offline, cost_usd FROM llm_ledger")["cost_usd"] == pytest.approx(result.cost_usd)


# ---- calibration and degradation ------------------------------------------------------------------

def test_calibrated_costs_use_recent_actuals_and_fall_back_to_the_registry():
    registry = load_registry()
    some, other = list(registry.actions)[:2]
    costs = calibrated_costs(registry, {some: ActionCost(3, 0.0123, 6, 0.00615)})
    assert costs[some] == 0.0123
    assert costs[other] == registry.actions[other].estimated_cost_usd
    assert set(costs) == set(registry.actions)


def test_ledger_action_averages_group_executions(store, settings):
    for unit, costs in [("wu_a", [0.01, 0.03]), ("wu_b", [0.02])]:
        for i, c in enumerate(costs):
            store.executemany("INSERT INTO llm_ledger (request_id, ts, date, category, model, input_tokens, "
                              "output_tokens, cache_creation_input_tokens, cache_read_input_tokens, cost_usd, offline, "
                              "attempts, latency_ms, work_unit_id, action_id, run_id) VALUES "
                              "(?, ?, ?, 'research', 'm', 0, 0, 0, 0, ?, TRUE, 1, 1, ?, 'research.search', 'r')",
                              [[f"{unit}_{i}", NOW, DAY, c, unit]])
    stats = sb.ledger_action_averages(store)["research.search"]
    assert (stats.executions, stats.calls) == (2, 3)
    assert stats.mean_usd == pytest.approx(0.03) and stats.mean_call_usd == pytest.approx(0.02)


def test_degradation_skips_low_and_idle_work_below_the_share(settings):
    ok = {"remaining_usd": 0.5, "exhausted": False}
    low = {"remaining_usd": 0.2, "exhausted": False}         # < 25% of the usable $0.90
    assert degradation(ok, settings) == (False, set())
    assert degradation(low, settings) == (True, {"low", "idle"})


# ---- CLI -----------------------------------------------------------------------------------------

def test_budget_pause_resume_cli(sample_home, capsys):
    assert cli_main(["pause", "--category", "research", "--reason", "audit"]) == 0
    capsys.readouterr()
    assert cli_main(["budget", "--date", "2026-11-26", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert BUDGET_KEYS <= set(out) and out["date"] == "2026-11-26" and out["daily_limit_usd"] == 5.0
    assert out["categories"]["research"]["paused"] == "audit" and out["paused"] is False
    assert cli_main(["resume", "--category", "research", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["resumed"] == ["category:research"]
    assert cli_main(["budget"]) == 0
    assert "research" in capsys.readouterr().out
