"""Approval requests: work a person must approve before it runs, with what it would do and cost."""
from __future__ import annotations

from datetime import datetime

from cass_pipelines.domain.states import ApprovalState
from cass_pipelines.store.db import Store

_COLS = ("work_unit_id, state, template_id, action_id, what, estimated_cost_usd, requested_at, expires_at, "
         "decided_at, decided_by, reason, run_id")


def request(store: Store, *, work_unit_id: str, template_id: str, action_id: str, what: str,
            estimated_cost_usd: float, now: datetime, expires_at: datetime) -> dict:
    """The unit's approval request, made once (asking again returns the request on record)."""
    store.execute(f"INSERT INTO approvals ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL) "
                  "ON CONFLICT DO NOTHING", [work_unit_id, ApprovalState.PENDING.value, template_id, action_id, what,
                                             estimated_cost_usd, now, expires_at])
    row = get(store, work_unit_id)
    assert row is not None
    return row


def get(store: Store, work_unit_id: str) -> dict | None:
    return store.one(f"SELECT {_COLS} FROM approvals WHERE work_unit_id = ?", [work_unit_id])


def listing(store: Store, state: str | None = None, limit: int = 100) -> list[dict]:
    return store.all(f"""SELECT a.{_COLS.replace(', ', ', a.')}, w.date, w.phase, w.focus, w.status AS unit_status
                         FROM approvals a JOIN work_units w ON w.id = a.work_unit_id
                         WHERE ? IS NULL OR a.state = ? ORDER BY a.requested_at DESC, a.work_unit_id LIMIT ?""",
                     [state, state, limit])


def decide(store: Store, work_unit_id: str, state: ApprovalState, *, by: str, reason: str, now: datetime,
           unit_status: str, run_id: str | None = None) -> bool:
    """Decide a pending request and move its unit to `unit_status`, in one transaction. False when the
    request is not pending (already decided or expired): nothing changes."""
    with store.transaction() as conn:
        row = conn.execute("UPDATE approvals SET state = ?, decided_at = ?, decided_by = ?, reason = ?, run_id = ? "
                           "WHERE work_unit_id = ? AND state = ? RETURNING work_unit_id",
                           [state.value, now, by, reason, run_id, work_unit_id,
                            ApprovalState.PENDING.value]).fetchone()
        if row is None:
            return False
        # Approved work goes back to the queue (not finished); rejected or expired work is final.
        finished = None if state is ApprovalState.APPROVED else now
        conn.execute("UPDATE work_units SET status = ?, reason = ?, finished_at = ? WHERE id = ?",
                     [unit_status, reason, finished, work_unit_id])
    return True


def overdue(store: Store, now: datetime) -> list[str]:
    return [r["work_unit_id"] for r in store.all(
        "SELECT work_unit_id FROM approvals WHERE state = ? AND expires_at <= ? ORDER BY work_unit_id",
        [ApprovalState.PENDING.value, now])]
