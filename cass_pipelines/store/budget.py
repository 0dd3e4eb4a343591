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
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Callable, Sequence

import duckdb

from cass_pipelines.domain import budget_rules as rules
from cass_pipelines.domain.batching import PENDING
from cass_pipelines.domain.budget_rules import ActionCost, Funding, Refusal, Reservation
from cass_pipelines.domain.settings import Settings
from cass_pipelines.domain.states import ReservationStatus as RS
from cass_pipelines.domain.states import UnitStatus
from cass_pipelines.store.batches import counts as batch_counts
from cass_pipelines.store.claims import HOST, Owner, owner_dead
from cass_pipelines.store.control import alerts, paused_reason_in, paused_scopes, record_alert
from cass_pipelines.store.db import Store, insert_sql, rows_as_dicts
from cass_pipelines.store.ledger import LedgerRow, insert_rows

# Holds of batched requests that may still be answered are never released as stale: the batch
# outlives its submitter, and its answer is settled under that hold when collected (store/batches.py).
NOT_BATCHED = ("id NOT IN (SELECT reservation_id FROM llm_batches WHERE state IN "
               f"({', '.join(repr(s.value) for s in PENDING)}))")
CALIBRATION_WINDOW = 20   # recent executions per action that the calibrated estimate averages
CALIBRATION_LOOKBACK_DAYS = 30   # ...found among the ledger's last days: a year of ledger is never scanned

# Spent (ledger) and held (reservations) money of a day, per category and funding.
_USED = f"""SELECT category, funding, sum(spent) AS spent, sum(held) AS held FROM (
        SELECT category, coalesce(funding, 'category') AS funding, cost_usd AS spent, 0.0 AS held
        FROM llm_ledger WHERE date = $day
        UNION ALL
        SELECT category, coalesce(funding, 'category'), 0.0, amount_usd FROM reservations
        WHERE date = $day AND status = '{RS.HELD}')
    GROUP BY ALL"""
# Categories with no open unit left today: their unused room may be pooled (rules.pool_room). A unit paid
# from another day than its own (approved, retried, resumed: runner.paid_from) is that day's open work.
_IDLE = f"""SELECT c FROM (SELECT unnest($categories::TEXT[]) AS c)
    WHERE c NOT IN (SELECT category FROM work_units WHERE coalesce(paid_day, date) = $day
                    AND status IN ('{UnitStatus.PLANNED}', '{UnitStatus.RUNNING}'))"""


def _used(conn: duckdb.DuckDBPyConnection, day: date) -> list[dict]:
    return rows_as_dicts(conn.execute(_USED, {"day": day}))


def _pooled(used: list[dict]) -> float:
    return sum(r["spent"] + r["held"] for r in used if r["funding"] == Funding.POOLED)


def _idle(conn: duckdb.DuckDBPyConnection, settings: Settings, day: date) -> list[str]:
    return [r[0] for r in conn.execute(_IDLE, {"day": day, "categories": list(settings.category_shares)}).fetchall()]


def _pool(settings: Settings, category: str, idle: list[str], used: list[dict], phase: str | None) -> float:
    own: dict[str, float] = {}
    for r in used:
        if r["funding"] == Funding.CATEGORY:
            own[r["category"]] = own.get(r["category"], 0.0) + r["spent"] + r["held"]
    return rules.pool_room(settings, category, idle, own, _pooled(used), phase,
                           day_used=sum(r["spent"] + r["held"] for r in used))


def pooled_used(store: Store, day: date) -> float:
    """What the day's calls funded from the pool spent and hold."""
    with store.connection() as conn:
        return _pooled(_used(conn, day))


@dataclass(frozen=True)
class Ask:
    """A hold wanted (see `reserve`)."""
    day: date
    category: str
    amount_usd: float
    priority: str
    work_unit_id: str | None = None
    action_id: str | None = None
    run_id: str | None = None
    phase: str | None = None
    honour_pause: bool = False
    may_use_reserve: bool = False
    lowers: Sequence[str] = ()


def reserve(store: Store, *, settings: Settings, now: datetime, **ask) -> Reservation | Refusal:
    """Hold `amount_usd` against the day and where it is funded from (see rules.funding: the
    category, from the evening on the pooled room of idle categories, for the decision call the
    reserve). With `honour_pause`, a global or category pause refuses too, checked in the same
    transaction. A budget refusal is kept as a `refused` row: it shows what the day could not pay for;
    `lowers` names the refused rows of the same call asked again at a lower output bound: once this hold
    is made, they are `lowered` (the day did pay for the call)."""
    return reserve_many(store, [Ask(**ask)], settings, now)[0]


def reserve_many(store: Store, asks: Sequence[Ask], settings: Settings, now: datetime) -> list[Reservation | Refusal]:
    """`reserve` for each ask in turn, in one transaction: each is checked against what the day had and what
    the asks before it held (the day's money read once, the rows written in one statement), so a gathered
    batch's holds cost one transaction, not one each."""
    held: list[Reservation | Refusal] = []
    rows: list[list] = []
    lowered: list[str] = []
    with store.transaction() as conn:
        paused: dict[str, str | None] = {}
        used: dict[date, list[dict]] = {}
        idle: dict[date, list[str]] = {}
        for ask in asks:
            amount = rules.money(ask.amount_usd)
            if ask.honour_pause:
                if ask.category not in paused:
                    paused[ask.category] = paused_reason_in(conn, ask.category)
                if paused[ask.category]:
                    held.append(Refusal(f"paused: {paused[ask.category]}", "pause", amount, 0.0))
                    continue
            day = used.get(ask.day)
            if day is None:
                day = used[ask.day] = _used(conn, ask.day)
            if rules.pooling(ask.phase) and ask.day not in idle:
                idle[ask.day] = _idle(conn, settings, ask.day)
            own = [r for r in day if r["category"] == ask.category and r["funding"] == Funding.CATEGORY]
            decided = rules.funding(
                settings, amount=amount, category=ask.category, priority=ask.priority,
                day_spent=sum(r["spent"] for r in day), day_held=sum(r["held"] for r in day),
                category_spent=sum(r["spent"] for r in own), category_held=sum(r["held"] for r in own),
                pooled_room=_pool(settings, ask.category, idle[ask.day], day, ask.phase)
                if rules.pooling(ask.phase) else None,
                may_use_reserve=ask.may_use_reserve)
            rid = f"res_{uuid.uuid4().hex}"
            if isinstance(decided, Refusal):
                held.append(replace(decided, reservation_id=rid))
            else:   # what the next ask sees held
                day.append({"category": ask.category, "funding": Funding(str(decided)), "spent": 0.0, "held": amount})
                held.append(Reservation(rid, ask.day, ask.category, amount, Funding(str(decided))))
                lowered += ask.lowers
            refused = isinstance(decided, Refusal)
            rows.append([rid, ask.day, ask.category, ask.work_unit_id, ask.action_id, amount,
                         RS.REFUSED if refused else RS.HELD, ask.run_id, os.getpid(), now, ask.phase, ask.priority, HOST,
                         decided.reason if isinstance(decided, Refusal) else None, now if refused else None,
                         None if refused else str(decided)])
        if rows:
            conn.execute(*insert_sql("reservations", ["id", "date", "category", "work_unit_id", "action_id",
                                                      "amount_usd", "status", "run_id", "pid", "created_at", "phase",
                                                      "priority", "host", "reason", "settled_at", "funding"], rows))
        if lowered:
            conn.execute(f"UPDATE reservations SET status = '{RS.LOWERED}' WHERE id IN (SELECT unnest(?::TEXT[])) "
                         f"AND status = '{RS.REFUSED}'", [lowered])
    return held


def settle(store: Store, reservation_id: str, row: LedgerRow, now: datetime) -> bool:
    """Record the response's ledger row and reconcile the reservation to the ledger's cost, in one
    transaction. A replayed row (same request id) adds nothing: the reservation's actual cost is
    always the sum of the ledger rows that name it. Returns whether the row was new.
    The ledger row keeps the reservation's amount and funding next to its cost. A settled cost above
    what was held breaks the reservation rule: it is recorded as a `reservation_breach` alert."""
    return settle_all(store, [replace(row, reservation_id=reservation_id)], now)[0]


def settle_all(store: Store, rows: Sequence[LedgerRow], now: datetime) -> list[bool]:
    """`settle` for several answers (a message batch's), each under the reservation its row names, in one
    transaction of four statements whatever their number: one commit, not one each. Returns per row
    whether it was new (of two rows with one request id, the first)."""
    first: dict[str, int] = {}
    for n, row in enumerate(rows):
        first.setdefault(row.request_id, n)
    ids = sorted({row.reservation_id for row in rows if row.reservation_id})
    with store.transaction() as conn:
        held = {rid: (amount, funding) for rid, amount, funding in conn.execute(
            "SELECT id, amount_usd, coalesce(funding, 'category') FROM reservations WHERE id IN (SELECT unnest(?::TEXT[]))",
            [ids]).fetchall()}

        def with_hold(row: LedgerRow) -> LedgerRow:   # the row keeps its hold's amount and funding
            amount, funding = held.get(row.reservation_id, (None, Funding.CATEGORY.value))
            return replace(row, reserved_usd=amount, funding=funding)

        inserted = insert_rows(conn, [with_hold(rows[n]) for n in first.values()])
        # Each hold reconciled to the sum of the ledger rows that name it (a replayed row adds nothing).
        actual = dict(conn.execute(f"""UPDATE reservations SET status = '{RS.RECONCILED}', settled_at = $now,
                actual_usd = paid.cost_usd
            FROM (SELECT held.id, coalesce(sum(l.cost_usd), 0) AS cost_usd FROM (SELECT unnest($ids::TEXT[]) AS id) held
                  LEFT JOIN llm_ledger l ON l.reservation_id = held.id GROUP BY held.id) paid
            WHERE reservations.id = paid.id RETURNING reservations.id, reservations.actual_usd""",
                                   {"ids": ids, "now": now}).fetchall())
    breached: dict[str, LedgerRow] = {}
    for row in rows:   # each breached hold once, with its first row, in the rows' order
        rid = row.reservation_id
        if rid in actual and rid not in breached and held[rid][0] is not None and actual[rid] > held[rid][0] + rules.EPS:
            breached[rid] = row
    for rid, row in breached.items():
        record_alert(store, row.date, "reservation_breach",
                     f"{row.date}: a call settled at ${actual[rid]:.6f}, above its reservation of ${held[rid][0]:.6f} "
                     f"(request {row.request_id}, action {row.action_id})", now)
    return [row.request_id in inserted and first[row.request_id] == n for n, row in enumerate(rows)]


def release(store: Store, reservation_id: str, now: datetime, status: RS = RS.RELEASED) -> bool:
    """Give a held reservation back (the call failed before any response was billed)."""
    with store.transaction() as conn:
        return bool(conn.execute("UPDATE reservations SET status = ?, settled_at = ?, actual_usd = 0 "
                                 f"WHERE id = ? AND status = '{RS.HELD}' RETURNING id",
                                 [status, now, reservation_id]).fetchall())


def release_stale(store: Store, is_run_over: Callable[[str], bool], now: datetime) -> list[str]:
    """Abandon held reservations whose call can no longer settle: their Dagster run is over, or the
    process that made them (on this host) has died. Returns the ids released. Replay the write-ahead
    log of paid answers first (services.recovery does), or a paid hold would be released as $0. A
    hold of a pending batched request is left alone (see NOT_BATCHED)."""
    stale = [rid for rid, owner in held_owners(store) if owner_dead(owner, is_run_over)]
    return [rid for rid in stale if release(store, rid, now, status=RS.ABANDONED)]


def held_owners(store: Store) -> list[tuple[str, Owner]]:
    """Held reservations and who holds them (but holds of batched requests that may still answer)."""
    return [(r["id"], Owner(r["run_id"], r["pid"] or 0, r["host"] or "")) for r in store.all(
        f"SELECT id, run_id, pid, host FROM reservations WHERE status = '{RS.HELD}' AND {NOT_BATCHED}")]


def unsettled(store: Store, request_ids: list[str]) -> set[str]:
    """Of these request ids, the ones the ledger does not have."""
    if not request_ids:
        return set()
    have = {r["request_id"] for r in store.all(
        "SELECT request_id FROM llm_ledger WHERE request_id IN (SELECT unnest(?::TEXT[]))", [request_ids])}
    return set(request_ids) - have


def refused_money(store: Store, work_unit_id: str | None, day: date, action_id: str | None = None) -> bool:
    """Whether `day`'s budget refused a call of the unit (with no unit: of `action_id`, a week's call; a call
    lowered to fit was paid for: `lowered`; a pause refuses without a row)."""
    return bool(store.scalar("SELECT count(*) FROM reservations WHERE work_unit_id IS NOT DISTINCT FROM ? "
                             "AND (? IS NULL OR action_id = ?) AND date = ? AND status = ?",
                             [work_unit_id, action_id, action_id, day, RS.REFUSED]))


def budget_status(store: Store, settings: Settings, day: date, phase: str | None = None) -> dict:
    """The day's budget in the `budget` JSON shape (README: "cass-pipelines budget --json"), plus reserve left, pauses, alerts, the
    room pooled for the evening and night, utilisation, reservations against bills and cache reads.
    With a `phase` where room is pooled (rules.pooling), the pool counts towards what is left."""
    with store.session(), store.connection() as conn:
        used = _used(conn, day)
        pooled = _pool(settings, "", _idle(conn, settings, day), used, phase)
        asks = conn.execute(f"SELECT category, min(amount_usd), count(*) FILTER (WHERE status = '{RS.REFUSED}') "
                            "FROM reservations WHERE date = ? GROUP BY category", [day]).fetchall()
        # Each category's cheapest call its own share funded this week: what it is taken to need today
        # before it asks (rules.is_exhausted).
        granted = dict(conn.execute(f"""SELECT category, min(amount_usd) FROM reservations
            WHERE date BETWEEN ? AND ? AND status NOT IN ('{RS.REFUSED}', '{RS.LOWERED}')
            AND coalesce(funding, '{Funding.CATEGORY}') = '{Funding.CATEGORY}' GROUP BY category""",
                                    [day - timedelta(days=6), day]).fetchall())
        accuracy = _reservation_accuracy(conn, day)
        cache = _cache_share(conn, day)
        paused, day_alerts = paused_scopes(store), alerts(store, day)
        batched = batch_counts(store, day)
    own: dict[str, tuple[float, float]] = {}
    for r in used:
        if r["funding"] == Funding.CATEGORY:
            spent, held = own.get(r["category"], (0.0, 0.0))
            own[r["category"]] = (spent + r["spent"], held + r["held"])
    beyond = [r for r in used if r["funding"] != Funding.CATEGORY]
    status = rules.day_status(settings, day, categories=own, cheapest_ask={c: cheapest for c, cheapest, _ in asks},
                              paused=paused, beyond_shares=(sum(r["spent"] for r in beyond),
                                                            sum(r["held"] for r in beyond)),
                              pooled_room=pooled, pooling=rules.pooling(phase),
                              cheapest_granted=granted)
    return {**status, "refused_calls": sum(n for _, _, n in asks), "alerts": day_alerts,
            "reservation_vs_bill": accuracy, "cache": cache, "batches": batched}


def _reservation_accuracy(conn: duckdb.DuckDBPyConnection, day: date) -> dict:
    """Reserved / billed over the day's settled calls: how close holds are to bills, and breaches."""
    row = conn.execute(f"""SELECT count(*), median(amount_usd / actual_usd), quantile_cont(amount_usd / actual_usd, 0.9),
            coalesce(sum(amount_usd), 0), coalesce(sum(actual_usd), 0),
            count(*) FILTER (WHERE actual_usd > amount_usd + 1e-9)
        FROM reservations WHERE date = ? AND status = '{RS.RECONCILED}' AND actual_usd > 0""", [day]).fetchone()
    calls, median, p90, reserved, billed, breaches = row
    return {"calls": int(calls), "median_ratio": round(median, 4) if median is not None else None,
            "p90_ratio": round(p90, 4) if p90 is not None else None, "reserved_usd": rules.money(reserved),
            "billed_usd": rules.money(billed), "ratio": round(reserved / billed, 4) if billed else None,
            "breaches": int(breaches)}


def _cache_share(conn: duckdb.DuckDBPyConnection, day: date) -> dict:
    """The day's prompt tokens by how they were billed, and the share read from cache."""
    sent, read, written = conn.execute("""SELECT
            coalesce(sum(input_tokens + cache_creation_input_tokens + cache_read_input_tokens), 0),
            coalesce(sum(cache_read_input_tokens), 0), coalesce(sum(cache_creation_input_tokens), 0)
        FROM llm_ledger WHERE date = ?""", [day]).fetchone()
    return {"input_tokens": int(sent), "cache_read_tokens": int(read), "cache_write_tokens": int(written),
            "read_share": round(read / sent, 4) if sent else 0.0}


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


def ledger_action_averages(store: Store, window: int = CALIBRATION_WINDOW,
                           lookback_days: int = CALIBRATION_LOOKBACK_DAYS) -> dict[str, ActionCost]:
    """Per action, the actual cost of its last `window` executions (a unit's action in one run)
    within the ledger's last `lookback_days` budget days; an action not run in that time has no
    calibration (its hold is the worst case)."""
    rows = store.all("""
        WITH execs AS (
            SELECT action_id, sum(cost_usd) AS cost, count(*) AS calls, max(ts) AS last_ts
            FROM llm_ledger
            WHERE action_id IS NOT NULL AND date > (SELECT max(date) FROM llm_ledger) - ?::INTEGER
            GROUP BY action_id, coalesce(work_unit_id || '/' || coalesce(run_id, ''), request_id)),
        recent AS (SELECT *, row_number() OVER (PARTITION BY action_id ORDER BY last_ts DESC) AS n FROM execs)
        SELECT action_id, count(*) AS executions, avg(cost) AS mean_usd, sum(calls) AS calls,
               sum(cost) / sum(calls) AS mean_call_usd
        FROM recent WHERE n <= ? GROUP BY action_id""", [lookback_days, window])
    return {r["action_id"]: ActionCost(int(r["executions"]), float(r["mean_usd"]), int(r["calls"]),
                                       float(r["mean_call_usd"])) for r in rows}


def spend_figures(store: Store, day: date, phase: str) -> dict:
    """What the cost checks compare: the day's spend in total and per category, and for one
    date|phase partition the ledger total against its reconciled reservations."""
    with store.connection() as conn:
        day_spent = conn.execute("SELECT coalesce(sum(cost_usd), 0) FROM llm_ledger WHERE date = ?",
                                 [day]).fetchone()[0]
        # A category's share is checked against what its share funded (not pooled or reserve money).
        by_category = dict(conn.execute("SELECT category, sum(cost_usd) FROM llm_ledger WHERE date = ? "
                                        "AND coalesce(funding, 'category') = 'category' GROUP BY category",
                                        [day]).fetchall())
        ledger, unreserved = conn.execute(
            "SELECT coalesce(sum(cost_usd), 0), count(*) FILTER (WHERE reservation_id IS NULL) "
            "FROM llm_ledger WHERE date = ? AND phase = ?", [day, phase]).fetchone()
        reconciled = conn.execute("SELECT coalesce(sum(actual_usd), 0) FROM reservations "
                                  f"WHERE date = ? AND phase = ? AND status = '{RS.RECONCILED}'",
                                  [day, phase]).fetchone()[0]
    return {"day_spent_usd": rules.money(day_spent),
            "category_spent_usd": {k: rules.money(v) for k, v in by_category.items()},
            "partition_ledger_usd": rules.money(ledger), "partition_reconciled_usd": rules.money(reconciled),
            "partition_unreserved_rows": int(unreserved)}
