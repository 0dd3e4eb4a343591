"""Handlers for dream.*, journal.* actions. (Being implemented: issue 5.)"""
from cass_pipelines.core.handlers.base import ActionResult, HandlerContext


def generate_daily(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("journal.generate_daily")


def dream_nightly(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("dream.nightly")

