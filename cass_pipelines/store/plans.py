"""Day plans, phase openings, work units, action runs and dead letters."""
from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any, Callable, Iterable

import duckdb

from cass_pipelines.domain.batching import PENDING, BatchState
from cass_pipelines.domain.categories import PHASES
from cass_pipelines.domain.pauses import LookBacks
from cass_pipelines.domain.states import (
    FINAL_UNIT_STATUSES,
    ActionStatus,
    ClaimState,
    DeferKind,
    UnitOrigin,
    UnitStatus,
)
from cass_pipelines.store import batches, claims
from cass_pipelines.store.claims import Claim, Owner
from cass_pipelines.store.db import Store, params


def phase_rank(column: str = "phase") -> str:
    """SQL for a phase's place in the day, for ORDER BY and comparisons."""
    return f"CASE {column} " + " ".join(f"WHEN '{p}' THEN {i}" for i, p in enumerate(PHASES)) + " END"


_UNIT_COLS = ("id, date, phase, position, template_id, category, focus, motivation, status, reason, "
              "estimated_cost_usd, origin, deferred_from, reoffered_as, plan_revision, run_id, error, "
              "created_at, started_at, finished_at, defer_kind, paid_day, paid_phase")
_NEW_UNIT_COLS = ("id, date, phase, position, template_id, category, focus, motivation, status, reason, defer_kind, "
                  "estimated_cost_usd, origin, deferred_from, plan_revision, created_at")
_ACTION_COLS = ("work_unit_id, position, action_id, status, message, result, error, cost_usd, run_id, step_key, "
                "started_at, finished_at")
P, R, D, C, F = (UnitStatus.PLANNED, UnitStatus.RUNNING, UnitStatus.DEFERRED, UnitStatus.COMPLETED,
                 UnitStatus.FAILED)   # for SQL: f"status = '{D}'" (a StrEnum formats as its value)


def latest_day_plan(store: Store, day: date) -> dict | None:
    row = store.one("SELECT * FROM day_plans WHERE date = ? ORDER BY revision DESC LIMIT 1", [day])
    if row:
        row["plan"], row["dropped"] = json.loads(row["plan"]), json.loads(row["dropped"])
    return row


def day_plan_revisions(store: Store, day: date) -> int:
    return store.scalar("SELECT count(*) FROM day_plans WHERE date = ?", [day]) or 0


def unit_id(day: date, phase: str, tag: str) -> str:
    """Ids are also Dagster mapping keys, so only [A-Za-z0-9_]."""
    return f"{day:%Y%m%d}_{phase}_{tag}"


def tagged(unit: dict, tag: str) -> bool:
    """Whether `unit` (a row with id, date and phase) is its day's unit tagged `tag` (a job's own unit)."""
    return unit["id"] == unit_id(unit["date"], unit["phase"], tag)


def save_day_plan(store: Store, *, day: date, revision: int, source: str, intention: str, from_phase: str,
                  phases: list[str], units: list[Any], dropped: list[dict], offline: bool,
                  now: datetime, deferred: Iterable[tuple[Any, DeferKind, str]] = ()) -> bool:
    """Store a day plan revision and its units; a re-plan cancels the not-yet-started units it replaces.
    `deferred` units (allowed, but not fundable now) are stored as `deferred` with their kind and reason.

    Returns False, storing nothing, when another run stored this revision first: two runs of one
    partition must not both plan (the second one uses the stored plan)."""
    plan_json = {p: [u.__dict__ for u in units if u.phase == p] for p in phases}
    with store.transaction() as conn:
        claims.end(conn, claims.plan_key(day, revision), ClaimState.DONE, now)
        latest = conn.execute("SELECT coalesce(max(revision), 0) FROM day_plans WHERE date = ?", [day]).fetchone()[0]
        if latest != revision - 1:
            return False
        conn.execute("INSERT INTO day_plans (date, revision, source, day_intention, planned_from_phase, plan, dropped, "
                     "offline, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", params(
            [day, revision, source, intention, from_phase, plan_json, dropped, offline, now]))
        if revision > 1:
            cancelled = [r[0] for r in conn.execute(
                f"""UPDATE work_units SET status = '{UnitStatus.CANCELLED}',
                    reason = 'replaced by plan revision {revision}', finished_at = ?
                    WHERE date = ? AND status = '{P}' AND phase IN (SELECT unnest(?::TEXT[]))
                    RETURNING id""", [now, day, phases]).fetchall()]
            # Deferred work re-offered to a cancelled unit goes back to waiting, so it is offered again.
            conn.execute("UPDATE work_units SET reoffered_as = NULL WHERE reoffered_as IN (SELECT unnest(?::TEXT[]))",
                         [cancelled])
        for d in dropped:
            conn.execute("INSERT INTO plan_drops (date, phase, template_id, reason, plan_revision, created_at) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                         [day, d["phase"], d["template_id"], d["reason"], revision, now])
        positions: dict[str, int] = {}
        for u, kind, reason in [(u, None, None) for u in units] + list(deferred):
            pos = positions[u.phase] = positions.get(u.phase, -1) + 1
            conn.execute(f"INSERT INTO work_units ({_NEW_UNIT_COLS}) VALUES "
                         f"(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{UnitOrigin.PLAN}', NULL, ?, ?)",
                         [unit_id(day, u.phase, f"r{revision}_{pos}"), day, u.phase, pos, u.template_id, u.category,
                          u.focus, u.motivation, D if kind else P, reason, kind, u.estimated_cost_usd, revision, now])
    return True


def phase_opening(store: Store, day: date, phase: str) -> dict | None:
    return store.one("SELECT * FROM phase_openings WHERE date = ? AND phase = ?", [day, phase])


def open_phase(store: Store, *, day: date, phase: str, revision: int, idle: bool,
               deferrals: Iterable[tuple[str, DeferKind, str]], reoffers: Iterable[tuple[dict, Any]], now: datetime,
               reopened: Iterable[str] = (), still_deferred: Iterable[tuple[str, DeferKind, str]] = ()) -> bool:
    """Record that a phase began: defer what cannot run now, add re-offered deferred work, reopen
    units deferred at plan time that fit now, and note on what stays deferred why (this offer).
    False, and nothing written, when another run already opened the phase for this plan revision."""
    with store.transaction() as conn:
        opened = conn.execute("SELECT plan_revision FROM phase_openings WHERE date = ? AND phase = ?",
                              [day, phase]).fetchone()
        if opened is not None and opened[0] == revision:
            return False
        for uid, kind, reason in deferrals:
            conn.execute(f"UPDATE work_units SET status = '{D}', defer_kind = ?, reason = ? WHERE id = ? "
                         f"AND status = '{P}'", [kind, reason, uid])
        # Waiting work may still be `planned` in a phase that never opened (pending_deferred): it is deferred now.
        for uid, kind, reason in still_deferred:
            conn.execute(f"UPDATE work_units SET status = '{D}', defer_kind = ?, reason = ? WHERE id = ? "
                         f"AND status IN ('{D}', '{P}')", [kind, reason, uid])
        for uid in reopened:
            conn.execute(f"UPDATE work_units SET status = '{P}', defer_kind = NULL, reason = NULL, finished_at = NULL "
                         f"WHERE id = ? AND status = '{D}'", [uid])
        base = conn.execute("SELECT coalesce(max(position) + 1, 0) FROM work_units WHERE date = ? AND phase = ?",
                            [day, phase]).fetchone()[0]
        for n, (old, unit) in enumerate(reoffers):
            new_id = unit_id(day, phase, f"d{base + n}")
            # Only work still waiting is taken up: a unit another run started since the snapshot is not doubled.
            # One still `planned` (its phase never opened) is deferred as skipped, as the work this phase leaves.
            if not conn.execute(f"UPDATE work_units SET reoffered_as = ?, status = '{D}', reason = coalesce(reason, ?), "
                                f"defer_kind = coalesce(defer_kind, '{DeferKind.SKIPPED}') "
                                f"WHERE id = ? AND status IN ('{D}', '{P}') AND reoffered_as IS NULL RETURNING id",
                                [new_id, f"its phase did not run; offered again {day} {phase}", old["id"]]).fetchall():
                continue
            conn.execute(f"INSERT INTO work_units ({_NEW_UNIT_COLS}) VALUES "
                         f"(?, ?, ?, ?, ?, ?, ?, ?, '{P}', NULL, NULL, ?, '{UnitOrigin.DEFERRED}', ?, ?, ?)",
                         [new_id, day, phase, base + n, unit.template_id, unit.category, unit.focus,
                          unit.motivation, unit.estimated_cost_usd, old["id"], revision, now])
            # It serves the goal the deferred unit served (a chain of re-offers keeps it at every link).
            conn.execute("INSERT INTO unit_goals (work_unit_id, goal_id, goal_note, continues, created_at) "
                         "SELECT ?, goal_id, goal_note, continues, ? FROM unit_goals WHERE work_unit_id = ? "
                         "ON CONFLICT DO NOTHING", [new_id, now, old["id"]])
            # Actions the deferred unit already completed are carried over, not paid for again.
            conn.execute(f"""INSERT INTO action_runs ({_ACTION_COLS}) SELECT ?, position, action_id, status,
                                 'carried over from ' || work_unit_id, result, NULL, 0, run_id, step_key,
                                 started_at, finished_at
                             FROM action_runs WHERE work_unit_id = ? AND status = '{ActionStatus.COMPLETED}'""",
                         [new_id, old["id"]])
        conn.execute("INSERT INTO phase_openings (date, phase, plan_revision, idle, opened_at) VALUES (?, ?, ?, ?, ?) "
                     "ON CONFLICT (date, phase) DO UPDATE SET plan_revision = excluded.plan_revision, "
                     "idle = excluded.idle, opened_at = excluded.opened_at", [day, phase, revision, idle, now])
    return True


def add_manual_unit(store: Store, *, day: date, phase: str, tag: str, unit: Any, now: datetime,
                    origin: UnitOrigin = UnitOrigin.MANUAL) -> str:
    uid = unit_id(day, phase, tag)
    with store.transaction() as conn:
        pos = conn.execute("SELECT coalesce(max(position) + 1, 0) FROM work_units WHERE date = ? AND phase = ?",
                           [day, phase]).fetchone()[0]
        conn.execute(f"INSERT INTO work_units ({_NEW_UNIT_COLS}) VALUES "
                     f"(?, ?, ?, ?, ?, ?, ?, ?, '{P}', NULL, NULL, ?, ?, NULL, NULL, ?)",
                     [uid, day, phase, pos, unit.template_id, unit.category, unit.focus, unit.motivation,
                      unit.estimated_cost_usd, origin, now])
    return uid


def units_for_phase(store: Store, day: date, phase: str) -> list[dict]:
    return store.all(f"SELECT {_UNIT_COLS} FROM work_units WHERE date = ? AND phase = ? ORDER BY position",
                     [day, phase])


def units_for_day(store: Store, day: date) -> list[dict]:
    return store.all(f"""SELECT {_UNIT_COLS} FROM work_units WHERE date = ? ORDER BY
                         {phase_rank()}, position""", [day])


def get_unit(store: Store, uid: str) -> dict | None:
    return store.one(f"SELECT {_UNIT_COLS} FROM work_units WHERE id = ?", [uid])


# SQL: the units a unit was offered again for, back to the first (`chain`: id, depth from the unit, whose id
# is the one parameter); bounded, as a deferral does not loop.
DEFERRAL_CHAIN = """WITH RECURSIVE chain(id, depth) AS (
    SELECT ?, 0
    UNION ALL SELECT w.deferred_from, c.depth + 1 FROM chain c
      JOIN work_units w ON w.id = c.id WHERE w.deferred_from IS NOT NULL AND c.depth < 20)"""


def planned_for(store: Store, unit: dict) -> tuple[date, str]:
    """The day and phase a unit's work is about: those it was first planned for. A unit offered again on a
    later day or phase is a new unit there (open_phase); it is about the first unit of its chain (deferred_from)."""
    if not unit["deferred_from"]:
        return unit["date"], unit["phase"]
    first = store.one(f"""{DEFERRAL_CHAIN} SELECT w.date, w.phase FROM chain c JOIN work_units w ON w.id = c.id
                          ORDER BY c.depth DESC LIMIT 1""", [unit["id"]])
    return first["date"], first["phase"]


def _holds_answers(unit: str) -> str:
    """SQL: the unit `unit` (a column) has batched requests pending, or answers collected and not used."""
    pending = ", ".join(f"'{s}'" for s in PENDING)
    return (f"EXISTS (SELECT 1 FROM llm_batches b WHERE b.work_unit_id = {unit} AND (b.state IN ({pending}) "
            f"OR (b.state = '{BatchState.COLLECTED}' AND NOT b.used)))")


def since_sql(unit: str) -> str:
    """SQL: the first date of the look-back of the work of `unit` (a row alias), by its template's then its
    category's start in LookBacks (since_args: its parameters)."""
    return (f"coalesce((SELECT s.since FROM (SELECT unnest(?::TEXT[]) AS template_id, unnest(?::DATE[]) AS since) s "
            f"WHERE s.template_id = {unit}.template_id), "
            f"(SELECT s.since FROM (SELECT unnest(?::TEXT[]) AS category, unnest(?::DATE[]) AS since) s "
            f"WHERE s.category = {unit}.category), ?)")


def since_args(since: LookBacks) -> list:
    return [list(since.templates), list(since.templates.values()), list(since.categories),
            list(since.categories.values()), since.everything]


def _not_held_for_answers(unit: str) -> str:
    """SQL: the unit (a row alias) is not waiting for its message batch, nor deferred by a pause while it held
    batched answers: its own phase resumes it (services.watches.batch_resumes), so it takes the answers paid
    for it."""
    return (f"{unit}.defer_kind IS DISTINCT FROM '{DeferKind.BATCH}' AND NOT ({unit}.defer_kind IS NOT DISTINCT "
            f"FROM '{DeferKind.PAUSED}' AND {_holds_answers(unit + '.id')})")


def pending_deferred(store: Store, since: LookBacks, before_day: date, before_phase_rank: int) -> list[dict]:
    """Work waiting to be offered again, from its category's `since` up to (not including) the given phase:
    deferred units not yet re-offered, and units still planned for a phase that never opened (skipped for want
    of money or by a pause, or its time passed without a run); not one held for its batched answers."""
    return store.all(f"""SELECT {_UNIT_COLS} FROM work_units u WHERE reoffered_as IS NULL
        AND {_not_held_for_answers('u')}
        AND (status = '{D}' OR (status = '{P}' AND NOT EXISTS (
            SELECT 1 FROM phase_openings o WHERE o.date = u.date AND o.phase = u.phase)))
        AND origin <> '{UnitOrigin.JOB}' AND date >= {since_sql('u')}
        AND (date < ? OR (date = ? AND {phase_rank()} < ?))
        ORDER BY date, created_at, id""", [*since_args(since), before_day, before_day, before_phase_rank])


def deferred_of(store: Store, template_ids: Iterable[str]) -> list[dict]:
    """Deferred units of these templates not yet offered again, however old (a job's own are its job's; one
    held for its batched answers waits for them)."""
    return store.all(f"""SELECT {_UNIT_COLS} FROM work_units u WHERE status = '{D}' AND reoffered_as IS NULL
        AND origin <> '{UnitOrigin.JOB}' AND {_not_held_for_answers('u')}
        AND template_id IN (SELECT unnest(?::TEXT[])) ORDER BY date, created_at, id""", [list(template_ids)])


def last_completed(store: Store, template_ids: Iterable[str]) -> dict[str, dict]:
    """Per template, its completed unit (any origin) whose work began last: id, date, phase, started_at (when
    its work began: its first step's start, a step carried over from the unit it was offered again for
    included, which found what was pending then)."""
    return {r["template_id"]: r for r in store.all(f"""SELECT id, template_id, date, phase, started_at FROM (
            SELECT u.id, u.template_id, u.date, u.phase, least(u.started_at, min(a.started_at)) AS started_at
            FROM work_units u LEFT JOIN action_runs a ON a.work_unit_id = u.id
            WHERE u.status = '{C}' AND u.started_at IS NOT NULL AND u.template_id IN (SELECT unnest(?::TEXT[]))
            GROUP BY u.id, u.template_id, u.date, u.phase, u.started_at)
        QUALIFY row_number() OVER (PARTITION BY template_id ORDER BY started_at DESC, id DESC) = 1""",
                                                       [list(template_ids)])}


def supersede(store: Store, found: Iterable[tuple[str, str]], now: datetime) -> list[str]:
    """Mark deferred units superseded, each with its reason (domain.phase_offer.superseded); one another run
    took up since it was read is left alone. Returns the ids marked."""
    done = []
    with store.transaction() as conn:
        for uid, reason in found:
            done += [r[0] for r in conn.execute(
                f"UPDATE work_units SET status = '{UnitStatus.SUPERSEDED}', defer_kind = NULL, reason = ?, "
                f"finished_at = ? WHERE id = ? AND status = '{D}' AND reoffered_as IS NULL RETURNING id",
                [reason, now, uid]).fetchall()]
    return done


def batch_waiting(store: Store) -> list[dict]:
    """Work waiting for its message batches: units deferred for their batch (a job's too) or by a pause
    while they held batched answers, and finished phase units whose summary was written while its batch
    was pending; per unit its date, phase, origin, category, template, the number of its batched requests
    and whether one is still pending (services.watches: batch_resumes, batch_journals)."""
    return store.all(f"""WITH waiting AS (
            SELECT id FROM work_units u WHERE status = '{D}' AND reoffered_as IS NULL
                AND (defer_kind = '{DeferKind.BATCH}' OR (defer_kind = '{DeferKind.PAUSED}'
                     AND origin <> '{UnitOrigin.JOB}' AND {_holds_answers('u.id')}))
            UNION SELECT s.work_unit_id FROM work_summaries s JOIN work_units u ON u.id = s.work_unit_id
                WHERE s.awaiting_batch AND u.origin <> '{UnitOrigin.JOB}')
        SELECT u.id, u.date, u.phase, u.origin, u.category, u.template_id, count(b.custom_id) AS requests,
               coalesce(bool_or(b.state IN (SELECT unnest(?::TEXT[]))), FALSE) AS pending
        FROM waiting w JOIN work_units u ON u.id = w.id LEFT JOIN llm_batches b ON b.work_unit_id = u.id
        GROUP BY u.id, u.date, u.phase, u.origin, u.category, u.template_id
        ORDER BY u.date, {phase_rank('u.phase')}, u.id""", [[s.value for s in PENDING]])


def defer_unopened(store: Store, day: date, phase: str, reason: str) -> list[str]:
    """Defer the planned units of a phase that is not starting (and never opened) as `skipped`, with
    the reason: the phase's next run takes them back, or a later phase or day offers them again."""
    return [r["id"] for r in store.all(f"""UPDATE work_units SET status = '{D}', defer_kind = '{DeferKind.SKIPPED}',
        reason = ? WHERE date = ? AND phase = ? AND status = '{P}'
          AND NOT EXISTS (SELECT 1 FROM phase_openings WHERE date = ? AND phase = ?) RETURNING id""",
                                       [reason, day, phase, day, phase])]


def set_unit_status(store: Store, uid: str, status: UnitStatus, now: datetime, *, reason: str | None = None,
                    error: str | None = None, run_id: str | None = None, defer_kind: DeferKind | None = None) -> None:
    started = status is UnitStatus.RUNNING
    finished = status in FINAL_UNIT_STATUSES
    store.execute(f"""UPDATE work_units SET status = ?, reason = coalesce(?, reason), error = coalesce(?, error),
                      run_id = coalesce(?, run_id), defer_kind = ?,
                      started_at = {'coalesce(started_at, ?)' if started else 'started_at'},
                      finished_at = {'?' if finished else 'finished_at'}
                      WHERE id = ?""",
                  [status, reason, error, run_id, defer_kind] + ([now] if started or finished else []) + [uid])


def set_paid_from(store: Store, uid: str, day: date, phase: str) -> None:
    """The budget day and phase the unit's work is paid from from now on (services.runner.paid_from)."""
    store.execute("UPDATE work_units SET paid_day = ?, paid_phase = ? WHERE id = ?", [day, phase, uid])


def action_runs(store: Store, uid: str) -> list[dict]:
    rows = store.all("SELECT * FROM action_runs WHERE work_unit_id = ? ORDER BY position", [uid])
    for r in rows:
        r["result"] = json.loads(r["result"]) if r["result"] else None
    return rows


def completed_positions(store: Store, ids: Iterable[str]) -> dict[str, frozenset[int]]:
    """The positions of the completed actions of each of the units `ids` that has any."""
    rows = store.all(f"""SELECT work_unit_id, list(position) AS done FROM action_runs
        WHERE work_unit_id IN (SELECT unnest(?::TEXT[])) AND status = '{ActionStatus.COMPLETED}'
        GROUP BY work_unit_id""", [list(ids)])
    return {r["work_unit_id"]: frozenset(r["done"]) for r in rows}


def set_action_result(store: Store, uid: str, position: int, result: dict) -> None:
    """Replace an ended action's recorded result (its pending hand-offs kept when the unit ended early)."""
    store.execute("UPDATE action_runs SET result = ? WHERE work_unit_id = ? AND position = ?",
                  params([result, uid, position]))


def start_action(store: Store, *, uid: str, position: int, action_id: str, me: Owner,
                 is_run_over: Callable[[str], bool], now: datetime, step_key: str | None) -> Claim:
    """Claim (unit, position) for `me` and mark it and its unit running, in one transaction. A claim
    held by a live owner is left alone: the caller skips the action (exactly once)."""
    with store.session(), store.transaction() as conn:
        taken = claims.take(conn, claims.action_key(uid, position), me, is_run_over, now)
        if taken.ours:
            _record_action(conn, uid=uid, position=position, action_id=action_id, status=ActionStatus.RUNNING,
                          now=now, run_id=me.run_id, step_key=step_key)
            set_unit_status(store, uid, UnitStatus.RUNNING, now, run_id=me.run_id)
    return taken


def finish_action(store: Store, *, uid: str, position: int, action_id: str, status: ActionStatus, now: datetime,
                  message: str, unit_status: UnitStatus | None, unit_reason: str | None = None,
                  defer_kind: DeferKind | None = None,
                  unit_error: str | None = None, result: dict | None = None, error: str | None = None,
                  cost_usd: float = 0.0, run_id: str | None = None, step_key: str | None = None) -> None:
    """Record an action's end, its unit's new status and the end of its claim, in one transaction.
    A deferred action gives its claim back (it runs again when re-offered) and the batched answers it
    was handed (its re-run finds them, paid once); any other end is final and uses them."""
    with store.session(), store.transaction() as conn:
        _record_action(conn, uid=uid, position=position, action_id=action_id, status=status, now=now,
                       message=message, result=result, error=error, cost_usd=cost_usd, run_id=run_id,
                       step_key=step_key)
        if unit_status:
            set_unit_status(store, uid, unit_status, now, reason=unit_reason, error=unit_error, defer_kind=defer_kind)
        claims.end(conn, claims.action_key(uid, position),
                   ClaimState.RELEASED if status is ActionStatus.DEFERRED else ClaimState.DONE, now)
        if status is not ActionStatus.DEFERRED:
            batches.used_by_action(conn, uid, action_id)


def interrupt_action(store: Store, uid: str, position: int, note: str, now: datetime) -> bool:
    """Its owner died mid-action: the action is marked interrupted, the unit goes back to `planned`
    (the next run of it starts this action again), the claim is released. False if already ended."""
    with store.session(), store.transaction() as conn:
        row = conn.execute("SELECT status FROM action_runs WHERE work_unit_id = ? AND position = ?",
                           [uid, position]).fetchone()
        claims.end(conn, claims.action_key(uid, position), ClaimState.RELEASED, now)
        if row is None or row[0] != ActionStatus.RUNNING:
            return False
        conn.execute(f"UPDATE action_runs SET status = '{ActionStatus.INTERRUPTED}', message = ?, finished_at = ? "
                     "WHERE work_unit_id = ? AND position = ?", [note, now, uid, position])
        conn.execute(f"UPDATE work_units SET status = '{P}', reason = ? WHERE id = ? AND status = '{R}'",
                     [note, uid])
    return True


def record_action(store: Store, *, uid: str, position: int, action_id: str, status: ActionStatus, now: datetime,
                  message: str = "", result: dict | None = None, error: str | None = None, cost_usd: float = 0.0,
                  run_id: str | None = None, step_key: str | None = None) -> None:
    with store.transaction() as conn:
        _record_action(conn, uid=uid, position=position, action_id=action_id, status=status, now=now,
                       message=message, result=result, error=error, cost_usd=cost_usd, run_id=run_id,
                       step_key=step_key)


def _record_action(conn: duckdb.DuckDBPyConnection, *, uid: str, position: int, action_id: str,
                   status: ActionStatus, now: datetime, message: str = "", result: dict | None = None,
                   error: str | None = None, cost_usd: float = 0.0, run_id: str | None = None,
                   step_key: str | None = None) -> None:
    """The action's row, in the caller's transaction: updated when it has one, else inserted (an upsert
    costs DuckDB 3-4 times an update or an insert, and every action step writes its row twice)."""
    finished = now if status is not ActionStatus.RUNNING else None
    updated = conn.execute("""UPDATE action_runs SET status = ?, message = ?, result = ?, error = ?, cost_usd = ?,
            run_id = ?, step_key = ?, started_at = coalesce(started_at, ?), finished_at = ?
        WHERE work_unit_id = ? AND position = ?""",
                           params([status, message, result, error, cost_usd, run_id, step_key, now, finished,
                                   uid, position])).fetchone()[0]
    if not updated:
        conn.execute(f"INSERT INTO action_runs ({_ACTION_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     params([uid, position, action_id, status, message, result, error, cost_usd, run_id, step_key,
                             now, finished]))


def recent_templates(store: Store, limit: int, before: date | None = None) -> list[str]:
    """Templates of the latest units, newest first (only days before `before`, if given)."""
    return [r["template_id"] for r in store.all(
        f"SELECT template_id FROM work_units WHERE status IN ('{C}', '{R}', '{P}') "
        f"AND date < ? ORDER BY date DESC, {phase_rank()} DESC, position DESC LIMIT ?",
        [before or date.max, limit])]


def planned_phases(store: Store, day: date) -> set[str]:
    """Phases some plan revision of the day covered."""
    return {p for row in store.all("SELECT plan FROM day_plans WHERE date = ?", [day])
            for p in json.loads(row["plan"])}


def reopen_failed(store: Store, uid: str, reason: str, now: datetime) -> None:
    """A failed unit runs again (a dead letter retried): back to `planned`, and the claims of its
    failed actions released so the next run of it may take them."""
    with store.session(), store.transaction() as conn:
        failed = [r[0] for r in conn.execute("SELECT position FROM action_runs WHERE work_unit_id = ? "
                                             f"AND status = '{ActionStatus.FAILED}'", [uid]).fetchall()]
        for position in failed:
            claims.end(conn, claims.action_key(uid, position), ClaimState.RELEASED, now)
        conn.execute(f"UPDATE work_units SET status = '{P}', reason = ?, error = NULL, finished_at = NULL "
                     f"WHERE id = ? AND status = '{F}'", [reason, uid])


def reopen_units(store: Store, ids: list[str]) -> None:
    if ids:
        store.execute(f"UPDATE work_units SET status = '{P}', defer_kind = NULL, reason = NULL, finished_at = NULL "
                      f"WHERE id IN (SELECT unnest(?::TEXT[])) AND status = '{D}'", [ids])


def drops_for_day(store: Store, day: date) -> list[dict]:
    return store.all("SELECT template_id, phase, reason, plan_revision FROM plan_drops WHERE date = ? "
                     "ORDER BY created_at, phase", [day])


def recent_summaries(store: Store, limit: int, through: date) -> list[dict]:
    """The latest work summaries of `through` and the days before it (a backfilled day sees only its past)."""
    return store.all("""SELECT date, phase, template_id, status, narrative, key_insights FROM work_summaries
                        WHERE date <= ? ORDER BY date DESC, created_at DESC LIMIT ?""", [through, limit])


def latest_journal(store: Store, before: date) -> dict | None:
    return store.one("SELECT date, tone, text FROM journals WHERE kind = 'daily' AND date < ? "
                     "ORDER BY date DESC LIMIT 1", [before])


def pending_job_unit(store: Store, template_id: str) -> dict | None:
    """The newest unit of a job's template still waiting to run (planned or deferred), if any."""
    return store.one(f"""SELECT {_UNIT_COLS} FROM work_units WHERE origin = '{UnitOrigin.JOB}' AND template_id = ?
        AND status IN ('{P}', '{D}') ORDER BY created_at DESC, id DESC LIMIT 1""", [template_id])


def deferred_job_dates(store: Store, template_id: str, tag: str, since: date) -> list[date]:
    """Dates from `since` on whose own job unit of `template_id` (the one tagged `tag`) is deferred."""
    rows = store.all(f"""SELECT id, date, phase FROM work_units WHERE origin = '{UnitOrigin.JOB}'
        AND template_id = ? AND status = '{D}' AND date >= ? ORDER BY date""", [template_id, since])
    return [r["date"] for r in rows if tagged(r, tag)]


def units_for_run(store: Store, run_id: str) -> list[dict]:
    return store.all(f"SELECT {_UNIT_COLS} FROM work_units WHERE run_id = ? ORDER BY created_at", [run_id])
