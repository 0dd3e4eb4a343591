"""`idle_memory_sensor`: when conversations have gone idle with unsummarised messages, run memory_job."""

from datetime import datetime, timedelta, timezone

import dagster as dg

from cass_pipelines.core.settings import Settings
from cass_pipelines.resources import CassResource
from cass_pipelines.store.conversations import idle_unsummarized


def build_idle_memory_sensor(settings: Settings, job) -> dg.SensorDefinition:
    @dg.sensor(name="idle_memory_sensor", job=job, minimum_interval_seconds=600,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Summarise conversations idle for {settings.idle_threshold_minutes} min or more.")
    def idle_memory_sensor(context: dg.SensorEvaluationContext, cass: CassResource):
        now = datetime.now(timezone.utc)
        try:
            idle = idle_unsummarized(cass.quick_store(), now - timedelta(minutes=settings.idle_threshold_minutes))
        except Exception as exc:
            if "lock" in str(exc).lower():
                return dg.SkipReason("the database is busy with a run; will look again next tick")
            raise
        if not idle:
            return dg.SkipReason("no idle conversations with unsummarised messages")
        newest = max(c["last_message_at"] for c in idle)
        # The key changes only when new idle messages appear, so one batch is summarised once.
        return dg.RunRequest(run_key=f"memory|{newest.isoformat()}|{sum(c['pending'] for c in idle)}",
                             tags={"cass/trigger": "idle_memory_sensor", "cass/conversations": str(len(idle))})

    return idle_memory_sensor
