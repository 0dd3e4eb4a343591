"""Writes to the self-model: insights, growth observations and edge states, open questions.
(Reads used by the planner live in store/persona.py.)"""
from __future__ import annotations

from datetime import datetime
from typing import Sequence

from cass_pipelines.store.db import Store
from cass_pipelines.store.ids import new_id


def add_insights(store: Store, items: Sequence[tuple[str, str, str]], *, work_unit_id: str, offline: bool,
                 now: datetime) -> list[str]:
    """`items` are (text, kind, action_id): kind says what produced it (reflection, research, ...)."""
    ids = [new_id("ins") for _ in items]
    store.executemany("INSERT INTO insights (id, kind, text, work_unit_id, action_id, offline, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                      [[i, kind, text, work_unit_id, action, offline, now]
                       for i, (text, kind, action) in zip(ids, items)])
    return ids


def add_observations(store: Store, items: Sequence[tuple[str, str]], *, work_unit_id: str, offline: bool,
                     now: datetime) -> list[str]:
    """`items` are (edge_id, text)."""
    ids = [new_id("obs") for _ in items]
    store.executemany("INSERT INTO growth_observations (id, edge_id, text, work_unit_id, offline, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                      [[i, edge, text, work_unit_id, offline, now] for i, (edge, text) in zip(ids, items)])
    return ids


def add_questions(store: Store, items: Sequence[tuple[str, str]], *, raised_by: str, offline: bool,
                  now: datetime) -> list[tuple[str, str]]:
    """Add (question, context) pairs not already on record, open or answered (same text, ignoring case);
    returns the (id, question) pairs added."""
    added: list[tuple[str, str]] = []
    with store.transaction() as conn:
        for question, context in items:
            exists = conn.execute("SELECT 1 FROM open_questions WHERE lower(question) = lower(?)",
                                  [question]).fetchone()
            if exists or any(q.lower() == question.lower() for _, q in added):
                continue
            qid = new_id("q")
            conn.execute("INSERT INTO open_questions (id, question, context, raised_by, offline, created_at) "
                         "VALUES (?, ?, ?, ?, ?, ?)", [qid, question, context, raised_by, offline, now])
            added.append((qid, question))
    return added


def answer_questions(store: Store, answers: Sequence[tuple[str, str]], *, addressed_by: str, offline: bool,
                     now: datetime) -> list[str]:
    """Close open questions with their answers; returns the ids actually closed (already closed ones are left)."""
    closed: list[str] = []
    with store.transaction() as conn:
        for qid, answer in answers:
            row = conn.execute("UPDATE open_questions SET status = 'answered', answer = ?, addressed_by = ?, "
                               "answered_at = ?, offline = offline OR ? WHERE id = ? AND status = 'open' RETURNING id",
                               [answer, addressed_by, now, offline, qid]).fetchone()
            if row:
                closed.append(qid)
    return closed


def questions_by_id(store: Store, ids: Sequence[str]) -> list[dict]:
    if not ids:
        return []
    return store.all("SELECT * FROM open_questions WHERE id IN (SELECT unnest(?::TEXT[])) ORDER BY id", [list(ids)])


def edge(store: Store, edge_id: str) -> dict | None:
    return store.one("SELECT * FROM growth_edges WHERE id = ?", [edge_id])


def set_edge_state(store: Store, edge_id: str, current_state: str, observation: str, *, work_unit_id: str,
                   offline: bool, now: datetime) -> str:
    """Replace an edge's current state and record the change as an observation (one transaction);
    returns the observation id, so the earlier state stays on record."""
    obs_id = new_id("obs")
    with store.transaction() as conn:
        if not conn.execute("UPDATE growth_edges SET current_state = ?, updated_at = ? WHERE id = ? RETURNING id",
                            [current_state, now, edge_id]).fetchone():
            raise ValueError(f"no growth edge {edge_id!r}")
        conn.execute("INSERT INTO growth_observations (id, edge_id, text, work_unit_id, offline, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                     [obs_id, edge_id, observation, work_unit_id, offline, now])
    return obs_id
