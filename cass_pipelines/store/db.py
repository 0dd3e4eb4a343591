"""Short-lived DuckDB sessions with lock-conflict retry.

DuckDB is single-writer across processes: while one process has the file open, every other open
fails (read-only included). So the file is opened for a stretch of bookkeeping and closed again,
let go for every LLM call and every wait (`Store.released`), and opens are retried with backoff.
Within one process, multi-statement transactions and single writes are serialised by a lock, so a
reservation's check-then-insert cannot interleave and two threads never write one row at once (DuckDB
refuses the second as a conflict).

An "open" is an ATTACH of the file to one in-memory DuckDB instance that lives as long as the
process, and a "close" is its DETACH: the file lock is held exactly while attached, as it was
while a connection was open. Creating and destroying a whole DuckDB instance for each open cost
5-10x more (thread pool, built-in extensions, buffer manager; bench/bench_store.py measures both).
Threads of one process share an attachment (counted), each through its own cursor.

Processes take turns at the file (`_Turn`): DuckDB's own lock only refuses, so a process that let go
took the file straight back while the others slept in their backoff (4 processes doing bookkeeping
back to back: one open waited 16 s, bench/bench_reservations.py). Two flock(2)s on files beside the
database now order the opens of our processes: a process holds `<db>.hold` while it has the file
attached, and takes it only through `<db>.turn`, which a waiting process keeps while it waits, so the
one that let go queues behind it. A process that does not take turns (the metrics exporter's
read-only connection, a DuckDB shell) is still met by DuckDB's lock and the backoff.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, ContextManager, Generic, Iterator, Sequence, TypeVar, cast

import duckdb

OPEN_DEADLINE_S = 100.0          # same order as dagster-duckdb's own open backoff
TURN_POLL_S = 0.002             # how often a waiting process tries for its turn (a flock costs microseconds)
# Every function our SQL uses (ICU time zones, JSON) is built into the wheel: no extension lookups.
HOST_CONFIG = {"autoload_known_extensions": False, "autoinstall_known_extensions": False}
_WRITE_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()
_ATTACH_GUARD = threading.Lock()
_host: duckdb.DuckDBPyConnection | None = None
_host_pid: int | None = None
_attached: dict[str, list] = {}   # resolved path -> [catalog alias, sessions using it]
T = TypeVar("T")


def _is_lock_conflict(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, (duckdb.IOException, duckdb.ConnectionException)) and (
        "lock" in text or "conflicting" in text)


def _key(path: str | Path) -> str:
    return str(Path(path).resolve())


def _host_connection() -> duckdb.DuckDBPyConnection:
    """The process's in-memory instance (a forked child makes its own: an instance is not fork-safe)."""
    global _host, _host_pid
    if _host is None or _host_pid != os.getpid():
        _host, _host_pid = duckdb.connect(":memory:", config=dict(HOST_CONFIG)), os.getpid()
        _attached.clear()
    return _host


class _Turn:
    """This process's turn at one database file among our processes (module docstring): `hold` is
    flocked while the process has the file attached; a process waiting for it keeps `turn` meanwhile,
    so a process that let go and wants it again waits behind the one already waiting."""

    def __init__(self, key: str):
        self.key = key
        self.queue = threading.Lock()   # the thread of this process waiting for the file's turn
        try:
            self._turn: int | None = self._open(".turn")
            self._hold: int | None = self._open(".hold")
        except OSError:   # a read-only home (no writer to take turns with): DuckDB's open says what is wrong
            self._turn = self._hold = None

    def _open(self, suffix: str) -> int:
        return os.open(self.key + suffix, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def take(self, give_up_at: float) -> None:
        """Wait for the file's turn, then hold it until `give_back`; give up at `give_up_at` (monotonic)."""
        if self._turn is None or self._hold is None:
            return
        self._flock(self._turn, give_up_at)
        try:
            self._flock(self._hold, give_up_at)
        finally:
            fcntl.flock(self._turn, fcntl.LOCK_UN)

    def give_back(self) -> None:
        if self._hold is not None:
            fcntl.flock(self._hold, fcntl.LOCK_UN)

    def close_inherited(self) -> None:
        """In a forked child: close the parent's descriptors, which share its flocks (a parent that died
        holding the file would otherwise keep every other process waiting for as long as the child lives)."""
        for fd in (self._turn, self._hold):
            if fd is not None:
                os.close(fd)

    def _flock(self, fd: int, give_up_at: float) -> None:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= give_up_at:
                    raise _busy(self.key) from None
                time.sleep(TURN_POLL_S)


def _busy(key: str) -> duckdb.IOException:
    """Worded as DuckDB's own lock conflict, which callers (the retry below, sensors' unless_busy) know."""
    return duckdb.IOException(f'Could not set lock on file "{key}": another process kept it past the deadline')


_turns: dict[str, _Turn] = {}   # resolved path -> this process's turn at it (a forked child makes its own)


def _forget_turns_in_child() -> None:
    for turn in list(_turns.values()):
        turn.close_inherited()
    _turns.clear()


os.register_at_fork(after_in_child=_forget_turns_in_child)


def _turn(key: str) -> _Turn:
    with _ATTACH_GUARD:
        turn = _turns.get(key)
        if turn is None:
            turn = _turns[key] = _Turn(key)
        return turn


def _join(key: str) -> duckdb.DuckDBPyConnection | None:
    """A cursor on the file if a session of this process has it attached (counted), else None."""
    with _ATTACH_GUARD:
        host = _host_connection()
        entry = _attached.get(key)
        if entry is None:
            return None
        entry[1] += 1
        return host.cursor()


def _attach(key: str, give_up_at: float) -> duckdb.DuckDBPyConnection:
    """A cursor whose default catalog is the file: joining this process's attachment, or attaching it
    once the process's turn at the file came (one thread of the process waits for it; the others join)."""
    cursor = _join(key)
    if cursor is None:
        turn = _turn(key)
        if not turn.queue.acquire(timeout=max(give_up_at - time.monotonic(), 0.0)):
            raise _busy(key)
        try:
            cursor = _join(key)   # attached by another thread of the process while this one waited
            if cursor is None:
                turn.take(give_up_at)
                try:
                    with _ATTACH_GUARD:
                        host = _host_connection()
                        alias = "cass_" + hashlib.sha1(key.encode()).hexdigest()[:16]
                        host.execute(f"ATTACH '{key.replace(chr(39), chr(39) * 2)}' AS {alias}")
                        _attached[key] = [alias, 1]
                        cursor = host.cursor()
                except BaseException:
                    turn.give_back()
                    raise
        finally:
            turn.queue.release()
    try:
        cursor.execute(f"USE {_attached[key][0]}")
    except BaseException:
        _release(key, cursor)
        raise
    return cursor


def _release(key: str, cursor: duckdb.DuckDBPyConnection) -> None:
    """Close the cursor; the last session of the process detaches the file (checkpoint, unlock) and gives
    the file's turn back."""
    cursor.close()
    with _ATTACH_GUARD:
        entry = _attached[key]
        entry[1] -= 1
        if entry[1] == 0:
            del _attached[key]
            try:
                _host_connection().execute(f"DETACH {entry[0]}")
            finally:
                _turns[key].give_back()


def connect(path: str | Path, deadline_s: float = OPEN_DEADLINE_S) -> duckdb.DuckDBPyConnection:
    """Open the database: wait for this process's turn at the file, and retry with backoff while a process
    that takes no turns holds it; give up after `deadline_s`. Close it with `close`."""
    give_up_at, delay = time.monotonic() + deadline_s, 0.02
    while True:
        try:
            return _attach(_key(path), give_up_at)
        except Exception as exc:
            left = give_up_at - time.monotonic()
            if not _is_lock_conflict(exc) or left <= 0:
                raise
            time.sleep(min(delay, left) * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)


def close(path: str | Path, conn: duckdb.DuckDBPyConnection) -> None:
    _release(_key(path), conn)


@contextmanager
def open_connection(path: str | Path, deadline_s: float = OPEN_DEADLINE_S) -> Iterator[duckdb.DuckDBPyConnection]:
    conn = connect(path, deadline_s)
    try:
        yield conn
    finally:
        close(path, conn)


def _write_lock(path: str) -> threading.RLock:
    with _LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(str(Path(path).resolve()), threading.RLock())


class _Work(Generic[T]):
    """One thread's work handed to a group commit, and what came of it (`many` and `item`: a work of
    `grouped_many`, run with the other items handed to the same `many`)."""

    def __init__(self, run: Callable[[duckdb.DuckDBPyConnection], T],
                 many: Callable[[duckdb.DuckDBPyConnection, list], list] | None = None, item: Any = None):
        self.run, self.many, self.item = run, many, item
        self.done = False
        self.value: T | None = None
        self.error: BaseException | None = None

    def finish(self, value: T | None = None, error: BaseException | None = None) -> None:
        self.value, self.error, self.done = value, error, True


class _Group:
    """The works of a store's threads waiting to be committed, and whether a thread is committing some."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.queue: list[_Work] = []
        self.leading = False


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
        self._group = _Group()   # works handed to `grouped`: their store calls go through this handle

    @contextmanager
    def session(self) -> Iterator[None]:
        """Share one connection among the statements of this block (an open costs ~12 ms here).

        The file stays locked for the whole block, so an API call or a wait inside it goes in a
        `released` block (services/metering.py does it for every model call)."""
        if getattr(self._local, "conn", None) is not None or getattr(self._local, "lazy", False):
            yield
            return
        self._open_session()
        try:
            yield
        finally:
            self._local.lazy = False
            self._close_session()

    @contextmanager
    def released(self) -> Iterator[None]:
        """The block runs with this thread's session let go (the file closed unless another thread of
        the process uses it): a model call or a wait inside a session holds no lock on the file. The
        session is taken up again by its next statement, not at the block's end, so an open that fails
        fails that statement (after a call, the paid log has the answer by then). Not inside a
        transaction, which cannot be let go."""
        if getattr(self._local, "in_transaction", False) or getattr(self._local, "grouped", None) is not None:
            raise RuntimeError("Store.released inside a transaction: its lock would be held across the block")
        if getattr(self._local, "conn", None) is None and not getattr(self._local, "lazy", False):
            yield
            return
        self._close_session()
        self._local.lazy = False
        try:
            yield
        finally:   # taken up again by the next statement: a failed open is that statement's, never the block's
            self._local.lazy = True

    def _open_session(self) -> None:
        opened = self._connect()
        self._local.conn = opened.__enter__()
        self._local.opened = opened

    def _close_session(self) -> None:
        opened, self._local.opened, self._local.conn = getattr(self._local, "opened", None), None, None
        if opened is not None:
            opened.__exit__(None, None, None)

    @contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        shared = getattr(self._local, "conn", None)
        if shared is None and getattr(self._local, "lazy", False):
            self._local.lazy = False
            self._open_session()
            shared = self._local.conn
        if shared is not None:
            yield shared
            return
        with self._connect() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One serialised read-check-write transaction (rolled back on error). The file is attached
        before the write lock is taken, so threads queued for the lock share one attachment instead of
        each attaching and detaching (checkpointing) in turn. Inside a `grouped` work, the work's
        transaction is the group's."""
        if getattr(self._local, "grouped", None) is not None:
            yield self._local.grouped
            return
        with self.connection() as conn, _write_lock(str(self.path)):
            conn.execute("BEGIN TRANSACTION")
            self._local.in_transaction = True
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            finally:
                self._local.in_transaction = False
            conn.execute("COMMIT")

    def grouped(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """`work(conn)` in one transaction, shared with the works other threads of this process hand in
        meanwhile: one commit and one lock window for all (a group commit: a gathered batch's holds, the
        catch-up's summaries). The first thread to find no group committing commits every work queued so far, in
        the order handed in; the others wait for theirs. If a work raises, the group is rolled back and
        each of its works runs again in a transaction of its own, so a work that fails fails alone, in
        its own thread; if the file cannot be opened or the commit fails, every work of the group fails
        with that error. A work is bookkeeping only (no LLM call, no wait on another thread), and what
        it reads inside a group that is rolled back may include the group's undone writes: a work keeps
        beyond its return only reads of tables no work writes (metering's ledger figures).
        Not from inside a transaction of this store (a work handing in more runs it in place)."""
        return self._hand_in(_Work(work))

    def grouped_many(self, many: Callable[[duckdb.DuckDBPyConnection, list], list[T]], item: Any) -> T:
        """`grouped` for work that is cheaper done for many items at once (a statement of many rows): the
        items handed to the same `many` while a group commits are done in one call, `many(conn, items)` (its
        values in the items' order), at the place of the first of them in the group. If the group fails,
        each item runs again alone: `many(conn, [item])`."""
        return self._hand_in(_Work(lambda conn: many(conn, [item])[0], many, item))

    def _hand_in(self, mine: _Work[T]) -> T:
        if getattr(self._local, "grouped", None) is not None:
            return mine.run(self._local.grouped)
        if getattr(self._local, "in_transaction", False):   # it would wait for its own write lock
            raise RuntimeError("Store.grouped called inside a transaction of the same store")
        group = self._group
        works: list[_Work] = []
        try:
            with group.cond:
                group.queue.append(mine)
                try:
                    while group.leading and not mine.done:
                        group.cond.wait()
                except BaseException:   # interrupted while waiting: a work not taken yet never runs
                    if mine in group.queue:
                        group.queue.remove(mine)
                    raise
                if not mine.done:   # this thread commits every work queued so far
                    group.leading, works, group.queue = True, group.queue, []
            if works:
                self._commit_together(works)
        finally:
            if works:
                with group.cond:
                    group.leading = False
                    group.cond.notify_all()
        if mine.error is not None:
            raise mine.error
        return cast(T, mine.value)

    def _commit_together(self, works: list[_Work]) -> None:
        """Run the works in one transaction; if one of them raised, each in its own. Every work ends done."""
        raised: list[_Work] = []

        def run_all(conn: duckdb.DuckDBPyConnection) -> list:
            values: dict[int, Any] = {}
            for w in works:
                if id(w) in values:   # done with the first work of its `many`
                    continue
                together = [x for x in works if x.many is not None and x.many == w.many] if w.many else [w]
                try:
                    done = w.many(conn, [x.item for x in together]) if w.many else [w.run(conn)]
                except Exception:
                    raised.extend(together)
                    raise
                values.update((id(x), value) for x, value in zip(together, done, strict=True))
            return [values[id(w)] for w in works]

        try:
            try:
                for w, value in zip(works, self._as_work(run_all)):
                    w.finish(value=value)
            except Exception as exc:
                if not raised or len(works) == 1:   # the open or the commit failed (or the one work did)
                    for w in works:
                        w.finish(error=exc)
                    return
                with self.session():   # one open for the works run again, one by one
                    for w in works:
                        try:
                            w.finish(value=self._as_work(w.run))
                        except Exception as alone:
                            w.finish(error=alone)
        except BaseException as exc:   # the reruns could not open the file, or this thread is stopping
            for w in works:
                if not w.done:
                    w.finish(error=exc)
            if not isinstance(exc, Exception):
                raise

    def _as_work(self, run: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """`run(conn)` in one transaction, the store calls it makes included (see `transaction`)."""
        with self.session(), self.transaction() as conn:
            self._local.grouped = conn
            try:
                return run(conn)
            finally:
                self._local.grouped = None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One write, serialised with the process's transactions: a row another thread's open
        transaction changed would make DuckDB refuse it as a conflict."""
        with self.connection() as conn, _write_lock(str(self.path)):
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


def insert_sql(table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
    """One INSERT of many rows and its parameters (`conn.execute(*insert_sql(...))`): DuckDB spends about as
    much on a statement of many rows as on one of a row."""
    values = ", ".join("(" + ", ".join("?" * len(columns)) + ")" for _ in rows)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}",
            params([value for row in rows for value in row]))
