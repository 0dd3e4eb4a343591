"""Handlers for self.* actions. (Being implemented: issue 5.)"""
from cass_pipelines.core.handlers.base import ActionResult, HandlerContext


def add_observation(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("self.add_observation")


def record_insight(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("self.record_insight")


def update_growth_edge(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("self.update_growth_edge")


def add_open_question(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("self.add_open_question")


def review_open_questions(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("self.review_open_questions")

