"""Dead letters: work that failed for good (an action of a unit, an item parked after its retries),
kept until a person retries or discards it. `state` moves open -> retried | discarded | resolved;
`resolved` mirrors "not open" for readers of the first schema."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from cass_pipelines.domain.states import DeadLetterKind, DeadLetterState
from cass_pipelines.store.db import Store

_COLS = ("id, kind, item_id, date, phase, work_unit_id, action_id, run_id, error, state, note, created_at, "
         "updated_at")


def add(store: Store, *, dl_id: str, kind: DeadLetterKind, error: str, now: datetime, day: date | None = None,
        phase: str | None = None, work_unit_id: str | None = None, action_id: str | None = None,
        item_id: str | None = None, run_id: str | None = None) -> None:
    store.execute(f"""INSERT INTO dead_letters ({_COLS}, resolved)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', NULL, ?, ?, FALSE) ON CONFLICT DO NOTHING""",
                  [dl_id, kind.value, item_id, day, phase, work_unit_id, action_id, run_id, error, now, now])


def get(store: Store, dl_id: str) -> dict | None:
    return store.one(f"SELECT {_COLS} FROM dead_letters WHERE id = ?", [dl_id])


def listing(store: Store, *, include_closed: bool = False, limit: int = 100) -> list[dict]:
    """Newest first."""
    where = "" if include_closed else f"WHERE state = '{DeadLetterState.OPEN}'"
    return store.all(f"SELECT {_COLS} FROM dead_letters {where} ORDER BY created_at DESC, id LIMIT ?", [limit])


def open_count(store: Store) -> int:
    return store.scalar(f"SELECT count(*) FROM dead_letters WHERE state = '{DeadLetterState.OPEN}'")


def open_since(store: Store, since: datetime | None, leaving: Sequence[str], limit: int = 20) -> list[dict]:
    """Open dead letters stamped at or after `since` (all without), but those `leaving`, oldest first (the
    sensor's feed)."""
    where, args = ("AND created_at >= ?", [since]) if since else ("", [])
    return store.all(f"SELECT {_COLS} FROM dead_letters WHERE state = '{DeadLetterState.OPEN}' {where} "
                     "AND id NOT IN (SELECT unnest(?::TEXT[])) ORDER BY created_at, id LIMIT ?", [*args, list(leaving), limit])


def set_state(store: Store, dl_id: str, state: DeadLetterState, note: str, now: datetime) -> bool:
    """Close (or re-open) a dead letter; False when it does not exist."""
    with store.transaction() as conn:
        return bool(conn.execute("UPDATE dead_letters SET state = ?, resolved = ?, note = ?, updated_at = ? "
                                 "WHERE id = ? RETURNING id",
                                 [state.value, state is not DeadLetterState.OPEN, note[:500], now, dl_id]).fetchall())


def resolve_for_unit(store: Store, work_unit_id: str, note: str, now: datetime) -> None:
    """The unit's work has since succeeded: its open dead letters are resolved."""
    store.execute(f"UPDATE dead_letters SET state = '{DeadLetterState.RESOLVED}', resolved = TRUE, note = ?, "
                  f"updated_at = ? WHERE work_unit_id = ? AND state = '{DeadLetterState.OPEN}'",
                  [note, now, work_unit_id])
