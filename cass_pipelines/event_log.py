"""The event log of the shipped dagster.yaml: Dagster's SQLite event log, with its connections kept.

Dagster's SqliteEventLogStorage creates a SQLAlchemy engine for every connection it opens and disposes
of it after one transaction; a run stores each of its events that way (two or three connections per
event: the run's shard, the asset index). On the sample day that was 1,418 engines for 346 events,
1.3 s of a 7.6 s offline day (bench/results/2026-12-01c). This class keeps one engine per shard (the
asset index and the runs this process wrote last), with the same files, tables and WAL journal, so the
webserver, the daemon and run workers share the files exactly as before (a run's shard is touched after
each event, as the closing connection's checkpoint did, so the UI's watcher sees it). Two costs of each run are
cut too: a new run's shard is made with the migrations read once per process, and a commit is synced
at the WAL's checkpoints rather than one by one (`_wal_commits_without_fsync`).

`_connect` and `_initdb` are private methods of Dagster's class; dagster is pinned to 1.13.x (pyproject.toml), and
every run of the suite goes through this storage. Without this file's entry in dagster.yaml an
instance uses Dagster's own class on the same files.
"""
from __future__ import annotations

import functools
import os
import threading
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterator

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from dagster import Field, StringSource
from dagster._core.storage.event_log.schema import SqlEventLogStorageMetadata
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.sql import get_alembic_config
from sqlalchemy import Connection, Engine, create_engine, event

KEPT_RUN_SHARDS = 8        # engines of run shards kept besides the index (a webserver reads many runs)
BUSY_TIMEOUT_S = 15        # Dagster's own SQLITE_BUSY_TIMEOUT_SECONDS


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """SqliteEventLogStorage whose engines live as long as the storage (the last KEPT_RUN_SHARDS run
    shards and the index). `base_dir` defaults to Dagster's own place, $DAGSTER_HOME/history/runs."""

    def __init__(self, base_dir: str, inst_data: Any = None):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_lock = threading.Lock()
        super().__init__(base_dir, inst_data)
        # A forked child must not use its parent's SQLite connections: it starts with no engine.
        os.register_at_fork(after_in_child=_forgetting(weakref.ref(self)))

    @classmethod
    def config_type(cls) -> Any:
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> "PooledSqliteEventLogStorage":
        base_dir = config_value.get("base_dir") or os.path.join(os.environ["DAGSTER_HOME"], "history", "runs")
        return cls(base_dir, inst_data)

    def _engine(self, shard: str) -> Engine:
        with self._engines_lock:
            engine = self._engines.get(shard)
            if engine is not None:
                self._engines.move_to_end(shard)
                return engine
            engine = create_engine(self.conn_string_for_shard(shard), connect_args={"timeout": BUSY_TIMEOUT_S})
            event.listen(engine, "connect", _wal_commits_without_fsync)
            self._engines[shard] = engine
            runs = [s for s in self._engines if s != INDEX_SHARD_NAME]
            for old in runs[:-KEPT_RUN_SHARDS]:
                self._engines.pop(old).dispose()
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                if shard == INDEX_SHARD_NAME or not _init_run_shard(engine):   # (the index: once per process)
                    self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def store_event(self, event: Any) -> None:
        """Dagster's event, stored; then its run's shard is touched. The UI follows a live run by watching
        that file (SqliteEventLogStorageWatchdog): with its connection kept, a run's events stay in the WAL
        file until a checkpoint, and the run page would show none of them until its process exits."""
        super().store_event(event)
        try:
            os.utime(self.path_for_shard(event.run_id))
        except OSError:   # (a run's shard removed meanwhile: nothing to follow)
            pass

    def _forget_engines(self) -> None:
        for engine in self._engines.values():
            engine.dispose(close=False)   # the parent's connections stay the parent's
        self._engines = OrderedDict()
        self._engines_lock = threading.Lock()
        self._db_lock = threading.Lock()   # another thread of the parent may have held it at the fork

    def wipe(self) -> None:
        """Dagster's wipe deletes the run shards' files: close their kept connections first, so the next
        write creates a new file instead of writing to a deleted one."""
        with self._db_lock, self._engines_lock:
            for shard in [s for s in self._engines if s != INDEX_SHARD_NAME]:
                self._engines.pop(shard).dispose()
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        with self._engines_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()


@functools.cache
def _migrations() -> ScriptDirectory:
    """Dagster's event log migrations, read once per process (its own `_initdb` reads all 89 modules for
    every run's shard a process opens first: 25 of the 50 ms a new run's first event took)."""
    return ScriptDirectory.from_config(get_alembic_config(sqlite_event_log.__file__))


def _init_run_shard(engine: Engine) -> bool:
    """What Dagster's `_initdb` does to a run's shard (its tables and indexes, WAL, stamped at the
    migrations' head; nothing if it has a revision), with the migrations read once per process. The new
    shard is made in one IMMEDIATE transaction: a process killed half-way leaves no table without its
    indexes, and a second process making the same shard waits, then finds it made. False if anything
    failed: Dagster's own `_initdb` then does it, with its retries."""
    try:
        with engine.connect() as conn:
            if MigrationContext.configure(conn).get_current_revision() is not None:
                return True
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            _wal_commits_without_fsync(conn.connection.dbapi_connection, None)   # (connected before WAL)
            conn.exec_driver_sql("BEGIN IMMEDIATE")   # (Python's sqlite3 opens no transaction for DDL)
            context = MigrationContext.configure(conn)
            if context.get_current_revision() is None:
                SqlEventLogStorageMetadata.create_all(conn)
                context.stamp(_migrations(), "head")
            conn.commit()
        return True
    except Exception:
        return False


def _wal_commits_without_fsync(dbapi_connection: Any, _record: Any) -> None:
    """In WAL mode, synchronous NORMAL syncs at checkpoints, not at every commit: an event committed
    survives the process's crash (kill -9), and only an OS crash or power loss may lose the last events
    written (the file stays consistent). Every event of a run is a commit; the money is not here
    (DuckDB). A file not in WAL mode keeps SQLite's default (FULL): NORMAL there risks corruption."""
    if dbapi_connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def _forgetting(ref: "weakref.ref[PooledSqliteEventLogStorage]"):
    """What a forked child runs: the storage, if it still exists, forgets its parent's engines."""
    def forget() -> None:
        storage = ref()
        if storage is not None:
            storage._forget_engines()
    return forget
