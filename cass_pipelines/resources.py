"""Dagster resources: the DuckDB file and the project runtime (settings, registry, store, LLM)."""

from contextlib import contextmanager
from datetime import datetime
from typing import Callable

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import PrivateAttr

from cass_pipelines.core.clock import Clock, FixedClock, clock_from_env
from cass_pipelines.core.recovery import recover
from cass_pipelines.core.runtime import Runtime, open_runtime
from cass_pipelines.llm_resource import LLMResource
from cass_pipelines.store.claims import HOST, process_alive
from cass_pipelines.store.db import Store, open_connection
from cass_pipelines.store.schema import migrate


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
    Dagster; mark them failed. (Daemon-launched runs are watched by run monitoring.)"""
    failed = []
    for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED],
                                               tags={"cass/host": HOST})):
        pid = run.tags.get("cass/pid", "")
        if pid.isdigit() and not process_alive(int(pid)):
            instance.report_run_failed(run, message=f"its process (pid {pid}) is gone: killed or crashed")
            failed.append(run.run_id)
    return failed


class CassResource(dg.ConfigurableResource):
    """The project runtime for ops and assets. Settings come from CASS_HOME and the environment."""

    duckdb: CassDuckDB
    llm: LLMResource
    fixed_now: str = ""           # ISO timestamp: pin the clock (tests, simulations)
    _runtime: Runtime | None = PrivateAttr(default=None)
    _recovered_run: str | None = PrivateAttr(default=None)

    def for_run(self, context: dg.OpExecutionContext | dg.AssetExecutionContext) -> Runtime:
        """The runtime for a step, after the recovery pass that starts every run (once per run)."""
        rt = self.runtime()
        if self._recovered_run != context.run_id:
            self._recovered_run = context.run_id
            failed = fail_dead_runs(context.instance)
            report = recover(rt.store, rt.settings.home, run_over(context.instance), self.clock().now())
            if failed:
                context.log.warning(f"marked {len(failed)} run(s) of dead processes failed: {', '.join(failed)}")
            if report:
                context.log.warning(report.summary())
        return rt

    def runtime(self) -> Runtime:
        if self._runtime is None:
            rt = open_runtime(store=Store(self.duckdb.database, connect_fn=self.duckdb.get_connection))
            migrate(rt.store)  # idempotent; a run against a fresh CASS_HOME still finds its tables
            rt.llm = self.llm.get_client(rt.settings)
            rt.llm_mode = rt.llm.mode
            self._runtime = rt
        return self._runtime

    def quick_store(self, deadline_s: float) -> Store:
        """For schedules and sensors: give up after a few seconds if a run holds the file."""
        return Store(self.duckdb.database, connect_fn=lambda: open_connection(self.duckdb.database, deadline_s))

    def clock(self) -> Clock:
        return FixedClock(datetime.fromisoformat(self.fixed_now)) if self.fixed_now else clock_from_env()


def cass_resource(db_path: str) -> CassResource:
    """The resource as the code location configures it."""
    return CassResource(duckdb=CassDuckDB(database=str(db_path)), llm=LLMResource())
