"""A day on a tiny budget stops cleanly; pause refuses a manual trigger unless forced."""
import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
from support import TODAY

from cass_pipelines.cli.main import main
from cass_pipelines.config.registry import load_registry
from cass_pipelines.config.settings import load_settings
from cass_pipelines.definitions import build_defs
from cass_pipelines.services.runtime import open_runtime
from cass_pipelines.store import plans

DAY = (TODAY - timedelta(days=2)).isoformat()   # (2026-11-25 by the suite's default calendar)


def cli_json(capsys, *argv) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_a_five_cent_day_stops_cleanly_and_the_next_day_runs(sample_home, monkeypatch, capsys):
    monkeypatch.setenv("CASS_DAILY_BUDGET_USD", "0.05")
    code, report = cli_json(capsys, "run-day", "--date", DAY)
    assert code == 0
    budget = report["budget"]
    assert budget["exhausted"] is True
    assert budget["spent_usd"] <= budget["daily_limit_usd"] == 0.05
    assert any(a["kind"] == "exhausted" for a in budget["alerts"])
    # Work that could not be paid for is deferred with its reason, never dropped or silently lost.
    assert not any("budget" in d["reason"] for d in report["plan"]["dropped"])
    reasons = [u["reason"] for us in report["plan"]["phases"].values() for u in us if u["status"] == "deferred"]
    assert reasons and all(reasons) and any("budget" in r for r in reasons)
    skipped = [r for r in report["runs"] if r.get("skipped")]
    assert skipped and all("budget exhausted" in r["skipped"] for r in skipped)
    code, again = cli_json(capsys, "budget", "--date", DAY)
    assert again["exhausted"] is True and again["spent_usd"] <= 0.05
    # The next day starts with a fresh budget and its schedule runs again.
    defs = build_defs(load_settings(), load_registry())
    schedule = defs.resolve_schedule_def("morning_schedule")
    with dg.DagsterInstance.ephemeral() as instance, dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime(2026, 11, 26, 6, tzinfo=ZoneInfo("UTC")),
            repository_def=defs.get_repository_def(), resources=defs.resources) as ctx:
        result = schedule.evaluate_tick(ctx)
    assert result.run_requests[0].partition_key == "2026-11-26|morning"
    code, tomorrow = cli_json(capsys, "budget", "--date", "2026-11-26")
    assert tomorrow["exhausted"] is False and tomorrow["spent_usd"] == 0


def test_a_budget_that_runs_out_mid_day_defers_work_with_reasons(sample_home, monkeypatch, capsys):
    monkeypatch.setenv("CASS_DAILY_BUDGET_USD", "0.12")
    code, report = cli_json(capsys, "run-day", "--date", DAY)
    assert code == 0
    units = [u for us in report["plan"]["phases"].values() for u in us]
    # Every unit ends in a final state (which ones the money reached varies with the answers' lengths;
    # tests/test_spending.py shows work completing on a five-cent day).
    assert units and all(u["status"] in ("completed", "deferred", "skipped", "cancelled") for u in units)
    deferred = [u for u in units if u["status"] == "deferred"]
    assert deferred and all(u["reason"] for u in deferred)
    assert report["budget"]["spent_usd"] <= 0.12
    rt = open_runtime()
    assert rt.store.scalar("SELECT count(*) FROM reservations WHERE status = 'held'") == 0


def test_paused_trigger_refuses_unless_forced(sample_home, capsys):
    assert main(["pause", "--reason", "owner asleep"]) == 0
    capsys.readouterr()
    assert main(["trigger", "morning_reflection", "--focus", "uncertainty"]) == 3
    assert "paused (owner asleep)" in capsys.readouterr().err
    rt = open_runtime()
    assert rt.store.scalar("SELECT count(*) FROM work_units WHERE origin IN ('manual', 'forced')") == 0

    code, out = cli_json(capsys, "trigger", "morning_reflection", "--focus", "uncertainty", "--force")
    assert code == 0 and out["work_unit"]["status"] == "completed"
    unit = out["work_unit"]
    assert unit["origin"] == "forced" and unit["focus"] == "uncertainty"
    assert [r["status"] for r in plans.action_runs(rt.store, unit["id"])] == ["completed", "completed"]
    assert rt.store.one("SELECT status FROM work_summaries WHERE work_unit_id = ?", [unit["id"]])["status"] == \
        "completed"


def test_trigger_refuses_work_a_paused_category_would_stop_midway(sample_home, capsys):
    """An open-question review (curiosity) has a research step that calls the model: while research is paused
    the unit would run its first step and wait there, so `trigger` refuses it as it refuses a paused category."""
    assert main(["pause", "--category", "research", "--reason", "no browsing this week"]) == 0
    capsys.readouterr()
    assert main(["trigger", "open_question_review", "--focus", "memory"]) == 3
    err = capsys.readouterr().err
    assert "no browsing this week" in err and "research.run_single" in err, err
    assert open_runtime().store.scalar("SELECT count(*) FROM work_units WHERE origin = 'manual'") == 0


def test_trigger_runs_through_manual_work_job_and_rejects_unknown_templates(sample_home, capsys):
    code, out = cli_json(capsys, "trigger", "growth_edge_work", "--focus", "Respectful disagreement")
    assert code == 0 and out["work_unit"]["template_id"] == "growth_edge_work"
    run = dg.DagsterInstance.get().get_run_by_id(out["run_id"])
    assert run.job_name == "manual_work_job"
    assert main(["trigger", "teleportation"]) == 2   # a usage error
    assert "unknown template 'teleportation'" in capsys.readouterr().err


def test_manual_work_from_the_launchpad_refuses_an_unknown_phase_and_a_date_outside_the_partitions(sample_home):
    """The launchpad's config is not the CLI's: a phase not in the day, a date that does not parse, or one
    outside the date partitions (a day ahead has an untouched budget: work there escaped today's cap) fails
    the run with the field named, and no unit is made."""
    from datetime import timedelta

    from support import TODAY

    from cass_pipelines.execution import QUIET, execute, instance_for, run_tags

    rt = open_runtime()
    defs, instance = build_defs(rt.settings, rt.registry), instance_for(rt.settings)
    for given, why in (({"phase": "brunch"}, "phase: unknown phase 'brunch'"),
                       ({"date": "2026-13-45"}, "date: expected YYYY-MM-DD, got '2026-13-45'"),
                       ({"date": (TODAY + timedelta(days=400)).isoformat()}, "is not a date partition")):
        config = {"ops": {"start_manual_work": {"config": {"template_id": "growth_edge_work", **given}}}}
        result = execute(defs, instance, "manual_work_job", {**QUIET, **config}, run_tags(trigger="test"))
        failures = [e for e in result.all_events if e.is_step_failure]
        assert not result.success and why in failures[0].step_failure_data.error.message, given
    assert rt.store.scalar("SELECT count(*) FROM work_units WHERE origin IN ('manual', 'forced')") == 0
    assert rt.store.scalar("SELECT count(*) FROM llm_ledger") == 0


def test_one_refused_dear_call_does_not_exhaust_a_small_day_with_its_money_untouched(sample_home, monkeypatch, capsys):
    """On an $0.08 day, work whose first call ($0.02+) does not fit its category's share is refused before
    anything was funded: the day is not exhausted by it (the other categories have not asked; this week's
    calls cost a fraction of a cent), so its phases still run. (Found by a three-week soak: one refused ask
    skipped a whole day with its money untouched.)"""
    from datetime import timedelta

    from support import NOW, TODAY, ledger_row

    from cass_pipelines.store import budget as sb

    rt = open_runtime()
    for n in range(1, 4):   # the week so far: cheap calls
        held = sb.reserve(rt.store, day=TODAY - timedelta(days=n), category="memory", amount_usd=0.002,
                          settings=rt.settings, priority="normal", now=NOW)
        sb.settle(rt.store, held.id, ledger_row(f"req_cheap_{n}", 0.0015, "memory"), NOW)
    monkeypatch.setenv("CASS_DAILY_BUDGET_USD", "0.08")
    code, out = cli_json(capsys, "trigger", "knowledge_building", "--focus", "tide pools")
    assert out["work_unit"]["defer_kind"] == "budget", out             # refused: the research share is $0.02
    code, budget = cli_json(capsys, "budget")
    assert code == 0 and budget["spent_usd"] == 0.0 and budget["remaining_usd"] > 0.07, budget
    # Nothing was spent and 90% of the usable day is left: the day is not exhausted, and its phases run.
    assert budget["exhausted"] is False, budget
    assert main(["run-phase", "morning"]) != 3
