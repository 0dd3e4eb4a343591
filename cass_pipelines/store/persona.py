"""The self-model: persona, growth edges and their observations, open questions, insights."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from cass_pipelines.store.db import Store, params


def seed_persona(store: Store, persona: Any, now: datetime) -> None:
    """Load a persona file: replace identity and values; add edges/questions not present yet."""
    with store.transaction() as conn:
        conn.execute("""INSERT INTO persona (id, name, voice, identity, values, updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET
                        name = excluded.name, voice = excluded.voice, identity = excluded.identity,
                        "values" = excluded."values", updated_at = excluded.updated_at""",
                     params([persona.id, persona.name, persona.voice, persona.identity, persona.values, now]))
        for e in persona.growth_edges:
            conn.execute("INSERT INTO growth_edges (id, area, current_state, desired_state, weight, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'active', ?, ?) ON CONFLICT DO NOTHING",
                         [e.id, e.area, e.current_state, e.desired_state, e.weight, now, now])
        for q in persona.open_questions:
            conn.execute("INSERT INTO open_questions (id, question, context, created_at) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT DO NOTHING", [q.id, q.question, q.context, now])


def persona_row(store: Store) -> dict | None:
    return store.one('SELECT id, name, voice, identity, "values", updated_at FROM persona ORDER BY updated_at DESC LIMIT 1')


def growth_edges(store: Store, limit: int = 10) -> list[dict]:
    return store.all("SELECT * FROM growth_edges WHERE status = 'active' ORDER BY weight DESC, id LIMIT ?", [limit])


def edge_observations(store: Store, edge_id: str, limit: int = 5) -> list[dict]:
    return store.all("SELECT * FROM growth_observations WHERE edge_id = ? ORDER BY created_at DESC, id LIMIT ?",
                     [edge_id, limit])


def open_questions(store: Store, limit: int = 10) -> list[dict]:
    return store.all("SELECT * FROM open_questions WHERE status = 'open' ORDER BY created_at DESC, id LIMIT ?",
                     [limit])


def recent_insights(store: Store, limit: int = 10) -> list[dict]:
    return store.all("SELECT * FROM insights ORDER BY created_at DESC, id LIMIT ?", [limit])


def self_model_version(store: Store) -> dict[str, Any]:
    """Counts and latest change, used as the `self_model` source asset's observed data version."""
    return store.one("""SELECT (SELECT count(*) FROM growth_edges) AS growth_edges,
        (SELECT count(*) FROM growth_observations) AS observations,
        (SELECT count(*) FROM open_questions WHERE status = 'open') AS open_questions,
        (SELECT count(*) FROM insights) AS insights,
        greatest((SELECT max(updated_at) FROM persona), (SELECT max(updated_at) FROM growth_edges),
                 (SELECT max(created_at) FROM growth_observations), (SELECT max(created_at) FROM insights),
                 (SELECT max(created_at) FROM open_questions)) AS changed_at""") or {}
