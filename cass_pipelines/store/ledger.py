"""The cost ledger: one append-only row per API response. `request_id` is the primary key, so
recording the same response twice (a replay) adds nothing; a retried call billed twice has two ids."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import date, datetime

import duckdb


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


_COLUMNS = [f.name for f in fields(LedgerRow)]


def insert_row(conn: duckdb.DuckDBPyConnection, row: LedgerRow) -> bool:
    """Insert inside the caller's transaction; returns False when the response was already recorded."""
    inserted = conn.execute(
        f"INSERT INTO llm_ledger ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)}) "
        "ON CONFLICT (request_id) DO NOTHING RETURNING request_id",
        list(asdict(row).values())).fetchall()
    return bool(inserted)
