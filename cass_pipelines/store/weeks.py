"""What a week left behind, for the weekly journal and the weekly report."""
from __future__ import annotations

import json
from datetime import date

from cass_pipelines.domain.states import UnitStatus
from cass_pipelines.store.db import Store

WEEKLY = "weekly"   # journals.kind of the weekly journal (its date is the week's Monday)


def spend_by_day(store: Store, first: date, last: date) -> dict[str, dict]:
    return {r["date"].isoformat(): {"calls": r["calls"], "cost_usd": round(float(r["cost_usd"]), 6)} for r in store.all(
        "SELECT date, count(*) AS calls, sum(cost_usd) AS cost_usd FROM llm_ledger WHERE date BETWEEN ? AND ? "
        "GROUP BY date ORDER BY date", [first, last])}


def insights(store: Store, first: date, last: date) -> list[str]:
    """The key insights of the week's work summaries, oldest first."""
    rows = store.all(f"SELECT key_insights FROM work_summaries WHERE date BETWEEN ? AND ? AND status = '{UnitStatus.COMPLETED}' "
                     "ORDER BY date, created_at, work_unit_id", [first, last])
    return [i for r in rows for i in json.loads(r["key_insights"])]


def daily_journals(store: Store, first: date, last: date) -> list[dict]:
    return store.all("SELECT date, tone, text, offline FROM journals WHERE kind = 'daily' AND date BETWEEN ? AND ? "
                     "ORDER BY date", [first, last])


def weekly_journal(store: Store, week: date) -> dict | None:
    return store.one("SELECT date, tone, text, offline FROM journals WHERE kind = ? AND date = ?", [WEEKLY, week])
