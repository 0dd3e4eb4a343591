"""The research queue: questions waiting to be researched, most of them drawn from open questions."""
from __future__ import annotations

from datetime import datetime

import duckdb

from cass_pipelines.store.db import Store
from cass_pipelines.store.ids import new_id


def refresh_queue(store: Store, now: datetime) -> tuple[list[dict], list[str]]:
    """Queue every open question not queued or researched yet; drop queued items whose question is no
    longer open. Returns (items added, ids dropped)."""
    with store.transaction() as conn:
        dropped = [r[0] for r in conn.execute("""
            UPDATE research_queue SET status = 'dropped', done_at = ? WHERE status = 'queued'
              AND source_question_id IN (SELECT id FROM open_questions WHERE status <> 'open') RETURNING id""",
                                              [now]).fetchall()]
        fresh = conn.execute("""SELECT id, question FROM open_questions q WHERE status = 'open' AND NOT EXISTS
                                  (SELECT 1 FROM research_queue r WHERE r.source_question_id = q.id
                                   AND r.status IN ('queued', 'done'))
                                ORDER BY created_at, id""").fetchall()
        added = [_add(conn, question, qid, now) for qid, question in fresh]
    return added, dropped


def _add(conn: duckdb.DuckDBPyConnection, question: str, source_question_id: str | None, now: datetime) -> dict:
    rid = new_id("rq")
    conn.execute("INSERT INTO research_queue (id, question, source_question_id, status, created_at, done_at) "
                 "VALUES (?, ?, ?, 'queued', ?, NULL)", [rid, question, source_question_id, now])
    return {"id": rid, "question": question, "source_question_id": source_question_id}


def enqueue(store: Store, question: str, source_question_id: str | None, now: datetime) -> dict:
    """Queue a question; an open question already queued is not queued twice (two units side by side
    that chose it research one item, which one of them claims)."""
    with store.transaction() as conn:
        if source_question_id is not None:
            row = conn.execute("SELECT id, question FROM research_queue WHERE source_question_id = ? "
                               "AND status = 'queued' ORDER BY created_at, id LIMIT 1", [source_question_id]).fetchone()
            if row:
                return {"id": row[0], "question": row[1], "source_question_id": source_question_id}
        return _add(conn, question, source_question_id, now)


def queued(store: Store, limit: int = 100) -> list[dict]:
    return store.all("SELECT * FROM research_queue WHERE status = 'queued' ORDER BY created_at, id LIMIT ?", [limit])


def mark_done(store: Store, item_id: str, now: datetime) -> None:
    store.execute("UPDATE research_queue SET status = 'done', done_at = ? WHERE id = ?", [now, item_id])
