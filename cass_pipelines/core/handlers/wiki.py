"""Handlers for wiki.* actions. (Being implemented: issue 5.)"""
from cass_pipelines.core.handlers.base import ActionResult, HandlerContext


def create_note(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("wiki.create_note")


def update_note(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("wiki.update_note")


def link_notes(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("wiki.link_notes")

