"""budget_sensor, every minute: releases reservations whose run or process is over, records an alert
once at the soft threshold and once at exhaustion, and at exhaustion cancels the day's queued
phase runs but resumes of batched work (a running phase stops by itself: every further action is refused and deferred with its
reason, which a cancellation would leave unrecorded)."""
from __future__ import annotations

import json

import dagster as dg

from cass_pipelines.defs.budget.batch_sensor import RESUME_TAG
from cass_pipelines.defs.resources import CassResource, fail_dead_runs, run_over
from cass_pipelines.defs.ticks import BUSY, SENSOR_DB_DEADLINE_S, unless_busy
from cass_pipelines.domain.phases import phase_at
from cass_pipelines.domain.settings import Settings
from cass_pipelines.services.watches import watch_budget

CANCELLABLE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]


def cancel_queued_phase_runs(instance: dg.DagsterInstance, day: str, job_name: str) -> list[str]:
    """Cancel the date's phase runs that have not started, except those resuming work whose message
    batches ended (batch_sensor's): they take up answers already paid for, which nothing else would use.
    Returns their ids."""
    runs = instance.get_runs(dg.RunsFilter(job_name=job_name, statuses=CANCELLABLE,
                                           tags={"dagster/partition/date": day}))
    cancelled = []
    for run in runs:
        if RESUME_TAG in run.tags:
            continue
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
        fail_dead_runs(context.instance)
        watched = unless_busy(lambda: watch_budget(store, settings, settings.home, day, now,
                                                   run_over(context.instance), seen))
        if watched is BUSY:
            return BUSY
        recovered, status, new = watched.recovered, watched.status, watched.new_alerts
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
