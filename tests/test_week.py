"""Goals, the weekly intention, threads of work, approvals, learning and run-week (issue 15).

Real DuckDB, a real Dagster instance, the offline LLM, the suite's injected calendar."""
import json
from datetime import date, datetime, time, timedelta, timezone

import dagster as dg
import pytest
from support import NOW, SAMPLE_DAY, TODAY, seed_plan

from cass_pipelines.cli.day_cmds import render_report
from cass_pipelines.cli.main import main
from cass_pipelines.definitions import build_defs
from cass_pipelines.domain.clock import NOW_ENV
from cass_pipelines.domain.goals import (
    DIGEST_BEST,
    DIGEST_GOALS,
    DIGEST_WORST,
    WorkStats,
    learning_digest,
    over_share,
    week_start,
)
from cass_pipelines.domain.plan_rules import PlanInputs, ProposedUnit, score_template, validate_plan
from cass_pipelines.domain.states import ApprovalState, ClaimState
from cass_pipelines.execution import QUIET, execute, instance_for, run_phase, run_tags
from cass_pipelines.services.plan_view import plan_view
from cass_pipelines.services.planning import decision_context
from cass_pipelines.services.runtime import open_runtime
from cass_pipelines.services.week import WeekContext
from cass_pipelines.store import approvals, learning, plans
from cass_pipelines.store import goals as goal_store
from cass_pipelines.store import journal as journal_store

DAY = SAMPLE_DAY
WEEK = week_start(DAY)


@pytest.fixture
def env(sample_home):
    rt = open_runtime()
    return rt, instance_for(rt.settings), build_defs(rt.settings, rt.registry)


def cli_json(capsys, *argv) -> tuple[int, object]:
    capsys.readouterr()
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def plan_the_week(rt, defs, instance, week=WEEK):
    result = execute(defs, instance, "week_job", QUIET, run_tags(trigger="test"), partition_key=week.isoformat())
    assert result.success
    return result


# ---- goals -------------------------------------------------------------------------------------

def test_goal_add_list_close_through_the_cli(sample_home, capsys):
    code, goal = cli_json(capsys, "goal", "add", "Write up what I know about explaining uncertainty",
                          "--criterion", "a wiki note with three worked examples", "--templates",
                          "writing_session,knowledge_building")
    assert code == 0 and goal["source"] == "person" and goal["status"] == "active"
    assert goal["templates"] == ["writing_session", "knowledge_building"]
    code, listed = cli_json(capsys, "goal", "list")
    assert code == 0 and [g["id"] for g in listed] == [goal["id"]] and listed[0]["progress"] == []
    code, closed = cli_json(capsys, "goal", "close", goal["id"], "--achieved", "--reason", "note written")
    assert code == 0 and closed["status"] == "achieved" and closed["close_reason"] == "note written"
    assert cli_json(capsys, "goal", "list")[1] == []
    assert [g["id"] for g in cli_json(capsys, "goal", "list", "--all")[1]] == [goal["id"]]
    # Closing twice, an unknown goal, an unknown template, a blank title: one clear line, exit 2.
    assert main(["goal", "close", goal["id"], "--reason", "again"]) == 2
    assert "not active" in capsys.readouterr().err
    assert main(["goal", "close", "goal_nope", "--reason", "x"]) == 2
    assert main(["goal", "add", "x", "--criterion", "y", "--templates", "no_such"]) == 2
    assert "unknown template(s) 'no_such'" in capsys.readouterr().err
    assert main(["goal", "add", "  ", "--criterion", "y"]) == 2


def test_the_weekly_intention_makes_goals_from_the_self_model_and_is_planned_once(env):
    rt, instance, defs = env
    # While a pause holds it the week is not planned (no fallback kept for the week, no call): after `resume`.
    assert main(["pause", "--category", "system", "--reason", "quiet week"]) == 0
    plan_the_week(rt, defs, instance)
    assert goal_store.intention(rt.store, WEEK) is None and not rt.store.scalar("SELECT count(*) FROM llm_ledger")
    assert main(["resume", "--category", "system"]) == 0
    first = plan_the_week(rt, defs, instance)
    made = goal_store.goals(rt.store, "active")
    assert made and all(g["source"] == "agent" and g["offline"] for g in made)
    refs = {r["id"] for r in rt.store.all("SELECT id FROM growth_edges UNION ALL SELECT id FROM open_questions")}
    assert all(g["origin_ref"] in refs and g["success_criterion"] and g["templates"] for g in made)
    week = goal_store.intention(rt.store, WEEK)
    assert week["source"] == "llm" and week["intention"] and set(week["goal_ids"]) <= {g["id"] for g in made}
    calls = rt.store.scalar("SELECT count(*) FROM llm_ledger WHERE action_id = 'plan.week'")
    assert calls == 2   # the goals, then the week
    # The asset is partitioned by week (Monday, the agent's timezone) and visible in Dagster.
    mats = instance.fetch_materializations(dg.AssetKey("weekly_intention"), limit=5).records
    assert {m.partition_key for m in mats} == {WEEK.isoformat()}
    assert mats[0].asset_materialization.metadata["source"].value == "llm"   # (the paused one: "paused")
    assert first.dagster_run.tags["dagster/partition"] == WEEK.isoformat()
    # Materialising it again keeps the week's intention and pays for nothing.
    plan_the_week(rt, defs, instance)
    assert goal_store.intention(rt.store, WEEK) == week
    assert rt.store.scalar("SELECT count(*) FROM llm_ledger WHERE action_id = 'plan.week'") == calls


def test_a_person_s_goal_is_used_and_no_goals_are_made_when_one_is_active(env, capsys):
    rt, instance, defs = env
    code, goal = cli_json(capsys, "goal", "add", "Get better at saying I don't know", "--criterion", "three "
                          "conversations where I said so early", "--templates", "growth_edge_work")
    plan_the_week(rt, defs, instance)
    assert [g["id"] for g in goal_store.goals(rt.store, "active")] == [goal["id"]]
    assert goal_store.intention(rt.store, WEEK)["goal_ids"] == [goal["id"]]


def test_each_day_plan_sees_the_week_and_names_goals_and_progress_is_written_back(env):
    rt, instance, defs = env
    # Not the week's Monday (the suite's calendar decides whether DAY is one): that day's budget pays for the
    # week's planning, so the agent plans it otherwise; there its morning held only work waiting for idle.
    day = DAY + timedelta(days=1) if DAY == WEEK else DAY
    plan_the_week(rt, defs, instance)
    week = goal_store.intention(rt.store, WEEK)
    ctx = decision_context(rt, day, ["morning", "afternoon", "evening", "night"], idle=True, last=None,
                           now=datetime.combine(day, time(6), tzinfo=timezone.utc))
    prompt = ctx.render()
    assert week["intention"][:80] in prompt and "my goals this week" in prompt
    assert run_phase(defs, instance, day, "morning").success
    view = plan_view(rt, day)
    assert view["week"]["intention"] == week["intention"]
    units = [u for units in view["phases"].values() for u in units]
    assert units and all(u["goal_note"] for u in units)   # every unit names its goal or says why none
    named = [u for u in units if u["goal_id"]]
    assert len(named) / len(units) >= 0.8 and {u["goal_id"] for u in named} <= set(week["goal_ids"])
    done = [u for u in view["phases"]["morning"] if u["status"] == "completed" and u["goal_id"]]
    assert done, view["phases"]["morning"]
    for u in done:
        [note] = [p for p in goal_store.progress(rt.store, u["goal_id"], limit=50) if p["work_unit_id"] == u["work_unit_id"]]
        assert note["note"].startswith(u["template_id"]) and note["offline"]


def test_a_unit_continues_yesterday_s_unit_of_the_same_template_only():
    threads = [{"id": "u_yesterday", "template_id": "synthesis", "focus": "attention", "narrative": "I joined two ideas."}]
    week = WeekContext(WEEK, "my week", [{"id": "g1", "title": "t", "success_criterion": "c",
                                          "templates": ["synthesis"], "progress": []}], threads, [], {})
    kept = week.settle(ProposedUnit(template_id="synthesis", motivation="more", goal_id="g1", continues="u_yesterday"))
    assert kept.continues == "u_yesterday" and "I joined two ideas." in kept.motivation and kept.goal_id == "g1"
    other = week.settle(ProposedUnit(template_id="writing_session", goal_id="g_other", goal_note="x",
                                     continues="u_yesterday"))
    assert other.continues is None and other.goal_id is None and "not held this week" in other.goal_note
    assert week.assign(ProposedUnit(template_id="synthesis")).goal_id == "g1"
    assert week.assign(ProposedUnit(template_id="system_maintenance")).goal_note.startswith("fallback:")


def test_a_continued_thread_carries_its_notes(env):
    rt, instance, defs = env
    yesterday = DAY - timedelta(days=1)
    seed_plan(rt, yesterday, "morning", ["morning_reflection"])
    assert run_phase(defs, instance, yesterday, "morning").success
    [prev] = plans.units_for_phase(rt.store, yesterday, "morning")
    ctx = decision_context(rt, DAY, ["morning"], idle=True, last=None,
                           now=datetime.combine(DAY, time(6), tzinfo=timezone.utc))
    assert ctx.week is not None and [t["id"] for t in ctx.week.threads] == [prev["id"]]
    assert prev["id"] in ctx.render()
    unit = ctx.week.settle(ProposedUnit(template_id="morning_reflection", continues=prev["id"]))
    goal_store.link_units(rt.store, [("u_today", None, "no goal", unit.continues)], NOW)
    rt.store.execute("INSERT INTO work_summaries (work_unit_id, date, phase, template_id, status, narrative, "
                     "key_insights, questions_raised, questions_addressed, artifacts, cost_usd, offline, created_at) "
                     "VALUES ('u_today', ?, 'morning', 'morning_reflection', 'completed', 'today''s part', '[]', '[]', "
                     "'[]', '[]', 0, true, ?)", [DAY, NOW])
    notes = goal_store.thread_notes(rt.store, "u_today")
    assert [n["work_unit_id"] for n in notes] == ["u_today", prev["id"]]


# ---- approvals ---------------------------------------------------------------------------------

def test_approval_gated_work_waits_then_runs_after_approve(env, capsys):
    rt, instance, defs = env
    assert rt.registry.templates["research_batch"].requires_approval
    seed_plan(rt, DAY, "afternoon", ["research_batch", "synthesis"])
    assert run_phase(defs, instance, DAY, "afternoon").success
    gated, other = plans.units_for_phase(rt.store, DAY, "afternoon")
    assert gated["status"] == "awaiting_approval" and other["status"] == "completed"
    assert plans.action_runs(rt.store, gated["id"]) == []          # nothing ran, nothing was paid
    assert rt.store.scalar("SELECT count(*) FROM llm_ledger WHERE work_unit_id = ?", [gated["id"]]) == 0
    code, waiting = cli_json(capsys, "approvals", "list")
    assert code == 0 and [w["work_unit_id"] for w in waiting] == [gated["id"]]
    assert waiting[0]["state"] == "pending" and "research.run_batch" in waiting[0]["what"]
    assert waiting[0]["estimated_cost_usd"] == pytest.approx(gated["estimated_cost_usd"])
    # A re-run of the phase leaves it waiting (no second request, nothing run).
    assert run_phase(defs, instance, DAY, "afternoon").success
    assert plans.get_unit(rt.store, gated["id"])["status"] == "awaiting_approval"

    code, out = cli_json(capsys, "approvals", "approve", gated["id"], "--by", "ana", "--reason", "worth it")
    assert code == 0 and out["success"] and out["approval"]["state"] == "approved"
    assert out["approval"]["decided_by"] == "ana" and out["work_unit"]["status"] == "completed"
    run = instance.get_run_by_id(out["run_id"])
    assert run.job_name == "approval_job" and run.remote_job_origin is not None   # listed in the UI under its job
    # It ran through the usual claims and budget: each action once, paid by this run, then summarised.
    ran = plans.action_runs(rt.store, gated["id"])
    assert [r["status"] for r in ran] == ["completed"] * 3 and {r["run_id"] for r in ran} == {out["run_id"]}
    assert rt.store.scalar("SELECT count(DISTINCT run_id) FROM llm_ledger WHERE work_unit_id = ?",
                           [gated["id"]]) == 1
    assert rt.store.scalar("SELECT count(*) FROM reservations WHERE work_unit_id = ? AND status = 'held'",
                           [gated["id"]]) == 0
    assert rt.store.one("SELECT status FROM work_summaries WHERE work_unit_id = ?", [gated["id"]])["status"] == "completed"
    # Deciding again is refused with one line.
    assert main(["approvals", "approve", gated["id"]]) != 0
    assert main(["approvals", "approve", "no_such_unit"]) == 2


def test_rejected_work_is_recorded_with_its_reason_and_requests_expire(env, capsys, monkeypatch):
    rt, instance, defs = env
    seed_plan(rt, DAY, "afternoon", ["research_batch"])
    assert run_phase(defs, instance, DAY, "afternoon").success
    [unit] = plans.units_for_phase(rt.store, DAY, "afternoon")
    assert main(["approvals", "reject", unit["id"]]) == 2                 # a rejection needs a reason
    code, out = cli_json(capsys, "approvals", "reject", unit["id"], "--reason", "not this week", "--by", "ana")
    assert code == 0 and out["approval"]["state"] == "rejected"
    assert out["work_unit"]["status"] == "cancelled" and out["work_unit"]["reason"] == "rejected by ana: not this week"
    assert plans.action_runs(rt.store, unit["id"]) == []
    # Another one waits past its time: it expires, its unit is cancelled, and a late approval is refused.
    later = DAY + timedelta(days=1)
    seed_plan(rt, later, "afternoon", ["research_batch"])
    assert run_phase(defs, instance, later, "afternoon").success
    [late] = plans.units_for_phase(rt.store, later, "afternoon")
    monkeypatch.setenv(NOW_ENV, (NOW + timedelta(hours=49)).isoformat())
    code, listed = cli_json(capsys, "approvals", "list", "--all")
    states = {r["work_unit_id"]: r["state"] for r in listed}
    assert states == {unit["id"]: "rejected", late["id"]: "expired"}
    assert plans.get_unit(rt.store, late["id"])["status"] == "cancelled"
    assert plans.get_unit(rt.store, late["id"])["reason"].startswith("approval expired")
    capsys.readouterr()
    assert main(["approvals", "approve", late["id"]]) == 2                # nothing to decide: no run for it
    assert "its approval request is expired" in capsys.readouterr().err
    assert approvals.get(rt.store, late["id"])["state"] == ApprovalState.EXPIRED


# ---- learning ----------------------------------------------------------------------------------

def stats(key, units, completed, failed, insights=0, rating=None, cost=0.1):
    return WorkStats(key, units, completed, failed, cost, insights, 0, 0, rating)


def test_learning_statistics_per_template_and_goal_from_finished_work(runtime):
    rt = runtime
    rows = [("a1", "synthesis", "completed", 5, '["i1", "i2"]', 0.02, "g1"),
            ("a2", "synthesis", "completed", 4, '["i3"]', 0.03, "g1"),
            ("a3", "synthesis", "failed", None, '[]', 0.01, None),
            ("b1", "writing_session", "completed", 1, '[]', 0.05, None)]
    for uid, template, status, rating, found, cost, goal in rows:
        rt.store.execute("INSERT INTO work_units (id, date, phase, position, template_id, category, focus, motivation,"
                         " status, estimated_cost_usd, origin, created_at) VALUES (?, ?, 'morning', 0, ?, 'reflection',"
                         " 'f', 'm', ?, 0.01, 'plan', ?)", [uid, DAY, template, status, NOW])
        rt.store.execute("INSERT INTO work_summaries (work_unit_id, date, phase, template_id, status, narrative, "
                         "key_insights, questions_raised, questions_addressed, artifacts, cost_usd, offline, "
                         "self_rating, created_at) VALUES (?, ?, 'morning', ?, ?, 'n', ?, '[]', '[]', '[]', ?, true, ?, ?)",
                         [uid, DAY, template, status, found, cost, rating, NOW])
        if goal:
            goal_store.link_units(rt.store, [(uid, goal, "serves it", None)], NOW)
    rt.store.execute("INSERT INTO open_questions (id, question, status, raised_by, created_at) VALUES "
                     "('q1', 'why?', 'answered', 'a1', ?), ('q2', 'how?', 'open', 'a2', ?)", [NOW, NOW])
    by = {s.key: s for s in learning.template_stats(rt.store, DAY)}
    s = by["synthesis"]
    assert (s.units, s.completed, s.failed, s.insights) == (3, 2, 1, 3)
    assert s.completion_rate == pytest.approx(2 / 3) and s.failure_rate == pytest.approx(1 / 3)
    assert s.cost_per_insight == pytest.approx(0.02) and s.rating == pytest.approx(4.5)
    assert s.questions_addressed_rate == pytest.approx(0.5)
    assert by["synthesis"].score() > by["writing_session"].score()
    assert {g.key: g.units for g in learning.goal_stats(rt.store, DAY)} == {"g1": 2}
    # A day learns only from its past: nothing before these units.
    assert learning.template_stats(rt.store, DAY - timedelta(days=1)) == []


def test_the_digest_is_bounded_and_the_fallback_scorer_uses_what_worked(runtime):
    many = [stats(f"t{i}", 10, 10 - i % 10, i % 10, insights=i, rating=1 + i % 5) for i in range(200)]
    goals = [stats(f"g{i}", i, i, 0) for i in range(1, 50)]
    digest = learning_digest(many, goals, {f"g{i}": "a goal " * 40 for i in range(50)})
    assert len(digest) <= DIGEST_BEST + DIGEST_WORST + DIGEST_GOALS and all(len(line) <= 200 for line in digest)
    assert learning_digest(many[:3], [], {}) == learning_digest(many[:3], [], {})
    inputs = PlanInputs(registry=runtime.registry, phases=["afternoon"], category_remaining={})
    neutral = score_template("synthesis", "afternoon", inputs, [])
    inputs.learned = {"synthesis": stats("synthesis", 8, 8, 0, insights=20, rating=5).score()}
    assert score_template("synthesis", "afternoon", inputs, []) > neutral
    inputs.learned = {"synthesis": stats("synthesis", 8, 2, 6, rating=1).score()}
    assert score_template("synthesis", "afternoon", inputs, []) < neutral


def test_no_template_takes_over_a_week_unless_its_goals_call_for_it(runtime):
    week = ["synthesis"] * 5 + ["writing_session"] * 3 + ["growth_edge_work"] * 2
    assert over_share(week, set()) == ["synthesis"]
    assert over_share(week, {"synthesis"}) == []
    # The planner's rule: one more synthesis would be 4 of 8 units this week (50%), so it is dropped...
    inputs = PlanInputs(registry=runtime.registry, phases=["afternoon", "evening"],
                        category_remaining={c: 5.0 for c in ("reflection", "creative", "research")},
                        week_templates=["synthesis"] * 3 + ["writing_session", "growth_edge_work"] * 2)
    proposed = {"afternoon": [ProposedUnit(template_id="synthesis")],
                "evening": [ProposedUnit(template_id="writing_session")]}
    kept, dropped, _ = validate_plan(proposed, inputs)
    assert kept["afternoon"] == [] and [u.template_id for u in kept["evening"]] == ["writing_session"]
    assert dropped[0].template_id == "synthesis" and "4 of this week's 8 units (over 40%)" in dropped[0].reason
    # ...unless the week's goals call for it.
    inputs.called_for = frozenset({"synthesis"})
    kept, dropped, _ = validate_plan(proposed, inputs)
    assert [u.template_id for u in kept["afternoon"]] == ["synthesis"] and dropped == []


# ---- a week in one command ---------------------------------------------------------------------

def test_run_week_runs_the_days_through_dagster_and_reports(sample_home, capsys):
    start = week_start(TODAY) - timedelta(days=1)   # a Sunday and the Monday after: a week over and one not
    code, r = cli_json(capsys, "run-week", "--start", start.isoformat(), "--days", "2")
    assert code == 0, r
    assert r["first"] == start.isoformat() and r["last"] == (start + timedelta(days=1)).isoformat()
    assert r["runs"] and all(x["success"] for x in r["runs"])
    weeks = {week_start(start + timedelta(days=n)) for n in range(2)}
    assert {i["week_start"] for i in r["intentions"]} == {w.isoformat() for w in weeks}
    rt = open_runtime()
    for n in range(2):
        day = start + timedelta(days=n)
        view = plan_view(rt, day)
        assert view["week"]["week_start"] == week_start(day).isoformat() and view["week"]["intention"]
    assert r["units"] > 0 and r["goal_share"] >= 0.8
    assert sum(g["progress_notes"] for g in r["goals_advanced"]) > 0
    assert sum(r["units_by_template"].values()) == r["units"] == sum(r["units_by_category"].values())
    assert r["templates_over_share"] == [] and max(r["template_shares"].values()) <= 0.4
    assert set(r["spend_by_day"]) == {(start + timedelta(days=n)).isoformat() for n in range(2)}
    assert r["insights"] > 0 and len(r["daily_journals"]) == 2
    # A weekly journal is written once its week is over (it is written once): not for this week yet.
    over = sorted(w.isoformat() for w in weeks if w + timedelta(days=6) < TODAY)
    assert len(weeks) == 2 and [j["week_start"] for j in r["weekly_journals"]] == over and len(over) == 1
    assert all(j["offline"] and j["text"] for j in r["weekly_journals"])
    assert open_runtime().store.scalar("SELECT count(*) FROM journals WHERE kind = 'weekly' AND date = ?",
                                       [week_start(TODAY)]) == 0
    jobs = {run.job_name for run in dg.DagsterInstance.get().get_runs()}
    assert {"week_job", "phase_job", "journal_job", "week_journal_job"} <= jobs
    # The text report names what the JSON holds.
    assert main(["run-week", "--start", start.isoformat(), "--days", "9"]) == 2


# ---- run-day does the week's work (no daemon) ---------------------------------------------------

# Two past weeks of the partition window: WEEK_BEFORE ends on a Sunday, NEXT_MONDAY starts the week after.
NEXT_MONDAY = week_start(TODAY) - timedelta(days=7)
WEEK_BEFORE = NEXT_MONDAY - timedelta(days=7)


def week_runs(report) -> list[tuple[str, str, str | None]]:
    """(what, its week's Monday, why skipped) of each week run: the week's intention or its journal."""
    return [(r["phase"], r["week"], r.get("skipped")) for r in report["runs"] if "week" in r]


def names(report) -> list[str]:
    return [f"{r['phase']} {r['week']}" if "week" in r else r["phase"] for r in report["runs"]]


def test_run_day_plans_the_week_once_and_writes_the_week_that_ended(sample_home, capsys):
    """Without the daemon's week schedules, run-day plans the week before the morning (whatever day a user
    starts on), once, and after the day writes the journal of the week that ended, once."""
    sunday = WEEK_BEFORE + timedelta(days=6)
    code, r = cli_json(capsys, "run-day", "--date", sunday.isoformat(), "--phases", "night")
    assert code == 0, r
    # (the sample's idle conversations are summarised first)
    assert names(r) == ["memory", f"intention {WEEK_BEFORE}", "night", "journal"]   # a Sunday start
    assert r["plan"]["week"]["week_start"] == WEEK_BEFORE.isoformat() and r["plan"]["week"]["intention"]

    code, r = cli_json(capsys, "run-day", "--date", NEXT_MONDAY.isoformat(), "--phases", "morning")
    assert code == 0, r
    assert names(r) == [f"intention {NEXT_MONDAY}", "morning", f"journal {WEEK_BEFORE}"]
    assert all(x["success"] for x in r["runs"]) and r["plan"]["week"]["intention"]
    rt = open_runtime()
    written = rt.store.one("SELECT text, offline FROM journals WHERE kind = 'weekly' AND date = ?", [WEEK_BEFORE])
    assert written and written["text"] and written["offline"]
    planned = rt.store.scalar("SELECT count(*) FROM llm_ledger WHERE action_id = 'plan.week'")

    # Another day of the week: the week is planned and the week before written; neither is asked again.
    code, r = cli_json(capsys, "run-day", "--date", (NEXT_MONDAY + timedelta(days=1)).isoformat(), "--phases",
                       "morning")
    assert code == 0 and week_runs(r) == [], r["runs"]
    assert open_runtime().store.scalar("SELECT count(*) FROM llm_ledger WHERE action_id = 'plan.week'") == planned


def test_run_day_while_paused_skips_the_week_s_work_with_the_reason(sample_home, capsys):
    rt = open_runtime()
    journal_store.save_entry(rt.store, day=WEEK_BEFORE + timedelta(days=6), kind="daily", text="a Sunday",
                             tone="calm", work_unit_id=None, offline=True, now=NOW)
    assert main(["pause", "--reason", "holiday"]) == 0
    code, r = cli_json(capsys, "run-day", "--date", NEXT_MONDAY.isoformat(), "--phases", "morning")
    assert code == 0, r
    assert week_runs(r) == [("intention", NEXT_MONDAY.isoformat(), "paused: holiday"),
                            ("journal", WEEK_BEFORE.isoformat(), "paused: holiday")]
    assert f"run intention of week {NEXT_MONDAY} skipped: paused: holiday" in render_report(r)
    rt = open_runtime()
    assert goal_store.intention(rt.store, NEXT_MONDAY) is None   # not a fallback kept for the whole week
    assert rt.store.scalar("SELECT count(*) FROM journals WHERE kind = 'weekly'") == 0
    # After `resume`, the next run-day of the week does both.
    assert main(["resume", "--all"]) == 0
    code, r = cli_json(capsys, "run-day", "--date", (NEXT_MONDAY + timedelta(days=2)).isoformat(), "--phases",
                       "morning")
    assert code == 0 and week_runs(r) == [("intention", NEXT_MONDAY.isoformat(), None),
                                          ("journal", WEEK_BEFORE.isoformat(), None)]
    assert goal_store.intention(open_runtime().store, NEXT_MONDAY)["source"] == "llm"


def spend_share(rt, day, category, cost=None):
    """`day`'s share of `category` spent by its other calls (with `cost`: that much, the whole day's say)."""
    from support import ledger_row

    from cass_pipelines.store import budget as sb

    hold = sb.reserve(rt.store, day=day, category=category, amount_usd=0.01, settings=rt.settings,
                      priority="normal", now=NOW)
    sb.settle(rt.store, hold.id, ledger_row(f"{category}_{day}", cost or rt.settings.category_limit(category),
                                            category=category, day=day), NOW)


def refuse(rt, day, category, action_id):
    """A call of `action_id` `day`'s budget refused (its share spent): the day that could not pay for it."""
    from cass_pipelines.domain.budget_rules import Refusal
    from cass_pipelines.store import budget as sb

    spend_share(rt, day, category)
    refused = sb.reserve(rt.store, day=day, category=category, amount_usd=0.01, settings=rt.settings,
                         priority="normal", action_id=action_id, now=NOW)
    assert isinstance(refused, Refusal) and not sb.budget_status(rt.store, rt.settings, day)["exhausted"]


def test_the_week_that_ended_is_written_when_its_sunday_is_out_of_money(sample_home, capsys):
    """As a daily journal its own day could not pay for: the week's journal is written on the budget of the
    day it runs, not skipped each day of the next week and then never asked for again."""
    from cass_pipelines.store import budget as sb

    rt = open_runtime()
    sunday = WEEK_BEFORE + timedelta(days=6)
    journal_store.save_entry(rt.store, day=sunday, kind="daily", text="a Sunday", tone="calm", work_unit_id=None,
                             offline=True, now=NOW)
    spend_share(rt, sunday, "research", rt.settings.daily_budget_usd)
    assert sb.budget_status(rt.store, rt.settings, sunday)["exhausted"]
    code, r = cli_json(capsys, "run-day", "--date", NEXT_MONDAY.isoformat(), "--phases", "morning")
    assert code == 0, r
    assert ("journal", WEEK_BEFORE.isoformat(), None) in week_runs(r), r["runs"]
    rt = open_runtime()
    assert rt.store.scalar("SELECT count(*) FROM journals WHERE kind = 'weekly' AND date = ?", [WEEK_BEFORE]) == 1
    paid = rt.store.all("SELECT date FROM llm_ledger WHERE action_id = 'journal.weekly'")
    assert paid and all(row["date"] > sunday for row in paid), paid   # not on the Sunday that had no money left


def test_a_week_whose_monday_is_out_of_money_is_planned_on_a_later_day(sample_home, capsys):
    """Monday spent (its phases ran while `system` was paused, say): run-day on Tuesday plans the week on
    Tuesday's budget, not skipped each day of the week for Monday's."""
    rt = open_runtime()
    spend_share(rt, NEXT_MONDAY, "research", rt.settings.daily_budget_usd)
    tuesday = NEXT_MONDAY + timedelta(days=1)
    code, r = cli_json(capsys, "run-day", "--date", tuesday.isoformat(), "--phases", "morning", "--no-journal")
    assert code == 0, r
    assert week_runs(r) == [("intention", NEXT_MONDAY.isoformat(), None)], r["runs"]
    rt = open_runtime()
    assert goal_store.intention(rt.store, NEXT_MONDAY)["source"] == "llm"
    paid = rt.store.all("SELECT date FROM llm_ledger WHERE action_id = 'plan.week'")
    assert paid and all(row["date"] > NEXT_MONDAY for row in paid), paid


def test_a_week_its_monday_refused_is_not_kept_on_the_fallback(env):
    """Monday's `system` share spent (its decisions), not the day: the week's call refused on Monday leaves the
    week unplanned (a fallback made without the agent would be kept for the week); the next run plans it with
    the agent, paid from the day it runs (week.budget_day)."""
    rt, instance, defs = env
    spend_share(rt, NEXT_MONDAY, "system")
    refused = plan_the_week(rt, defs, instance, NEXT_MONDAY)
    assert goal_store.intention(rt.store, NEXT_MONDAY) is None
    metadata = instance.fetch_materializations(dg.AssetKey("weekly_intention"), limit=1).records[0] \
        .asset_materialization.metadata
    assert metadata["source"].value == "budget", refused.run_id
    assert metadata["waits"].value.startswith(f"the budget of {NEXT_MONDAY} refused its call (category system")
    plan_the_week(rt, defs, instance, NEXT_MONDAY)
    assert goal_store.intention(rt.store, NEXT_MONDAY)["source"] == "llm"
    paid = rt.store.all("SELECT date FROM llm_ledger WHERE action_id = 'plan.week'")
    assert paid and all(row["date"] > NEXT_MONDAY for row in paid), paid


def test_the_week_s_journal_refused_on_its_sunday_is_paid_from_the_day_it_is_written(store, settings):
    """The asset's call refused by its Sunday (the journal's share spent, the day not): the next morning's
    run pays from its own day, not the Sunday that refused it again and again."""
    from cass_pipelines.domain.budget_rules import Refusal
    from cass_pipelines.services.week import JOURNAL_ACTION_ID, budget_day
    from cass_pipelines.store import budget as sb

    sunday = WEEK_BEFORE + timedelta(days=6)
    tuesday = datetime.combine(NEXT_MONDAY + timedelta(days=1), time(12), tzinfo=timezone.utc)
    assert budget_day(store, settings, sunday, JOURNAL_ACTION_ID, tuesday) == sunday
    refused = sb.reserve(store, day=sunday, category="journal", amount_usd=0.2, settings=settings,   # share $0.05
                         priority="normal", action_id=JOURNAL_ACTION_ID, now=NOW)
    assert isinstance(refused, Refusal) and not sb.budget_status(store, settings, sunday)["exhausted"]
    assert budget_day(store, settings, sunday, JOURNAL_ACTION_ID, tuesday) == tuesday.date()


def test_a_week_s_journal_refused_on_its_sunday_and_today_waits_and_is_written_on_a_later_day(
        sample_home, capsys, monkeypatch):
    """Refused by its Sunday and by the day it runs (the journal's share spent on both, neither day): the run
    stores nothing and succeeds, saying it waits and why, run-day exits as for a day with deferred work (0),
    and a later day with money writes it, once."""
    from cass_pipelines.services.week import JOURNAL_ACTION_ID

    rt = open_runtime()
    sunday = WEEK_BEFORE + timedelta(days=6)
    journal_store.save_entry(rt.store, day=sunday, kind="daily", text="a Sunday", tone="calm", work_unit_id=None,
                             offline=True, now=NOW)
    refuse(rt, sunday, "journal", JOURNAL_ACTION_ID)
    spend_share(rt, TODAY, "journal")
    code, r = cli_json(capsys, "run-day", "--date", NEXT_MONDAY.isoformat(), "--phases", "morning")
    assert code == 0, r
    [run] = [x for x in r["runs"] if x.get("week") == WEEK_BEFORE.isoformat()]
    assert run["success"] and not run.get("skipped") and run["run_id"], run
    assert run["waits"].startswith(f"the budget of {TODAY} refused its call"), run
    assert f"run journal   of week {WEEK_BEFORE} waits: {run['waits']}" in render_report(r)
    assert open_runtime().store.scalar("SELECT count(*) FROM journals WHERE kind = 'weekly'") == 0

    # The next day has money: the next run-day writes it, paid from that day; then it is not asked again.
    monkeypatch.setenv(NOW_ENV, (NOW + timedelta(days=1)).isoformat())
    later = NEXT_MONDAY + timedelta(days=1)
    code, r = cli_json(capsys, "run-day", "--date", later.isoformat(), "--phases", "morning")
    assert code == 0 and week_runs(r) == [("journal", WEEK_BEFORE.isoformat(), None)], r["runs"]
    assert not r["runs"][-1].get("waits"), r["runs"][-1]
    code, r = cli_json(capsys, "run-day", "--date", later.isoformat(), "--phases", "morning")
    assert code == 0 and week_runs(r) == [], r["runs"]
    rt = open_runtime()
    assert rt.store.scalar("SELECT count(*) FROM journals WHERE kind = 'weekly' AND date = ?", [WEEK_BEFORE]) == 1
    paid = rt.store.all("SELECT date FROM llm_ledger WHERE action_id = ?", [JOURNAL_ACTION_ID])
    assert [row["date"] for row in paid] == [TODAY + timedelta(days=1)], paid


def test_a_week_s_plan_refused_on_its_monday_and_today_waits_like_its_journal(sample_home, capsys):
    """The week's intention under the same conditions: nothing stored, the run succeeds and says it waits."""
    from cass_pipelines.services.week import WEEK_ACTION_ID

    rt = open_runtime()
    refuse(rt, NEXT_MONDAY, "system", WEEK_ACTION_ID)
    spend_share(rt, TODAY, "system")
    tuesday = NEXT_MONDAY + timedelta(days=1)
    code, r = cli_json(capsys, "run-day", "--date", tuesday.isoformat(), "--phases", "morning", "--no-journal")
    assert code == 0, r
    [run] = [x for x in r["runs"] if x.get("week")]
    assert run["success"] and not run.get("skipped"), run
    assert run["waits"].startswith(f"the budget of {TODAY} refused its call"), run
    assert f"run intention of week {NEXT_MONDAY} waits: {run['waits']}" in render_report(r)
    assert goal_store.intention(open_runtime().store, NEXT_MONDAY) is None


def test_the_week_schedules_request_this_week_and_the_week_that_ended(sample_home, monkeypatch):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from cass_pipelines.config.registry import load_registry
    from cass_pipelines.config.settings import load_settings

    monkeypatch.setenv("CASS_TIMEZONE", "America/New_York")
    defs = build_defs(load_settings(), load_registry())
    monday = datetime(2026, 11, 23, 5, 30, tzinfo=ZoneInfo("America/New_York"))
    expected = {"weekly_intention_schedule": ("30 5 * * *", monday, "2026-11-23"),
                "weekly_journal_schedule": ("45 6 * * *", monday.replace(hour=6, minute=45), "2026-11-16")}
    for name, (cron, at, key) in expected.items():
        schedule = defs.resolve_schedule_def(name)
        assert schedule.cron_schedule == cron and schedule.execution_timezone == "America/New_York"
        with dg.DagsterInstance.ephemeral() as instance:
            with dg.build_schedule_context(instance=instance, scheduled_execution_time=at,
                                           repository_def=defs.get_repository_def(), resources=defs.resources) as ctx:
                [request] = schedule.evaluate_tick(ctx).run_requests
        assert request.partition_key == key and request.run_key.endswith(key)
    # A later morning of the week asks again only while the week's journal is not written.
    journal = defs.resolve_schedule_def("weekly_journal_schedule")

    def tuesday_tick():
        with dg.DagsterInstance.ephemeral() as instance, dg.build_schedule_context(
                instance=instance, scheduled_execution_time=monday.replace(hour=6, minute=45) + timedelta(days=1),
                repository_def=defs.get_repository_def(), resources=defs.resources) as ctx:
            return journal.evaluate_tick(ctx)

    [again] = tuesday_tick().run_requests
    assert (again.partition_key, again.run_key) == ("2026-11-16", "week_journal|2026-11-16|retry|2026-11-24")
    # The week's plan likewise: a later morning asks while the week has none (a pause held Monday's), not
    # while a pause holds it (planned then, the week would keep a fallback made without the agent).
    plan = defs.resolve_schedule_def("weekly_intention_schedule")

    def intention_tick(days: int):
        with dg.DagsterInstance.ephemeral() as instance, dg.build_schedule_context(
                instance=instance, scheduled_execution_time=monday + timedelta(days=days),
                repository_def=defs.get_repository_def(), resources=defs.resources) as ctx:
            return plan.evaluate_tick(ctx)

    assert main(["pause", "--reason", "a holiday"]) == 0
    assert not intention_tick(0).run_requests and "a holiday" in intention_tick(1).skip_message
    assert main(["resume"]) == 0
    [asked] = intention_tick(2).run_requests
    assert (asked.partition_key, asked.run_key) == ("2026-11-23", "week|2026-11-23|retry|2026-11-25")
    goal_store.save_intention(open_runtime().store, week=date(2026, 11, 23), intention="rest", goal_ids=[],
                              source="llm", error=None, offline=True, now=NOW)
    assert "is planned" in intention_tick(3).skip_message
    rt = open_runtime()
    journal_store.save_entry(rt.store, day=date(2026, 11, 16), kind="weekly", text="the week", tone="steady",
                             work_unit_id=None, offline=True, now=NOW)
    assert not tuesday_tick().run_requests


def test_two_runs_of_a_week_pay_for_its_plan_once(env):
    """run-day beside the daemon's weekly_intention run: the second waits for the first's plan (claimed, as
    the day's decision is) instead of asking and paying again; a dead run's claim is taken over."""
    import os
    import threading

    from handlers_kit import CountingLLM

    from cass_pipelines.services.week import plan_week
    from cass_pipelines.store import claims
    from cass_pipelines.store.claims import HOST, Owner

    rt, _, _ = env
    live = lambda run_id: False   # noqa: E731  (both runs are alive)
    assert claims.claim(rt.store, claims.week_key(WEEK), Owner("run_daemon", os.getpid(), HOST), live, NOW).ours
    llm, made = CountingLLM(rt.llm), []
    waiting = threading.Thread(target=lambda: made.append(plan_week(rt, llm, "", WEEK, NOW, Owner("run_cli", os.getpid(),
                                                                                               HOST), live)))
    waiting.start()
    waiting.join(1.5)
    assert waiting.is_alive() and llm.calls == 0                     # it waits for the daemon's run
    goal_store.save_intention(rt.store, week=WEEK, intention="the daemon's plan", goal_ids=[], source="llm",
                              error=None, offline=True, now=NOW)
    claims.end_many(rt.store, [claims.week_key(WEEK)], ClaimState.DONE, NOW)
    waiting.join(10)
    assert [(p.source, p.intention) for p in made] == [("stored", "the daemon's plan")] and llm.calls == 0
    # A run that died holding the claim does not hold the week back.
    later = WEEK + timedelta(days=7)
    assert claims.claim(rt.store, claims.week_key(later), Owner("run_gone", 2 ** 22 + 1, HOST), live, NOW).ours
    planned = plan_week(rt, llm, "", later, NOW, Owner("run_cli", os.getpid(), HOST), live)
    assert planned.source == "llm" and llm.calls > 0
    assert goal_store.intention(rt.store, later)["intention"] == planned.intention
