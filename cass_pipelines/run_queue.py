"""The run queue of the shipped dagster.yaml: Dagster's QueuedRunCoordinator, plus an order.

Dagster cannot order a day's phases through asset dependencies here: an asset may depend on itself
only along a time dimension ("Assets can only depend on themselves if they are time-partitioned ..."),
and a dependency of phase_plan on the previous phase's cost_records is a cycle. A backfill therefore
submits a day's phase runs alphabetically (afternoon, evening, morning, night). This coordinator gives
every `date|phase` run a queue priority, older days first and a day's phases in day order; the
queue starts the highest priority first, and the per-date limit in dagster.yaml keeps a day's runs
one at a time, so runs that wait together start in day order.

A backfill submits its runs one by one (seconds apart under load) while the queue daemon picks runs
every few seconds, so a priority alone can let `afternoon` start before `morning` exists. A backfill's
run is therefore queued *held* (tag `cass/queue=held`, limit 0 in dagster.yaml) until every partition
of the same backfill that comes before it in day order has a run; each submission releases what it
completes (`cass/queue=ready`).
"""
from __future__ import annotations

from datetime import date

from dagster import DagsterRunStatus, QueuedRunCoordinator, RunsFilter
from dagster._core.execution.backfill import PartitionBackfill
from dagster._core.run_coordinator.base import SubmitRunContext
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import BACKFILL_ID_TAG, PRIORITY_TAG

from cass_pipelines.domain.categories import PHASES
from cass_pipelines.domain.states import QueueHold

# The jobs of a week partition (its Monday; defs/week/jobs.py): they are not daily journals of that Monday.
WEEK_INTENTION_JOB, WEEK_JOURNAL_JOB = "week_job", "week_journal_job"
# A run of the UI's Materialize or a backfill (`__ASSET_JOB`) is a week run by the assets it selects.
WEEK_ASSETS = {"weekly_journal": WEEK_JOURNAL_JOB, "weekly_intention": WEEK_INTENTION_JOB}
DAY_SLOTS = 10   # per day: its phases 0-3, its daily journal 5, a week's journal 6 (on its Sunday)


def queue_priority(tags: dict[str, str], job_name: str = "") -> int | None:
    """Higher starts first: -(days since year 1 x DAY_SLOTS + slot). A day's phases in day order, then its
    daily journal; a week's journal after its Sunday's daily journal (it is written from them); a week's
    intention before its Monday's morning (the morning plans with it). None for runs without a date."""
    day = tags.get("dagster/partition/date") or tags.get("dagster/partition", "")
    try:
        ordinal = date.fromisoformat(day).toordinal()
    except ValueError:
        return None
    phase = tags.get("dagster/partition/phase")
    if job_name == WEEK_JOURNAL_JOB:
        ordinal, slot = ordinal + 6, 6
    elif job_name == WEEK_INTENTION_JOB:
        slot = -1
    else:
        slot = PHASES.index(phase) if phase in PHASES else 5
    return -(ordinal * DAY_SLOTS + slot)


def run_priority(run: DagsterRun) -> int | None:
    """queue_priority of a run: of its job, or of the week asset it materializes (the UI, a backfill)."""
    selected = {key.to_user_string() for key in run.asset_selection or ()}
    job = next((job for asset, job in WEEK_ASSETS.items() if asset in selected), run.job_name)
    return queue_priority(dict(run.tags), job)


def key_priority(partition_key: str) -> int | None:
    """queue_priority of the run of a partition key ('2026-11-26|morning' or a date)."""
    day, _, phase = partition_key.partition("|")
    return queue_priority({"dagster/partition": partition_key, "dagster/partition/date": day,
                           **({"dagster/partition/phase": phase} if phase else {})})


HOLD_TAG = "cass/queue"


def backfill_targets(backfill: PartitionBackfill | None) -> set[int]:
    """Priorities of the partitions a backfill is submitting: a job backfill's partitions, or what an
    asset backfill's current iteration still has to submit (the daemon stores that list first)."""
    if backfill is None:
        return set()
    keys = backfill.partition_names or [r.partition_key for r in backfill.submitting_run_requests if r.partition_key]
    return {p for p in map(key_priority, keys) if p is not None}


def releasable(held: int, submitted: set[int], targets: set[int]) -> bool:
    """A held run (priority `held`) may start once every earlier target (higher priority) has a run."""
    return all(t in submitted for t in targets if t > held)


class PhaseOrderedRunCoordinator(QueuedRunCoordinator):
    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        priority = run_priority(run)
        backfill_id = run.tags.get(BACKFILL_ID_TAG) if priority is not None else None
        tags = {PRIORITY_TAG: str(priority)} if priority is not None and PRIORITY_TAG not in run.tags else {}
        if backfill_id:
            tags[HOLD_TAG] = QueueHold.HELD.value     # set before it is queued: the daemon never sees it unheld too early
        if tags:
            self._instance.add_run_tags(run.run_id, tags)
        queued = super().submit_run(context)
        if backfill_id:
            self.release(backfill_id)
        return queued

    def release(self, backfill_id: str) -> list[str]:
        """Release the backfill's held runs whose earlier partitions all have a run; their ids."""
        runs = self._instance.get_runs(RunsFilter(tags={BACKFILL_ID_TAG: backfill_id}))
        submitted = {p for p in (queue_priority(dict(r.tags)) for r in runs) if p is not None}
        targets = backfill_targets(self._instance.get_backfill(backfill_id))
        released = []
        for run in runs:
            held = queue_priority(dict(run.tags))
            if (run.tags.get(HOLD_TAG) == QueueHold.HELD and run.status == DagsterRunStatus.QUEUED and held is not None
                    and releasable(held, submitted, targets)):
                self._instance.add_run_tags(run.run_id, {HOLD_TAG: QueueHold.READY.value})
                released.append(run.run_id)
        return released
