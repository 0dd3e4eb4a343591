"""Goals, their progress notes, the weekly intentions, and which goal each work unit serves."""
from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Iterable

from cass_pipelines.domain.states import GoalStatus, UnitOrigin, UnitStatus
from cass_pipelines.store.db import Store, params
from cass_pipelines.store.ids import new_id
from cass_pipelines.store.plans import DEFERRAL_CHAIN

_GOAL_COLS = ("id, title, success_criterion, source, origin_ref, templates, status, close_reason, offline, "
              "created_on, created_at, closed_at")


def _goal(row: dict | None) -> dict | None:
    if row is not None and isinstance(row["templates"], str):
        row["templates"] = json.loads(row["templates"])
    return row


def add_goal(store: Store, *, title: str, success_criterion: str, source: str, origin_ref: str | None,
             templates: list[str], offline: bool, day: date, now: datetime) -> str:
    # Numbered, not random: goal ids are enum values of the decision schema, and the same history
    # must give the same (offline) plan.
    with store.transaction() as conn:
        gid = f"goal_{conn.execute('SELECT count(*) + 1 FROM goals').fetchone()[0]:03d}"
        conn.execute(f"INSERT INTO goals ({_GOAL_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, NULL)",
                     params([gid, title, success_criterion, source, origin_ref, templates, GoalStatus.ACTIVE.value,
                             offline, day, now]))
    return gid


def get_goal(store: Store, goal_id: str) -> dict | None:
    return _goal(store.one(f"SELECT {_GOAL_COLS} FROM goals WHERE id = ?", [goal_id]))


def goals(store: Store, status: str | None = None, limit: int = 100, created_by: date | None = None) -> list[dict]:
    """Goals, newest first; only those with `status`, and only those made on or before `created_by`."""
    rows = store.all(f"""SELECT {_GOAL_COLS} FROM goals WHERE (? IS NULL OR status = ?)
                         AND (? IS NULL OR created_on <= ?) ORDER BY created_at DESC, id LIMIT ?""",
                     [status, status, created_by, created_by, limit])
    return [_goal(r) for r in rows]


def close_goal(store: Store, goal_id: str, status: str, reason: str, now: datetime) -> bool:
    """Close an active goal (achieved or closed) with its reason; False when it was not active."""
    row = store.one("UPDATE goals SET status = ?, close_reason = ?, closed_at = ? WHERE id = ? AND status = ? "
                    "RETURNING id", [status, reason, now, goal_id, GoalStatus.ACTIVE.value])
    return row is not None


def note_progress(store: Store, *, goal_id: str, work_unit_id: str, day: date, note: str, offline: bool,
                  now: datetime) -> bool:
    """The note of (goal, unit), one per pair: a summary written again (from the batch answer it had
    waited for, or for the unit's later status) replaces the note, keeping its date and first time.
    Returns whether the note is new or changed."""
    row = store.one("INSERT INTO goal_progress (id, goal_id, work_unit_id, date, note, offline, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (goal_id, work_unit_id) DO UPDATE SET "
                    "note = excluded.note, offline = excluded.offline "
                    "WHERE goal_progress.note <> excluded.note OR goal_progress.offline <> excluded.offline "
                    "RETURNING id", [new_id("gp"), goal_id, work_unit_id, day, note, offline, now])
    return row is not None


def progress(store: Store, goal_id: str, limit: int = 5, through: date | None = None) -> list[dict]:
    return store.all("""SELECT goal_id, work_unit_id, date, note, offline, created_at FROM goal_progress
                        WHERE goal_id = ? AND (? IS NULL OR date <= ?) ORDER BY date DESC, created_at DESC LIMIT ?""",
                     [goal_id, through, through, limit])


def progress_counts(store: Store, since: date, through: date) -> dict[str, int]:
    return {r["goal_id"]: r["n"] for r in store.all(
        "SELECT goal_id, count(*) AS n FROM goal_progress WHERE date BETWEEN ? AND ? GROUP BY goal_id",
        [since, through])}


def save_intention(store: Store, *, week: date, intention: str, goal_ids: list[str], source: str,
                   error: str | None, offline: bool, now: datetime) -> bool:
    """Store the week's intention once: False (nothing written) when the week already has one."""
    row = store.one("INSERT INTO weekly_intentions (week_start, intention, goal_ids, source, error, offline, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING week_start",
                    params([week, intention, goal_ids, source, error, offline, now]))
    return row is not None


def intention(store: Store, week: date) -> dict | None:
    row = store.one("SELECT week_start, intention, goal_ids, source, error, offline, created_at "
                    "FROM weekly_intentions WHERE week_start = ?", [week])
    if row:
        row["goal_ids"] = json.loads(row["goal_ids"])
    return row


def link_units(store: Store, links: Iterable[tuple[str, str | None, str, str | None]], now: datetime) -> None:
    """(work unit id, goal id or None, goal note, unit it continues or None) for each planned unit."""
    store.executemany("INSERT INTO unit_goals (work_unit_id, goal_id, goal_note, continues, created_at) "
                      "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                      [[uid, gid, note, cont, now] for uid, gid, note, cont in links])


def unit_goal(store: Store, work_unit_id: str) -> dict | None:
    """The goal link of a unit; a re-offered unit inherits the link of the unit it came from."""
    return store.one(f"""{DEFERRAL_CHAIN} SELECT g.work_unit_id, g.goal_id, g.goal_note, g.continues FROM chain c
                        JOIN unit_goals g ON g.work_unit_id = c.id ORDER BY c.depth LIMIT 1""", [work_unit_id])


# A unit re-offered after a deferral serves the goal of the unit it came from (store.plans.open_phase copies
# the link; a unit re-offered before it did has it one hop back).
_LINKED = """LEFT JOIN unit_goals g1 ON g1.work_unit_id = w.id
             LEFT JOIN unit_goals g2 ON g2.work_unit_id = w.deferred_from"""
_GOAL_OF = "coalesce(g1.goal_id, g2.goal_id) AS goal_id, coalesce(g1.goal_note, g2.goal_note) AS goal_note, " \
           "coalesce(g1.continues, g2.continues) AS continues"


def unit_goals_for_day(store: Store, day: date) -> dict[str, dict]:
    rows = store.all(f"SELECT w.id, {_GOAL_OF} FROM work_units w {_LINKED} WHERE w.date = ?", [day])
    return {r["id"]: r for r in rows if r["goal_note"] is not None}


def thread_notes(store: Store, work_unit_id: str, limit: int = 3) -> list[dict]:
    """The summaries of a thread of work, newest first: the unit, the unit it continued, and so on."""
    return store.all("""WITH RECURSIVE chain(id, depth) AS (
                            SELECT ?, 0
                            UNION ALL SELECT g.continues, c.depth + 1 FROM chain c
                              JOIN unit_goals g ON g.work_unit_id = c.id
                              WHERE g.continues IS NOT NULL AND c.depth < ?)
                        SELECT s.work_unit_id, s.date, s.template_id, s.narrative FROM chain c
                        JOIN work_summaries s ON s.work_unit_id = c.id ORDER BY c.depth LIMIT ?""",
                     [work_unit_id, limit, limit])


def continuable_units(store: Store, day: date, limit: int = 6) -> list[dict]:
    """Yesterday's completed units with their summaries: threads a unit of `day` may continue."""
    return store.all(f"""SELECT w.id, w.template_id, w.focus, s.narrative FROM work_units w
                        JOIN work_summaries s ON s.work_unit_id = w.id
                        WHERE w.date = ? AND w.status = '{UnitStatus.COMPLETED}' AND w.origin <> '{UnitOrigin.JOB}'
                        ORDER BY w.created_at, w.id LIMIT ?""", [day - timedelta(days=1), limit])


def week_units(store: Store, first: date, last: date) -> list[dict]:
    """The units of a week as planned (not cancelled, a deferred unit counted once: where it ended up),
    with the goal each serves."""
    return store.all(f"""SELECT w.id, w.date, w.phase, w.template_id, w.category, w.status, w.origin, {_GOAL_OF}
                         FROM work_units w {_LINKED}
                         WHERE w.date BETWEEN ? AND ? AND w.status <> '{UnitStatus.CANCELLED}' AND w.origin <> '{UnitOrigin.JOB}'
                           AND w.reoffered_as IS NULL
                         ORDER BY w.date, w.created_at, w.id""", [first, last])
