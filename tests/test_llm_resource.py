"""The Dagster resource picks the backend; the ledger reads back by day, category and model."""
from __future__ import annotations

import json
from datetime import date, datetime, timezone

import pytest

from cass_pipelines.cli.main import main as cli_main
from cass_pipelines.config.settings import load_settings
from cass_pipelines.defs.llm_resource import LLMResource
from cass_pipelines.domain.settings import SettingsError
from cass_pipelines.store import ledger
from cass_pipelines.store.db import Store

DAY = date(2026, 3, 2)


def test_resource_follows_settings_or_its_override(cass_env, fake_anthropic):
    settings = load_settings()                        # CASS_LLM=offline from the fixture
    assert LLMResource().get_client(settings).mode == "offline"
    assert LLMResource(mode="anthropic").get_client(settings).mode == "anthropic"
    assert LLMResource(mode="auto").get_client(settings).mode == "anthropic"   # the key is set
    with pytest.raises(SettingsError, match="LLMResource.mode"):
        LLMResource(mode="gpt").get_client(settings)


def row(request_id: str, category: str, model: str, cost: float, hour: int, offline: bool = True):
    return ledger.LedgerRow(
        request_id=request_id, ts=datetime(2026, 3, 2, hour, tzinfo=timezone.utc), date=DAY, phase="morning",
        run_id="run1", step_key="step", work_unit_id="wu1", action_id="reflect", category=category, model=model,
        input_tokens=100, output_tokens=50, cache_creation_input_tokens=2000, cache_read_input_tokens=0,
        cache_creation_1h_input_tokens=0, cost_usd=cost, offline=offline, attempts=2, latency_ms=10)


def test_ledger_reading_side_and_cli(sample_home, capsys):
    store = Store(load_settings().db_path)
    with store.transaction() as conn:
        assert ledger.insert_rows(conn, [row("req_b", "research", "claude-sonnet-5-5", 0.02, 9)])
        assert ledger.insert_rows(conn, [row("req_a", "reflection", "claude-haiku-5-5", 0.01, 8)])
        assert not ledger.insert_rows(conn, [row("req_a", "reflection", "claude-haiku-5-5", 0.01, 8)])  # replay
    assert [r["request_id"] for r in ledger.rows(store, DAY)] == ["req_a", "req_b"]
    assert ledger.totals(store, DAY)["calls"] == 2
    assert ledger.totals(store, DAY)["cost_usd"] == pytest.approx(0.03)
    assert [(t["model"], t["calls"]) for t in ledger.totals_by(store, DAY, "model")] == [
        ("claude-sonnet-5-5", 1), ("claude-haiku-5-5", 1)]
    with pytest.raises(ValueError):
        ledger.totals_by(store, DAY, "cost_usd; DROP TABLE llm_ledger")

    capsys.readouterr()
    assert cli_main(["ledger", "--date", DAY.isoformat(), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    keys = {"ts", "date", "phase", "work_unit_id", "action_id", "model", "input_tokens", "output_tokens",
            "cache_creation_input_tokens", "cache_read_input_tokens", "cost_usd", "request_id", "offline"}
    assert len(rows) == 2 and all(keys <= set(r) for r in rows)
    assert rows[0]["date"] == "2026-03-02" and rows[0]["offline"] is True
    assert cli_main(["ledger", "--date", DAY.isoformat()]) == 0
    text = capsys.readouterr().out
    assert "2 calls, $0.0300" in text and "req_a" in text and "research $0.0200" in text
    assert cli_main(["ledger", "--date", "2026-03-03"]) == 0
    assert "no LLM calls" in capsys.readouterr().out
