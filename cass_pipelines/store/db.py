"""Short-lived DuckDB connections with lock-conflict retry.

DuckDB is single-writer across processes: while one process has the file open, every other open
fails (read-only included). So a connection is opened for a few statements and closed again, never
held across an LLM call, and opens are retried with backoff. Within one process, multi-statement
transactions are serialised by a lock so a reservation's check-then-insert cannot interleave.
"""
from __future__ import annotations

import json
import random
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Sequence

import duckdb

OPEN_DEADLINE_S = 100.0          # same order as dagster-duckdb's own open backoff
# What an open does not need: every function our SQL uses (ICU time zones, JSON) is built into the
# wheel, so the extension autoloader's lookups are skipped (bench/bench_store.py measures each).
CONNECT_CONFIG = {"autoload_known_extensions": False, "autoinstall_known_extensions": False}
_WRITE_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _is_lock_conflict(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, (duckdb.IOException, duckdb.ConnectionException)) and (
        "lock" in text or "conflicting" in text)


def connect(path: str | Path, deadline_s: float = OPEN_DEADLINE_S) -> duckdb.DuckDBPyConnection:
    """Open the database, retrying while another process holds the file lock."""
    delay, waited = 0.02, 0.0
    while True:
        try:
            return duckdb.connect(str(path), config=CONNECT_CONFIG)
        except Exception as exc:
            if not _is_lock_conflict(exc) or waited >= deadline_s:
                raise
            pause = min(delay, deadline_s - waited) * (0.5 + random.random())
            time.sleep(pause)
            waited += pause
            delay = min(delay * 2, 1.0)


@contextmanager
def open_connection(path: str | Path, deadline_s: float = OPEN_DEADLINE_S) -> Iterator[duckdb.DuckDBPyConnection]:
    conn = connect(path, deadline_s)
    try:
        yield conn
    finally:
        conn.close()


def _write_lock(path: str) -> threading.RLock:
    with _LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(str(Path(path).resolve()), threading.RLock())


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return value


class Store:
    """A handle on one DuckDB file. `connect` may be swapped (Dagster passes its DuckDBResource's)."""

    def __init__(self, path: str | Path,
                 connect_fn: Callable[[], ContextManager[duckdb.DuckDBPyConnection]] | None = None):
        self.path = Path(path)
        self._connect = connect_fn or (lambda: open_connection(self.path))
        self._local = threading.local()

    @contextmanager
    def session(self) -> Iterator[None]:
        """Share one connection among the statements of this block (an open costs ~12 ms here).

        Only for bookkeeping that makes no LLM call: the file stays locked for the whole block."""
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        with self._connect() as conn:
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None

    @contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        shared = getattr(self._local, "conn", None)
        if shared is not None:
            yield shared
            return
        with self._connect() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One serialised read-check-write transaction (rolled back on error)."""
        with _write_lock(str(self.path)), self.connection() as conn:
            conn.execute("BEGIN TRANSACTION")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self.connection() as conn:
            conn.execute(sql, [_jsonable(p) for p in params])

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with self.transaction() as conn:
            conn.executemany(sql, [[_jsonable(p) for p in row] for row in rows])

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.connection() as conn:
            return rows_as_dicts(conn.execute(sql, [_jsonable(p) for p in params]))

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self.connection() as conn:
            row = conn.execute(sql, [_jsonable(p) for p in params]).fetchone()
        return row[0] if row else None


def rows_as_dicts(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cols = [d[0] for d in cursor.description or []]
    return [dict(zip(cols, row)) for row in cursor.fetchall()]


def params(values: Sequence[Any]) -> list[Any]:
    """Parameters with lists/dicts serialised to JSON text (for JSON columns)."""
    return [_jsonable(v) for v in values]
