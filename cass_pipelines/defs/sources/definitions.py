"""The sources plans are built from: conversations and self_model, observed by source_observation_sensor."""
import dagster as dg

from cass_pipelines.defs.context import DefsContext, load_time_context
from cass_pipelines.defs.sources.assets import build_source_assets
from cass_pipelines.defs.sources.sensors import build_source_observation_sensor


def build(ctx: DefsContext) -> dg.Definitions:
    return dg.Definitions(assets=build_source_assets(), sensors=[build_source_observation_sensor()])


@dg.definitions
def defs() -> dg.Definitions:
    return build(load_time_context())
