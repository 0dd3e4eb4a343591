"""The Dagster code location: it loads (as `dagster` and the webserver load it), exposes the public names
of DESIGN.md, and refuses to load with a bad registry or bad settings, naming file, template and action."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from cass_pipelines.config.registry import DEFAULT_REGISTRY_FILE, load_registry
from cass_pipelines.config.settings import load_settings
from cass_pipelines.definitions import build_defs

REPO = Path(__file__).resolve().parent.parent
WORKSPACE = REPO / "workspace.yaml"
DAGSTER = str(Path(sys.executable).parent / "dagster")


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CASS_", "ANTHROPIC_", "DAGSTER_"))}
    (tmp_path / "dagster").mkdir(exist_ok=True)
    env.update(CASS_HOME=str(tmp_path / "cass"), CASS_LLM="offline", DAGSTER_HOME=str(tmp_path / "dagster"), **extra)
    return env


@pytest.fixture
def bad_registry(tmp_path: Path) -> Path:
    data = json.loads(DEFAULT_REGISTRY_FILE.read_text(encoding="utf-8"))
    next(t for t in data["templates"] if t["id"] == "research_batch")["action_sequence"][1] = "research.deleted"
    next(a for a in data["actions"] if a["id"] == "session.writing")["category"] = "creative2"
    path = tmp_path / "user_actions.json"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def test_dagster_definitions_validate_passes_on_the_workspace(tmp_path):
    proc = subprocess.run([DAGSTER, "definitions", "validate", "-w", str(WORKSPACE)], cwd=tmp_path,
                          env=clean_env(tmp_path), capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Validation successful for code location cass_pipelines" in output


def test_dagster_definitions_validate_fails_on_a_bad_registry(tmp_path, bad_registry):
    proc = subprocess.run([DAGSTER, "definitions", "validate", "-w", str(WORKSPACE)], cwd=tmp_path,
                          env=clean_env(tmp_path, CASS_ACTIONS_FILE=str(bad_registry)),
                          capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert str(bad_registry) in output
    assert "template 'research_batch'" in output and "unknown action 'research.deleted'" in output


DG = str(Path(sys.executable).parent / "dg")
LOAD = "from cass_pipelines.definitions import defs; defs()"   # what Dagster does with the module's `defs`


def test_dg_check_defs_passes_on_the_project(tmp_path):
    proc = subprocess.run([DG, "check", "defs"], cwd=REPO, env=clean_env(tmp_path, VIRTUAL_ENV=str(REPO / ".venv")),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All definitions loaded successfully" in proc.stdout + proc.stderr


def test_dg_check_defs_fails_on_a_bad_registry_naming_file_template_and_action(tmp_path, bad_registry):
    proc = subprocess.run([DG, "check", "defs"], cwd=REPO,
                          env=clean_env(tmp_path, CASS_ACTIONS_FILE=str(bad_registry), VIRTUAL_ENV=str(REPO / ".venv")),
                          capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"{bad_registry}: template 'research_batch'" in output and "unknown action 'research.deleted'" in output


def test_loading_the_code_location_fails_with_file_template_action_and_field(tmp_path, bad_registry):
    proc = subprocess.run([sys.executable, "-c", LOAD], cwd=tmp_path,
                          env=clean_env(tmp_path, CASS_ACTIONS_FILE=str(bad_registry)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()
    error = "\n".join(last[last.index(next(line for line in last if "RegistryError" in line)):])
    assert f"{bad_registry}: template 'research_batch': field 'action_sequence[1]': unknown action " \
           f"'research.deleted'" in error
    assert f"{bad_registry}: action 'session.writing': field 'category'" in error and "'creative2'" in error


def test_loading_the_code_location_fails_on_bad_settings(tmp_path):
    proc = subprocess.run([sys.executable, "-c", LOAD], cwd=tmp_path,
                          env=clean_env(tmp_path, CASS_TIMEZONE="Mars/Olympus", CASS_DAILY_BUDGET_USD="-1"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "SettingsError" in proc.stderr
    assert "CASS_TIMEZONE: field 'timezone'" in proc.stderr and "'Mars/Olympus'" in proc.stderr
    assert "CASS_DAILY_BUDGET_USD: field 'daily_budget_usd'" in proc.stderr


# --- in process --------------------------------------------------------------------------------------

@pytest.fixture
def berlin_defs(cass_env, monkeypatch) -> dg.Definitions:
    monkeypatch.setenv("CASS_TIMEZONE", "Europe/Berlin")
    settings = load_settings()
    return build_defs(settings, load_registry(settings.actions_file))


def test_the_defs_folder_and_build_defs_give_the_same_code_location(cass_env):
    import cass_pipelines.definitions as module

    folder = module.defs()   # as Dagster and dg load it: every domain under defs/
    settings = load_settings()
    built = build_defs(settings, load_registry(settings.actions_file))

    def names(defs: dg.Definitions) -> dict[str, set[str]]:
        repo = defs.get_repository_def()
        return {"jobs": {j.name for j in defs.resolve_all_job_defs()},
                "assets": {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()},
                "checks": {k.name for k in defs.resolve_asset_graph().asset_check_keys},
                "schedules": {s.name for s in repo.schedule_defs}, "sensors": {s.name for s in repo.sensor_defs},
                "resources": set(repo.get_top_level_resources())}

    assert names(folder) == names(built)
    assert names(folder)["jobs"] >= {"phase_job", "journal_job", "memory_job", "manual_work_job",
                                      "dead_letter_retry_job"}


def test_jobs_assets_schedules_sensors_have_their_public_names(berlin_defs):
    defs = berlin_defs
    jobs = {j.name: j for j in defs.resolve_all_job_defs()}
    assert {"phase_job", "journal_job", "memory_job", "manual_work_job"} <= set(jobs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"phase_plan", "phase_work", "work_summaries", "cost_records", "daily_journal",
            "conversation_summaries", "conversations", "self_model"} <= keys
    repo = defs.get_repository_def()
    schedules = {s.name: s for s in repo.schedule_defs}
    assert set(schedules) >= {"morning_schedule", "afternoon_schedule", "evening_schedule", "night_schedule",
                              "journal_schedule"}
    # One timezone for phases, partitions and budget days.
    assert {schedules[n].execution_timezone for n in schedules} == {"Europe/Berlin"}
    assert "idle_memory_sensor" in {s.name for s in repo.sensor_defs}
    # Each schedule targets the job DESIGN.md names.
    assert {schedules[f"{p}_schedule"].job_name for p in ("morning", "afternoon", "evening", "night")} == {"phase_job"}
    assert schedules["journal_schedule"].job_name == "journal_job"


def test_budget_and_dead_letter_sensors_are_in_the_code_location(berlin_defs):
    sensors = {s.name: s for s in berlin_defs.get_repository_def().sensor_defs}
    assert {"budget_sensor", "idle_memory_sensor", "dead_letter_sensor", "batch_sensor", "journal_resume_sensor"} \
        <= set(sensors)
    assert sensors["batch_sensor"].job_name == "phase_job"            # it resumes phases after their batches
    assert sensors["journal_resume_sensor"].job_name == "journal_job"


def test_asset_lineage(berlin_defs):
    graph = berlin_defs.resolve_asset_graph()

    def parents(name: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}

    assert "phase_plan" in parents("phase_work")
    assert "phase_work" in parents("work_summaries")
    assert {"work_summaries", "cost_records", "conversation_summaries"} <= parents("daily_journal")
    assert "conversations" in parents("conversation_summaries")
    assert {"conversations", "self_model"} <= parents("phase_plan")


def test_partitions_are_date_by_phase_in_the_agents_timezone_and_include_today(berlin_defs):
    graph = berlin_defs.resolve_asset_graph()
    pdef = graph.get(dg.AssetKey("phase_plan")).partitions_def
    assert isinstance(pdef, dg.MultiPartitionsDefinition)
    dims = {d.name: d.partitions_def for d in pdef.partitions_defs}
    assert set(dims) == {"date", "phase"}
    assert dims["phase"].get_partition_keys() == ["morning", "afternoon", "evening", "night"]
    date_def = dims["date"]
    assert date_def.timezone == "Europe/Berlin"
    # A day's partition exists during that day (end_offset=1) and is keyed by the local date.
    late = datetime(2026, 11, 20, 23, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    assert date_def.get_partition_keys(current_time=late)[-1] == "2026-11-20"
    early = datetime(2026, 11, 21, 0, 30, tzinfo=ZoneInfo("Europe/Berlin"))   # 23:30 UTC on the 20th
    assert date_def.get_partition_keys(current_time=early)[-1] == "2026-11-21"
    journal = graph.get(dg.AssetKey("daily_journal")).partitions_def
    assert isinstance(journal, dg.DailyPartitionsDefinition) and journal.timezone == "Europe/Berlin"
