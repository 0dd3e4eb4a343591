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
    values = params([row[c] for c in cols])
    with store.transaction() as conn:   # updated, else inserted: an upsert costs DuckDB 3-4 times either
        if not conn.execute(f"UPDATE work_summaries SET {', '.join(f'{c} = ?' for c in cols[1:])} "
                            "WHERE work_unit_id = ?", [*values[1:], values[0]]).fetchone()[0]:
            conn.execute(f"INSERT INTO work_summaries ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                         values)


def get(store: Store, work_unit_id: str) -> dict | None:
    row = store.one("SELECT * FROM work_summaries WHERE work_unit_id = ?", [work_unit_id])
    if row:
        for c in LIST_COLUMNS:
            row[c] = json.loads(row[c]) if isinstance(row[c], str) else row[c]
    return row

