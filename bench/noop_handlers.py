"""A handler that does nothing (bench_day.py's no-op registry points every action here)."""
from cass_pipelines.services.handlers.base import ActionResult, HandlerContext


def noop(ctx: HandlerContext) -> ActionResult:
    # It reports a question, so its unit is summarised (one call) as a real unit is: a unit that found
    # nothing at all is summarised without a call (services/summaries.py), which the real ones never are.
    return ActionResult(success=True, message="no-op", questions_raised=[f"what would {ctx.action.id} have found?"],
                        offline=True)
