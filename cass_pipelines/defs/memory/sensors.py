"""idle_memory_sensor runs memory_job for conversations that went idle with unsummarised messages."""
from __future__ import annotations

import dagster as dg

from cass_pipelines.defs.resources import CassResource
from cass_pipelines.defs.ticks import BUSY, SENSOR_DB_DEADLINE_S, unless_busy
from cass_pipelines.domain.settings import Settings
from cass_pipelines.services.watches import idle_conversations


def build_idle_memory_sensor(settings: Settings, job) -> dg.SensorDefinition:
    @dg.sensor(name="idle_memory_sensor", job=job, minimum_interval_seconds=600,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Runs memory_job when conversations have been idle for "
                           f"{settings.idle_threshold_minutes} min or more with unsummarised messages.")
    def idle_memory_sensor(context: dg.SensorEvaluationContext, cass: CassResource):
        now = cass.clock().now()
        idle = unless_busy(lambda: idle_conversations(cass.quick_store(SENSOR_DB_DEADLINE_S), settings, now))
        if idle is BUSY:
            return BUSY
        if not idle:
            return dg.SkipReason("no idle conversations with unsummarised messages")
        newest = max(c["last_message_at"] for c in idle)
        # The key changes only when new idle messages appear, so one batch is summarised once.
        return dg.RunRequest(run_key=f"memory|{newest.isoformat()}|{sum(c['pending'] for c in idle)}",
                             tags={"cass/trigger": "idle_memory_sensor", "cass/conversations": str(len(idle))})

    return idle_memory_sensor
