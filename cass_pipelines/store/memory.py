"""Conversation memory: summaries with their watermark, titles, and the summaries a day or session reads."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

import duckdb

from cass_pipelines.store.db import Store, insert_sql, rows_as_dicts
from cass_pipelines.store.ids import new_id


def conversation(store: Store, ref: str) -> dict | None:
    """A conversation by id, or else by exact title (most recent first)."""
    return store.one("""SELECT * FROM conversations WHERE id = ? OR (title = ? AND NOT EXISTS
                        (SELECT 1 FROM conversations WHERE id = ?)) ORDER BY last_message_at DESC LIMIT 1""",
                     [ref, ref, ref])


@dataclass(frozen=True)
class NewSummary:
    """A summary of a conversation's messages from `first_at` through the message `through` (at, id),
    made when the watermark was `seen_watermark`."""
    conversation_id: str
    seen_watermark: tuple[datetime | None, str | None]
    through: tuple[datetime, str]
    first_at: datetime
    message_count: int
    summary: str
    topics: list[str]


def save(conn: duckdb.DuckDBPyConnection, summaries: Sequence[NewSummary], *, work_unit_id: str, offline: bool,
         now: datetime) -> list[str | None]:
    """Store summaries and advance their conversations' watermarks, inside the caller's transaction (so
    the caller's claim and failure bookkeeping commit with them), two statements for them all. Each is
    stored only if the watermark is still the one it saw: a concurrent run that got there first wins (None),
    so the same messages are never summarised into two rows. Returns each summary's id, or None."""
    if not summaries:
        return []
    seen: set[str] = set()
    later: set[int] = set()   # a conversation's second summary: stored after its first, by a statement of its own
    for n, s in enumerate(summaries):
        (later.add(n) if s.conversation_id in seen else seen.add(s.conversation_id))
    mine = [s for n, s in enumerate(summaries) if n not in later]
    moved = {r[0] for r in conn.execute("""UPDATE conversations SET summarized_through_at = s.through_at,
            summarized_through_id = s.through_id
        FROM (SELECT unnest(?::TEXT[]) AS id, unnest(?::TIMESTAMPTZ[]) AS through_at, unnest(?::TEXT[]) AS through_id,
                     unnest(?::TIMESTAMPTZ[]) AS seen_at, unnest(?::TEXT[]) AS seen_id) s
        WHERE conversations.id = s.id AND summarized_through_at IS NOT DISTINCT FROM s.seen_at
          AND summarized_through_id IS NOT DISTINCT FROM s.seen_id RETURNING conversations.id""",
        [[s.conversation_id for s in mine], [s.through[0] for s in mine], [s.through[1] for s in mine],
         [s.seen_watermark[0] for s in mine], [s.seen_watermark[1] for s in mine]]).fetchall()}
    ids = {s.conversation_id: new_id("csum") for s in mine if s.conversation_id in moved}
    rows = [[ids[s.conversation_id], s.conversation_id, s.summary, json.dumps(s.topics), s.first_at, s.through[0],
             s.message_count, work_unit_id, offline, now] for s in mine if s.conversation_id in ids]
    if rows:
        conn.execute(*insert_sql("conversation_summaries", ["id", "conversation_id", "summary", "topics",
                                                            "first_message_at", "last_message_at", "message_count",
                                                            "work_unit_id", "offline", "created_at"], rows))
    rest = iter(save(conn, [summaries[n] for n in sorted(later)], work_unit_id=work_unit_id, offline=offline, now=now))
    return [next(rest) if n in later else ids.get(s.conversation_id) for n, s in enumerate(summaries)]


def latest_summary(store: Store, conversation_id: str) -> dict | None:
    return store.one("SELECT * FROM conversation_summaries WHERE conversation_id = ? "
                     "ORDER BY last_message_at DESC, created_at DESC LIMIT 1", [conversation_id])


def unsummarized(store: Store, conversation_ids: Sequence[str]) -> dict[str, tuple[list[dict], str | None]]:
    """For each conversation: its messages past the watermark (in order) and its latest summary text.
    One connection for the lot, since opening one per conversation dominates a memory run."""
    with store.connection() as conn:
        messages = rows_as_dicts(conn.execute("""
            SELECT m.conversation_id, m.message_id, m.role, m.content, m.created_at FROM messages m
            JOIN conversations c ON c.id = m.conversation_id
            WHERE m.conversation_id IN (SELECT unnest(?::TEXT[])) AND (c.summarized_through_at IS NULL
                  OR (m.created_at, m.message_id) > (c.summarized_through_at, c.summarized_through_id))
            ORDER BY m.conversation_id, m.created_at, m.message_id""", [list(conversation_ids)]))
        latest = dict(conn.execute("""
            SELECT conversation_id, arg_max(summary, (last_message_at, created_at)) FROM conversation_summaries
            WHERE conversation_id IN (SELECT unnest(?::TEXT[])) GROUP BY conversation_id""",
                                   [list(conversation_ids)]).fetchall())
    out: dict[str, tuple[list[dict], str | None]] = {cid: ([], latest.get(cid)) for cid in conversation_ids}
    for m in messages:
        out[m["conversation_id"]][0].append(m)
    return out


def _decoded(rows: list[dict]) -> list[dict]:
    for r in rows:
        r["topics"] = json.loads(r["topics"]) if isinstance(r["topics"], str) else r["topics"]
    return rows


_WITH_TITLE = """SELECT s.id, s.conversation_id, coalesce(c.title, s.conversation_id) AS title, s.summary, s.topics,
                        s.first_message_at, s.last_message_at, s.message_count, s.offline, s.created_at
                 FROM conversation_summaries s JOIN conversations c ON c.id = s.conversation_id"""


def recent_summaries(store: Store, limit: int, before: datetime) -> list[dict]:
    """The latest summaries of conversations that ended before `before`."""
    return _decoded(store.all(f"{_WITH_TITLE} WHERE s.last_message_at < ? ORDER BY s.last_message_at DESC, s.id "
                              "LIMIT ?", [before, limit]))


def summaries_between(store: Store, start: datetime, end: datetime, limit: int) -> list[dict]:
    """Summaries of conversations held in [start, end), or made in it (what I took in that day)."""
    return _decoded(store.all(f"""{_WITH_TITLE}
        WHERE (s.last_message_at >= ? AND s.first_message_at < ?) OR (s.created_at >= ? AND s.created_at < ?)
        ORDER BY s.last_message_at DESC, s.id LIMIT ?""", [start, end, start, end, limit]))


def untitled(store: Store, limit: int, now: datetime) -> list[dict]:
    """Conversations without a title, newest first, leaving out those whose title keeps failing."""
    return store.all("""SELECT id, created_at, last_message_at FROM conversations c WHERE title IS NULL
        AND NOT EXISTS (SELECT 1 FROM item_failures f WHERE f.kind = 'conversation_title' AND f.item_id = c.id
                        AND (f.parked OR f.next_attempt_at > ?))
        ORDER BY last_message_at DESC, id LIMIT ?""", [now, limit])


def set_titles(store: Store, titles: Sequence[tuple[str, str]]) -> list[str]:
    """Title (conversation_id, title) pairs whose conversation has none, in one statement; an existing
    title (given or generated) is kept, and of two titles for one conversation the first. Returns the
    ids titled."""
    first: dict[str, str] = {}
    for cid, title in titles:
        first.setdefault(cid, title)
    if not first:
        return []
    with store.transaction() as conn:
        titled = {r[0] for r in conn.execute(
            "UPDATE conversations SET title = t.title, title_generated = TRUE "
            "FROM (SELECT unnest(?::TEXT[]) AS id, unnest(?::TEXT[]) AS title) t "
            "WHERE conversations.id = t.id AND conversations.title IS NULL RETURNING conversations.id",
            [list(first), list(first.values())]).fetchall()}
    return [cid for cid in first if cid in titled]


def opening_messages(store: Store, conversation_id: str, limit: int) -> list[dict]:
    return store.all("SELECT role, content, created_at FROM messages WHERE conversation_id = ? "
                     "ORDER BY created_at, message_id LIMIT ?", [conversation_id, limit])
