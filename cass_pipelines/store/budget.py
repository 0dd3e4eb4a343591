"""Reservations against the day's and the category's budget, settled to the ledger's real cost.

A reservation's check and insert happen in one transaction: `Store.transaction` serialises writers
in a process, and DuckDB lets only one process open the file at a time, so two reservations can
never both see the same last dollar. A reservation is `held` until it is `reconciled` (its ledger
row recorded, actual cost = the ledger's), `released` (the call failed) or `abandoned` (its run or
process ended without settling); a request that did not fit is kept as `refused`.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import replace
from datetime import date, datetime
from typing import Callable

from cass_pipelines.core import budget as rules
from cass_pipelines.core.budget import ActionCost, Refusal, Reservation
from cass_pipelines.core.settings import Settings
from cass_pipelines.store.claims import HOST, Owner, owner_dead
from cass_pipelines.store.control import alerts, paused_reason_in, paused_scopes, record_alert
from cass_pipelines.store.db import Store, rows_as_dicts
from cass_pipelines.store.ledger import LedgerRow, insert_row

CALIBRATION_WINDOW = 20   # recent executions per action that the calibrated estimate averages

_ROOM = """SELECT
    (SELECT coalesce(sum(cost_usd), 0) FROM llm_ledger WHERE date = $day),
    (SELECT coalesce(sum(amount_usd), 0) FROM reservations WHERE date = $day AND status = 'held'),
    (SELECT coalesce(sum(cost_usd), 0) FROM llm_ledger WHERE date = $day AND category = $category),
    (SELECT coalesce(sum(amount_usd), 0) FROM reservations WHERE date = $day AND status = 'held'
        AND category = $category)"""


def reserve(store: Store, *, day: date, category: str, amount_usd: float, settings: Settings, priority: str,
            work_unit_id: str | None = None, action_id: str | None = None, run_id: str | None = None,
            phase: str | None = None, now: datetime, honour_pause: bool = False) -> Reservation | Refusal:
    """Hold `amount_usd` against the day and the category if both have room (see rules.refusal).
    With `honour_pause`, a global or category pause refuses too, checked in the same transaction.
    A budget refusal is kept as a `refused` row: it shows what the day could not pay for."""
    amount = rules.money(amount_usd)
    with store.transaction() as conn:
        paused = paused_reason_in(conn, category) if honour_pause else None
        if paused:
            return Refusal(f"paused: {paused}", "pause", amount, 0.0)
        day_spent, day_held, cat_spent, cat_held = conn.execute(
            _ROOM, {"day": day, "category": category}).fetchone()
        refused = rules.refusal(settings, amount=amount, category=category, priority=priority, day_spent=day_spent,
                                day_held=day_held, category_spent=cat_spent, category_held=cat_held)
        rid = f"res_{uuid.uuid4().hex}"
        conn.execute("""INSERT INTO reservations (id, date, category, work_unit_id, action_id, amount_usd, status,
                run_id, pid, created_at, phase, priority, host, reason, settled_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                     [rid, day, category, work_unit_id, action_id, amount, "refused" if refused else "held", run_id,
                      os.getpid(), now, phase, priority, HOST, refused.reason if refused else None,
                      now if refused else None])
    return refused or Reservation(rid, day, category, amount)


def settle(store: Store, reservation_id: str, row: LedgerRow, now: datetime) -> bool:
    """Record the response's ledger row and reconcile the reservation to the ledger's cost, in one
    transaction. A replayed row (same request id) adds nothing: the reservation's actual cost is
    always the sum of the ledger rows that name it. Returns whether the row was new."""
    with store.transaction() as conn:
        inserted = insert_row(conn, replace(row, reservation_id=reservation_id))
        conn.execute("""UPDATE reservations SET status = 'reconciled', settled_at = $now, actual_usd =
                (SELECT coalesce(sum(cost_usd), 0) FROM llm_ledger WHERE reservation_id = $id)
            WHERE id = $id""", {"id": reservation_id, "now": now})
    return inserted


def release(store: Store, reservation_id: str, now: datetime, status: str = "released") -> bool:
    """Give a held reservation back (the call failed before any response was billed)."""
    with store.transaction() as conn:
        return bool(conn.execute("UPDATE reservations SET status = ?, settled_at = ?, actual_usd = 0 "
                                 "WHERE id = ? AND status = 'held' RETURNING id",
                                 [status, now, reservation_id]).fetchall())


def release_stale(store: Store, is_run_over: Callable[[str], bool], now: datetime) -> list[str]:
    """Abandon held reservations whose call can no longer settle: their Dagster run is over, or the
    process that made them (on this host) has died. Returns the ids released. Replay the write-ahead
    log of paid answers first (core.recovery does), or a paid hold would be released as $0."""
    held = store.all("SELECT id, run_id, pid, host FROM reservations WHERE status = 'held'")
    stale = [r["id"] for r in held if owner_dead(Owner(r["run_id"], r["pid"] or 0, r["host"] or ""), is_run_over)]
    return [rid for rid in stale if release(store, rid, now, status="abandoned")]


def unsettled(store: Store, request_ids: list[str]) -> set[str]:
    """Of these request ids, the ones the ledger does not have."""
    if not request_ids:
        return set()
    have = {r["request_id"] for r in store.all(
        "SELECT request_id FROM llm_ledger WHERE request_id IN (SELECT unnest(?::TEXT[]))", [request_ids])}
    return set(request_ids) - have


def budget_status(store: Store, settings: Settings, day: date) -> dict:
    """The day's budget in the DESIGN.md `budget` shape, plus reserve left, pauses and alerts."""
    with store.session(), store.connection() as conn:
        per_category = rows_as_dicts(conn.execute("""
            SELECT category, sum(spent) AS spent, sum(held) AS held FROM (
                SELECT category, cost_usd AS spent, 0.0 AS held FROM llm_ledger WHERE date = $day
                UNION ALL
                SELECT category, 0.0, amount_usd FROM reservations WHERE date = $day AND status = 'held')
            GROUP BY category""", {"day": day}))
        asks = conn.execute("SELECT category, min(amount_usd), count(*) FILTER (WHERE status = 'refused') "
                            "FROM reservations WHERE date = ? GROUP BY category", [day]).fetchall()
        paused, day_alerts = paused_scopes(store), alerts(store, day)
    status = rules.day_status(settings, day, categories={r["category"]: (r["spent"], r["held"]) for r in per_category},
                              cheapest_ask={c: cheapest for c, cheapest, _ in asks}, paused=paused)
    return {**status, "refused_calls": sum(n for _, _, n in asks), "alerts": day_alerts}


def watch(store: Store, settings: Settings, day: date, now: datetime,
          seen: set[str] | frozenset[str] = frozenset()) -> tuple[dict, list[tuple[str, str]]]:
    """What budget_sensor does each tick after recovery, in one store session: read the day's
    status and record each alert that is due and not in `seen` (once per date and kind).
    Returns (status, new alerts as (kind, message))."""
    with store.session():
        status = budget_status(store, settings, day)
        new = [(kind, msg) for kind, msg in rules.due_alerts(status, settings) if kind not in seen]
        for kind, msg in new:
            record_alert(store, day, kind, msg, now)
    return status, new


def ledger_action_averages(store: Store, window: int = CALIBRATION_WINDOW) -> dict[str, ActionCost]:
    """Per action, the actual cost of its last `window` executions (a unit's action in one run)."""
    rows = store.all("""
        WITH execs AS (
            SELECT action_id, sum(cost_usd) AS cost, count(*) AS calls, max(ts) AS last_ts
            FROM llm_ledger WHERE action_id IS NOT NULL
            GROUP BY action_id, coalesce(work_unit_id || '/' || coalesce(run_id, ''), request_id)),
        recent AS (SELECT *, row_number() OVER (PARTITION BY action_id ORDER BY last_ts DESC) AS n FROM execs)
        SELECT action_id, count(*) AS executions, avg(cost) AS mean_usd, sum(calls) AS calls,
               sum(cost) / sum(calls) AS mean_call_usd
        FROM recent WHERE n <= ? GROUP BY action_id""", [window])
    return {r["action_id"]: ActionCost(int(r["executions"]), float(r["mean_usd"]), int(r["calls"]),
                                       float(r["mean_call_usd"])) for r in rows}


def spend_figures(store: Store, day: date, phase: str) -> dict:
    """What the cost checks compare: the day's spend in total and per category, and for one
    date|phase partition the ledger total against its reconciled reservations."""
    with store.connection() as conn:
        by_category = dict(conn.execute("SELECT category, sum(cost_usd) FROM llm_ledger WHERE date = ? "
                                        "GROUP BY category", [day]).fetchall())
        ledger, unreserved = conn.execute(
            "SELECT coalesce(sum(cost_usd), 0), count(*) FILTER (WHERE reservation_id IS NULL) "
            "FROM llm_ledger WHERE date = ? AND phase = ?", [day, phase]).fetchone()
        reconciled = conn.execute("SELECT coalesce(sum(actual_usd), 0) FROM reservations "
                                  "WHERE date = ? AND phase = ? AND status = 'reconciled'", [day, phase]).fetchone()[0]
    return {"day_spent_usd": rules.money(sum(by_category.values())),
            "category_spent_usd": {k: rules.money(v) for k, v in by_category.items()},
            "partition_ledger_usd": rules.money(ledger), "partition_reconciled_usd": rules.money(reconciled),
            "partition_unreserved_rows": int(unreserved)}
