"""The suite's calendar. "Today" is injected, never read from the machine: every test runs as if it
were TODAY (default 2026-11-27, 08:00 UTC; set CASS_TEST_TODAY=YYYY-MM-DD to run the suite as of
another date). The sample conversations are shifted relative to it, so results do not depend on the
calendar. Days the tests use are named relative to TODAY."""
from __future__ import annotations

import os
from datetime import date, datetime, time, timedelta, timezone

from cass_pipelines.domain.plan_rules import PlannedUnit
from cass_pipelines.store import plans
from cass_pipelines.store.ledger import LedgerRow


def utc(day: date, hour: int = 9, minute: int = 0) -> datetime:
    """An instant of `day` in UTC: a message's or a ledger row's time on the suite's calendar."""
    return datetime.combine(day, time(hour, minute), tzinfo=timezone.utc)


TODAY = date.fromisoformat(os.environ.get("CASS_TEST_TODAY", "2026-11-27"))
NOW = utc(TODAY, 8)
SAMPLE_DAY = TODAY - timedelta(days=7)     # a day in the middle of the sample conversations
YESTERDAY = TODAY - timedelta(days=1)


def days_before(n: int) -> date:
    return TODAY - timedelta(days=n)


def seed_plan(rt, day, phase, template_ids):
    """A stored day plan with known units, so a test does not depend on what the agent chose."""
    units = [PlannedUnit(phase, t, rt.registry.templates[t].category, rt.registry.templates[t].priority,
                         "a focus", "a reason", rt.registry.template_cost(t)) for t in template_ids]
    plans.save_day_plan(rt.store, day=day, revision=1, source="llm", intention="test", from_phase=phase,
                        phases=[phase], units=units, dropped=[], offline=True, now=NOW)


def invariant_violations(store, answered=None) -> dict[str, list]:
    """What must never be found after a run, a crash and the next run (tests and bench/ use it):
    a (unit, action) whose interactive calls two runs paid for, a batched request paid twice (an action
    resumed after its batch may settle its earlier answers in one run and its later calls in another;
    an answer cut at its output bound is asked again by design), a decision call paid twice for one revision, a hold still
    held, a unit running with no live owner, a batched answer of an action that ended (completed or
    failed) or of a unit summary made not marked used, and (given the server's answers) a paid answer missing from the ledger or
    a ledger row the server never sent."""
    q = store.all
    out = {
        "actions_paid_by_two_runs": q("""SELECT work_unit_id, action_id FROM llm_ledger WHERE work_unit_id IS NOT NULL
                                         AND NOT batch GROUP BY ALL HAVING count(DISTINCT run_id) > 1"""),
        "batched_requests_paid_twice": q("""SELECT b.request_key FROM llm_batches b JOIN llm_ledger l
                                            ON l.request_id = b.request_id WHERE l.output_tokens < l.max_tokens
                                            GROUP BY b.request_key HAVING count(*) > 1"""),
        # (an answer cut at its measured output bound is asked again by design: llm/holds.py)
        "plan_calls_paid_twice": q("""SELECT l.date FROM llm_ledger l WHERE action_id = 'plan.decide'
                                      AND output_tokens < max_tokens GROUP BY l.date
                                      HAVING count(*) > (SELECT count(*) FROM day_plans p WHERE p.date = l.date)"""),
        "held_reservations": q("SELECT id FROM reservations WHERE status = 'held'"),
        "running_units": q("SELECT id FROM work_units WHERE status = 'running'"),
        "held_claims": q("SELECT key FROM claims WHERE state = 'held'"),
        "ended_actions_answers_unused": q("""SELECT b.custom_id FROM llm_batches b JOIN action_runs a
            ON a.work_unit_id = b.work_unit_id AND a.action_id = b.action_id
            WHERE b.state = 'collected' AND NOT b.used AND a.status IN ('completed', 'failed')
            AND a.finished_at >= b.ended_at
            UNION ALL SELECT b.custom_id FROM llm_batches b JOIN claims c
            ON c.key LIKE 'summary:' || b.work_unit_id || ':%' AND b.action_id = 'summary.work_unit'
            WHERE b.state = 'collected' AND NOT b.used AND c.state = 'done' AND c.ended_at >= b.ended_at"""),
    }
    if answered is not None:
        ledger = {r["request_id"] for r in q("SELECT request_id FROM llm_ledger")}
        paid = {a.request_id for a in answered}
        out["paid_not_in_ledger"] = sorted(paid - ledger)
        out["ledger_not_paid"] = sorted(ledger - paid)
    return out


LEDGER_DAY = date(2026, 11, 26)   # store-level budget tests work on one fixed day


def ledger_row(request_id: str, cost: float, category: str = "research", day: date = LEDGER_DAY) -> LedgerRow:
    """A paid call's ledger row (tests of reservations, settling and checks)."""
    return LedgerRow(request_id=request_id, ts=utc(day, 12), date=day,
                     phase="morning", run_id=None, step_key=None, work_unit_id=None, action_id="research.search",
                     category=category, model="claude-haiku-5-5", input_tokens=100, output_tokens=100,
                     cache_creation_input_tokens=0, cache_read_input_tokens=0, cache_creation_1h_input_tokens=0,
                     cost_usd=cost, offline=True, attempts=1, latency_ms=1)


def count_statements(monkeypatch) -> list[str]:
    """The SQL of every statement run through a store opened from now on (store.db.connect), in order."""
    from cass_pipelines.store import db

    run: list[str] = []
    real = db.connect

    class Counted:   # the connection, its statements noted
        def __init__(self, conn):
            self._conn = conn

        def execute(self, sql, *args):
            run.append(" ".join(sql.split()))
            self._conn.execute(sql, *args)
            return self

        def executemany(self, sql, *args):
            run.append(" ".join(sql.split()))
            self._conn.executemany(sql, *args)
            return self

        def __getattr__(self, name):
            return getattr(self._conn, name)

    monkeypatch.setattr(db, "connect", lambda *a, **kw: Counted(real(*a, **kw)))
    return run


def count_opens(monkeypatch) -> list[int]:
    """Counts store opens (store.db.connect: one file lock window each) from now on."""
    from cass_pipelines.store import db

    opens = [0]
    real = db.connect

    def counting(*a, **kw):
        opens[0] += 1
        return real(*a, **kw)

    monkeypatch.setattr(db, "connect", counting)
    return opens


def dead_pid() -> int:
    """A pid whose process has ended (nothing reuses it within a test)."""
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def started_run(defs, instance, tags: dict[str, str]):
    """A memory_job run created as the daemon creates one and marked started, nothing executed: what run
    monitoring and recovery find of a run whose process was killed (or still runs)."""
    import dagster as dg

    from cass_pipelines.execution import QUIET, create_run

    run = create_run(defs, instance, "memory_job", QUIET, tags)
    instance.report_dagster_event(dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name="memory_job"),
                                  run_id=run.run_id)
    return instance.get_run_by_id(run.run_id)
