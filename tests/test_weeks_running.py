"""What shows only when the agent runs for days and weeks: approvals decided a day later or never,
week runs in the run queue, a weekly journal and a Sunday journal still to come, work offered again
twice, dead letters piling up, a memory backlog the budget refused."""
import importlib
import json
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest
from support import NOW, SAMPLE_DAY, TODAY, YESTERDAY, seed_plan, utc

from cass_pipelines.cli.main import main
from cass_pipelines.definitions import build_defs
from cass_pipelines.domain.clock import NOW_ENV, FixedClock
from cass_pipelines.execution import instance_for, run_phase
from cass_pipelines.services.runtime import open_runtime
from cass_pipelines.store import plans
from cass_pipelines.store.ledger import LedgerRow, insert_rows

TOMORROW = TODAY + timedelta(days=1)


@pytest.fixture
def env(sample_home):
    rt = open_runtime()
    return rt, instance_for(rt.settings), build_defs(rt.settings, rt.registry)


def cli_json(capsys, *argv):
    capsys.readouterr()
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def spend(rt, day, category, usd, rid, phase="evening"):
    """A paid call of `day` (its budget day) in `category`, funded by the category, in `phase`."""
    hour = {"morning": 7, "evening": 21}[phase]
    with rt.store.transaction() as conn:
        insert_rows(conn, [LedgerRow(rid, utc(day, hour), day, phase,
                                     None, None, None, "session.research", category, "claude-sonnet-5-5",
                                     1, 1, 0, 0, 0, usd, False, 1, 10)])


def test_work_approved_the_next_morning_runs_on_todays_budget(env, capsys):
    rt, instance, defs = env
    # Yesterday afternoon the agent planned the costly gated work; it stopped, waiting for a person.
    seed_plan(rt, YESTERDAY, "afternoon", ["research_batch"])
    assert run_phase(defs, instance, YESTERDAY, "afternoon").success
    [gated] = plans.units_for_phase(rt.store, YESTERDAY, "afternoon")
    assert gated["status"] == "awaiting_approval"
    # The rest of yesterday's research work used yesterday's research share.
    spend(rt, YESTERDAY, "research", rt.settings.category_limit("research"), "req_yesterday_research")
    # This morning (CASS_NOW = TODAY 08:00, well within the 48 h) a person approves it; today's budget is untouched.
    code, out = cli_json(capsys, "approvals", "approve", gated["id"], "--by", "ana", "--reason", "worth it")
    unit = plans.get_unit(rt.store, gated["id"])
    # This afternoon the deferred unit is offered again, as a new unit: which asks for approval again.
    seed_plan(rt, TODAY, "afternoon", [])
    assert run_phase(defs, instance, TODAY, "afternoon").success
    asked = rt.store.all("SELECT work_unit_id, state FROM approvals ORDER BY requested_at")
    assert unit["status"] == "completed" and len(asked) == 1, (
        f"approved on {TODAY} with today's budget untouched, the unit was {unit['status']} "
        f"({unit['reason']}); approval requests now: {asked}")


def test_unanswered_approval_expires_after_48h_while_the_agent_keeps_running(env, monkeypatch):
    from support import days_before

    from cass_pipelines.domain.clock import NOW_ENV
    from cass_pipelines.services.week_report import week_report

    rt, instance, defs = env
    three_days_ago = days_before(3)
    monkeypatch.setenv(NOW_ENV, utc(three_days_ago, 13).isoformat())
    seed_plan(rt, three_days_ago, "afternoon", ["research_batch"])
    assert run_phase(defs, instance, three_days_ago, "afternoon").success
    [gated] = plans.units_for_phase(rt.store, three_days_ago, "afternoon")
    assert gated["status"] == "awaiting_approval"
    # Three days on, the agent has kept running its days (no one looked at `approvals list`).
    monkeypatch.setenv(NOW_ENV, NOW.isoformat())
    seed_plan(rt, TODAY, "morning", ["daily_review"] if "daily_review" in rt.registry.templates else [])
    assert run_phase(defs, instance, TODAY, "morning").success
    report = week_report(rt, days_before(6), TODAY, [])
    request = rt.store.one("SELECT state, expires_at FROM approvals WHERE work_unit_id = ?", [gated["id"]])
    unit = plans.get_unit(rt.store, gated["id"])
    assert request["expires_at"] < NOW
    assert request["state"] == "expired" and unit["status"] == "cancelled" and not report["awaiting_approval"], (
        f"request expired at {request['expires_at']} (now {NOW}) is still {request['state']}, unit "
        f"{unit['status']}; the weekly report lists as awaiting approval: {report['awaiting_approval']}")


def test_queue_starts_sundays_daily_journal_before_the_weekly_journal_of_its_week(cass_env):
    """Monday morning: Sunday's daily journal (06:15) and the weekly journal of the week that ended
    (06:45) may wait together behind a run holding pool `cass_store`. The weekly journal is written from
    the week's daily journals, so Sunday's starts first; the week's intention starts before Monday's morning,
    which plans with it. (A week run is tagged `dagster/partition=<its Monday>`: its job says it is a week's.)"""
    from cass_pipelines.config.registry import load_registry
    from cass_pipelines.config.settings import load_settings
    from cass_pipelines.domain.goals import week_start
    from cass_pipelines.run_queue import WEEK_INTENTION_JOB, WEEK_JOURNAL_JOB, queue_priority

    monday = week_start(TODAY)
    last_week = monday - timedelta(days=7)
    sunday = monday - timedelta(days=1)
    weekly_journal = queue_priority({"dagster/partition": last_week.isoformat()}, "week_journal_job")
    sunday_journal = queue_priority({"dagster/partition": sunday.isoformat()}, "journal_job")
    weekly_intention = queue_priority({"dagster/partition": monday.isoformat()}, "week_job")   # (05:30)
    monday_morning = queue_priority({"dagster/partition": f"{monday}|morning", "dagster/partition/date": monday.isoformat(),
                                     "dagster/partition/phase": "morning"}, "phase_job")
    assert sunday_journal > weekly_journal, "the weekly journal starts before Sunday's daily journal"
    assert weekly_journal > weekly_intention > monday_morning, \
        "Monday's morning is planned before the week's intention exists"
    defs = build_defs(load_settings(), load_registry(None))   # the names the queue knows are the jobs'
    assert {defs.resolve_job_def(n).name for n in (WEEK_INTENTION_JOB, WEEK_JOURNAL_JOB)} == {"week_job", "week_journal_job"}


def test_work_deferred_twice_still_counts_for_its_goal(sample_home):
    from support import days_before

    from cass_pipelines.domain.plan_rules import PlannedUnit
    from cass_pipelines.domain.states import DeferKind, UnitStatus
    from cass_pipelines.services.week_report import week_report
    from cass_pipelines.store import goals as goal_store
    from cass_pipelines.store import learning

    rt = open_runtime()
    goal = goal_store.add_goal(rt.store, title="Explain uncertainty better", success_criterion="three notes",
                               source="person", origin_ref=None, templates=["synthesis"], offline=True,
                               day=days_before(4), now=NOW)
    first = days_before(3)
    seed_plan(rt, first, "afternoon", ["synthesis"])
    [unit] = plans.units_for_phase(rt.store, first, "afternoon")
    goal_store.link_units(rt.store, [(unit["id"], goal, "it serves the goal", None)], NOW)
    t = rt.registry.templates["synthesis"]
    chain = [unit]
    for day in (days_before(2), days_before(1)):
        # The unit ran out of money (at plan time, or midway through its actions) ...
        plans.set_unit_status(rt.store, chain[-1]["id"], UnitStatus.DEFERRED, NOW, reason="budget: category full",
                              defer_kind=DeferKind.BUDGET)
        # ... and the next day's afternoon offers it again, as a new unit (store.plans.open_phase).
        old = plans.get_unit(rt.store, chain[-1]["id"])
        assert plans.open_phase(rt.store, day=day, phase="afternoon", revision=1, idle=True, deferrals=[], now=NOW,
                                reoffers=[(old, PlannedUnit("afternoon", t.id, t.category, t.priority, old["focus"],
                                                            "re-offered", 0.01))])
        chain.append(plans.units_for_phase(rt.store, day, "afternoon")[-1])
    last = chain[-1]
    plans.set_unit_status(rt.store, last["id"], UnitStatus.COMPLETED, NOW)
    assert last["deferred_from"] == chain[1]["id"] and chain[1]["deferred_from"] == unit["id"]

    served = goal_store.unit_goal(rt.store, last["id"])     # what record_progress writes the note to
    report = week_report(rt, days_before(6), TODAY, [])
    stats = {s.key: s.units for s in learning.goal_stats(rt.store, TODAY)}
    assert served and served["goal_id"] == goal
    assert report["units_naming_a_goal"] == 1 and stats.get(goal) == 1, (
        f"{last['id']} serves {goal} (its progress note goes there), but the weekly report counts "
        f"{report['units_naming_a_goal']} unit(s) naming a goal and the learning stats {stats}")


def test_status_counts_every_open_dead_letter(sample_home, capsys):
    from support import days_before

    from cass_pipelines.domain.states import DeadLetterKind
    from cass_pipelines.store import dead_letters

    rt = open_runtime()
    for n in range(12):   # two weeks of a failing action, one a day (no one ran `dlq discard`)
        day = days_before(12 - n)
        dead_letters.add(rt.store, dl_id=f"dl_{n:02d}", kind=DeadLetterKind.ACTION, error="boom",
                         now=utc(day, 13), day=day, phase="afternoon",
                         work_unit_id=f"{day:%Y%m%d}_afternoon_r1_0", action_id="session.research")
    capsys.readouterr()
    assert main(["status"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("dead letters:"))
    assert line == "dead letters: 12 (the newest 5: `dlq list`)", line
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dead_letters_open"] == 12 and len(out["dead_letters"]) == 5


def test_memory_backlog_refused_money_is_taken_up_again_on_a_later_day(sample_home, monkeypatch):
    """The daemon's loop, simulated: each tick of idle_memory_sensor, and a memory_job run for each run key
    not launched before (Dagster never launches a run key twice), over several days with no new message."""
    from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG

    from cass_pipelines.config.registry import load_registry
    from cass_pipelines.config.settings import load_settings
    from cass_pipelines.domain.clock import NOW_ENV
    from cass_pipelines.services.handlers.memory import waiting_catchup
    from cass_pipelines.store import conversations

    monkeypatch.setenv("CASS_DAILY_BUDGET_USD", "0.3")   # memory's share ($0.03) pays for part of the backlog
    instance = dg.DagsterInstance.get()
    log = []

    def day_of_ticks(now):
        monkeypatch.setenv(NOW_ENV, now.isoformat())
        for _ in range(4):   # a few ticks (every 10 minutes) of that day
            defs = build_defs(load_settings(), load_registry())
            sensor = defs.resolve_sensor_def("idle_memory_sensor")
            with dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def(),
                                         resources=defs.resources) as ctx:
                result = sensor.evaluate_tick(ctx)
            launched = {r.tags.get(RUN_KEY_TAG) for r in instance.get_runs()}
            fresh = [r for r in result.run_requests if r.run_key not in launched]
            log.append((now.date().isoformat(), [r.run_key for r in result.run_requests], len(fresh)))
            for r in fresh:
                assert defs.resolve_job_def("memory_job").execute_in_process(
                    instance=instance, tags={**r.tags, RUN_KEY_TAG: r.run_key,
                                             SENSOR_NAME_TAG: "idle_memory_sensor"}).success

    rt = open_runtime()
    day_of_ticks(NOW)
    waiting = waiting_catchup(rt.store)
    assert waiting and waiting["status"] == "deferred" and waiting["defer_kind"] == "budget", waiting
    backlog = len(conversations.idle_unsummarized(rt.store, NOW, now=NOW, limit=1000))
    for n in (1, 2, 3):   # three more days, each with a fresh budget; nobody writes
        day_of_ticks(NOW + timedelta(days=n))
    later = len(conversations.idle_unsummarized(rt.store, NOW, now=NOW, limit=1000))
    assert later < backlog, (f"{backlog} idle conversations still unsummarised after three more days with fresh "
                             f"budgets: ticks (day, run keys asked, new) = {log}")


def test_weekly_journal_is_not_written_for_good_while_sundays_journal_is_still_coming(env, monkeypatch):
    """Sunday's daily journal is night work (a Message Batch): when its batch outlasts the 30-minute wait
    it is deferred and written later (journal_resume_sensor). The weekly journal, written once, waits for it."""
    from cass_pipelines.domain.goals import week_start
    from cass_pipelines.domain.states import DeferKind, UnitStatus
    from cass_pipelines.execution import QUIET, execute, run_tags
    from cass_pipelines.services.runner import job_unit
    from cass_pipelines.store import journal, weeks

    rt, instance, defs = env
    week = week_start(TODAY) - timedelta(days=7)
    sunday = week + timedelta(days=6)
    for n in range(6):   # Monday to Saturday have their journals
        journal.save_entry(rt.store, day=week + timedelta(days=n), kind="daily", text=f"day {n}: worked on notes",
                           tone="steady", work_unit_id=None, offline=True, now=NOW)
    uid = job_unit(rt, sunday, "night", "daily_journal", "journal", f"the day {sunday}", NOW)
    plans.set_unit_status(rt.store, uid, UnitStatus.DEFERRED, NOW, defer_kind=DeferKind.BATCH,
                          reason="waiting for message batch msgbatch_1; collected when it ends")
    result = execute(defs, instance, "week_journal_job", QUIET, run_tags(trigger="schedule", week=week.isoformat()),
                     partition_key=week.isoformat())
    written = weeks.weekly_journal(rt.store, week)
    # Later that morning the batch ends and Sunday's journal is written.
    journal.save_entry(rt.store, day=sunday, kind="daily", text="sunday: the big insight of the week", tone="glad",
                       work_unit_id=uid, offline=True, now=NOW)
    assert written is None, (f"the weekly journal of {week} was written (run success={result.success}) while "
                             f"Sunday's journal ({uid}) was still deferred for its batch; written once, it never "
                             "includes Sunday")


def test_approved_work_offered_again_as_a_new_unit_keeps_its_approval(env):
    """Approved work the budget then deferred is offered again as a new unit: a person said yes to the
    work, so it does not wait for approval a second time (nor a third, down a chain of re-offers)."""
    from cass_pipelines.domain.plan_rules import PlannedUnit
    from cass_pipelines.domain.states import DeferKind, UnitStatus
    from cass_pipelines.services import approvals

    rt, instance, defs = env
    seed_plan(rt, YESTERDAY, "afternoon", ["research_batch"])
    assert run_phase(defs, instance, YESTERDAY, "afternoon").success
    [unit] = plans.units_for_phase(rt.store, YESTERDAY, "afternoon")
    approvals.decide(rt, unit["id"], True, "worth it", "ana", NOW)
    t = rt.registry.templates["research_batch"]
    gated_action = rt.registry.actions[t.action_sequence[0]]
    chain = [unit]
    for phase in ("afternoon", "evening"):
        plans.set_unit_status(rt.store, chain[-1]["id"], UnitStatus.DEFERRED, NOW, reason="budget: category full",
                              defer_kind=DeferKind.BUDGET)
        old = plans.get_unit(rt.store, chain[-1]["id"])
        assert plans.open_phase(rt.store, day=TODAY, phase=phase, revision=1, idle=True, deferrals=[], now=NOW,
                                reoffers=[(old, PlannedUnit(phase, t.id, t.category, t.priority, old["focus"],
                                                            "re-offered", 0.01))])
        chain.append(plans.units_for_phase(rt.store, TODAY, phase)[-1])
        assert chain[-1]["deferred_from"] == old["id"]
        assert not approvals.gated(t, gated_action, chain[-1], rt.store)
    assert approvals.gated(t, gated_action, {**chain[-1], "deferred_from": None}, rt.store)   # not approved itself


def test_run_day_while_paused_leaves_the_journal_for_the_catch_up(sample_home, capsys):
    """run-day while paused still runs the journal, so its unit waits, deferred by the pause, where the
    catch-up (journal_schedule, run-day's earlier journals, the weekly journal's journals_coming) finds it."""
    from cass_pipelines.services.watches import waiting_journals

    assert main(["pause", "--reason", "holiday"]) == 0
    assert main(["run-day", "--date", YESTERDAY.isoformat(), "--json"]) == 0
    capsys.readouterr()
    assert main(["resume", "--all"]) == 0
    rt = open_runtime()
    waiting = waiting_journals(rt.store, rt.settings, TODAY, TODAY)
    journal_units = rt.store.all("SELECT id, status FROM work_units WHERE template_id = 'daily_journal'")
    assert YESTERDAY in waiting, (f"after the pause, nothing will write the journal of {YESTERDAY}: catch-up "
                                  f"finds {waiting}; journal units {journal_units}")


def test_weekly_journal_does_not_wait_for_a_daily_journal_no_one_will_write(env, monkeypatch):
    """journal_schedule and run-day try a deferred daily journal again for JOURNAL_CATCH_UP_DAYS only; the
    weekly journal waits for those still tried, not for one no catch-up will write any more."""
    from cass_pipelines.domain.goals import week_start
    from cass_pipelines.domain.states import DeferKind, UnitStatus
    from cass_pipelines.execution import QUIET, execute, run_tags
    from cass_pipelines.services.runner import job_unit
    from cass_pipelines.services.watches import journals_coming, waiting_journals
    from cass_pipelines.store import journal, weeks

    rt, instance, defs = env
    week = week_start(TODAY) - timedelta(days=7)
    monday = week
    for n in range(1, 7):
        journal.save_entry(rt.store, day=week + timedelta(days=n), kind="daily", text=f"day {n}", tone="steady",
                           work_unit_id=None, offline=True, now=NOW)
    uid = job_unit(rt, monday, "night", "daily_journal", "journal", f"the day {monday}", NOW)
    plans.set_unit_status(rt.store, uid, UnitStatus.DEFERRED, NOW, defer_kind=DeferKind.PAUSED,
                          reason="paused: a long holiday")
    # This morning's journal_schedule tick: the day whose night just ended is YESTERDAY.
    retried = waiting_journals(rt.store, rt.settings, YESTERDAY, TODAY)
    waits_for = journals_coming(rt.store, rt.settings, week, TODAY)
    result = execute(defs, instance, "week_journal_job", QUIET, run_tags(trigger="schedule-catch-up"),
                     partition_key=week.isoformat())
    written = weeks.weekly_journal(rt.store, week)
    assert written is not None or set(waits_for) <= set(retried), (
        f"the weekly journal of {week} (run success={result.success}) waits for {waits_for}, which no catch-up "
        f"will write any more (journal_schedule retries {retried}); it is never written")


def test_work_approved_in_the_morning_is_not_funded_from_todays_evening_pool(env, capsys):
    """Evening work planned yesterday and approved at 08:00 today is charged to today and funded as
    today's morning (its category's share), not from today's evening pool before today's plan exists."""
    rt, instance, defs = env
    seed_plan(rt, YESTERDAY, "evening", ["research_batch"])
    assert run_phase(defs, instance, YESTERDAY, "evening").success
    [gated] = plans.units_for_phase(rt.store, YESTERDAY, "evening")
    assert gated["status"] == "awaiting_approval", gated
    # Today's research share is already used this morning.
    spend(rt, TODAY, "research", rt.settings.category_limit("research"), "req_today_research", "morning")
    capsys.readouterr()
    main(["approvals", "approve", gated["id"], "--by", "ana", "--reason", "worth it", "--json"])
    rows = rt.store.all("SELECT date, phase, category, funding, cost_usd FROM llm_ledger WHERE work_unit_id = ?",
                        [gated["id"]])
    pooled = [r for r in rows if r["funding"] == "pooled"]
    assert not pooled, (f"at {NOW:%H:%M} (morning) the approved evening unit was funded from today's pool: "
                        f"{pooled}")


def test_work_approved_the_next_morning_has_its_summary_on_todays_budget(env, capsys):
    """An approved unit's summary is paid as its actions are, from the day it is decided: yesterday's
    spent research share does not leave it without a model call."""
    rt, instance, defs = env
    seed_plan(rt, YESTERDAY, "afternoon", ["research_batch"])
    assert run_phase(defs, instance, YESTERDAY, "afternoon").success
    [gated] = plans.units_for_phase(rt.store, YESTERDAY, "afternoon")
    spend(rt, YESTERDAY, "research", rt.settings.category_limit("research"), "req_yesterday_research", "morning")
    capsys.readouterr()
    main(["approvals", "approve", gated["id"], "--by", "ana", "--reason", "worth it", "--json"])
    unit = plans.get_unit(rt.store, gated["id"])
    assert unit["status"] == "completed", unit
    days = rt.store.all("SELECT action_id, date FROM llm_ledger WHERE work_unit_id = ? ORDER BY ts",
                        [gated["id"]])
    summary = rt.store.one("SELECT narrative FROM work_summaries WHERE work_unit_id = ?", [gated["id"]])
    assert summary and "without a model call" not in summary["narrative"] and \
        all(r["date"] == TODAY for r in days), (f"ledger days by action {days}; summary: "
                                                f"{summary and summary['narrative'][-160:]}")


def test_idle_memory_sensor_opens_the_store_once_per_tick(sample_home, monkeypatch):
    """A tick that finds idle conversations reads them and the waiting catch-up in one open of the file
    (the process's first tick also looks at the file's schema once: quick_store)."""
    import traceback

    from cass_pipelines.config.registry import load_registry
    from cass_pipelines.config.settings import load_settings
    from cass_pipelines.defs import resources
    from cass_pipelines.services.watches import idle_conversations

    rt = open_runtime()
    assert idle_conversations(rt.store, rt.settings, NOW), "the sample has idle conversations"
    opens = []
    real = resources.open_connection
    monkeypatch.setattr(resources, "open_connection",
                        lambda *a, **k: (opens.append(traceback.format_stack()[-7].strip()), real(*a, **k))[1])
    defs = build_defs(load_settings(), load_registry())
    sensor = defs.resolve_sensor_def("idle_memory_sensor")
    with dg.DagsterInstance.ephemeral() as instance, dg.build_sensor_context(
            instance=instance, repository_def=defs.get_repository_def(), resources=defs.resources) as ctx:
        sensor.evaluate_tick(ctx)
        opens.clear()
        result = sensor.evaluate_tick(ctx)
    assert result.run_requests
    assert len(opens) == 1, f"one tick opened the store {len(opens)} times: {opens}"


def test_weekly_journal_materialized_from_the_ui_starts_after_its_sunday(cass_env):
    """The UI's Materialize and asset backfills of `weekly_journal` run as `__ASSET_JOB`, tagged
    `dagster/partition=<Monday>`: the queue knows them by the asset they select and starts them after
    Sunday's daily journal, as a week_journal_job run."""
    from dagster._core.storage.dagster_run import DagsterRun

    from cass_pipelines.domain.goals import week_start
    from cass_pipelines.run_queue import queue_priority, run_priority

    monday = week_start(TODAY) - timedelta(days=7)
    sunday = monday + timedelta(days=6)
    weekly = run_priority(DagsterRun(job_name="__ASSET_JOB", run_id="r1", tags={"dagster/partition": monday.isoformat()},
                                     asset_selection=frozenset({dg.AssetKey("weekly_journal")})))
    sunday_journal = queue_priority({"dagster/partition": sunday.isoformat()}, "journal_job")
    assert sunday_journal > weekly, "the weekly journal (asset job) starts before Sunday's daily journal"


def test_a_journal_deferred_only_by_a_pause_is_charged_to_its_own_day_when_written(sample_home, capsys):
    """run-day while the journal category is paused leaves the day's journal deferred as paused. Once
    resumed, its catch-up is charged to its own day's night (its money was never short), as a run without
    the pause would be."""
    from cass_pipelines.execution import run_journal

    assert main(["pause", "--category", "journal", "--reason", "quiet week"]) == 0
    assert main(["run-day", "--date", YESTERDAY.isoformat(), "--json"]) == 0
    capsys.readouterr()
    assert main(["resume", "--category", "journal"]) == 0
    rt = open_runtime()
    uid = plans.unit_id(YESTERDAY, "night", "journal")
    assert plans.get_unit(rt.store, uid)["defer_kind"] == "paused"
    assert run_journal(build_defs(rt.settings, rt.registry), instance_for(rt.settings), YESTERDAY).success
    rows = rt.store.all("SELECT date, phase, batch FROM llm_ledger WHERE work_unit_id = ?", [uid])
    assert rows and all((r["date"], r["phase"]) == (YESTERDAY, "night") for r in rows), (
        f"the journal of {YESTERDAY}, deferred only by a pause, was charged as {rows}")


def _journal_refused_money_then_paused():
    """SAMPLE_DAY's journal refused money (its day spent), then the journal category paused: the runtime,
    the definitions, the instance and the journal's unit id."""
    from cass_pipelines.execution import run_journal, run_memory

    rt = open_runtime()
    defs, instance = build_defs(rt.settings, rt.registry), instance_for(rt.settings)
    assert run_memory(defs, instance).success   # (a journal waits for the day's conversations)
    spend(rt, SAMPLE_DAY, "research", rt.settings.daily_budget_usd, "req_day_spent")
    run_journal(defs, instance, SAMPLE_DAY)
    uid = plans.unit_id(SAMPLE_DAY, "night", "journal")
    assert plans.get_unit(rt.store, uid)["defer_kind"] == "budget"
    assert main(["pause", "--category", "journal", "--reason", "quiet"]) == 0
    return rt, defs, instance, uid


def test_a_journal_short_of_money_then_paused_is_written_from_the_day_that_pays_for_it(sample_home):
    """A day's journal is refused money (its day is spent). Its catch-up runs while the journal category is
    paused; once resumed, the next catch-up is paid from today, as the first would have been, not charged
    again to the spent day (its latest deferral says `paused`, not `budget`)."""
    from cass_pipelines.execution import run_journal

    rt, defs, instance, uid = _journal_refused_money_then_paused()
    run_journal(defs, instance, SAMPLE_DAY)
    assert (plans.get_unit(rt.store, uid)["defer_kind"]) == "paused"
    assert main(["resume", "--category", "journal"]) == 0
    assert run_journal(defs, instance, SAMPLE_DAY).success
    unit = plans.get_unit(rt.store, uid)
    rows = rt.store.all("SELECT DISTINCT date, phase FROM llm_ledger WHERE work_unit_id = ?", [uid])
    assert unit["status"] == "completed", f"{unit['status']}: {unit['reason']}"
    assert rows == [{"date": TODAY, "phase": "night"}], rows


def _unit_waiting_for_its_batch(sample_home, monkeypatch):
    """The commit's own scenario: a morning research_deep_dive fails at session.research, its dead letter
    is retried the same day at night (batched, paid from (TODAY, night)); the batch outlasts the wait, so
    the unit is deferred for it; then the batch ends and its answer is collected (paid)."""
    from cass_pipelines.llm.offline import OfflineBackend
    from cass_pipelines.llm.pricing import load_pricing
    from cass_pipelines.services.metering import collect_batches
    from cass_pipelines.services.retry import retry_dead_letter
    from cass_pipelines.services.runner import run_action

    config = Path(sample_home["CASS_HOME"]) / "cass.toml"
    config.write_text("batch_wait_s = 0.3\n" + config.read_text(encoding="utf-8"), encoding="utf-8")
    rt = open_runtime()
    seed_plan(rt, TODAY, "morning", ["research_deep_dive"])
    [unit] = plans.units_for_phase(rt.store, TODAY, "morning")
    uid, morning = unit["id"], FixedClock(NOW)
    assert [run_action(rt, uid, p, morning, run_id="r0").status for p in (0, 1)] == ["completed", "completed"]
    module_name, _, name = rt.registry.actions["session.research"].handler.partition(":")

    def failing(ctx):
        raise RuntimeError("boom (test)")
    with monkeypatch.context() as m:
        m.setattr(importlib.import_module(module_name), name, failing)
        assert run_action(rt, uid, 2, morning, run_id="r0").status == "failed"
    dl_id = rt.store.scalar("SELECT id FROM dead_letters WHERE work_unit_id = ?", [uid])
    night = FixedClock(NOW.replace(hour=23))
    with monkeypatch.context() as m:
        m.setattr(OfflineBackend, "collect_batch", lambda self, batch_id, items: None)   # the batch runs long
        out = retry_dead_letter(rt, dl_id, night, run_id="r1")
    unit = plans.get_unit(rt.store, uid)
    assert unit["defer_kind"] == "batch" and (unit["paid_day"], unit["paid_phase"]) == (TODAY, "night")
    assert out.status == "failed" and "not run now" in out.message   # the dead letter stays open
    collect_batches(rt.llm, rt.store, rt.settings, load_pricing(), night, lambda run_id: True)
    return rt, uid, dl_id, night


def _research_rows(rt, uid):
    return rt.store.all("SELECT date, phase, batch FROM llm_ledger WHERE work_unit_id = ? "
                        "AND action_id = 'session.research' ORDER BY ts", [uid])


def test_work_retried_at_night_on_its_own_day_uses_its_batched_answer_when_resumed(sample_home, monkeypatch):
    """A morning unit fails at session.research and is retried the same day at night: funded as night work,
    its call goes out in a message batch that outlasts the wait, and the unit waits for it. When the batch
    ends, the morning's run takes the unit back: it uses the answer paid for in the batch, not a new one."""
    from cass_pipelines.services.planning import take_back_waiting
    from cass_pipelines.services.runner import run_unit
    from cass_pipelines.services.watches import batch_resumes

    rt, uid, _, night = _unit_waiting_for_its_batch(sample_home, monkeypatch)
    assert [(r.date, r.phase) for r in batch_resumes(rt.store, rt.settings, rt.registry, night.now())] == [(TODAY, "morning")]
    assert take_back_waiting(rt, TODAY, "morning", night.now()) == [uid]
    run_unit(rt, uid, FixedClock(night.now() + timedelta(minutes=5)), run_id="r2")   # the morning's run
    unused = rt.store.all("SELECT custom_id FROM llm_batches WHERE work_unit_id = ? AND NOT used", [uid])
    assert _research_rows(rt, uid) == [{"date": TODAY, "phase": "night", "batch": True}] and not unused
    assert plans.get_unit(rt.store, uid)["status"] == "completed"


def test_a_dead_letter_retried_again_next_day_uses_the_batched_answer_paid_for_it(sample_home, monkeypatch):
    """The first retry (at night) was deferred for its batch and left the dead letter open ("not run
    now"). The next morning a person retries it again (`dlq retry`): paid from tomorrow's morning, its
    call is not batched, yet it takes up the answer its batch already paid for instead of paying again."""
    from cass_pipelines.services.retry import retry_dead_letter

    rt, uid, dl_id, _ = _unit_waiting_for_its_batch(sample_home, monkeypatch)
    retry_dead_letter(rt, dl_id, FixedClock(utc(TOMORROW, 8)), run_id="r2")
    rows = _research_rows(rt, uid)
    unused = rt.store.all("SELECT custom_id FROM llm_batches WHERE work_unit_id = ? AND NOT used", [uid])
    assert rows == [{"date": TODAY, "phase": "night", "batch": True}] and not unused, (
        f"session.research paid as {rows}; batched answers left unused: {unused}")


def test_a_retry_that_loses_the_claim_leaves_where_the_unit_is_paid_from(sample_home, monkeypatch):
    """The morning's resume run (r2) has taken the unit back and holds the claim of session.research when
    a person retries the still-open dead letter the next morning. The retry is skipped (the claim is live)
    and pays nothing, so the unit stays paid from (today, night): when r2 dies and its phase runs the unit
    again, it pays from there and uses the answer paid for in the batch."""
    from cass_pipelines.services.planning import take_back_waiting
    from cass_pipelines.services.retry import retry_dead_letter
    from cass_pipelines.services.runner import run_unit
    from cass_pipelines.store.claims import Owner, never_over

    rt, uid, dl_id, night = _unit_waiting_for_its_batch(sample_home, monkeypatch)
    assert take_back_waiting(rt, TODAY, "morning", night.now()) == [uid]
    claim = plans.start_action(rt.store, uid=uid, position=2, action_id="session.research", me=Owner.here("r2"),
                               is_run_over=never_over, now=night.now(), step_key=None)
    assert claim.ours
    tomorrow = FixedClock(utc(TOMORROW, 8))
    out = retry_dead_letter(rt, dl_id, tomorrow, run_id="r-person")
    assert "not run now" in out.message, out
    unit = plans.get_unit(rt.store, uid)
    kept = (unit["paid_day"], unit["paid_phase"])
    # r2 dies mid-action; recovery gives the action back and the phase's run takes the unit up again.
    plans.interrupt_action(rt.store, uid, 2, "owner died (test)", tomorrow.now())
    run_unit(rt, uid, FixedClock(tomorrow.now() + timedelta(minutes=1)), run_id="r3")
    rows = _research_rows(rt, uid)
    assert kept == (TODAY, "night") and rows == [{"date": TODAY, "phase": "night", "batch": True}], (
        f"a skipped retry left the unit paid from {kept}; session.research then paid as {rows}")


def test_a_journal_short_of_money_then_paused_on_a_later_day_is_paid_by_the_day_it_is_written(sample_home, monkeypatch):
    """SAMPLE_DAY's journal is refused money (its day is spent). Its catch-up tomorrow runs while the
    journal category is paused and pays nothing; tomorrow's own work then spends tomorrow's budget. After
    `resume`, the catch-up the day after is paid by that day (which has money), not by tomorrow."""
    from cass_pipelines.execution import run_journal

    rt, defs, instance, uid = _journal_refused_money_then_paused()
    monkeypatch.setenv(NOW_ENV, utc(TOMORROW, 8).isoformat())
    run_journal(defs, instance, SAMPLE_DAY)
    unit = plans.get_unit(rt.store, uid)
    assert unit["defer_kind"] == "paused"
    stored = (unit["paid_day"], unit["paid_phase"])
    spend(rt, TOMORROW, "research", rt.settings.daily_budget_usd, "req_tomorrow_spent")   # tomorrow's own work
    assert main(["resume", "--category", "journal"]) == 0
    after = TOMORROW + timedelta(days=1)
    monkeypatch.setenv(NOW_ENV, utc(after, 8).isoformat())
    run_journal(defs, instance, SAMPLE_DAY)
    unit = plans.get_unit(rt.store, uid)
    rows = rt.store.all("SELECT DISTINCT date, phase FROM llm_ledger WHERE work_unit_id = ?", [uid])
    assert unit["status"] == "completed" and rows == [{"date": after, "phase": "night"}], (
        f"paused run stored paid_from {stored}; the journal is {unit['status']} ({unit['reason']}), "
        f"charged as {rows}")


def test_a_journal_its_own_day_funded_with_a_lowered_hold_is_not_short_of_money(sample_home, monkeypatch):
    """SAMPLE_DAY's journal category has less room than the journal's full hold, so metering lowers the
    call's output bound to fit: the full-size ask is kept as a `refused` reservation, then the lowered one
    is held and the call goes out (batched) on SAMPLE_DAY's money. Only its batch defers it (it runs past
    the wait, then ends without an answer): its day funded it, so it is written again from SAMPLE_DAY."""
    from pathlib import Path

    from cass_pipelines.definitions import build_defs
    from cass_pipelines.domain.clock import FixedClock
    from cass_pipelines.execution import instance_for, run_journal, run_memory
    from cass_pipelines.llm.base import BatchAnswer
    from cass_pipelines.llm.offline import OfflineBackend
    from cass_pipelines.llm.pricing import load_pricing
    from cass_pipelines.services.metering import collect_batches
    from cass_pipelines.services.runtime import open_runtime

    config = Path(sample_home["CASS_HOME"]) / "cass.toml"
    config.write_text("batch_wait_s = 0.3\n" + config.read_text(encoding="utf-8"), encoding="utf-8")
    rt = open_runtime()
    defs, instance = build_defs(rt.settings, rt.registry), instance_for(rt.settings)
    assert run_memory(defs, instance).success   # (a journal waits for the day's conversations)
    # SAMPLE_DAY is nearly spent: room for a lowered journal call, not a full one.
    from cass_pipelines.store.budget import budget_status
    room = budget_status(rt.store, rt.settings, SAMPLE_DAY)["remaining_usd"]
    spend(rt, SAMPLE_DAY, "research", room - 0.02, "req_day_nearly_spent")
    uid = plans.unit_id(SAMPLE_DAY, "night", "journal")
    with monkeypatch.context() as m:
        m.setattr(OfflineBackend, "collect_batch", lambda self, batch_id, items: None)   # the batch runs long
        run_journal(defs, instance, SAMPLE_DAY)
    unit = plans.get_unit(rt.store, uid)
    holds = rt.store.all("SELECT status FROM reservations WHERE work_unit_id = ? AND date = ? ORDER BY created_at",
                         [uid, SAMPLE_DAY])
    assert unit["defer_kind"] == "batch", unit   # deferred only by its batch's wait
    assert [h["status"] for h in holds] == ["lowered", "held"], holds   # lowered to fit, then held: funded
    # The batch ends without an answer: nothing billed, its hold released.
    with monkeypatch.context() as m:
        m.setattr(OfflineBackend, "collect_batch", lambda self, batch_id, items: {
            i.custom_id: BatchAnswer(i.custom_id, None, "expired") for i in items})
        collect_batches(rt.llm, rt.store, rt.settings, load_pricing(), FixedClock(NOW), lambda run_id: True)
    assert run_journal(defs, instance, SAMPLE_DAY).success
    rows = rt.store.all("SELECT DISTINCT date, phase FROM llm_ledger WHERE work_unit_id = ?", [uid])
    unit = plans.get_unit(rt.store, uid)
    assert unit["status"] == "completed", unit
    assert rows == [{"date": SAMPLE_DAY, "phase": "night"}], (
        f"a journal its own day funded (lowered), deferred only by its batch, was charged as {rows}")


def test_the_journal_of_a_day_with_work_is_written_after_a_pause_of_more_than_a_week(sample_home, monkeypatch):
    """Everything paused for nine days (a holiday) from a day's morning, then resumed: the journal the
    pause deferred is written by the first run-day after `resume`, although its day is more than a week
    back: a pause stops the clock of the work it deferred (found by a three-week soak, where the journals
    of the first paused days were never written, and their units were cancelled as expired)."""
    first = TODAY
    monkeypatch.setenv(NOW_ENV, utc(first, 6, 30).isoformat())
    assert main(["run-day", "--date", first.isoformat(), "--phases", "morning"]) == 0
    monkeypatch.setenv(NOW_ENV, utc(first, 7, 0).isoformat())
    assert main(["pause", "--reason", "holiday"]) == 0
    monkeypatch.setenv(NOW_ENV, utc(first, 22, 30).isoformat())
    assert main(["run-day", "--date", first.isoformat(), "--phases", "night"]) == 0
    rt = open_runtime()
    journal_unit = rt.store.one("SELECT status, defer_kind FROM work_units WHERE date = ? "
                                "AND template_id = 'daily_journal'", [first])
    assert journal_unit == {"status": "deferred", "defer_kind": "paused"}, journal_unit
    back = first + timedelta(days=9)
    monkeypatch.setenv(NOW_ENV, utc(back, 5, 0).isoformat())
    assert main(["resume"]) == 0
    monkeypatch.setenv(NOW_ENV, utc(back, 6, 30).isoformat())
    assert main(["run-day", "--date", back.isoformat(), "--phases", "morning"]) == 0
    written = rt.store.one("SELECT text FROM journals WHERE date = ? AND kind = 'daily'", [first])
    assert written is not None, rt.store.one("SELECT status, defer_kind, reason FROM work_units WHERE date = ? "
                                             "AND template_id = 'daily_journal'", [first])


def test_a_second_short_pause_does_not_forget_a_holiday_before_it(sample_home):
    """A global holiday pause of ten days, resumed; the next day a five-minute pause: every pause is kept
    (store `pauses`), so the week's look-back still reaches over the holiday."""
    from cass_pipelines.services.lookback import unpaused_days_back
    from cass_pipelines.store import control

    rt = open_runtime()
    start = date(2026, 11, 1)
    control.pause(rt.store, None, "holiday", utc(start))
    control.resume(rt.store, None, utc(start + timedelta(days=10)))
    day = start + timedelta(days=11)
    kept = unpaused_days_back(rt.store, rt.settings, day, 7).everything
    assert kept < start                                         # the holiday stopped the clock
    control.pause(rt.store, None, "a phone call", utc(day, 9))
    control.resume(rt.store, None, utc(day, 10))
    assert unpaused_days_back(rt.store, rt.settings, day, 7).everything == kept


def test_a_category_pause_stops_only_its_own_clock(sample_home):
    """Only research was paused (ten days): the look-backs of other categories' work and of the journals
    count global pauses (and the journal's own), not research's."""
    from cass_pipelines.services.lookback import unpaused_days_back
    from cass_pipelines.store import control

    rt = open_runtime()
    start = date(2026, 11, 1)
    control.pause(rt.store, "research", "quiet on research", utc(start))
    control.resume(rt.store, "research", utc(start + timedelta(days=10)))
    day = start + timedelta(days=11)
    # the journal catch-up and the expiry of (say) creative work deferred by its budget
    since = unpaused_days_back(rt.store, rt.settings, day, 7)
    assert since.of("creative") == since.of("journal") == day - timedelta(days=7)
    assert since.of("research") < start


def test_work_a_category_pause_deferred_is_offered_again_after_a_pause_of_more_than_a_week(sample_home, monkeypatch):
    """Only research paused for ten days from a day's morning, then `resume --category research`: the
    research work the pause deferred (and work of another category it holds at a research step) survives the
    nightly expiry while paused; the research work is offered again by the
    first morning after `resume`, although its day is more than a week back; reflection work the budget
    deferred that morning still expires after a week (its category was never paused)."""
    first, back = TODAY, TODAY + timedelta(days=10)
    rt = open_runtime()
    # (and curiosity work the research pause holds through its research step: kept while that pause holds it)
    seed_plan(rt, first, "morning", ["research_deep_dive", "morning_reflection", "open_question_review"])
    spend(rt, first, "reflection", rt.settings.category_limit("reflection"), "req_reflection_spent", phase="morning")
    monkeypatch.setenv(NOW_ENV, utc(first, 6, 0).isoformat())
    assert main(["pause", "--category", "research", "--reason", "quiet on research"]) == 0
    monkeypatch.setenv(NOW_ENV, utc(first, 6, 30).isoformat())
    assert main(["run-day", "--date", first.isoformat(), "--phases", "morning"]) == 0
    research, reflection, curiosity = (
        rt.store.scalar("SELECT id FROM work_units WHERE date = ? AND template_id = ?", [first, t])
        for t in ("research_deep_dive", "morning_reflection", "open_question_review"))
    assert plans.get_unit(rt.store, research)["defer_kind"] == "paused"
    assert plans.get_unit(rt.store, curiosity)["defer_kind"] == "paused", plans.get_unit(rt.store, curiosity)
    assert plans.get_unit(rt.store, reflection)["defer_kind"] == "budget"
    monkeypatch.setenv(NOW_ENV, utc(first + timedelta(days=8), 22, 0).isoformat())
    # The nightly upkeep, research still paused, expires the deferred work past its category's look-back.
    assert main(["trigger", "system_maintenance"]) == 0
    assert plans.get_unit(rt.store, reflection)["reason"].startswith("expired"), plans.get_unit(rt.store, reflection)
    kept = plans.get_unit(rt.store, research)
    assert kept["status"] == "deferred", f"research work its own pause deferred was lost: {kept['reason']}"
    held = plans.get_unit(rt.store, curiosity)
    assert held["status"] == "deferred", f"work the research pause holds was lost: {held['reason']}"
    monkeypatch.setenv(NOW_ENV, utc(back, 5, 0).isoformat())
    assert main(["resume", "--category", "research"]) == 0
    monkeypatch.setenv(NOW_ENV, utc(back, 6, 30).isoformat())
    seed_plan(rt, back, "morning", ["world_check_in"])   # no research of its own (one unit of a template a phase)
    assert main(["run-day", "--date", back.isoformat(), "--phases", "morning"]) == 0
    again = plans.get_unit(rt.store, research)["reoffered_as"]
    assert again and plans.get_unit(rt.store, again)["date"] == back, plans.get_unit(rt.store, research)
    # The curiosity work's clock was research's too: after `resume` it is offered again, not expired.
    monkeypatch.setenv(NOW_ENV, utc(back, 22, 0).isoformat())
    assert main(["trigger", "system_maintenance"]) == 0
    curio = plans.get_unit(rt.store, curiosity)
    assert curio["reoffered_as"] or curio["status"] == "deferred", curio


def test_approved_work_the_budget_defers_exits_3_as_a_triggered_unit_does(env, capsys):
    """`approvals approve` of work today's budget cannot pay for: the decision is kept, the unit is deferred
    for money, and the command exits 3 (refused on its way), as `trigger` does, not 1 (a failure)."""
    rt, instance, defs = env
    seed_plan(rt, YESTERDAY, "evening", ["research_batch"])
    assert run_phase(defs, instance, YESTERDAY, "evening").success
    [gated] = plans.units_for_phase(rt.store, YESTERDAY, "evening")
    spend(rt, TODAY, "research", rt.settings.daily_budget_usd, "req_today_spent", "morning")
    code, out = cli_json(capsys, "approvals", "approve", gated["id"], "--by", "ana", "--reason", "worth it")
    assert out["approval"]["state"] == "approved" and out["work_unit"]["defer_kind"] == "budget", out
    assert code == 3


def test_catch_ups_a_memory_pause_deferred_for_days_are_offered_again_one_a_phase(env):
    """Memory paused for three days, each with a catch-up planned for its afternoon, then resumed (found by
    a three-week soak, where one phase then ran the three catch-ups at once, paying three times for the same
    work): the first phase after `resume` takes the oldest up again and the others wait, deferred with the
    reason; once it has completed, the next phase supersedes them (it did their work: whatever was pending)
    rather than running them one a phase."""
    from support import days_before

    rt, instance, defs = env
    assert main(["pause", "--category", "memory", "--reason", "memory review"]) == 0
    paused_days = [days_before(n) for n in (4, 3, 2)]
    for day in paused_days:
        seed_plan(rt, day, "afternoon", ["conversation_catchup"])
        assert run_phase(defs, instance, day, "afternoon").success
    waiting = [u["id"] for day in paused_days for u in plans.units_for_phase(rt.store, day, "afternoon")]
    assert main(["resume", "--category", "memory"]) == 0
    after = ((YESTERDAY, "night"), (TODAY, "morning"))   # (idle: no conversation in the sample data then)
    for day, phase in after:
        seed_plan(rt, day, phase, [])
        assert run_phase(defs, instance, day, phase).success
    ran = [[(u["deferred_from"], u["status"]) for u in plans.units_for_phase(rt.store, day, phase)]
           for day, phase in after]
    assert ran == [[(waiting[0], "completed")], []], ran
    [done] = [u["id"] for u in plans.units_for_phase(rt.store, *after[0])]
    for uid in waiting[1:]:
        unit = plans.get_unit(rt.store, uid)
        assert (unit["status"], unit["reoffered_as"]) == ("superseded", None), unit
        assert unit["reason"].startswith(f"superseded by {done} ({YESTERDAY} night)"), unit["reason"]


def test_a_catch_up_the_memory_job_did_meanwhile_is_superseded_not_offered_nor_expired(env, monkeypatch):
    """The soak's fault: memory and reflection paused one evening, so its planned catch-up and synthesis were
    deferred by the pause; after `resume` the memory job's catch-up, and a synthesis run by hand, completed.
    The next phase does not offer the catch-up again (the memory job did its work: it is superseded, naming
    that unit), the upkeep a week on does not expire it, and a retry of a dead letter of it has nothing to
    do. The synthesis, work of its own focus, is offered again as before."""
    from support import days_before

    from cass_pipelines.domain.clock import clock_from_env
    from cass_pipelines.domain.states import DeadLetterKind, RetryStatus
    from cass_pipelines.execution import run_memory
    from cass_pipelines.services.retry import retry_dead_letter
    from cass_pipelines.store import dead_letters

    rt, instance, defs = env
    day = days_before(2)
    for category in ("memory", "reflection"):
        assert main(["pause", "--category", category, "--reason", "a quiet evening"]) == 0
    seed_plan(rt, day, "evening", ["conversation_catchup", "synthesis"])
    assert run_phase(defs, instance, day, "evening").success
    catchup, synthesis = (u["id"] for u in plans.units_for_phase(rt.store, day, "evening"))
    for category in ("memory", "reflection"):
        assert main(["resume", "--category", category]) == 0
    assert run_memory(defs, instance).success
    [by] = rt.store.all("SELECT id FROM work_units WHERE origin = 'job' AND template_id = 'conversation_catchup' "
                        "AND status = 'completed'")
    assert main(["trigger", "synthesis"]) == 0
    seed_plan(rt, YESTERDAY, "evening", [])
    assert run_phase(defs, instance, YESTERDAY, "evening").success
    unit = plans.get_unit(rt.store, catchup)
    assert (unit["status"], unit["reoffered_as"]) == ("superseded", None), unit
    assert unit["reason"].startswith(f"superseded by {by['id']}"), unit["reason"]
    assert plans.get_unit(rt.store, synthesis)["reoffered_as"], plans.get_unit(rt.store, synthesis)
    monkeypatch.setenv(NOW_ENV, utc(TODAY + timedelta(days=8), 22).isoformat())
    assert main(["trigger", "system_maintenance"]) == 0
    assert plans.get_unit(rt.store, catchup)["status"] == "superseded", plans.get_unit(rt.store, catchup)
    dead_letters.add(rt.store, dl_id="dl_catchup", kind=DeadLetterKind.ACTION, error="boom", now=NOW,
                     work_unit_id=catchup)
    outcome = retry_dead_letter(rt, "dl_catchup", clock_from_env())
    assert outcome.status == RetryStatus.NOTHING_TO_DO and f"superseded by {by['id']}" in outcome.message, outcome


def test_a_catch_up_whose_summaries_were_carried_over_from_before_a_waiting_one_was_due_does_not_supersede_it(env):
    """A catch-up summarised the idle conversations in the afternoon, then was deferred at its title step; the
    evening's catch-up was deferred too, and conversations went idle in between. Offered again the next
    morning, the first completes with its summary step carried over from the afternoon: it did not find what
    the evening's would have found, so the evening's is not superseded (its work has to be done yet)."""
    from support import days_before

    from cass_pipelines.domain.phases import phase_window
    from cass_pipelines.domain.plan_rules import PlannedUnit
    from cass_pipelines.domain.states import ActionStatus, DeferKind, UnitStatus
    from cass_pipelines.services.lookback import supersede_waiting

    rt, _, _ = env
    day, template = days_before(2), rt.registry.templates["conversation_catchup"]
    evening = phase_window(day, "evening", rt.settings)[0]
    morning = phase_window(day + timedelta(days=1), "morning", rt.settings)[0]
    units = [PlannedUnit(phase, template.id, template.category, template.priority, "", "", 0.01)
             for phase in ("afternoon", "evening")]
    plans.save_day_plan(rt.store, day=day, revision=1, source="llm", intention="test", from_phase="afternoon",
                        phases=["afternoon", "evening"], units=units, dropped=[], offline=True,
                        now=evening - timedelta(hours=10))
    [first], [waiting] = (plans.units_for_phase(rt.store, day, phase) for phase in ("afternoon", "evening"))
    summarised_at = evening - timedelta(hours=3)
    plans.set_unit_status(rt.store, first["id"], UnitStatus.RUNNING, summarised_at)
    plans.record_action(rt.store, uid=first["id"], position=0, action_id=template.action_sequence[0],
                        status=ActionStatus.COMPLETED, now=summarised_at)
    plans.set_unit_status(rt.store, first["id"], UnitStatus.DEFERRED, summarised_at, defer_kind=DeferKind.BUDGET)
    plans.set_unit_status(rt.store, waiting["id"], UnitStatus.DEFERRED, evening, defer_kind=DeferKind.BUDGET)
    # The next morning the first is offered again (its summary step carried over) and completes.
    assert plans.open_phase(rt.store, day=day + timedelta(days=1), phase="morning", revision=1, idle=True,
                            deferrals=[], reoffers=[(first, units[0])], now=morning)
    [again] = plans.units_for_phase(rt.store, day + timedelta(days=1), "morning")
    plans.set_unit_status(rt.store, again["id"], UnitStatus.RUNNING, morning + timedelta(minutes=5))
    plans.record_action(rt.store, uid=again["id"], position=1, action_id=template.action_sequence[1],
                        status=ActionStatus.COMPLETED, now=morning + timedelta(minutes=6))
    plans.set_unit_status(rt.store, again["id"], UnitStatus.COMPLETED, morning + timedelta(minutes=6))

    assert supersede_waiting(rt.store, rt.settings, rt.registry, morning + timedelta(hours=1)) == []
    assert plans.get_unit(rt.store, waiting["id"])["status"] == "deferred", plans.get_unit(rt.store, waiting["id"])
