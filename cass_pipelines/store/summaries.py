"""Work summaries: one row per work unit (what it did, found, asked, made and cost)."""
from __future__ import annotations

import json
from typing import Any

from cass_pipelines.store.db import Store, params

LIST_COLUMNS = ("key_insights", "questions_raised", "questions_addressed", "artifacts")


def save(store: Store, row: dict[str, Any]) -> None:
    """Insert or replace the unit's summary (a re-summarised unit keeps one row)."""
    cols = ("work_unit_id", "date", "phase", "template_id", "status", "narrative", *LIST_COLUMNS, "cost_usd",
            "offline", "self_rating", "awaiting_batch", "created_at")
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
    store.execute(f"INSERT INTO work_summaries ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
                  f"ON CONFLICT (work_unit_id) DO UPDATE SET {updates}", params([row[c] for c in cols]))


def get(store: Store, work_unit_id: str) -> dict | None:
    row = store.one("SELECT * FROM work_summaries WHERE work_unit_id = ?", [work_unit_id])
    if row:
        for c in LIST_COLUMNS:
            row[c] = json.loads(row[c]) if isinstance(row[c], str) else row[c]
    return row

