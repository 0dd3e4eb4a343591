"""The Dagster instance of a CASS_HOME, and running the project's jobs in this process (run-day,
run-phase, run-week, trigger).

Runs go to the DAGSTER_HOME instance (default CASS_HOME/dagster) and are created with the code
location's origin (workspace.yaml: location `cass_pipelines`), so the UI lists them under their job
exactly like runs launched by the schedules; they still execute synchronously in this process.
"""
import fcntl
import hashlib
import os
import sqlite3
import sys
import time
from contextlib import contextmanager
from datetime import date, datetime, timezone
from importlib.resources import files
from pathlib import Path

import dagster as dg
import sqlalchemy.exc
import yaml
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.tags import MAX_RETRIES_TAG

from cass_pipelines.defs.partitions import phase_key
from cass_pipelines.domain.clock import clock_from_env
from cass_pipelines.domain.settings import Settings, SettingsError
from cass_pipelines.services.logs import run_log_level
from cass_pipelines.store.claims import HOST, process_stamp

# The code location as workspace.yaml declares it; the UI files runs under `__repository__@cass_pipelines`.
LOCATION_NAME = "cass_pipelines"
MODULE, ATTRIBUTE = "cass_pipelines.definitions", "defs"

STORE_POOL = "cass_store"   # every asset and op that writes the DuckDB file (dagster.yaml: default_limit 1)
SHIPPED_DAGSTER_YAML = files("cass_pipelines") / "data" / "dagster.yaml"
# sha256 of every dagster.yaml an earlier cass-pipelines wrote: those (and only those) are upgraded.
EARLIER_DAGSTER_YAMLS = {"f1723c9e92f8f7af147d4c9a0916f6e6e69e6e288b61e194888aa55647cf6ee6",
                         "b1a04d3182a466af8fbd7364849ee05e6322ced62e05b6188b79c7cc1d9f6754",
                         "f8f849c45fe93f18b3285d22894d11d7d918860753bdd7661ebc1303cdbeace5",
                         "d3b79903f90a5842d823b059595e9f61332ad6eff5a8e02d1050f7882f371360",
                         "d349e398fdb624b270b4010cc6f2cb80f1812dbe57419132c0dd5cfc4cf7c2ca",
                         "a09fbed5c1c55d440ee1b816f810181c4a9b46283e66f2d66dfe816152a84253"}


def instance_dir(settings: Settings) -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or settings.home / "dagster")


def install_dagster_yaml(home: Path) -> str:
    """Write the shipped dagster.yaml into the instance directory unless the user owns one there.
    Returns what happened: "installed", "upgraded", "current" or "kept" (a file cass did not write)."""
    home.mkdir(parents=True, exist_ok=True)
    target, shipped = home / "dagster.yaml", SHIPPED_DAGSTER_YAML.read_text(encoding="utf-8")
    if not target.exists():
        verdict = "installed"
    else:
        current = target.read_text(encoding="utf-8")
        if current == shipped:
            return "current"
        if hashlib.sha256(current.encode()).hexdigest() not in EARLIER_DAGSTER_YAMLS:
            return "kept"
        verdict = "upgraded"
    tmp = target.with_suffix(f".yaml.{os.getpid()}.tmp")
    tmp.write_text(shipped, encoding="utf-8")
    tmp.replace(target)   # atomic: a concurrent reader sees the old file or the new one
    return verdict


@contextmanager
def _first_use_lock(home: Path):
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".cass-instance.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _creation_race(exc: BaseException) -> bool:
    return "already exists" in str(exc) and isinstance(exc, (sqlalchemy.exc.OperationalError, sqlite3.OperationalError))


def instance_config_problems(settings: Settings) -> list[str]:
    """What is wrong with the instance's dagster.yaml (a person may have edited it: `init` keeps it), as
    Dagster would refuse it when a run loads the instance; [] when it is fine or not written yet."""
    path = instance_dir(settings) / "dagster.yaml"
    if not path.is_file():
        return []
    try:
        dagster_instance_config(str(path.parent))
    except (DagsterInvalidConfigError, yaml.YAMLError, OSError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return [f"{path}: {'; '.join(lines[1:] if len(lines) > 1 else lines)[:600]}"]
    return []


def instance_for(settings: Settings) -> dg.DagsterInstance:
    """The instance, created on first use. Two processes opening a fresh DAGSTER_HOME at once would both
    create its SQLite tables ("table instance_info already exists"): creation is serialised by a file
    lock, and a process that does not take the lock (the webserver, the daemon) losing the race to us is
    retried once its tables exist."""
    home = instance_dir(settings)
    with _first_use_lock(home):
        if not (home / "dagster.yaml").exists():
            install_dagster_yaml(home)
        problems = instance_config_problems(settings)
        if problems:   # a usage error naming the file, not a run's unexpected failure
            raise SettingsError(problems)
        os.environ["DAGSTER_HOME"] = str(home)
        for attempt in range(5):
            try:
                return dg.DagsterInstance.get()
            except Exception as exc:
                if not _creation_race(exc) or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def write_workspace(home: Path) -> Path:
    """A workspace file for `dagster dev` naming the code location as the repository's workspace.yaml does."""
    path = Path(home) / "workspace.yaml"
    path.write_text(f"load_from:\n  - python_module:\n      module_name: {MODULE}\n      attribute: {ATTRIBUTE}\n"
                    f"      location_name: {LOCATION_NAME}\n", encoding="utf-8")
    return path


def prepare_instance(settings: Settings) -> dict:
    """For `init`: install or upgrade the shipped dagster.yaml and create the instance's storage now, so
    that the webserver, the daemon and CLI runs starting together find it ready."""
    with _first_use_lock(instance_dir(settings)):
        verdict = install_dagster_yaml(instance_dir(settings))
    with instance_for(settings) as instance:
        # The queue daemon reads the configured pools before it gives a new one its default limit, so
        # on a fresh instance its first look would start two runs of pool cass_store at once.
        instance.event_log_storage.initialize_concurrency_limit_to_default(STORE_POOL)
    return {"dagster_home": str(instance_dir(settings)), "dagster_yaml": verdict}


def run_tags(**tags: str) -> dict[str, str]:
    """Tags of a run this process executes: its pid and host let recovery mark it failed if the
    process dies mid-run (Dagster's own run monitoring only watches runs a daemon launched). Such a run
    is not retried by the daemon's run retries: its user saw it end (and a retry would run elsewhere)."""
    stamp = process_stamp(os.getpid())   # who this pid is: a later process given the same pid is not this one
    return {"cass/pid": str(os.getpid()), "cass/host": HOST, MAX_RETRIES_TAG: "0",
            **({"cass/stamp": stamp} if stamp else {}),
            **{k if k.startswith("cass/") else f"cass/{k}": v for k, v in tags.items()}}


# Runs started from the CLI keep Dagster's console logger quiet (CASS_LOG_LEVEL, default CRITICAL: it
# would print each failure's stack trace): the report says what happened, one line per failure, and
# every event with its trace is still stored in the instance for the UI.
QUIET = {"loggers": {"console": {"config": {"log_level": run_log_level()}}}}


def job_origins(job_name: str):
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.remote_origin import ManagedGrpcPythonEnvCodeLocationOrigin, RemoteRepositoryOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    target = LoadableTargetOrigin(executable_path=sys.executable, module_name=MODULE, attribute=ATTRIBUTE)
    location = ManagedGrpcPythonEnvCodeLocationOrigin(loadable_target_origin=target, location_name=LOCATION_NAME)
    remote = RemoteRepositoryOrigin(code_location_origin=location, repository_name="__repository__")
    python = ReconstructableRepository.for_module(MODULE, ATTRIBUTE).get_reconstructable_job(job_name)
    return remote.get_job_origin(job_name), python.get_python_origin()


def create_run(defs: dg.Definitions, instance: dg.DagsterInstance, job_name: str, run_config: dict,
               tags: dict[str, str], partition_key: str | dg.MultiPartitionKey | None = None):
    """A run of the code location's job `job_name`, created (not started) as the UI and the daemon create
    one: it lists under its job and carries the origin a run worker loads it from."""
    from dagster._core.execution.execute_in_process import merge_run_tags

    job = defs.resolve_job_def(job_name)
    remote_origin, python_origin = job_origins(job_name)
    return instance.create_run_for_job(
        job_def=job, run_config=run_config,
        tags={**job.run_tags, **merge_run_tags(job, partition_key, tags, None, instance, run_config)},
        remote_job_origin=remote_origin, job_code_origin=python_origin)


def execute(defs: dg.Definitions, instance: dg.DagsterInstance, job_name: str, run_config: dict,
            tags: dict[str, str], partition_key: str | dg.MultiPartitionKey | None = None):
    """Run `job_name` of `defs` now, in this process, as a run of the code location's job."""
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.api import execute_run

    # The partitions end at today by CASS_NOW (domain/clock.py), as the CLI's date checks do, not by the
    # machine's clock: a demo or simulation of a later date runs that date's partitions.
    with dg.partition_loading_context(effective_dt=max(clock_from_env().now(), datetime.now(timezone.utc))):
        run = create_run(defs, instance, job_name, run_config, tags, partition_key)
        return execute_run(InMemoryJob(defs.resolve_job_def(job_name)), run, instance)


def run_phase(defs: dg.Definitions, instance: dg.DagsterInstance, day: date, phase: str,
              replan: bool = False, trigger: str = "cli", **tags: str):
    return execute(defs, instance, "phase_job", {**QUIET, "ops": {"phase_plan": {"config": {"replan": replan}}}},
                   run_tags(phase=phase, date=day.isoformat(), trigger=trigger, **tags),
                   partition_key=phase_key(day.isoformat(), phase))


def run_journal(defs: dg.Definitions, instance: dg.DagsterInstance, day: date):
    return execute(defs, instance, "journal_job", QUIET, run_tags(date=day.isoformat(), trigger="cli"),
                   partition_key=day.isoformat())


def run_week(defs: dg.Definitions, instance: dg.DagsterInstance, job_name: str, week: date):
    """week_job or week_journal_job of the week partition from `week` (its Monday)."""
    return execute(defs, instance, job_name, QUIET, run_tags(trigger="cli", week=week.isoformat()),
                   partition_key=week.isoformat())


def run_memory(defs: dg.Definitions, instance: dg.DagsterInstance):
    return execute(defs, instance, "memory_job", QUIET, run_tags(trigger="cli"))


def run_manual(defs: dg.Definitions, instance: dg.DagsterInstance, template_id: str, focus: str,
               phase: str = "", day: date | None = None, force: bool = False):
    config = {"template_id": template_id, "focus": focus, "phase": phase, "date": day.isoformat() if day else "",
              "force": force}
    return execute(defs, instance, "manual_work_job", {**QUIET, "ops": {"start_manual_work": {"config": config}}},
                   run_tags(trigger="cli", template=template_id))


def run_dead_letter_retry(defs: dg.Definitions, instance: dg.DagsterInstance, dead_letter_id: str):
    return execute(defs, instance, "dead_letter_retry_job",
                   {**QUIET, "ops": {"retry_dead_letter_op": {"config": {"dead_letter_id": dead_letter_id}}}},
                   run_tags(trigger="cli", **{"cass/dead_letter": dead_letter_id}))


def run_waits(result) -> str | None:
    """Why the work of a run that succeeded waits (an asset's `waits` metadata: a journal a pause or the budget
    deferred, a week's call refused), or None."""
    for event in result.all_events:
        if event.is_step_materialization and (waits := event.step_materialization_data.materialization.metadata.get(
                "waits")) is not None:
            return str(waits.value)
    return None


def run_error(result) -> str | None:
    """The first step failure's message, for the report: the cause Dagster wrapped, not its wrapper
    ("Error occurred while executing op ...")."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data:
            error = event.step_failure_data.error
            while error.cause is not None:
                error = error.cause
            message = error.message.strip().removeprefix("dagster._core.definitions.events.")
            return f"{event.step_key}: {' '.join(message.split())[:400]}"
    return None if result.success else "run failed"
