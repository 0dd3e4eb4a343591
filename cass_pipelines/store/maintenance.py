"""System upkeep: expiring old deferred work, the queue report, and consistency checks."""
from __future__ import annotations

from datetime import date, datetime

from cass_pipelines.domain.pauses import LookBacks
from cass_pipelines.domain.states import UnitStatus
from cass_pipelines.store.db import Store
from cass_pipelines.store.plans import since_args, since_sql


def expire_deferred(store: Store, since: LookBacks, now: datetime) -> list[str]:
    """Cancel deferred units dated before their category's look-back that were never re-offered; returns
    their ids."""
    return [r["id"] for r in store.all(f"""
        UPDATE work_units SET status = '{UnitStatus.CANCELLED}', finished_at = ?,
               reason = 'expired: deferred for more than a week not counting paused days (was: ' || coalesce(reason, 'no reason') || ')'
        WHERE status = '{UnitStatus.DEFERRED}' AND reoffered_as IS NULL
          AND date < {since_sql('work_units')} RETURNING id""", [now, *since_args(since)])]


def queue_report(store: Store, day: date) -> dict:
    units = store.all("SELECT status, count(*) AS n FROM work_units WHERE date = ? GROUP BY status ORDER BY status",
                      [day])
    research = store.all("SELECT status, count(*) AS n FROM research_queue GROUP BY status ORDER BY status")
    waiting = store.scalar(f"SELECT count(*) FROM work_units WHERE status = '{UnitStatus.DEFERRED}' "
                           "AND reoffered_as IS NULL")
    return {"units_today": {r["status"]: r["n"] for r in units}, "deferred_waiting": waiting,
            "research_queue": {r["status"]: r["n"] for r in research}}


# Each check counts rows that should not exist; its name says what they are.
CONSISTENCY_CHECKS = {
    "ledger rows naming an unknown work unit": """SELECT count(*) FROM llm_ledger l WHERE l.work_unit_id IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM work_units u WHERE u.id = l.work_unit_id)""",
    "ledger rows with a negative cost": "SELECT count(*) FROM llm_ledger WHERE cost_usd < 0",
    "messages of an unknown conversation": """SELECT count(*) FROM messages m
        WHERE NOT EXISTS (SELECT 1 FROM conversations c WHERE c.id = m.conversation_id)""",
    "summaries of an unknown conversation": """SELECT count(*) FROM conversation_summaries s
        WHERE NOT EXISTS (SELECT 1 FROM conversations c WHERE c.id = s.conversation_id)""",
    "conversation watermarks past their last message": """SELECT count(*) FROM conversations
        WHERE summarized_through_at > last_message_at""",
    "observations on an unknown growth edge": """SELECT count(*) FROM growth_observations o
        WHERE NOT EXISTS (SELECT 1 FROM growth_edges e WHERE e.id = o.edge_id)""",
    "answered questions without an answer": "SELECT count(*) FROM open_questions WHERE status = 'answered' AND answer IS NULL",
    "action runs of an unknown work unit": """SELECT count(*) FROM action_runs a
        WHERE NOT EXISTS (SELECT 1 FROM work_units u WHERE u.id = a.work_unit_id)""",
}


def consistency_problems(store: Store) -> dict[str, int]:
    """Each check's count of offending rows (0 is healthy)."""
    return {name: store.scalar(sql) for name, sql in CONSISTENCY_CHECKS.items()}


def units_running_since(store: Store, before: datetime) -> list[str]:
    return [r["id"] for r in store.all(f"SELECT id FROM work_units WHERE status = '{UnitStatus.RUNNING}' "
                                       "AND started_at < ? "
                                       "ORDER BY id", [before])]
