"""Conversation memory: summaries with their watermark, titles, and the summaries a day or session reads."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Sequence

from cass_pipelines.store.db import Store
from cass_pipelines.store.ids import new_id


def conversation(store: Store, ref: str) -> dict | None:
    """A conversation by id, or else by exact title (most recent first)."""
    return store.one("""SELECT * FROM conversations WHERE id = ? OR (title = ? AND NOT EXISTS
                        (SELECT 1 FROM conversations WHERE id = ?)) ORDER BY last_message_at DESC LIMIT 1""",
                     [ref, ref, ref])


def save_summary(store: Store, conversation_id: str, *, seen_watermark: tuple[datetime | None, str | None],
                 through: tuple[datetime, str], summary: str, topics: Sequence[str], first_at: datetime,
                 message_count: int, work_unit_id: str, offline: bool, now: datetime) -> str | None:
    """Store a summary and advance the conversation's watermark to `through`, in one transaction.

    Only if the watermark is still `seen_watermark`: a concurrent run that got there first wins and
    this returns None, so the same messages are never summarised into two rows."""
    sid = new_id("csum")
    with store.transaction() as conn:
        moved = conn.execute("""UPDATE conversations SET summarized_through_at = ?, summarized_through_id = ?
                                WHERE id = ? AND summarized_through_at IS NOT DISTINCT FROM ?
                                  AND summarized_through_id IS NOT DISTINCT FROM ? RETURNING id""",
                             [through[0], through[1], conversation_id, *seen_watermark]).fetchone()
        if not moved:
            return None
        conn.execute("INSERT INTO conversation_summaries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [sid, conversation_id, summary, json.dumps(list(topics)), first_at, through[0],
                      message_count, work_unit_id, offline, now])
    return sid


def latest_summary(store: Store, conversation_id: str) -> dict | None:
    return store.one("SELECT * FROM conversation_summaries WHERE conversation_id = ? "
                     "ORDER BY last_message_at DESC, created_at DESC LIMIT 1", [conversation_id])


def _decoded(rows: list[dict]) -> list[dict]:
    for r in rows:
        r["topics"] = json.loads(r["topics"]) if isinstance(r["topics"], str) else r["topics"]
    return rows


_WITH_TITLE = """SELECT s.id, s.conversation_id, coalesce(c.title, s.conversation_id) AS title, s.summary, s.topics,
                        s.first_message_at, s.last_message_at, s.message_count, s.offline, s.created_at
                 FROM conversation_summaries s JOIN conversations c ON c.id = s.conversation_id"""


def recent_summaries(store: Store, limit: int) -> list[dict]:
    return _decoded(store.all(f"{_WITH_TITLE} ORDER BY s.last_message_at DESC, s.id LIMIT ?", [limit]))


def summaries_between(store: Store, start: datetime, end: datetime, limit: int) -> list[dict]:
    """Summaries of conversations held in [start, end), or made in it (what I took in that day)."""
    return _decoded(store.all(f"""{_WITH_TITLE}
        WHERE (s.last_message_at >= ? AND s.first_message_at < ?) OR (s.created_at >= ? AND s.created_at < ?)
        ORDER BY s.last_message_at DESC, s.id LIMIT ?""", [start, end, start, end, limit]))


def untitled(store: Store, limit: int) -> list[dict]:
    return store.all("SELECT id, created_at, last_message_at FROM conversations WHERE title IS NULL "
                     "ORDER BY last_message_at DESC, id LIMIT ?", [limit])


def set_title(store: Store, conversation_id: str, title: str) -> bool:
    """Title a conversation that has none; an existing title (given or generated) is kept."""
    return bool(store.all("UPDATE conversations SET title = ?, title_generated = TRUE "
                          "WHERE id = ? AND title IS NULL RETURNING id", [title, conversation_id]))


def opening_messages(store: Store, conversation_id: str, limit: int) -> list[dict]:
    return store.all("SELECT role, content, created_at FROM messages WHERE conversation_id = ? "
                     "ORDER BY created_at, message_id LIMIT ?", [conversation_id, limit])
