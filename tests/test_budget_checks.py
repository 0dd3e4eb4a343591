"""The asset checks on cost_records pass for spend that went through reservations and fail for an
overspent partition whose ledger rows bypassed the budget."""
from __future__ import annotations

from datetime import date, datetime, timezone

import dagster as dg
import pytest
from support import ledger_row

from cass_pipelines.config.settings import load_settings
from cass_pipelines.defs.day.results import build_results
from cass_pipelines.defs.partitions import phase_key, phase_partitions
from cass_pipelines.defs.resources import cass_resource
from cass_pipelines.store import budget as sb
from cass_pipelines.store.db import Store
from cass_pipelines.store.ledger import insert_rows

DAY = date(2026, 11, 26)
NOW = datetime(2026, 11, 26, 9, tzinfo=timezone.utc)


@pytest.fixture
def setup(sample_home):
    settings = load_settings()
    partitions = phase_partitions(settings)
    cost_records = build_results(partitions)[1]   # its step evaluates the checks on it
    return settings, Store(settings.db_path), [cost_records]


def evaluate(settings, defs, phase: str) -> dict[str, bool]:
    with dg.instance_for_test() as instance:
        result = dg.materialize(defs, partition_key=phase_key(DAY.isoformat(), phase), instance=instance,
                                resources={"cass": cass_resource(settings)}, raise_on_error=False)
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_checks_pass_when_spend_went_through_reservations(setup):
    settings, store, defs = setup
    for i, (category, cost) in enumerate([("research", 0.4), ("reflection", 0.3)]):
        held = sb.reserve(store, day=DAY, category=category, amount_usd=0.5, settings=settings, priority="normal",
                          phase="morning", now=NOW)
        sb.settle(store, held.id, ledger_row(f"ok_{i}", cost, category), NOW)
    assert evaluate(settings, defs, "morning") == {
        "spend_within_daily_limit": True, "categories_within_shares": True, "ledger_matches_reservations": True,
        "budget_not_exhausted": True}


def test_checks_fail_on_an_overspent_partition(setup):
    settings, store, defs = setup
    with store.transaction() as conn:   # written past the budget: no reservation, over the research share
        for i, (category, cost) in enumerate([("research", 1.5), ("reflection", 0.9), ("growth", 3.0)]):
            insert_rows(conn, [ledger_row(f"over_{i}", cost, category)])
    assert evaluate(settings, defs, "morning") == {
        "spend_within_daily_limit": False, "categories_within_shares": False, "ledger_matches_reservations": False,
        "budget_not_exhausted": False}
