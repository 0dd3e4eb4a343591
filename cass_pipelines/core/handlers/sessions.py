"""Handlers for session.* actions. (Being implemented: issue 5.)"""
from cass_pipelines.core.handlers.base import ActionResult, HandlerContext


def reflection(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("session.reflection")


def synthesis(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("session.synthesis")


def meta_reflection(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("session.meta_reflection")


def consolidation(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("session.consolidation")


def growth_edge(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("session.growth_edge")


def curiosity(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("session.curiosity")


def world_state(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("session.world_state")


def research(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("session.research")


def knowledge_building(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("session.knowledge_building")


def writing(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("session.writing")


def creative(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("session.creative")


def user_synthesis(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("session.user_synthesis")

