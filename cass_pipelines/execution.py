"""Running the project's jobs in this process through Dagster (run-day, run-phase, trigger).

Runs go to the DAGSTER_HOME instance (default CASS_HOME/dagster), so they appear in the UI
afterwards exactly like runs launched by the schedules.
"""
import os
from datetime import date
from pathlib import Path

import dagster as dg

from cass_pipelines.core.settings import Settings
from cass_pipelines.partitions import phase_key
from cass_pipelines.store.claims import HOST

DAGSTER_YAML = """\
# Written by cass-pipelines. Runs sharing the DuckDB file are serialised by one pool slot
# (enforced by the run queue for daemon-launched runs); telemetry stays off.
concurrency:
  pools:
    default_limit: 1
    granularity: run
telemetry:
  enabled: false
"""


def dagster_home(settings: Settings) -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or settings.home / "dagster")
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text(DAGSTER_YAML, encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def instance_for(settings: Settings) -> dg.DagsterInstance:
    dagster_home(settings)
    return dg.DagsterInstance.get()


# Runs started from the CLI keep Dagster's console logger to warnings: the report says what happened,
# and every event is still stored in the instance for the UI.
def run_tags(**tags: str) -> dict[str, str]:
    """Tags of a run this process executes: its pid and host let recovery mark it failed if the
    process dies mid-run (Dagster's own run monitoring only watches runs a daemon launched)."""
    return {"cass/pid": str(os.getpid()), "cass/host": HOST,
            **{k if k.startswith("cass/") else f"cass/{k}": v for k, v in tags.items()}}


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run_phase(defs: dg.Definitions, instance: dg.DagsterInstance, day: date, phase: str,
              replan: bool = False, trigger: str = "cli") -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("phase_job").execute_in_process(
        instance=instance, partition_key=phase_key(day.isoformat(), phase), raise_on_error=False,
        run_config={**QUIET, "ops": {"phase_plan": {"config": {"replan": replan}}}},
        tags=run_tags(phase=phase, date=day.isoformat(), trigger=trigger))


def run_journal(defs: dg.Definitions, instance: dg.DagsterInstance, day: date) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("journal_job").execute_in_process(
        instance=instance, partition_key=day.isoformat(), raise_on_error=False, run_config=QUIET,
        tags=run_tags(date=day.isoformat(), trigger="cli"))


def run_memory(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("memory_job").execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET, tags=run_tags(trigger="cli"))


def run_manual(defs: dg.Definitions, instance: dg.DagsterInstance, template_id: str, focus: str,
               phase: str = "", day: date | None = None, force: bool = False) -> dg.ExecuteInProcessResult:
    config = {"template_id": template_id, "focus": focus, "phase": phase, "date": day.isoformat() if day else "",
              "force": force}
    return defs.resolve_job_def("manual_work_job").execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={**QUIET, "ops": {"start_manual_work": {"config": config}}},
        tags=run_tags(trigger="cli", template=template_id))


def run_dead_letter_retry(defs: dg.Definitions, instance: dg.DagsterInstance,
                          dead_letter_id: str) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("dead_letter_retry_job").execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={**QUIET, "ops": {"retry_dead_letter_op": {"config": {"dead_letter_id": dead_letter_id}}}},
        tags=run_tags(trigger="cli", **{"cass/dead_letter": dead_letter_id}))


def run_error(result: dg.ExecuteInProcessResult) -> str | None:
    """The first step failure's message, for the report."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data:
            return f"{event.step_key}: {event.step_failure_data.error.message.strip()[:400]}"
    return None if result.success else "run failed"
