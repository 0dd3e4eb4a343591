"""Dagster runs for `status`, read without importing Dagster (which costs ~3 s here).

An instance on Dagster's default storage keeps its runs in `DAGSTER_HOME/history/runs.db`
(SQLite). When dagster.yaml configures another storage, or that file's tables are not what we
expect, these return None and the caller asks Dagster itself.
"""
from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

from cass_pipelines.store.claims import HOST, process_is

# dagster.yaml keys that move run storage away from DAGSTER_HOME/history/runs.db
_STORAGE_KEYS = re.compile(r"^(storage|run_storage)\s*:", re.MULTILINE)


def dagster_home_path(cass_home: Path) -> Path:
    """DAGSTER_HOME, or the instance kept in CASS_HOME (as execution.dagster_home decides, without creating it)."""
    return Path(os.environ.get("DAGSTER_HOME") or cass_home / "dagster")


FINISHED = ("SUCCESS", "FAILURE", "CANCELED")   # DagsterRunStatus values of a finished run


def _query(dagster_home: Path, sql: str, params: list) -> list[tuple] | None:
    config = dagster_home / "dagster.yaml"
    if config.is_file() and _STORAGE_KEYS.search(config.read_text(encoding="utf-8")):
        return None
    db = dagster_home / "history" / "runs.db"
    if not db.is_file():
        return []
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return None


def _tag(key: str) -> str:
    return f"coalesce((SELECT value FROM run_tags t WHERE t.run_id = r.run_id AND t.key = '{key}'), '')"


def recent_runs(dagster_home: Path, limit: int = 8) -> list[dict] | None:
    """The newest runs as {run_id, job, status, partition, trigger}; None when only Dagster can say."""
    rows = _query(dagster_home, f"""SELECT r.run_id, r.pipeline_name, r.status, coalesce(r.partition, ''),
            {_tag('cass/trigger')} FROM runs r ORDER BY r.id DESC LIMIT ?""", [limit])
    return None if rows is None else [
        {"run_id": run_id, "job": job, "status": status, "partition": partition, "trigger": trigger}
        for run_id, job, status, partition, trigger in rows]


def runs_of_dead_processes(dagster_home: Path) -> bool | None:
    """Whether a run this host started in-process is still STARTED though its process is gone
    (what resources.fail_dead_runs marks failed); None when only Dagster can say."""
    rows = _query(dagster_home, f"SELECT {_tag('cass/host')}, {_tag('cass/pid')}, {_tag('cass/stamp')} "
                                "FROM runs r "
                                "WHERE r.status = 'STARTED' AND NOT EXISTS (SELECT 1 FROM run_tags t "
                                "WHERE t.run_id = r.run_id AND t.key = 'dagster/parent_run_id')", [])
    return None if rows is None else any(host == HOST and pid.isdigit() and not process_is(int(pid), stamp or None)
                                         for host, pid, stamp in rows)


def run_over(dagster_home: Path):
    """resources.run_over without Dagster: whether a run has finished (an unknown run has not)."""
    def is_over(run_id: str) -> bool:
        rows = _query(dagster_home, "SELECT status FROM runs WHERE run_id = ?", [run_id])
        return bool(rows) and rows[0][0] in FINISHED
    return is_over
