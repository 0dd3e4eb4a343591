"""The budget: budget_sensor (alerts, cancels queued phase runs at exhaustion, releases dead holds) and batch_sensor
(collects Message Batches their job stopped waiting for)."""
import dagster as dg

from cass_pipelines.defs.budget.batch_sensor import build_batch_sensor
from cass_pipelines.defs.budget.sensors import build_budget_sensor
from cass_pipelines.defs.context import DefsContext, load_time_context


def build(ctx: DefsContext) -> dg.Definitions:
    return dg.Definitions(sensors=[build_budget_sensor(ctx.settings), build_batch_sensor(ctx.settings, ctx.registry)])


@dg.definitions
def defs() -> dg.Definitions:
    return build(load_time_context())
