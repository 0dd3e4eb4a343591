"""Dead letters: dead_letter_retry_job and dead_letter_sensor."""
import dagster as dg

from cass_pipelines.defs.context import DefsContext, load_time_context
from cass_pipelines.defs.dead_letters.jobs import build_dead_letter_retry_job
from cass_pipelines.defs.dead_letters.sensors import build_dead_letter_sensor


def build(ctx: DefsContext) -> dg.Definitions:
    return dg.Definitions(jobs=[build_dead_letter_retry_job()], sensors=[build_dead_letter_sensor()])


@dg.definitions
def defs() -> dg.Definitions:
    return build(load_time_context())
