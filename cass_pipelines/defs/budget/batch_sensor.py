"""batch_sensor, every minute: collects Message Batches whose job stopped waiting for them (its run
ended, or it gave up waiting): ended ones are settled at the batch price under their holds, ones that
never answered release their holds; its tick lists the day's batched requests by state."""
from __future__ import annotations

import dagster as dg

from cass_pipelines.defs.resources import CassResource, run_over
from cass_pipelines.defs.ticks import BUSY, SENSOR_DB_DEADLINE_S, unless_busy
from cass_pipelines.domain.batching import BatchState
from cass_pipelines.domain.phases import phase_at
from cass_pipelines.domain.settings import Settings
from cass_pipelines.services.watches import watch_batches
from cass_pipelines.store import batches


def build_batch_sensor(settings: Settings) -> dg.SensorDefinition:
    @dg.sensor(name="batch_sensor", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Collects Message Batches (memory and night work) whose job stopped waiting: settles "
                           "each answer at the batch price under its hold, releases holds of requests that never "
                           "answered; lists the day's batched requests by state (`cass-pipelines batches`).")
    def batch_sensor(context: dg.SensorEvaluationContext, cass: CassResource):
        clock = cass.clock()
        day, _ = phase_at(clock.now(), settings)
        store = cass.quick_store(SENSOR_DB_DEADLINE_S)

        def tick() -> tuple[dict[str, list[str]], dict[str, int]]:
            done = watch_batches(store, settings, clock, run_over(context.instance),
                                 lambda: cass.llm.get_client(settings))
            return done, batches.counts(store, day)

        result = unless_busy(tick)
        if result is BUSY:
            return BUSY
        done, counts = result
        parts = [f"{day} batched requests: " + ", ".join(f"{state} {n}" for state, n in counts.items())]
        parts += [f"{state} now: {', '.join(ids)}" for state, ids in done.items()
                  if ids and state != BatchState.SUBMITTED]
        return dg.SkipReason("; ".join(parts))

    return batch_sensor
