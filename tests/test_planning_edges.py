"""Edge cases of planning a day: races, late first runs, re-plans, pauses, re-offered work, past dates."""
from datetime import datetime, time, timedelta, timezone

import dagster as dg
import pytest
from support import SAMPLE_DAY, ledger_row

from cass_pipelines.cli.main import main
from cass_pipelines.definitions import build_defs
from cass_pipelines.domain.pauses import LookBacks
from cass_pipelines.domain.plan_rules import PlannedUnit
from cass_pipelines.execution import instance_for, run_journal, run_phase
from cass_pipelines.services.planning import idle_at, plan_phase
from cass_pipelines.services.runner import next_position
from cass_pipelines.services.runtime import open_runtime
from cass_pipelines.store import plans
from cass_pipelines.store.ledger import insert_rows

DAY = SAMPLE_DAY
NOW = datetime.combine(DAY, time(7), tzinfo=timezone.utc)


@pytest.fixture
def env(sample_home):
    rt = open_runtime()
    return rt, instance_for(rt.settings), build_defs(rt.settings, rt.registry)


def unit(rt, phase, template_id, focus="f"):
    t = rt.registry.templates[template_id]
    return PlannedUnit(phase, t.id, t.category, t.priority, focus, "m", rt.registry.template_cost(t.id))


def save(rt, revision, phases, units):
    return plans.save_day_plan(rt.store, day=DAY, revision=revision, source="llm", intention="i",
                               from_phase=phases[0], phases=phases, units=units, dropped=[], offline=True, now=NOW)


def test_a_second_run_racing_for_the_same_revision_stores_nothing(runtime):
    assert save(runtime, 1, ["morning"], [unit(runtime, "morning", "morning_reflection")]) is True
    assert save(runtime, 1, ["morning"], [unit(runtime, "morning", "growth_edge_work")]) is False
    assert [u["template_id"] for u in plans.units_for_day(runtime.store, DAY)] == ["morning_reflection"]
    assert plans.day_plan_revisions(runtime.store, DAY) == 1


def test_replan_returns_reoffered_work_to_the_queue_and_reoffers_carry_completed_actions(runtime):
    rt = runtime
    save(rt, 1, ["morning", "afternoon"], [unit(rt, "morning", "growth_edge_work", "depth")])
    old = plans.units_for_phase(rt.store, DAY, "morning")[0]
    # Its first action completed, then the budget refused the second: deferred mid-sequence.
    plans.record_action(rt.store, uid=old["id"], position=0, action_id="session.growth_edge", status="completed",
                        message="done", result={"success": True, "message": "done"}, cost_usd=0.02, now=NOW)
    plans.set_unit_status(rt.store, old["id"], "deferred", NOW, reason="budget: no room")
    plan_phase(rt, rt.llm, DAY, "afternoon", NOW)
    [new] = [u for u in plans.units_for_phase(rt.store, DAY, "afternoon") if u["origin"] == "deferred"]
    carried = plans.action_runs(rt.store, new["id"])
    assert [(r["position"], r["status"], r["cost_usd"]) for r in carried] == [(0, "completed", 0)]
    assert next_position(rt, new) == 1           # resumes where it stopped: nothing paid twice
    # A re-plan cancels the not-started re-offer and puts the original back in the queue.
    save(rt, 2, ["afternoon", "evening", "night"], [])
    assert plans.get_unit(rt.store, new["id"])["status"] == "cancelled"
    assert plans.get_unit(rt.store, old["id"])["reoffered_as"] is None
    assert old["id"] in [u["id"] for u in plans.pending_deferred(rt.store, LookBacks(DAY), DAY, 2)]


def test_a_late_first_run_leaves_earlier_phases_to_be_planned_later(env):
    rt, instance, defs = env
    assert run_phase(defs, instance, DAY, "night").success
    assert plans.planned_phases(rt.store, DAY) == {"night"}
    assert run_phase(defs, instance, DAY, "morning").success       # a backfill of the morning
    assert plans.planned_phases(rt.store, DAY) == {"morning", "afternoon", "evening", "night"}
    assert plans.latest_day_plan(rt.store, DAY)["planned_from_phase"] == "morning"


def test_paused_day_is_not_planned_and_a_rerun_after_resume_takes_back_paused_work(env, capsys):
    rt, instance, defs = env
    assert main(["pause", "--reason", "travelling"]) == 0
    result = run_phase(defs, instance, DAY, "morning")
    assert not result.success                                        # no fallback plan stored for good
    assert plans.planned_phases(rt.store, DAY) == set()
    assert main(["run-phase", "morning", "--date", DAY.isoformat()]) == 3
    assert "paused: travelling" in capsys.readouterr().err
    assert main(["resume"]) == 0
    save(rt, 1, ["morning"], [unit(rt, "morning", "morning_reflection")])
    assert main(["pause", "--category", "reflection", "--reason", "quiet week"]) == 0
    assert run_phase(defs, instance, DAY, "morning").success
    [held] = plans.units_for_phase(rt.store, DAY, "morning")
    assert held["status"] == "deferred" and held["reason"].startswith("paused: quiet week")
    assert main(["resume", "--category", "reflection"]) == 0
    assert run_phase(defs, instance, DAY, "morning").success
    assert plans.get_unit(rt.store, held["id"])["status"] == "completed"


def test_rerunning_a_finished_phase_and_its_journal_spends_nothing(env):
    rt, instance, defs = env
    assert run_phase(defs, instance, DAY, "night").success
    assert run_journal(defs, instance, DAY).success
    calls = rt.store.scalar("SELECT count(*) FROM llm_ledger")
    assert run_phase(defs, instance, DAY, "night").success
    assert run_journal(defs, instance, DAY).success
    assert rt.store.scalar("SELECT count(*) FROM llm_ledger") == calls


def test_a_past_date_is_judged_idle_by_its_own_time(runtime):
    last = runtime.store.scalar("SELECT max(created_at) FROM messages")
    # Every sample message is older than a morning three weeks later...
    idle, seen = idle_at(runtime, datetime.combine(DAY + timedelta(days=30), time(6), tzinfo=timezone.utc))
    assert idle and seen == last
    # ...and a moment right after one of them is not idle, even though later messages exist.
    first = runtime.store.scalar("SELECT min(created_at) FROM messages")
    idle, seen = idle_at(runtime, first)
    assert not idle and seen == first


def test_requires_approval_actions_wait_for_approval_unless_a_person_asks(sample_home, tmp_path, monkeypatch, capsys):
    import json

    from cass_pipelines.config.registry import DEFAULT_REGISTRY_FILE

    data = json.loads(DEFAULT_REGISTRY_FILE.read_text())
    for action in data["actions"]:
        if action["id"] == "session.reflection":
            action["requires_approval"] = True
    custom = tmp_path / "actions.json"
    custom.write_text(json.dumps(data))
    monkeypatch.setenv("CASS_ACTIONS_FILE", str(custom))
    rt = open_runtime()
    instance, defs = instance_for(rt.settings), build_defs(rt.settings, rt.registry)
    save(rt, 1, ["morning"], [unit(rt, "morning", "morning_reflection")])
    assert run_phase(defs, instance, DAY, "morning").success
    [planned] = plans.units_for_phase(rt.store, DAY, "morning")
    assert planned["status"] == "awaiting_approval"
    assert planned["reason"].startswith("awaiting approval: session.reflection needs a person's approval")
    assert main(["trigger", "morning_reflection"]) == 0
    assert dg.DagsterInstance.get().get_runs(limit=1)[0].job_name == "manual_work_job"


def test_a_pause_that_lands_mid_action_is_taken_back_after_resume(runtime, monkeypatch):
    """A person pauses while an action runs: its next model call is refused, the unit waits as `paused`
    (its kind, not its wording), and the first phase run after `resume` takes it back and finishes it."""
    import importlib

    from cass_pipelines.domain.clock import FixedClock
    from cass_pipelines.domain.states import DeferKind, UnitStatus
    from cass_pipelines.services.runner import run_action
    from cass_pipelines.store import control

    rt = runtime
    save(rt, 1, ["morning"], [unit(rt, "morning", "morning_reflection")])
    plan_phase(rt, rt.llm, DAY, "morning", NOW)
    [u] = plans.units_for_phase(rt.store, DAY, "morning")
    handler = rt.registry.actions[rt.registry.templates["morning_reflection"].action_sequence[0]].handler
    module_name, _, name = handler.partition(":")
    module = importlib.import_module(module_name)
    work = getattr(module, name)

    def paused_meanwhile(ctx):
        control.pause(rt.store, None, "stepping away", NOW)   # lands after the runner's own pause check
        return work(ctx)

    monkeypatch.setattr(module, name, paused_meanwhile)
    first = run_action(rt, u["id"], 0, FixedClock(NOW))
    held = plans.get_unit(rt.store, u["id"])
    assert first.status == "deferred"
    assert (held["status"], held["defer_kind"]) == (UnitStatus.DEFERRED, DeferKind.PAUSED)

    monkeypatch.undo()
    control.resume(rt.store, None, NOW)
    plan_phase(rt, rt.llm, DAY, "morning", NOW)                # the phase run after resume
    assert plans.get_unit(rt.store, u["id"])["status"] == UnitStatus.PLANNED
    position = next_position(rt, plans.get_unit(rt.store, u["id"]))
    while position is not None:
        run_action(rt, u["id"], position, FixedClock(NOW))
        position = next_position(rt, plans.get_unit(rt.store, u["id"]))
    assert plans.get_unit(rt.store, u["id"])["status"] == UnitStatus.COMPLETED


def test_work_planned_for_a_phase_that_never_opened_is_offered_again_later(runtime):
    """The afternoon was skipped (no run, say the daemon was down): its planned units are not lost. The
    evening takes up what it allows and defers the rest with the reason; nothing stays `planned`."""
    rt = runtime
    save(rt, 1, ["afternoon", "evening"], [unit(rt, "afternoon", "synthesis"), unit(rt, "afternoon", "research_batch")])
    skipped = {u["template_id"]: u for u in plans.units_for_phase(rt.store, DAY, "afternoon")}
    plan_phase(rt, rt.llm, DAY, "evening", NOW.replace(hour=18))
    evening = [u for u in plans.units_for_phase(rt.store, DAY, "evening") if u["origin"] == "deferred"]
    assert [u["template_id"] for u in evening] == ["synthesis"] and evening[0]["status"] == "planned"
    after = {t: plans.get_unit(rt.store, u["id"]) for t, u in skipped.items()}
    assert after["synthesis"]["status"] == "deferred" and after["synthesis"]["reoffered_as"] == evening[0]["id"]
    assert after["synthesis"]["defer_kind"] == "skipped", after["synthesis"]   # every deferred unit says why
    # research_batch is an afternoon-only template: deferred now, it waits for the next afternoon.
    assert after["research_batch"]["status"] == "deferred" and after["research_batch"]["reoffered_as"] is None
    assert after["research_batch"]["defer_kind"] == "skipped" and "afternoon did not run" in after["research_batch"]["reason"]
    assert after["research_batch"]["id"] in [u["id"] for u in plans.pending_deferred(rt.store, LookBacks(DAY), DAY + timedelta(days=1), 1)]


def test_run_day_defers_the_work_of_a_phase_it_skips(env):
    """A phase not started for want of money leaves no unit `planned`: they are deferred with the reason."""
    rt, instance, defs = env
    save(rt, 1, ["morning", "afternoon"], [unit(rt, "afternoon", "synthesis")])
    spent = rt.settings.daily_budget_usd - rt.settings.reserve_usd    # the day's money is already spent
    with rt.store.transaction() as conn:
        insert_rows(conn, [ledger_row("spent_earlier", spent, day=DAY)])
    assert main(["run-day", "--date", DAY.isoformat(), "--phases", "afternoon", "--no-journal"]) == 0
    [u] = plans.units_for_phase(rt.store, DAY, "afternoon")
    assert u["status"] == "deferred" and u["defer_kind"] == "skipped", u
    assert u["reason"].startswith("afternoon did not run: daily budget exhausted"), u["reason"]


def test_a_phase_skipped_while_paused_runs_its_work_after_resume(env):
    rt, instance, defs = env
    save(rt, 1, ["morning", "afternoon"], [unit(rt, "afternoon", "synthesis")])
    assert main(["pause", "--reason", "travelling"]) == 0
    assert main(["run-day", "--date", DAY.isoformat(), "--phases", "afternoon", "--no-journal"]) == 0
    [u] = plans.units_for_phase(rt.store, DAY, "afternoon")
    assert (u["status"], u["defer_kind"]) == ("deferred", "skipped") and "paused: travelling" in u["reason"]
    assert main(["resume"]) == 0
    plan_phase(rt, rt.llm, DAY, "afternoon", NOW.replace(hour=12))
    assert plans.get_unit(rt.store, u["id"])["status"] == "planned"       # taken back by its own phase


def test_a_unit_with_a_step_of_a_paused_category_waits_until_resume_then_runs(env):
    """While research is paused, an open_question_review (curiosity; its second step research.run_single
    calls the model) is not started at all, at this opening or the phase's next run: it waits `paused`,
    naming the category and the step. One already past the research step finishes. After
    `resume --category research` the phase's next run takes the held unit back and it runs."""
    from cass_pipelines.domain.states import DeferKind, UnitStatus

    rt, instance, defs = env
    save(rt, 1, ["evening"], [unit(rt, "evening", "open_question_review", "held"),
                              unit(rt, "evening", "open_question_review", "past it")])
    held, past = plans.units_for_phase(rt.store, DAY, "evening")
    for position, action_id in enumerate(rt.registry.templates["open_question_review"].action_sequence[:2]):
        plans.record_action(rt.store, uid=past["id"], position=position, action_id=action_id, status="completed",
                            message="done", result={"success": True, "message": "done"}, cost_usd=0.0, now=NOW)
    assert main(["pause", "--category", "research", "--reason", "quiet week"]) == 0
    for _ in range(2):                                                  # its opening, then the phase's next run
        assert run_phase(defs, instance, DAY, "evening").success
        now = plans.get_unit(rt.store, held["id"])
        assert (now["status"], now["defer_kind"]) == (UnitStatus.DEFERRED, DeferKind.PAUSED), now
        assert "category research paused" in now["reason"] and "research.run_single" in now["reason"], now["reason"]
        assert plans.action_runs(rt.store, held["id"]) == []               # not started: nothing run, nothing redone
    assert plans.get_unit(rt.store, past["id"])["status"] == UnitStatus.COMPLETED
    assert main(["resume", "--category", "research"]) == 0
    assert run_phase(defs, instance, DAY, "evening").success
    assert plans.get_unit(rt.store, held["id"])["status"] == UnitStatus.COMPLETED


def test_a_day_narrative_offered_again_the_next_night_tells_its_own_day(runtime):
    """A day_narrative deferred on its night and offered again the next night (as a new unit of that night)
    tells the story of the day it was planned for: its prompt names that day and its units, not the night it
    runs on (work about whatever is pending now, a session, still works as of the day it runs)."""
    import json

    from cass_pipelines.domain.clock import FixedClock
    from cass_pipelines.domain.states import DeferKind, UnitStatus
    from cass_pipelines.services.runner import run_action

    rt, later = runtime, DAY + timedelta(days=1)
    night = datetime.combine(later, time(23), tzinfo=timezone.utc)
    for day, template_id in ((DAY, "day_narrative"), (later, "system_maintenance")):
        plans.save_day_plan(rt.store, day=day, revision=1, source="llm", intention="i", from_phase="night",
                            phases=["night"], units=[unit(rt, "night", template_id)], dropped=[], offline=True,
                            now=datetime.combine(day, time(7), tzinfo=timezone.utc))
    [own] = plans.units_for_phase(rt.store, DAY, "night")
    plans.set_unit_status(rt.store, own["id"], UnitStatus.DEFERRED, NOW, reason="budget: no room",
                          defer_kind=DeferKind.BUDGET)
    plan_phase(rt, rt.llm, later, "night", night)
    [again] = [u for u in plans.units_for_phase(rt.store, later, "night") if u["deferred_from"] == own["id"]]
    assert run_action(rt, again["id"], 0, FixedClock(night)).status == "completed"
    [prompt] = [json.loads(r["request"])["prompt"] for r in rt.store.all(     # (night work: a batched call)
        "SELECT request FROM llm_batches WHERE work_unit_id = ?", [again["id"]])]
    assert prompt.startswith(f"I am telling the story of {DAY:%A %Y-%m-%d}") and f"{later:%Y-%m-%d}" not in prompt
    assert "day_narrative (night, deferred)" in prompt and "system_maintenance" not in prompt   # that day's units
