"""DuckDB schema: migration from empty, re-run, forward migration keeping data, failed migration rolled
back; short-lived connections that wait out another process's lock."""
from __future__ import annotations

import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

from cass_pipelines.store import schema
from cass_pipelines.store.db import Store, connect
from cass_pipelines.store.schema import MIGRATIONS, current_version, migrate

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
LATEST = max(v for v, _, _ in MIGRATIONS)

# What the issue requires the store to hold (more tables may exist).
REQUIRED_TABLES = {
    "persona", "growth_edges", "growth_observations", "open_questions", "conversations", "messages",
    "conversation_summaries", "journals", "insights", "wiki_notes", "day_plans", "work_units",
    "action_runs", "work_summaries", "llm_ledger", "reservations", "dead_letters", "control_flags",
    "alerts", "schema_version",
}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "cass.duckdb")


def tables(store: Store) -> set[str]:
    return {r["table_name"] for r in store.all("SELECT table_name FROM information_schema.tables")}


def row_counts(store: Store) -> dict[str, int]:
    with store.connection() as conn:
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables(store)}


def columns(store: Store, table: str) -> set[str]:
    return {r["column_name"] for r in store.all(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table])}


def test_migrations_are_numbered_in_increasing_order():
    # Each issue appends in its own version range (gaps between ranges are expected).
    versions = [v for v, _, _ in MIGRATIONS]
    assert versions == sorted(set(versions)) and versions[0] == 1 and versions[-1] == LATEST
    assert all(desc.strip() for _, desc, _ in MIGRATIONS)


def test_migrate_from_empty_creates_every_table_and_records_versions(store):
    assert current_version(store) == 0
    assert migrate(store) == [v for v, _, _ in MIGRATIONS]
    assert REQUIRED_TABLES <= tables(store)
    rows = store.all("SELECT version, description, applied_at FROM schema_version ORDER BY version")
    assert [r["version"] for r in rows] == [v for v, _, _ in MIGRATIONS]
    assert [r["description"] for r in rows] == [d for _, d, _ in MIGRATIONS]
    assert all(r["applied_at"] is not None for r in rows)
    assert current_version(store) == LATEST


def test_migrate_again_is_a_no_op_and_keeps_data(store):
    migrate(store)
    store.execute("INSERT INTO control_flags (scope, paused, reason, updated_at) VALUES ('global', TRUE, 'testing', ?)", [NOW])
    before = row_counts(store)
    assert migrate(store) == []
    assert migrate(Store(store.path)) == []   # a second handle on the same file, as another process would
    assert row_counts(store) == before
    assert store.scalar("SELECT count(*) FROM schema_version") == len(MIGRATIONS)
    assert store.one("SELECT paused, reason FROM control_flags") == {"paused": True, "reason": "testing"}


def test_forward_migration_from_version_one_keeps_rows(store, monkeypatch):
    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS[:1])
    assert migrate(store) == [1]
    store.execute("INSERT INTO reservations (id, date, category, amount_usd, status, created_at) "
                  "VALUES ('r1', DATE '2026-11-20', 'research', 0.25, 'held', ?)", [NOW])
    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS)
    assert migrate(store) == [v for v, _, _ in MIGRATIONS[1:]]
    assert {"phase", "priority", "host"} <= columns(store, "reservations")
    row = store.one("SELECT id, amount_usd, phase FROM reservations")
    assert row == {"id": "r1", "amount_usd": 0.25, "phase": None}


def test_failed_migration_rolls_back_entirely(store, monkeypatch):
    migrate(store)
    broken = (LATEST + 1, "broken", "CREATE TABLE half_done (x INTEGER); SELECT no_such_function();")
    monkeypatch.setattr(schema, "MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(duckdb.Error):
        migrate(store)
    assert "half_done" not in tables(store)
    assert current_version(store) == LATEST
    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS)
    assert migrate(store) == []


def test_transaction_rolls_back_on_error(store):
    migrate(store)
    with pytest.raises(RuntimeError):
        with store.transaction() as conn:
            conn.execute("INSERT INTO control_flags (scope, paused, reason, updated_at) VALUES ('global', TRUE, NULL, ?)", [NOW])
            raise RuntimeError("boom")
    assert store.scalar("SELECT count(*) FROM control_flags") == 0


def test_json_parameters_are_stored_as_json_text(store):
    migrate(store)
    store.execute("INSERT INTO wiki_notes (id, title, body, links, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                  ["n1", "Title", "Body with 'quotes'; DROP TABLE x", ["a", "b"], NOW, NOW])
    row = store.one("SELECT body, links::VARCHAR AS links FROM wiki_notes")
    assert row == {"body": "Body with 'quotes'; DROP TABLE x", "links": '["a", "b"]'}


HOLDER = r"""
import sys, duckdb
conn = duckdb.connect(sys.argv[1])
print("holding", flush=True)
sys.stdin.readline()
conn.close()
print("released", flush=True)
"""


def test_open_waits_for_another_process_holding_the_file(store):
    """DuckDB is single-writer across processes: an open retries with backoff until the holder is gone."""
    migrate(store)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(store.path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        # With a short deadline the conflict surfaces as an error, not a hang.
        with pytest.raises(duckdb.Error) as info:
            connect(store.path, deadline_s=0.3)
        assert "lock" in str(info.value).lower()
        # With the normal deadline the open succeeds once the holder lets go mid-wait.
        release = threading.Timer(0.5, lambda: (holder.stdin.write("go\n"), holder.stdin.flush()))
        release.start()
        conn = connect(store.path, deadline_s=60)
        try:
            assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] == LATEST
        finally:
            conn.close()
        release.join()
        assert holder.stdout.readline().strip() == "released"
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=30)
