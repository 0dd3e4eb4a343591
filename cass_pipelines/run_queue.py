"""The run queue of the shipped dagster.yaml: Dagster's QueuedRunCoordinator, plus an order.

Dagster cannot order a day's phases through asset dependencies here: an asset may depend on itself
only along a time dimension ("Assets can only depend on themselves if they are time-partitioned ..."),
and a dependency of phase_plan on the previous phase's cost_records is a cycle. A backfill therefore
submits a day's phase runs alphabetically (afternoon, evening, morning, night). This coordinator gives
every `date|phase` run a queue priority, older days first and a day's phases in day order; the
queue starts the highest priority first, and the per-date limit in dagster.yaml keeps a day's runs
one at a time, so runs that wait together start in day order.
"""
from __future__ import annotations

from datetime import date

from dagster import QueuedRunCoordinator
from dagster._core.run_coordinator.base import SubmitRunContext
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import PRIORITY_TAG

from cass_pipelines.domain.categories import PHASES


def queue_priority(tags: dict[str, str]) -> int | None:
    """Higher starts first: -(days since year 1 x 5 + phase index); a date-only (journal) run comes after
    its date's night. None for runs without a date partition."""
    day = tags.get("dagster/partition/date") or tags.get("dagster/partition", "")
    try:
        ordinal = date.fromisoformat(day).toordinal()
    except ValueError:
        return None
    phase = tags.get("dagster/partition/phase")
    return -(ordinal * (len(PHASES) + 1) + (PHASES.index(phase) if phase in PHASES else len(PHASES)))


class PhaseOrderedRunCoordinator(QueuedRunCoordinator):
    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        priority = queue_priority(dict(run.tags))
        if priority is not None and PRIORITY_TAG not in run.tags:
            self._instance.add_run_tags(run.run_id, {PRIORITY_TAG: str(priority)})
        return super().submit_run(context)
