"""Read-only views for the CLI, the Dagster metadata and status: journals, summaries, artifacts."""
from __future__ import annotations

import json
from datetime import date

from cass_pipelines.store.db import Store
from cass_pipelines.store.plans import phase_rank

COUNTED_TABLES = ("insights", "growth_observations", "open_questions", "conversation_summaries", "journals",
                   "wiki_notes", "documents", "work_summaries")


def journal_entry(store: Store, day: date, kind: str = "daily") -> dict | None:
    return store.one("SELECT date, kind, text, tone, offline, created_at FROM journals WHERE date = ? AND kind = ?",
                     [day, kind])


def summaries_for_day(store: Store, day: date) -> list[dict]:
    rows = store.all(f"""SELECT s.work_unit_id, s.template_id, s.phase, s.status, s.narrative, s.key_insights,
            s.questions_raised, s.questions_addressed, s.artifacts, s.cost_usd, s.offline, s.created_at
        FROM work_summaries s JOIN work_units u ON u.id = s.work_unit_id WHERE s.date = ?
        ORDER BY {phase_rank("s.phase")}, u.position""", [day])
    for r in rows:
        for k in ("key_insights", "questions_raised", "questions_addressed", "artifacts"):
            r[k] = json.loads(r[k]) if isinstance(r[k], str) else r[k]
    return rows


def artifact_counts(store: Store) -> dict[str, int]:
    """Rows per artifact table: where a person finds what the agent made."""
    sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in COUNTED_TABLES)  # names are constants
    with store.connection() as conn:   # one statement, one open
        counts = dict(conn.execute(sql).fetchall())
    return {t: counts[t] for t in COUNTED_TABLES}
