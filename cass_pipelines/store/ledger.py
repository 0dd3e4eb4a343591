"""The cost ledger: one append-only row per API response. `request_id` is the primary key, so
recording the same response twice (a replay) adds nothing; a retried call billed twice has two ids."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, timedelta
from typing import Sequence

import duckdb

from cass_pipelines.store.db import Store, insert_sql


@dataclass(frozen=True)
class LedgerRow:
    request_id: str
    ts: datetime
    date: date
    phase: str | None
    run_id: str | None
    step_key: str | None
    work_unit_id: str | None
    action_id: str | None
    category: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    cache_creation_1h_input_tokens: int
    cost_usd: float
    offline: bool
    attempts: int
    latency_ms: int
    reservation_id: str | None = None
    funding: str = "category"          # core.budget.Funding of the reservation it settled
    reserved_usd: float | None = None  # what the reservation held for this call
    max_tokens: int | None = None      # the output bound the call was sent with
    prefix_key: str | None = None      # model + cached prefix (llm.base.prefix_key); None: nothing cacheable
    batch: bool = False                # answered through a Message Batch (billed at the batch price)


_COLUMNS = [f.name for f in fields(LedgerRow)]


def insert_rows(conn: duckdb.DuckDBPyConnection, rows: Sequence[LedgerRow]) -> set[str]:
    """Insert inside the caller's transaction (their request ids distinct); returns the request ids
    inserted (a response already recorded is not). The ones recorded are read first, the others inserted
    in one statement: DuckDB's ON CONFLICT DO NOTHING costs more than both."""
    if not rows:
        return set()
    known = {r[0] for r in conn.execute("SELECT request_id FROM llm_ledger WHERE request_id IN (SELECT unnest(?::TEXT[]))",
                                        [[row.request_id for row in rows]]).fetchall()}
    new = [row for row in rows if row.request_id not in known]
    if new:
        conn.execute(*insert_sql("llm_ledger", _COLUMNS, [list(asdict(row).values()) for row in new]))
    return {row.request_id for row in new}


# ---- reading side ------------------------------------------------------------------------------

_SUMS = """count(*) AS calls, coalesce(sum(cost_usd), 0) AS cost_usd,
    coalesce(sum(input_tokens), 0) AS input_tokens, coalesce(sum(output_tokens), 0) AS output_tokens,
    coalesce(sum(cache_creation_input_tokens), 0) AS cache_creation_input_tokens,
    coalesce(sum(cache_read_input_tokens), 0) AS cache_read_input_tokens,
    coalesce(sum(cache_creation_1h_input_tokens), 0) AS cache_creation_1h_input_tokens,
    coalesce(bool_or(offline), FALSE) AS offline"""
_GROUPABLE = ("category", "model", "phase", "action_id")


def _where(day: date | None, phase: str | None = None, run_id: str | None = None) -> tuple[str, list]:
    """A WHERE clause for the filters given (none: the whole ledger)."""
    filters = [(c, v) for c, v in (("date", day), ("phase", phase), ("run_id", run_id)) if v is not None]
    clause = " AND ".join(f"{c} = ?" for c, _ in filters)
    return (f"WHERE {clause}" if clause else ""), [v for _, v in filters]


def rows(store: Store, day: date | None = None) -> list[dict]:
    """Every call of a budget day (of the whole ledger without a day), oldest first: the
    `ledger --json` shape plus category, 1-hour cache writes, attempts, latency, run and step."""
    where, params = _where(day)
    return store.all(f"""SELECT ts, date, phase, work_unit_id, action_id, category, model, input_tokens,
            output_tokens, cache_creation_input_tokens, cache_read_input_tokens, cache_creation_1h_input_tokens,
            cost_usd, request_id, offline, attempts, latency_ms, run_id, step_key, coalesce(batch, FALSE) AS batch
        FROM llm_ledger {where} ORDER BY ts, request_id""", params)


def totals(store: Store, day: date | None = None, *, phase: str | None = None,
           run_id: str | None = None) -> dict:
    """Calls, cost and tokens by kind of a budget day, a date|phase partition, a Dagster run, or
    (with no filter) the whole ledger."""
    where, params = _where(day, phase, run_id)
    return store.one(f"SELECT {_SUMS} FROM llm_ledger {where}", params) or {}


def totals_by(store: Store, day: date, column: str) -> list[dict]:
    """Totals of a day grouped by category, model, phase or action_id, dearest first."""
    if column not in _GROUPABLE:
        raise ValueError(f"cannot group the ledger by {column!r}; choose one of {_GROUPABLE}")
    return store.all(f"SELECT {column}, {_SUMS} FROM llm_ledger WHERE date = ? GROUP BY {column} "
                     f"ORDER BY cost_usd DESC, {column}", [day])


def breakdown(store: Store, day: date, phase: str) -> list[dict]:
    """A date|phase partition's calls per (category, model, action), dearest first."""
    return store.all("""SELECT category, model, coalesce(action_id, '') AS action_id, count(*) AS calls,
            sum(cost_usd) AS cost_usd, sum(input_tokens + cache_creation_input_tokens + cache_read_input_tokens)
            AS input_tokens, sum(output_tokens) AS output_tokens
        FROM llm_ledger WHERE date = ? AND phase = ? GROUP BY ALL ORDER BY cost_usd DESC""", [day, phase])


def output_history(store: Store, action_id: str, model: str, before: date, days: int = 7) -> list[int]:
    """Output tokens of the action's calls on the `days` budget days before `before` (what its output
    bound is measured from); for an action never called in that time, of every call to `model`. Whole
    earlier days only: a day's bounds do not change while it runs, so concurrent calls and re-runs of
    the day are sent the same bound, whatever order calls finished."""
    return [r["output_tokens"] for r in store.all("""
        WITH recent AS (SELECT action_id, model, output_tokens FROM llm_ledger WHERE date < ? AND date >= ?),
        own AS (SELECT output_tokens FROM recent WHERE action_id = ?)
        SELECT output_tokens FROM own
        UNION ALL
        SELECT output_tokens FROM recent WHERE model = ? AND NOT EXISTS (SELECT 1 FROM own)
        ORDER BY output_tokens""", [before, before - timedelta(days=days), action_id, model])]


@dataclass(frozen=True)
class CallSizes:
    """One action's (or one model's) calls on earlier days, sorted: output tokens and whole prompts."""
    outputs: list[int]
    prompts: list[int]


def call_sizes(store: Store, before: date, days: int = 7) -> tuple[dict[str, CallSizes], dict[str, CallSizes]]:
    """The sizes of calls on the `days` budget days before `before`, per action and per model (as
    `output_history`, for every action in one query): what planning prices an action's next call from."""
    rows = store.all("""SELECT action_id, model, list(output_tokens) AS outputs,
            list(input_tokens + cache_creation_input_tokens + cache_read_input_tokens) AS prompts
        FROM llm_ledger WHERE date < ? AND date >= ? GROUP BY action_id, model""",
                     [before, before - timedelta(days=days)])
    by_action: dict[str, CallSizes] = {}
    by_model: dict[str, CallSizes] = {}
    for r in rows:
        for key, into in ((r["action_id"], by_action), (r["model"], by_model)):
            if key is None:   # a call of no action counts only towards its model's
                continue
            seen = into.get(key, CallSizes([], []))
            into[key] = CallSizes(sorted(seen.outputs + r["outputs"]), sorted(seen.prompts + r["prompts"]))
    return by_action, by_model


def paid(store: Store, request_id: str) -> dict:
    """The usage, cost and offline flag the ledger recorded for an answer ({} if it has none)."""
    return store.one("SELECT input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens, "
                     "cache_creation_1h_input_tokens, cost_usd, offline FROM llm_ledger WHERE request_id = ?",
                     [request_id]) or {}


def prefix_last_used(store: Store, prefix_key: str) -> datetime | None:
    """When the provider last wrote or read this cached prefix, as far as the ledger knows."""
    return store.scalar("SELECT max(ts) FROM llm_ledger WHERE prefix_key = ? "
                        "AND cache_creation_input_tokens + cache_read_input_tokens > 0", [prefix_key])


def phase_call_span(store: Store, phase: str, before: date, days: int = 7) -> float | None:
    """Seconds between the first and last call of `phase` on its latest budget day before `before`
    (within `days`); None when it made no call then."""
    return store.scalar("""SELECT epoch(max(ts)) - epoch(min(ts)) FROM llm_ledger WHERE phase = ? AND date = (
            SELECT max(date) FROM llm_ledger WHERE phase = ? AND date < ? AND date >= ?)""",
                        [phase, phase, before, before - timedelta(days=days)])
