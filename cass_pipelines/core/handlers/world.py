"""Handlers for world.* actions. (Being implemented: issue 5.)"""
from cass_pipelines.core.handlers.base import ActionResult, HandlerContext


def check_events(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("world.check_events")


def summarize_state(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("world.summarize_state")

