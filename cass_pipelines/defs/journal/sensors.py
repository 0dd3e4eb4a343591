"""journal_resume_sensor: a day's journal that waited for its message batch is written again once the
batch has ended, so the answer paid for it is used (and that day's phases, whose resume waits for the
journal, resume next). journal_schedule's daily catch-up retries it too; this one comes within minutes."""
from __future__ import annotations

import dagster as dg

from cass_pipelines.defs.resources import CassResource
from cass_pipelines.defs.ticks import BUSY, SENSOR_DB_DEADLINE_S, unless_busy
from cass_pipelines.domain.settings import Settings
from cass_pipelines.services.watches import batch_journals


def build_journal_resume_sensor(settings: Settings, job) -> dg.SensorDefinition:
    @dg.sensor(name="journal_resume_sensor", job=job, minimum_interval_seconds=300,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Writes again a day's journal that waited for its message batch, once the batch has "
                           "ended: the answer paid for it is used, not asked for again.")
    def journal_resume_sensor(context: dg.SensorEvaluationContext, cass: CassResource):
        store = cass.quick_store(SENSOR_DB_DEADLINE_S)
        ready = unless_busy(lambda: batch_journals(store, settings, cass.clock().now()))
        if ready is BUSY:
            return BUSY
        if not ready:
            return dg.SkipReason("no journal waits for a message batch that has ended")
        # Once per day and number of its requests: a failed run is retried by journal_schedule's catch-up.
        return [dg.RunRequest(run_key=f"journal|{day.isoformat()}|batch|{requests}", partition_key=day.isoformat(),
                              tags={"cass/date": day.isoformat(), "cass/trigger": "journal_resume_sensor"})
                for day, requests in ready]

    return journal_resume_sensor
