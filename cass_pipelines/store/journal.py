"""Journal entries: one per (date, kind) — 'daily' for the day's journal, 'dream' for the night's dream,
'weekly' for the week's (dated its Monday)."""
from __future__ import annotations

from datetime import date, datetime

from cass_pipelines.store.db import Store


def save_entry(store: Store, *, day: date, kind: str, text: str, tone: str, work_unit_id: str | None, offline: bool,
               now: datetime) -> None:
    """Write the entry; writing the same day and kind again replaces it (a deliberate rewrite)."""
    store.execute("""INSERT INTO journals (date, kind, text, tone, work_unit_id, offline, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (date, kind) DO UPDATE SET
                     text = excluded.text, tone = excluded.tone, work_unit_id = excluded.work_unit_id,
                     offline = excluded.offline, created_at = excluded.created_at""",
                  [day, kind, text, tone, work_unit_id, offline, now])

