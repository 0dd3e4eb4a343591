"""source_observation_sensor records observations of `conversations` and `self_model` when they change."""
from __future__ import annotations

import json

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from cass_pipelines.defs.resources import CassResource
from cass_pipelines.defs.sources.assets import SOURCE_FACTS
from cass_pipelines.defs.ticks import BUSY, SENSOR_DB_DEADLINE_S, unless_busy


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
