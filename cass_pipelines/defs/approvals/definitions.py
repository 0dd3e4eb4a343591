"""Approvals: approval_job releases (or rejects) work waiting in `awaiting_approval`."""
import dagster as dg

from cass_pipelines.defs.approvals.jobs import build_approval_job
from cass_pipelines.defs.context import DefsContext, load_time_context


def build(ctx: DefsContext) -> dg.Definitions:
    return dg.Definitions(jobs=[build_approval_job(ctx.registry.max_sequence_length)])


@dg.definitions
def defs() -> dg.Definitions:
    return build(load_time_context())
