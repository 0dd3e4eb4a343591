"""A handler that does nothing (bench_day.py's no-op registry points every action here)."""
from cass_pipelines.services.handlers.base import ActionResult, HandlerContext


def noop(ctx: HandlerContext) -> ActionResult:
    return ActionResult(success=True, message="no-op", offline=True)
