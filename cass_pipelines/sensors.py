"""`budget_sensor`, `dead_letter_sensor` and `idle_memory_sensor`: they run in the daemon next to runs that may hold the
DuckDB file, so each gives up after a few seconds and says so in its tick instead of blocking.

source_observation_sensor records observations of `conversations` and `self_model` when they change.

idle_memory_sensor runs memory_job for conversations that went idle with unsummarised messages.

batch_sensor, every minute: collects Message Batches whose job stopped waiting for them (its run
ended or gave up): ended ones are settled at the batch price under their holds, ones that never
answered release their holds; its tick lists the day's batched requests by state.

budget_sensor, every minute: releases reservations whose run or process is over, records an alert
once at the soft threshold and once at exhaustion, and at exhaustion cancels the day's queued
phase runs (a running phase stops by itself: every further action is refused and deferred with its
reason, which a cancellation would leave unrecorded).
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import dagster as dg
import duckdb
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from cass_pipelines.assets.sources import SOURCE_FACTS
from cass_pipelines.core.phases import phase_at
from cass_pipelines.core.recovery import recover
from cass_pipelines.core.settings import Settings
from cass_pipelines.llm.metered import collect_batches
from cass_pipelines.llm.pricing import load_pricing
from cass_pipelines.resources import CassResource, fail_dead_runs, run_over
from cass_pipelines.store import batches, dead_letters
from cass_pipelines.store.budget import watch
from cass_pipelines.store.conversations import idle_unsummarized

SENSOR_DB_DEADLINE_S = 3.0
CANCELLABLE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]


def db_busy(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.Error) and "lock" in str(exc).lower()


BUSY = dg.SkipReason("the database is busy with a run (file lock held); will look again next tick")


def unless_busy(read):
    """`read()`, or BUSY when a run holds the DuckDB file past the sensors' short deadline."""
    try:
        return read()
    except Exception as exc:
        if db_busy(exc):
            return BUSY
        raise


def cancel_queued_phase_runs(instance: dg.DagsterInstance, day: str, job_name: str) -> list[str]:
    """Cancel the date's phase runs that have not started; returns their ids."""
    runs = instance.get_runs(dg.RunsFilter(job_name=job_name, statuses=CANCELLABLE,
                                           tags={"dagster/partition/date": day}))
    cancelled = []
    for run in runs:
        # The queued coordinator dequeues-and-cancels; other coordinators can only terminate
        # launched runs, so a run that never started is marked cancelled directly.
        if not instance.run_coordinator.cancel_run(run.run_id):
            instance.report_run_canceled(run, message=f"budget for {day} exhausted")
        cancelled.append(run.run_id)
    return cancelled


def build_budget_sensor(settings: Settings, phase_job_name: str = "phase_job") -> dg.SensorDefinition:
    @dg.sensor(name="budget_sensor", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Alerts at {settings.soft_alert_share:.0%} of the daily budget and at exhaustion; "
                           "then cancels the day's queued phase runs. Releases holds of finished runs.")
    def budget_sensor(context: dg.SensorEvaluationContext, cass: CassResource):
        now = cass.clock().now()
        day, _ = phase_at(now, settings)
        cursor = json.loads(context.cursor) if context.cursor else {}
        seen = set(cursor.get("alerts", [])) if cursor.get("date") == day.isoformat() else set()
        store = cass.quick_store(SENSOR_DB_DEADLINE_S)

        def tick():
            with store.session():
                recovered = recover(store, settings.home, run_over(context.instance), now)
                return recovered, *watch(store, settings, day, now, seen)

        fail_dead_runs(context.instance)
        watched = unless_busy(tick)
        if watched is BUSY:
            return BUSY
        recovered, status, new = watched
        for kind, msg in new:
            context.log.warning(f"budget alert: {msg}")
            seen.add(kind)
        cancelled = cancel_queued_phase_runs(context.instance, day.isoformat(), phase_job_name) \
            if status["exhausted"] else []
        context.update_cursor(json.dumps({"date": day.isoformat(), "alerts": sorted(seen)}))
        parts = [f"{day}: spent ${status['spent_usd']:.4f} of ${status['daily_limit_usd']:.2f} "
                 f"({status['spent_share']:.0%}), held ${status['reserved_usd']:.4f}"
                 + (", EXHAUSTED" if status["exhausted"] else "")]
        parts += [f"ALERT {msg}" for _, msg in new]
        if recovered:
            parts.append(recovered.summary())
        if cancelled:
            parts.append(f"cancelled {len(cancelled)} queued phase run(s): {', '.join(cancelled)}")
        return dg.SkipReason("; ".join(parts))

    return budget_sensor


def build_batch_sensor(settings: Settings) -> dg.SensorDefinition:
    @dg.sensor(name="batch_sensor", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Collects Message Batches (memory and night work) whose job stopped waiting: settles "
                           "each answer at the batch price under its hold, releases holds of requests that never "
                           "answered; lists the day's batched requests by state (`cass-pipelines batches`).")
    def batch_sensor(context: dg.SensorEvaluationContext, cass: CassResource):
        clock = cass.clock()
        day, _ = phase_at(clock.now(), settings)
        store = cass.quick_store(SENSOR_DB_DEADLINE_S)

        def tick():
            done = {}
            if batches.pending(store):   # the LLM client is made only when something is in flight
                done = collect_batches(cass.llm.get_client(settings), store, settings, load_pricing(), clock,
                                       run_over(context.instance))
            return done, batches.counts(store, day)

        result = unless_busy(tick)
        if result is BUSY:
            return BUSY
        done, counts = result
        parts = [f"{day} batched requests: " + ", ".join(f"{state} {n}" for state, n in counts.items())]
        parts += [f"{what} now: {', '.join(ids)}" for what, ids in done.items() if ids and what != "waiting"]
        return dg.SkipReason("; ".join(parts))

    return batch_sensor


def build_dead_letter_sensor() -> dg.SensorDefinition:
    @dg.sensor(name="dead_letter_sensor", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Reports new dead letters (failed actions, items parked after their retries); see `cass-pipelines dlq`.")
    def dead_letter_sensor(context: dg.SensorEvaluationContext, cass: CassResource):
        after = json.loads(context.cursor) if context.cursor else None
        rows = unless_busy(lambda: dead_letters.after(
            cass.quick_store(SENSOR_DB_DEADLINE_S), (datetime.fromisoformat(after[0]), after[1]) if after else None))
        if rows is BUSY:
            return BUSY
        if not rows:
            return dg.SkipReason("no new dead letters")
        last = rows[-1]
        context.update_cursor(json.dumps([last["created_at"].isoformat(), last["id"]]))
        lines = [f"{r['id']} {r['date']} {r['phase'] or ''} "
                 + (f"unit {r['work_unit_id']} action {r['action_id']} (run {(r['run_id'] or '')[:8]})"
                    if r["kind"] == "action" else f"{r['kind']} {r['item_id']}")
                 + f": {r['error'][:200]}" for r in rows]
        for line in lines:
            context.log.error(f"dead letter: {line}")
        return dg.SkipReason(f"{len(rows)} new dead letter(s): " + " | ".join(lines))

    return dead_letter_sensor


def build_idle_memory_sensor(settings: Settings, job) -> dg.SensorDefinition:
    @dg.sensor(name="idle_memory_sensor", job=job, minimum_interval_seconds=600,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Runs memory_job when conversations have been idle for "
                           f"{settings.idle_threshold_minutes} min or more with unsummarised messages.")
    def idle_memory_sensor(context: dg.SensorEvaluationContext, cass: CassResource):
        now = cass.clock().now()
        idle_before = now - timedelta(minutes=settings.idle_threshold_minutes)
        idle = unless_busy(lambda: idle_unsummarized(cass.quick_store(SENSOR_DB_DEADLINE_S), idle_before, now=now))
        if idle is BUSY:
            return BUSY
        if not idle:
            return dg.SkipReason("no idle conversations with unsummarised messages")
        newest = max(c["last_message_at"] for c in idle)
        # The key changes only when new idle messages appear, so one batch is summarised once.
        return dg.RunRequest(run_key=f"memory|{newest.isoformat()}|{sum(c['pending'] for c in idle)}",
                             tags={"cass/trigger": "idle_memory_sensor", "cass/conversations": str(len(idle))})

    return idle_memory_sensor


def build_source_observation_sensor() -> dg.SensorDefinition:
    @dg.sensor(name="source_observation_sensor", minimum_interval_seconds=300,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Observes `conversations` and `self_model` (their data version and counts) every "
                           "5 minutes; a new observation is recorded only when the version changed.")
    def source_observation_sensor(context: dg.SensorEvaluationContext, cass: CassResource):
        store = cass.quick_store(SENSOR_DB_DEADLINE_S)
        facts = unless_busy(lambda: {name: read(store) for name, read in SOURCE_FACTS.items()})
        if facts is BUSY:
            return BUSY
        seen = json.loads(context.cursor) if context.cursor else {}
        changed = {name: (version, metadata) for name, (version, metadata) in facts.items()
                   if seen.get(name) != version.value}
        if not changed:
            return dg.SkipReason("conversations and self_model unchanged since the last observation")
        return dg.SensorResult(
            asset_events=[dg.AssetObservation(asset_key=name, metadata=metadata,
                                              tags={DATA_VERSION_TAG: version.value})
                          for name, (version, metadata) in changed.items()],
            cursor=json.dumps({**seen, **{name: version.value for name, (version, _) in changed.items()}}))

    return source_observation_sensor
