"""Operator controls and alerts: pause/resume (global or per category, with a reason), budget
alerts (one per date and kind)."""
from __future__ import annotations

from datetime import date, datetime

import duckdb

from cass_pipelines.domain.categories import Category
from cass_pipelines.domain.pauses import pause_reason
from cass_pipelines.store.db import Store

GLOBAL = "global"
DEFAULT_REASON = "paused by the operator"


def _scope(category: str | None) -> str:
    return GLOBAL if category is None else f"category:{Category(category).value}"


def _category(scope: str) -> str | None:
    """The category a scope pauses, None for the global pause."""
    return None if scope == GLOBAL else scope.split(":", 1)[1]


def pause(store: Store, category: str | None, reason: str | None, now: datetime) -> None:
    with store.transaction() as conn:
        scope = _scope(category)
        # A new pause starts a span of the history (pausing again while paused changes only the reason).
        conn.execute("INSERT INTO pauses (scope, began) SELECT ?, ? WHERE NOT EXISTS (SELECT 1 FROM control_flags "
                     "WHERE scope = ? AND paused)", [scope, now, scope])
        conn.execute("""INSERT INTO control_flags (scope, paused, reason, updated_at) VALUES (?, TRUE, ?, ?)
            ON CONFLICT (scope) DO UPDATE SET paused = TRUE, reason = excluded.reason, updated_at = excluded.updated_at""",
                     [scope, reason or DEFAULT_REASON, now])


def resume(store: Store, category: str | None, now: datetime, everything: bool = False) -> list[str]:
    """Lift one pause (or every pause); returns the scopes that were paused and are not any more."""
    where = "paused" if everything else "paused AND scope = ?"
    args = [now] if everything else [now, _scope(category)]
    with store.transaction() as conn:
        lifted = [r[0] for r in conn.execute(
            f"UPDATE control_flags SET paused = FALSE, reason = NULL, updated_at = ? WHERE {where} RETURNING scope",
            args).fetchall()]
        conn.execute("UPDATE pauses SET lifted = ? WHERE lifted IS NULL AND scope IN (SELECT unnest(?::TEXT[]))",
                     [now, lifted])
        return lifted


def paused_scopes(store: Store) -> dict[str | None, str]:
    """{None: reason} for a global pause, {category: reason} for each paused category."""
    with store.connection() as conn:
        return _paused_scopes(conn)


def _paused_scopes(conn: duckdb.DuckDBPyConnection) -> dict[str | None, str]:
    rows = conn.execute("SELECT scope, reason FROM control_flags WHERE paused").fetchall()
    return {_category(scope): reason or DEFAULT_REASON for scope, reason in rows}


def paused_reason(store: Store, category: str | None) -> str | None:
    """Why new work (of `category`, or any work when None) must not start, or None."""
    with store.connection() as conn:
        return paused_reason_in(conn, category)


def paused_reason_in(conn: duckdb.DuckDBPyConnection, category: str | None) -> str | None:
    """paused_reason inside the caller's transaction (a reservation checks pause and room at once)."""
    return pause_reason(_paused_scopes(conn), category)


def lifted_at(store: Store, category: str) -> datetime | None:
    """When the last pause that held `category` (its own or the global one) was lifted, if ever."""
    return store.scalar("SELECT max(updated_at) FROM control_flags WHERE NOT paused AND scope IN (?, ?)",
                        [GLOBAL, _scope(category)])


def pause_spans(store: Store) -> list[tuple[str | None, datetime, datetime | None]]:
    """(category, None for a global pause; began; lifted, None while still on) of every pause kept."""
    return [(_category(r["scope"]), r["began"], r["lifted"])
            for r in store.all("SELECT scope, began, lifted FROM pauses ORDER BY began")]


def record_alert(store: Store, day: date, kind: str, message: str, now: datetime) -> bool:
    """Record an alert once per (date, kind); True when it is new."""
    with store.transaction() as conn:
        return bool(conn.execute("INSERT INTO alerts (id, date, kind, message, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                                 [f"{day.isoformat()}:{kind}", day, kind, message, now]).fetchall())


def alerts(store: Store, day: date) -> list[dict]:
    return store.all("SELECT kind, message, created_at FROM alerts WHERE date = ? ORDER BY created_at, kind", [day])
