"""Memory: conversation_summaries, memory_job and idle_memory_sensor."""
import dagster as dg

from cass_pipelines.defs.context import DefsContext, load_time_context
from cass_pipelines.defs.memory.assets import build_conversation_summaries
from cass_pipelines.defs.memory.sensors import build_idle_memory_sensor


def build(ctx: DefsContext) -> dg.Definitions:
    memory_job = dg.define_asset_job("memory_job", selection=["conversation_summaries"],
                                     description="Summarise conversations that went idle.")
    return dg.Definitions(assets=[build_conversation_summaries()], jobs=[memory_job],
                          sensors=[build_idle_memory_sensor(ctx.settings, memory_job)])


@dg.definitions
def defs() -> dg.Definitions:
    return build(load_time_context())
