"""What the agent's finished work adds up to, per template and per goal, over a bounded window."""
from __future__ import annotations

from datetime import date, timedelta

from cass_pipelines.domain.goals import LEARNING_WINDOW_DAYS, WorkStats
from cass_pipelines.domain.states import UnitOrigin, UnitStatus
from cass_pipelines.store.db import Store

# One row per finished unit of the window: its template, goal, outcome, cost, insights, questions
# raised and how many of those were answered later, and the agent's rating in its summary.
_UNITS = """
WITH finished AS (
    SELECT w.id, w.template_id, coalesce(g1.goal_id, g2.goal_id) AS goal_id, w.status,
           coalesce(s.cost_usd, 0) AS cost_usd, coalesce(json_array_length(s.key_insights), 0) AS insights,
           s.self_rating
    FROM work_units w
    LEFT JOIN work_summaries s ON s.work_unit_id = w.id
    LEFT JOIN unit_goals g1 ON g1.work_unit_id = w.id
    LEFT JOIN unit_goals g2 ON g2.work_unit_id = w.deferred_from
    WHERE w.date BETWEEN ? AND ? AND w.status IN ('{done}', '{failed}') AND w.origin <> '{job}'),
asked AS (
    SELECT raised_by, count(*) AS raised, count(*) FILTER (WHERE status = 'answered') AS answered
    FROM open_questions WHERE raised_by IN (SELECT id FROM finished) GROUP BY raised_by)
SELECT {key} AS key, count(*) AS units, count(*) FILTER (WHERE f.status = '{done}') AS completed,
       count(*) FILTER (WHERE f.status = '{failed}') AS failed, sum(f.cost_usd) AS cost_usd,
       sum(f.insights) AS insights, coalesce(sum(a.raised), 0) AS raised, coalesce(sum(a.answered), 0) AS answered,
       avg(f.self_rating) AS rating
FROM finished f LEFT JOIN asked a ON a.raised_by = f.id
WHERE {key} IS NOT NULL GROUP BY {key} ORDER BY {key}"""


def _stats(store: Store, key: str, through: date, days: int) -> list[WorkStats]:
    since = through - timedelta(days=days - 1)   # `days` whole days, `through` included
    return [WorkStats(r["key"], r["units"], r["completed"], r["failed"], float(r["cost_usd"] or 0.0),
                      int(r["insights"] or 0), int(r["raised"]), int(r["answered"]),
                      float(r["rating"]) if r["rating"] is not None else None)
            for r in store.all(_UNITS.format(key=key, done=UnitStatus.COMPLETED, failed=UnitStatus.FAILED,
                                             job=UnitOrigin.JOB), [since, through])]


def template_stats(store: Store, through: date, days: int = LEARNING_WINDOW_DAYS) -> list[WorkStats]:
    """Per template, the units finished from `days` before `through` up to `through` (a backfilled
    day learns only from its past)."""
    return _stats(store, "f.template_id", through, days)


def goal_stats(store: Store, through: date, days: int = LEARNING_WINDOW_DAYS) -> list[WorkStats]:
    return _stats(store, "f.goal_id", through, days)
