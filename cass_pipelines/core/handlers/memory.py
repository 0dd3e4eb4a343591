"""Handlers for memory.* actions. (Being implemented: issue 5.)"""
from cass_pipelines.core.handlers.base import ActionResult, HandlerContext


def summarize_conversation(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("memory.summarize_conversation")


def summarize_idle_conversations(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("memory.summarize_idle_conversations")


def generate_conversation_title(ctx: HandlerContext) -> ActionResult:
    raise NotImplementedError("memory.generate_conversation_title")

