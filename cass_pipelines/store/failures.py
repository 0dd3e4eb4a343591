"""Items that keep failing (a conversation whose summary is refused, ...): each failure is counted
and the item waits out a growing backoff before it is tried again; after `max_attempts` it is
parked (and dead-lettered by the caller) so it can never block the items behind it."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

from cass_pipelines.store.db import Store

BACKOFF = timedelta(minutes=10)   # first wait; doubles with each further failure


@dataclass(frozen=True)
class Failure:
    attempts: int
    parked: bool
    next_attempt_at: datetime


def record(store: Store, kind: str, item_id: str, error: str, now: datetime, max_attempts: int) -> Failure:
    with store.transaction() as conn:
        row = conn.execute("SELECT attempts FROM item_failures WHERE kind = ? AND item_id = ?",
                           [kind, item_id]).fetchone()
        attempts = (row[0] if row else 0) + 1
        parked = attempts >= max_attempts
        retry_at = now + BACKOFF * (2 ** (attempts - 1))
        conn.execute("""INSERT INTO item_failures (kind, item_id, attempts, last_error, first_failed_at,
                last_failed_at, next_attempt_at, parked) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (kind, item_id) DO UPDATE SET attempts = excluded.attempts,
                last_error = excluded.last_error, last_failed_at = excluded.last_failed_at,
                next_attempt_at = excluded.next_attempt_at, parked = excluded.parked""",
                     [kind, item_id, attempts, error[:2000], now, now, retry_at, parked])
    return Failure(attempts, parked, retry_at)


def clear(store: Store, kind: str, item_id: str) -> None:
    """The item succeeded (or a person asked for a fresh start): forget its failures."""
    with store.connection() as conn:
        forget(conn, kind, item_id)


def forget(conn: duckdb.DuckDBPyConnection, kind: str, *item_ids: str) -> None:
    """`clear` inside the caller's transaction (an item's success commits with its failures forgotten)."""
    conn.execute("DELETE FROM item_failures WHERE kind = ? AND item_id IN (SELECT unnest(?::TEXT[]))",
                 [kind, list(item_ids)])


def waiting(store: Store, kind: str, now: datetime) -> set[str]:
    """Items not to try now: parked, or inside their backoff."""
    return {r["item_id"] for r in store.all(
        "SELECT item_id FROM item_failures WHERE kind = ? AND (parked OR next_attempt_at > ?)", [kind, now])}
