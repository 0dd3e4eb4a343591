"""Handlers for system.* actions. (Being implemented: issue 5.)"""
from cass_pipelines.core.handlers.base import ActionResult, HandlerContext


def queue_maintenance(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("system.queue_maintenance")


def release_stale_reservations(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("system.release_stale_reservations")


def health_check(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("system.health_check")

