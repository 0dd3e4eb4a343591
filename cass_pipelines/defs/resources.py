"""Dagster resources, one per concern: the DuckDB file (`CassDuckDB`), the LLM backend (`LLMResource`), the
settings the code location was loaded with (`SettingsResource`), and `CassResource`, the project runtime
built from the three for ops and assets. `shared(ctx)`: resources, executor and loggers of every job."""

import threading
from contextlib import contextmanager
from datetime import datetime
from typing import Callable

import dagster as dg
from dagster._core.storage.tags import PARENT_RUN_ID_TAG
from dagster_duckdb import DuckDBResource
from pydantic import PrivateAttr

from cass_pipelines.config.registry import load_registry
from cass_pipelines.defs.context import DefsContext, load_time_context
from cass_pipelines.defs.llm_resource import LLMResource
from cass_pipelines.defs.loggers import cass_console_logger
from cass_pipelines.defs.threaded_executor import threaded_executor
from cass_pipelines.defs.ticks import BUSY, unless_busy
from cass_pipelines.domain.clock import Clock, FixedClock, clock_from_env
from cass_pipelines.domain.settings import Settings
from cass_pipelines.services.recovery import recover
from cass_pipelines.services.runtime import Runtime
from cass_pipelines.store.claims import HOST, process_is
from cass_pipelines.store.db import Store, open_connection
from cass_pipelines.store.schema import bring_forward, migrate


class CassDuckDB(DuckDBResource):
    """dagster-duckdb's resource, opening through the store's retrying connect.

    The upstream get_connection does not close its connection when the body raises, which leaves
    the file locked for every other process until garbage collection; this one always closes.
    """

    @contextmanager
    def get_connection(self):
        with open_connection(self.database) as conn:
            yield conn


def run_over(instance: dg.DagsterInstance) -> Callable[[str], bool]:
    """Whether a Dagster run has finished (succeeded, failed or cancelled): its claims are dead."""
    def is_over(run_id: str) -> bool:
        run = instance.get_run_by_id(run_id)
        return run is not None and run.is_finished
    return is_over


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Runs this host started in-process (CLI) whose process is gone stay STARTED for ever in
    Dagster; mark them failed. (Daemon-launched runs are watched by run monitoring.) A re-execution
    of such a run (the UI's, or a retry) carries its parent's pid but runs in a run worker: left alone."""
    failed = []
    for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED],
                                               tags={"cass/host": HOST})):
        pid = run.tags.get("cass/pid", "")
        if pid.isdigit() and PARENT_RUN_ID_TAG not in run.tags and not process_is(int(pid),
                                                                                  run.tags.get("cass/stamp")):
            instance.report_run_failed(run, message=f"its process (pid {pid}) is gone: killed or crashed")
            failed.append(run.run_id)
    return failed


class SettingsResource(dg.ConfigurableResource):
    """The settings the definitions were built from, so a run uses the same timezone, hours and limits as
    its partitions and schedules (read once, at load; never again from the environment)."""

    settings_json: str

    def get(self) -> Settings:
        return Settings.model_validate_json(self.settings_json)


_FIRST_STEP = threading.Lock()   # a run's recovery pass: once, before any of its steps goes on
_BUILD = threading.Lock()        # the runtime: built once, whichever step (thread) asks first
_BROUGHT_FORWARD: set[str] = set()   # database files whose schema this process has seen current (quick_store)


class CassResource(dg.ConfigurableResource):
    """The project runtime for ops and assets: settings, registry, store and LLM client, built once per run."""

    duckdb: CassDuckDB
    llm: LLMResource
    settings: SettingsResource
    fixed_now: str = ""           # ISO timestamp: pin the clock (tests, simulations)
    _runtime: Runtime | None = PrivateAttr(default=None)
    _migrated: bool = PrivateAttr(default=False)
    _recovered_run: str | None = PrivateAttr(default=None)

    def for_run(self, context: dg.OpExecutionContext | dg.AssetExecutionContext) -> Runtime:
        """The runtime for a step, after the recovery pass that starts every run (once per run)."""
        with _FIRST_STEP:   # steps of a run may start together (threads): one builds, one recovers, all wait
            if self._recovered_run == context.run_id:
                return self.runtime()
            rt = self._built()
            failed = fail_dead_runs(context.instance)
            with rt.store.session():   # the schema check and the recovery pass's reads (and rare writes): one open
                self._migrate(rt)
                report = recover(rt.store, rt.settings.home, run_over(context.instance), self.clock().now())
            self._recovered_run = context.run_id
            if failed:
                context.log.warning(f"marked {len(failed)} run(s) of dead processes failed: {', '.join(failed)}")
            if report:
                context.log.warning(report.summary())
        return rt

    def runtime(self) -> Runtime:
        """The runtime, its database's schema brought current (once)."""
        rt = self._built()
        if not self._migrated:
            self._migrate(rt)
        return rt

    def _migrate(self, rt: Runtime) -> None:
        with _BUILD:
            if not self._migrated:
                migrate(rt.store)  # idempotent; a run against a fresh CASS_HOME still finds its tables
                self._migrated = True

    def _built(self) -> Runtime:
        if self._runtime is not None:
            return self._runtime
        with _BUILD:
            if self._runtime is not None:
                return self._runtime
            settings = self.settings.get()
            client = self.llm.get_client(settings)
            rt = Runtime(settings=settings, registry=load_registry(settings.actions_file, settings.handler_modules),
                         store=Store(self.duckdb.database, connect_fn=self.duckdb.get_connection),
                         llm_mode=client.mode)
            rt.llm = client
            self._runtime = rt
            return rt

    def quick_store(self, deadline_s: float) -> Store:
        """For schedules and sensors: give up after a few seconds if a run holds the file. The first in a
        process brings the file's schema forward (a daemon started on the database an earlier release
        made: their reads select the current columns); a busy file is brought forward by a later tick."""
        store = Store(self.duckdb.database, connect_fn=lambda: open_connection(self.duckdb.database, deadline_s))
        if self.duckdb.database not in _BROUGHT_FORWARD and unless_busy(lambda: bring_forward(store)) is not BUSY:
            _BROUGHT_FORWARD.add(self.duckdb.database)
        return store

    def clock(self) -> Clock:
        return FixedClock(datetime.fromisoformat(self.fixed_now)) if self.fixed_now else clock_from_env()


def cass_resource(settings: Settings, fixed_now: str = "") -> CassResource:
    """The resource as the code location configures it (`fixed_now` pins its clock: tests, simulations)."""
    return CassResource(duckdb=CassDuckDB(database=str(settings.db_path)), llm=LLMResource(),
                        settings=SettingsResource(settings_json=settings.model_dump_json()), fixed_now=fixed_now)


def shared(ctx: DefsContext) -> dg.Definitions:
    return dg.Definitions(
        # Every job, and the implicit asset job behind the UI's Materialize and backfills, runs in one
        # process (a multiprocess step costs seconds of start-up: 52-250 s per phase run against 11-21 s),
        # its ready steps on threads: a phase's units run side by side (defs/threaded_executor.py).
        executor=threaded_executor.configured({"max_concurrent": ctx.settings.step_concurrency}, name="threads"),
        # Step outputs pass in memory: every asset stores its data in DuckDB and returns only metadata, and
        # a failed phase is recovered by re-running it (it resumes each unit), not by re-executing steps.
        resources={"cass": cass_resource(ctx.settings), "io_manager": dg.mem_io_manager},
        loggers={"console": cass_console_logger},
    )


@dg.definitions
def defs() -> dg.Definitions:
    return shared(load_time_context())
