"""Handlers for research.* actions. (Being implemented: issue 5.)"""
from cass_pipelines.core.handlers.base import ActionResult, HandlerContext


def refresh_queue(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("research.refresh_queue")


def run_single(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("research.run_single")


def run_batch(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("research.run_batch")

