"""Recent Dagster runs for `status`, read without importing Dagster (which costs ~3 s here).

An instance on Dagster's default storage keeps its runs in `DAGSTER_HOME/history/runs.db`
(SQLite). When dagster.yaml configures another storage, or that file's tables are not what we
expect, `recent_runs` returns None and the caller asks Dagster itself.
"""
from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

# dagster.yaml keys that move run storage away from DAGSTER_HOME/history/runs.db
_STORAGE_KEYS = re.compile(r"^(storage|run_storage)\s*:", re.MULTILINE)


def dagster_home_path(cass_home: Path) -> Path:
    """DAGSTER_HOME, or the instance kept in CASS_HOME (as execution.dagster_home decides, without creating it)."""
    return Path(os.environ.get("DAGSTER_HOME") or cass_home / "dagster")


def recent_runs(dagster_home: Path, limit: int = 8) -> list[dict] | None:
    """The newest runs as {run_id, job, status, partition, trigger}; None when only Dagster can say."""
    config = dagster_home / "dagster.yaml"
    if config.is_file() and _STORAGE_KEYS.search(config.read_text(encoding="utf-8")):
        return None
    db = dagster_home / "history" / "runs.db"
    if not db.is_file():
        return []
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            rows = conn.execute("""
                SELECT r.run_id, r.pipeline_name, r.status, coalesce(r.partition, ''),
                       coalesce((SELECT value FROM run_tags t WHERE t.run_id = r.run_id AND t.key = 'cass/trigger'), '')
                FROM runs r ORDER BY r.id DESC LIMIT ?""", [limit]).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return [{"run_id": run_id, "job": job, "status": status, "partition": partition, "trigger": trigger}
            for run_id, job, status, partition, trigger in rows]
