"""What the agent writes down: wiki notes (titled, linkable, updated over time) and documents
(one-off pieces: session write-ups, research findings, creative work, reports)."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Sequence

from cass_pipelines.store.db import Store
from cass_pipelines.store.ids import new_id


def add_document(store: Store, *, kind: str, title: str, body: str, work_unit_id: str, offline: bool,
                 now: datetime) -> str:
    doc_id = new_id("doc")
    store.execute("INSERT INTO documents (id, kind, title, body, work_unit_id, offline, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                  [doc_id, kind, title, body, work_unit_id, offline, now])
    return doc_id


def documents(store: Store, *, kinds: Sequence[str], since: datetime | None = None, limit: int = 10) -> list[dict]:
    return store.all("""SELECT id, kind, title, body, offline, created_at FROM documents
                        WHERE kind IN (SELECT unnest(?::TEXT[])) AND (? IS NULL OR created_at >= ?)
                        ORDER BY created_at DESC, id LIMIT ?""", [list(kinds), since, since, limit])


def add_note(store: Store, *, title: str, body: str, work_unit_id: str, offline: bool, now: datetime) -> str:
    note_id = new_id("note")
    store.execute("INSERT INTO wiki_notes (id, title, body, links, work_unit_id, offline, created_at, updated_at) VALUES (?, ?, ?, '[]', ?, ?, ?, ?)",
                  [note_id, title, body, work_unit_id, offline, now, now])
    return note_id


def append_to_note(store: Store, note_id: str, section: str, *, work_unit_id: str, offline: bool,
                   now: datetime) -> None:
    store.execute("UPDATE wiki_notes SET body = body || ? , work_unit_id = ?, offline = offline OR ?, "
                  "updated_at = ? WHERE id = ?", ["\n\n" + section, work_unit_id, offline, now, note_id])


def _decoded(rows: list[dict]) -> list[dict]:
    for r in rows:
        r["links"] = json.loads(r["links"]) if isinstance(r["links"], str) else r["links"]
    return rows


def note(store: Store, note_id: str) -> dict | None:
    rows = _decoded(store.all("SELECT * FROM wiki_notes WHERE id = ?", [note_id]))
    return rows[0] if rows else None


def notes(store: Store, limit: int = 500) -> list[dict]:
    """The most recently updated notes (term matching happens in the caller)."""
    return _decoded(store.all("SELECT id, title, body, links, updated_at FROM wiki_notes "
                              "ORDER BY updated_at DESC, id LIMIT ?", [limit]))


def link(store: Store, note_id: str, others: Sequence[str], now: datetime) -> list[str]:
    """Link a note both ways with each of `others`; returns the ids newly linked to it."""
    added: list[str] = []
    with store.transaction() as conn:
        def links_of(nid: str) -> list[str]:
            row = conn.execute("SELECT links FROM wiki_notes WHERE id = ?", [nid]).fetchone()
            if row is None:
                raise ValueError(f"no wiki note {nid!r}")
            return json.loads(row[0])

        mine = links_of(note_id)
        for other in others:
            theirs = links_of(other)
            if other not in mine:
                mine.append(other)
                added.append(other)
            if note_id not in theirs:
                conn.execute("UPDATE wiki_notes SET links = ?, updated_at = ? WHERE id = ?",
                             [json.dumps(theirs + [note_id]), now, other])
        conn.execute("UPDATE wiki_notes SET links = ?, updated_at = ? WHERE id = ?",
                     [json.dumps(mine), now, note_id])
    return added
