"""The CLI as operators use it, on the inputs they plausibly give: a key pasted into cass.toml, a trimmed
registry, an edited dagster.yaml, a start_date typo, an exhausted budget, a pause, a decided approval,
failed units in a week, a file saved with a byte-order mark, an unbounded reason."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import SAMPLE_DAY, count_opens, utc

from cass_pipelines.cli.main import main

# A realistic Anthropic key: "sk-ant-api03-" and 95 more characters.
SECRET = "sk-ant-api03-" + "Zq7" * 31 + "xAA"


def _config(cass_env) -> Path:
    return Path(cass_env["CASS_HOME"]) / "cass.toml"


def test_api_key_put_in_cass_toml_is_not_echoed_by_validate(sample_home, monkeypatch, capsys):
    """A key pasted into cass.toml (the mistake its comment warns against) is named as a field that is no
    setting, its value never printed (terminal, CI log), whether or not the environment holds the same key."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    config = _config(sample_home)
    config.write_text(f'anthropic_api_key = "{SECRET}"\n' + config.read_text(encoding="utf-8"), encoding="utf-8")
    for argv in (["validate"], ["status"], ["validate", "--json"]):
        assert main(argv) == 2
        captured = capsys.readouterr()
        shown = captured.out + captured.err
        assert "anthropic_api_key" in shown            # the field is named, so the user can fix it
        assert SECRET[:40] not in shown, shown         # but the key itself is not printed
    # A key pasted as another setting's value is not printed back either, though the value is quoted.
    config.write_text(f'timezone = "{SECRET}"\n', encoding="utf-8")
    assert main(["validate"]) == 2
    shown = "".join(capsys.readouterr())
    assert "field 'timezone'" in shown and "sk-ant-api03-Zq7" not in shown, shown


def test_trigger_while_the_budget_is_exhausted_exits_3_refused(sample_home, monkeypatch, capsys):
    """README: exit 3 'refused: ... the day's budget exhausted (`trigger`, ...)': `trigger` refuses before
    launching a run, as `run-phase` does."""
    assert main(["run-phase", "morning"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("CASS_DAILY_BUDGET_USD", "0.02")   # below what the morning spent
    assert main(["budget", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["exhausted"] is True
    assert main(["run-phase", "afternoon"]) == 3            # refused, as documented
    capsys.readouterr()
    code = main(["trigger", "morning_reflection", "--json"])
    out = capsys.readouterr().out
    assert code == 3, (code, out)


def _registry_without(tmp_path: Path, template_id: str) -> Path:
    from cass_pipelines.config.registry import DEFAULT_REGISTRY_FILE

    data = json.loads(DEFAULT_REGISTRY_FILE.read_text(encoding="utf-8"))
    data["templates"] = [t for t in data["templates"] if t["id"] != template_id]
    path = tmp_path / f"actions_without_{template_id}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_validate_refuses_a_registry_without_the_journal_template(sample_home, tmp_path, monkeypatch, capsys):
    """A user's registry (a trimmed copy of definitions.json) without `daily_journal` is refused by
    `validate`, naming the file and what needs the template, instead of every journal run failing later."""
    path = _registry_without(tmp_path, "daily_journal")
    monkeypatch.setenv("CASS_ACTIONS_FILE", str(path))
    code = main(["validate"])
    out = capsys.readouterr()
    assert code == 2, out.out
    assert str(path) in out.out + out.err and "daily_journal" in out.out + out.err


def test_validate_refuses_a_registry_without_the_memory_template(sample_home, tmp_path, monkeypatch, capsys):
    """The same for `conversation_catchup`, which memory_job runs."""
    path = _registry_without(tmp_path, "conversation_catchup")
    monkeypatch.setenv("CASS_ACTIONS_FILE", str(path))
    code = main(["validate"])
    out = capsys.readouterr()
    assert code == 2, out.out
    assert "conversation_catchup" in out.out + out.err


def test_run_day_with_a_registry_without_the_journal_template_is_refused_before_running(sample_home, tmp_path,
                                                                                         monkeypatch, capsys):
    """run-day checks what a run needs (as validate does) before it starts: nothing is paid for a day
    whose journal could not be written."""
    path = _registry_without(tmp_path, "daily_journal")
    monkeypatch.setenv("CASS_ACTIONS_FILE", str(path))
    code = main(["run-day", "--phases", "night"])
    out = capsys.readouterr()
    assert "KeyError" not in out.out + out.err, out.out[:600]
    assert code == 2


def _break_dagster_yaml(cass_env) -> Path:
    path = Path(cass_env["DAGSTER_HOME"]) / "dagster.yaml"
    text = path.read_text(encoding="utf-8")
    assert "max_retries: 1\n" in text
    path.write_text(text.replace("max_retries: 1\n", "max_retries: lots\n"), encoding="utf-8")
    return path


def test_validate_checks_the_dagster_yaml_a_run_will_load(sample_home, capsys):
    """`init` keeps a dagster.yaml a person edited; `validate` checks it as a run will load it."""
    path = _break_dagster_yaml(sample_home)
    code = main(["validate"])
    out = capsys.readouterr()
    assert code == 2, out.out
    assert str(path) in out.out + out.err


def test_run_phase_with_a_bad_dagster_yaml_is_a_configuration_error_not_unexpected(sample_home, capsys):
    """A dagster.yaml Dagster refuses is a usage error (exit 2) naming the file, as a bad settings file is,
    not an "unexpected error"."""
    path = _break_dagster_yaml(sample_home)
    code = main(["run-phase", "morning"])
    err = capsys.readouterr().err
    assert "unexpected error" not in err, err
    assert code == 2 and str(path) in err, (code, err)


def test_validate_refuses_a_start_date_after_today(sample_home, capsys):
    """A start_date after today (a typo of the year) leaves no date to run: `validate` says so."""
    from support import TODAY

    config = _config(sample_home)
    later = TODAY.replace(year=TODAY.year + 1)
    config.write_text(f"start_date = {later.isoformat()}\n" + config.read_text(encoding="utf-8"), encoding="utf-8")
    assert main(["run-day"]) == 2
    assert f"dates run from start_date {later}" in capsys.readouterr().err
    code = main(["validate"])
    out = capsys.readouterr()
    assert code == 2 and "start_date" in out.out + out.err, out.out


def test_the_quick_start_plan_says_why_a_unit_serves_no_goal(sample_home, capsys):
    """README: 'Every planned unit names the goal it serves, or says why none'. On the quick start (a fresh
    sample home, no week planned yet) every unit says why: "no goal named"."""
    assert main(["run-phase", "morning"]) == 0
    text = capsys.readouterr().out
    assert main(["plan", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    planned = [u for us in plan["phases"].values() for u in us if u["origin"] == "plan"]
    assert planned
    assert "goal: none ()" not in text, text
    assert all(u["goal_id"] or u["goal_note"] for u in planned), [(u["template_id"], u["goal_note"]) for u in planned]


def test_metrics_count_failed_runs_of_every_job(sample_home, capsys):
    """README: `cass_dagster_runs` counts finished runs by job and status, and the failed-runs alert uses it:
    a failed week_job (the scheduled weekly intention), week_journal_job, approval_job or
    dead_letter_retry_job is counted."""
    import dagster as dg
    from dagster._core.test_utils import create_run_for_test

    with dg.DagsterInstance.get() as instance:
        for job in ("week_job", "week_journal_job", "approval_job", "dead_letter_retry_job"):
            create_run_for_test(instance, job_name=job, status=dg.DagsterRunStatus.FAILURE)
    assert main(["metrics", "--once"]) == 0
    text = capsys.readouterr().out
    missing = [job for job in ("week_job", "week_journal_job", "approval_job", "dead_letter_retry_job")
               if f'cass_dagster_runs{{job="{job}",status="FAILURE"}} 1.0' not in text]
    assert not missing, missing


def test_import_of_a_utf8_file_with_a_byte_order_mark_keeps_its_first_message(sample_home, tmp_path, capsys):
    """A JSONL export saved as 'UTF-8 with BOM' (Notepad, PowerShell 5's Out-File -Encoding utf8) is valid
    UTF-8: its first message goes in with the rest."""
    lines = [json.dumps({"conversation_id": "bom", "message_id": f"m{i}", "role": "user", "content": "hi",
                         "created_at": utc(SAMPLE_DAY).isoformat()}) for i in range(3)]
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")
    code = main(["import-conversations", str(path), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert (code, report["messages_added"], report["bad_lines"]) == (0, 3, []), report


def test_while_paused_the_reports_say_the_journal_waits_and_the_phases_were_skipped(sample_home, capsys):
    """While paused, the phases are not launched (skipped) and the journal's run defers its unit: run-day's and
    run-week's reports say it waits, with the reason, not `ok`, and count it among the runs launched."""
    from cass_pipelines.cli.day_cmds import render_report
    from cass_pipelines.services.week_report import render_week

    assert main(["pause", "--reason", "holiday"]) == 0
    capsys.readouterr()
    assert main(["run-day", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    journal_run = next(r for r in report["runs"] if r["phase"] == "journal")
    assert report["journal"] is None                      # nothing was written
    assert journal_run["run_id"] and journal_run["success"] and journal_run["waits"] == "paused: holiday", journal_run
    assert "run journal   waits: paused: holiday\n    ok " in render_report(report)
    assert main(["run-week", "--days", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    launched = [r for r in report["runs"] if not r.get("skipped")]
    skipped = [r for r in report["runs"] if r.get("skipped")]
    assert [r["phase"] for r in launched] == ["journal"] and launched[0]["waits"] == "paused: holiday"
    assert skipped and all(r["skipped"] == "paused: holiday" for r in skipped), skipped
    text = render_week(report)
    assert f"1 Dagster runs, 0 failed, 0 units failed, 1 runs' work waits, {len(skipped)} runs skipped" in text
    assert f"waits {launched[0]['name']} {launched[0]['run_id'][:8]}: paused: holiday" in text


def _failing_insight_registry(cass_env, tmp_path, monkeypatch) -> None:
    """A user's registry whose `self.record_insight` handler (in the user's own module) raises."""
    from cass_pipelines.config.registry import DEFAULT_REGISTRY_FILE

    (tmp_path / "rev_failing_handlers.py").write_text("def boom(ctx):\n    raise RuntimeError('disk on fire')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = json.loads(DEFAULT_REGISTRY_FILE.read_text(encoding="utf-8"))
    for action in data["actions"]:
        if action["id"] == "self.record_insight":
            action["handler"] = "rev_failing_handlers:boom"
    registry = tmp_path / "actions.json"
    registry.write_text(json.dumps(data), encoding="utf-8")
    config = _config(cass_env)
    config.write_text(f'actions_file = "{registry}"\nhandler_modules = ["rev_failing_handlers"]\n'
                      + config.read_text(encoding="utf-8"), encoding="utf-8")


def test_run_week_exits_4_when_units_failed(sample_home, tmp_path, monkeypatch, capsys):
    """run-week exits 4 when a unit failed, as run-day does (day_cmds._exit_code)."""
    _failing_insight_registry(sample_home, tmp_path, monkeypatch)
    code = main(["run-week", "--days", "1", "--json"])
    report = json.loads(capsys.readouterr().out)
    failed = [u for r in report["runs"] for u in r.get("failed_units", [])]
    assert failed and report["units_by_status"].get("failed")
    assert code == 4, (code, failed)
    # The text report names what the exit code says, and counts only the runs launched.
    from cass_pipelines.services.week_report import render_week

    text = render_week(report)
    launched = [r for r in report["runs"] if not r.get("skipped")]
    assert f"{len(launched)} Dagster runs, 0 failed, {len(failed)} units failed" in text
    assert all(f"unit failed in {r['name']}: {u[:200]}" in text for r in launched for u in r.get("failed_units", []))


def test_dlq_discard_reason_is_bounded_like_every_other_reason(sample_home, tmp_path, monkeypatch, capsys):
    """README: free text on the command line is refused past 2000 characters; `dlq discard --reason` too."""
    _failing_insight_registry(sample_home, tmp_path, monkeypatch)
    assert main(["trigger", "morning_reflection", "--json"]) == 1
    capsys.readouterr()
    assert main(["dlq", "list", "--json"]) == 0
    letter = json.loads(capsys.readouterr().out)[0]["id"]
    code = main(["dlq", "discard", letter, "--reason", "x" * 100_000])
    captured = capsys.readouterr()
    assert code == 2 and "at most 2000 characters" in captured.err, (code, len(captured.out))


def test_deciding_an_approval_already_decided_says_so_without_a_failed_run(sample_home, capsys):
    """A second `approvals approve` (or a late `reject`) of a decided request is a usage error naming its
    state; it launches no approval_job run to fail."""
    import dagster as dg
    from support import TODAY, seed_plan

    from cass_pipelines.definitions import build_defs
    from cass_pipelines.execution import instance_for, run_phase
    from cass_pipelines.services.runtime import open_runtime
    from cass_pipelines.store import plans

    rt = open_runtime()
    instance, defs = instance_for(rt.settings), build_defs(rt.settings, rt.registry)
    seed_plan(rt, TODAY, "afternoon", ["research_batch"])
    assert run_phase(defs, instance, TODAY, "afternoon").success
    [unit] = plans.units_for_phase(rt.store, TODAY, "afternoon")
    assert main(["approvals", "approve", unit["id"], "--reason", "ok"]) == 0
    runs = instance.get_runs_count(dg.RunsFilter(job_name="approval_job"))
    capsys.readouterr()
    for argv in (["approvals", "approve", unit["id"], "--reason", "again"],
                 ["approvals", "reject", unit["id"], "--reason", "late"]):
        assert main(argv) == 2
        assert "its approval request is approved" in capsys.readouterr().err
    assert instance.get_runs_count(dg.RunsFilter(job_name="approval_job")) == runs


def test_read_commands_bring_forward_a_database_an_earlier_release_made(cass_env, capsys, monkeypatch):
    """After an upgrade, the first command may be a read (`status`, `budget`, `ledger`, `plan`): a database
    still at the earlier release's schema is migrated first, so the reads find the current columns."""
    from support import TODAY, seed_plan

    from cass_pipelines.services.runtime import open_runtime
    from cass_pipelines.store import schema

    with monkeypatch.context() as m:   # the database as the release before migration 80 made it
        m.setattr(schema, "MIGRATIONS", [mig for mig in schema.MIGRATIONS if mig[0] < 80])
        assert main(["init", "--sample"]) == 0
        rt = open_runtime()
        seed_plan(rt, TODAY, "morning", ["research_deep_dive"])
    assert schema.current_version(rt.store) < schema.LATEST_VERSION
    for command in (["status"], ["budget"], ["ledger"], ["plan"]):
        capsys.readouterr()
        assert main([*command, "--json"]) == 0, (command, capsys.readouterr().err[-600:])
    assert schema.current_version(rt.store) == schema.LATEST_VERSION


@pytest.mark.parametrize("command", ["status", "budget", "ledger"])
def test_a_read_command_on_a_current_database_opens_the_store_once(sample_home, monkeypatch, capsys, command):
    """`status`, `budget` and `ledger` take the file lock once (the schema's look included): each open
    waits behind a run holding the file, and makes a run wait."""
    opens = count_opens(monkeypatch)
    assert main([command, "--json"]) == 0, capsys.readouterr().err[-400:]
    assert opens[0] == 1, f"`{command}` opened the store {opens[0]} times"


def test_sensors_read_a_database_an_earlier_release_made(cass_env, monkeypatch):
    """After an upgrade, `cass-pipelines ui` starts the daemon on the database as the earlier release left
    it: the sensors' first look brings it forward, so their reads of the current columns work."""
    import dagster as dg

    from cass_pipelines.definitions import build_defs
    from cass_pipelines.services.runtime import open_runtime
    from cass_pipelines.store import schema

    with monkeypatch.context() as m:   # the database as the release before migration 80 made it
        m.setattr(schema, "MIGRATIONS", [mig for mig in schema.MIGRATIONS if mig[0] < 80])
        assert main(["init", "--sample"]) == 0
    rt = open_runtime()
    assert schema.current_version(rt.store) < schema.LATEST_VERSION
    defs, instance = build_defs(rt.settings, rt.registry), dg.DagsterInstance.get()
    failed = {}
    for name in ("idle_memory_sensor", "budget_sensor"):
        sensor = defs.resolve_sensor_def(name)
        with dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def(),
                                     resources=defs.resources) as ctx:
            try:
                sensor.evaluate_tick(ctx)
            except Exception as exc:   # (the daemon records a failed tick, each interval)
                failed[name] = " ".join(str(exc).split())[:160]
    assert not failed, sorted(failed)
