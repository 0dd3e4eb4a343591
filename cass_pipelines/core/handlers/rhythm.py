"""Handlers for rhythm.* actions. (Being implemented: issue 5.)"""
from cass_pipelines.core.handlers.base import ActionResult, HandlerContext


def generate_phase_summary(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("rhythm.generate_phase_summary")


def generate_daily_narrative(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("rhythm.generate_daily_narrative")

