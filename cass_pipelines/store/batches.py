"""Batched requests: one row per request sent through a Message Batch, stored before the batch is
created and kept until its answer is in the ledger, so a crash between submitting and collecting
loses nothing paid (whoever runs next collects it) and the hold is kept while an answer may come.

A row carries the request itself (as JSON), so the batch can be collected, and its answer settled
under the same reservation, by another process than the one that submitted it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Sequence

import duckdb

from cass_pipelines.domain.batching import PENDING, BatchState
from cass_pipelines.domain.states import ReservationStatus as RS
from cass_pipelines.store.claims import HOST
from cass_pipelines.store.db import Store, insert_sql

_PENDING = [s.value for s in PENDING]


@dataclass(frozen=True)
class NewBatchRequest:
    custom_id: str
    request_key: str
    reservation_id: str
    date: date
    phase: str | None
    category: str
    priority: str
    work_unit_id: str | None
    action_id: str | None
    run_id: str | None
    step_key: str | None
    model: str
    request: dict        # LLMRequest fields plus "json_schema"
    pid: int
    submitted_at: datetime


def add(store: Store, new: NewBatchRequest) -> None:
    """Store the request (state `submitting`) before the batch is created."""
    add_many(store, [new])


def add_many(store: Store, new: Sequence[NewBatchRequest]) -> None:
    """`add` for the requests of one batch, in one statement."""
    if not new:
        return
    rows = [{**asdict(n), "request": json.dumps(n.request), "state": BatchState.SUBMITTING.value, "host": HOST}
            for n in new]
    store.execute(*insert_sql("llm_batches", list(rows[0]), [list(row.values()) for row in rows]))


def submitted(store: Store, custom_ids: Sequence[str], batch_id: str) -> None:
    """The batch these requests went out in, stored in one statement once it is created (a request
    already settled by then keeps its state)."""
    store.execute("UPDATE llm_batches SET batch_id = ?, state = ? WHERE custom_id IN (SELECT unnest(?::TEXT[])) "
                  "AND state = ?", [batch_id, BatchState.SUBMITTED.value, list(custom_ids), BatchState.SUBMITTING.value])


def collected(store: Store, batch_id: str, answers: Sequence[tuple[str, str, str]], now: datetime) -> None:
    """(custom id, request id, text) of a batch's answers in the ledger (settled by the caller first): each
    text kept for the work that asked, in one statement (with the batch id, should it not be stored yet)."""
    if not answers:
        return
    custom_ids, request_ids, texts = (list(column) for column in zip(*answers))
    store.execute("UPDATE llm_batches SET state = ?, request_id = a.request_id, result_text = a.text, ended_at = ?, "
                  "batch_id = coalesce(llm_batches.batch_id, ?) "
                  "FROM (SELECT unnest(?::TEXT[]) AS custom_id, unnest(?::TEXT[]) AS request_id, "
                  "unnest(?::TEXT[]) AS text) a WHERE llm_batches.custom_id = a.custom_id",
                  [BatchState.COLLECTED.value, now, batch_id, custom_ids, request_ids, texts])


def ended_without_answer(store: Store, custom_id: str, error: str, now: datetime,
                         state: BatchState = BatchState.FAILED) -> bool:
    """Nothing came back (errored, expired, never submitted): the row and its hold are closed in one
    transaction. Returns False when the row was no longer pending."""
    with store.transaction() as conn:
        row = conn.execute("UPDATE llm_batches SET state = ?, error = ?, ended_at = ? WHERE custom_id = ? "
                           "AND state IN (SELECT unnest(?::TEXT[])) RETURNING reservation_id",
                           [state.value, error[:500], now, custom_id, _PENDING]).fetchone()
        if row is None:
            return False
        conn.execute("UPDATE reservations SET status = ?, settled_at = ?, actual_usd = 0 WHERE id = ? AND status = ?",
                     [RS.RELEASED.value, now, row[0], RS.HELD.value])
    return True


def take(store: Store, custom_id: str) -> None:
    """The work that asked has used the answer (a later re-run of it asks afresh)."""
    store.execute("UPDATE llm_batches SET used = TRUE WHERE custom_id = ?", [custom_id])


def used_by_action(conn: duckdb.DuckDBPyConnection, work_unit_id: str, action_id: str) -> None:
    """The action has ended (in the caller's transaction): every answer collected for it is used."""
    conn.execute("UPDATE llm_batches SET used = TRUE WHERE work_unit_id = ? AND action_id = ? AND state = ? "
                 "AND NOT used", [work_unit_id, action_id, BatchState.COLLECTED.value])


def earlier_requests(store: Store, work_unit_id: str | None, action_id: str | None) -> dict[str, dict]:
    """The requests already sent for this piece of work (unit and action), by request key: pending, or
    collected and not yet used (the latest of a key)."""
    rows = store.all("SELECT * FROM llm_batches WHERE work_unit_id IS NOT DISTINCT FROM ? "
                     "AND action_id IS NOT DISTINCT FROM ? AND (state IN (SELECT unnest(?::TEXT[])) "
                     "OR (state = ? AND NOT used)) ORDER BY submitted_at",
                     [work_unit_id, action_id, _PENDING, BatchState.COLLECTED.value])
    return {r["request_key"]: r for r in rows}   # (a later row of a key replaces an earlier one)


def unanswered(store: Store, work_unit_ids: Sequence[str]) -> dict[str, dict]:
    """Per unit: `times`, how often one of its requests (one request key: a re-ask is the same key) came
    back without an answer or was lost, the most of any; `pending`, whether a request is still pending."""
    return {r["work_unit_id"]: {"times": r["times"], "pending": r["pending"]} for r in store.all(
        """SELECT work_unit_id, max(failed) AS times, bool_or(pending) AS pending FROM (
               SELECT work_unit_id, request_key, count(*) FILTER (WHERE state IN (?, ?)) AS failed,
                      bool_or(state IN (SELECT unnest(?::TEXT[]))) AS pending
               FROM llm_batches WHERE work_unit_id IN (SELECT unnest(?::TEXT[])) GROUP BY ALL)
           GROUP BY work_unit_id""",
        [BatchState.FAILED.value, BatchState.LOST.value, _PENDING, list(work_unit_ids)])}


def by_ids(store: Store, custom_ids: Sequence[str]) -> dict[str, dict]:
    return {r["custom_id"]: r for r in store.all(
        "SELECT * FROM llm_batches WHERE custom_id IN (SELECT unnest(?::TEXT[]))", [list(custom_ids)])}


def pending(store: Store) -> list[dict]:
    """Every request whose batch may still answer, oldest first."""
    return store.all("SELECT * FROM llm_batches WHERE state IN (SELECT unnest(?::TEXT[])) ORDER BY submitted_at",
                     [_PENDING])


def listing(store: Store, day: date | None = None) -> list[dict]:
    """Batched requests (of one budget day, or all), newest first, without the stored request text."""
    where, params = ("WHERE b.date = ?", [day]) if day else ("", [])
    return store.all(f"""SELECT b.custom_id, b.batch_id, b.state, b.date, b.phase, b.category, b.work_unit_id,
            b.action_id, b.model, b.submitted_at, b.ended_at, b.error, b.request_id, r.amount_usd AS reserved_usd,
            l.cost_usd AS billed_usd
        FROM llm_batches b LEFT JOIN reservations r ON r.id = b.reservation_id
        LEFT JOIN llm_ledger l ON l.request_id = b.request_id {where}
        ORDER BY b.submitted_at DESC, b.custom_id""", params)


def counts(store: Store, day: date) -> dict[str, int]:
    """Batched requests of a day by state (every state present, zero when none)."""
    found = {r["state"]: r["n"] for r in store.all(
        "SELECT state, count(*) AS n FROM llm_batches WHERE date = ? GROUP BY state", [day])}
    return {s.value: int(found.get(s.value, 0)) for s in BatchState}
