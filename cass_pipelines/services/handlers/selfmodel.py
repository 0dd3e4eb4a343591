"""Handlers for self.* actions: write to the self-model with no model call.

The four writers own one kind each (see handoff.py): they write what earlier steps of the unit
left for them, and nothing else. review_open_questions picks the question the rest of the unit
works on and hands its id on in `data["question_id"]`.
"""
from __future__ import annotations

from cass_pipelines.services.handlers.base import ActionResult, Artifact, HandlerContext
from cass_pipelines.services.handlers.handoff import write_pending
from cass_pipelines.services.handlers.terms import ranked
from cass_pipelines.store import persona


def record_insight(ctx: HandlerContext) -> ActionResult:
    return write_pending(ctx, "insights")


def add_observation(ctx: HandlerContext) -> ActionResult:
    return write_pending(ctx, "observations")


def add_open_question(ctx: HandlerContext) -> ActionResult:
    return write_pending(ctx, "questions")


def update_growth_edge(ctx: HandlerContext) -> ActionResult:
    return write_pending(ctx, "edge_state")


def review_open_questions(ctx: HandlerContext) -> ActionResult:
    """The open question closest to the focus; among equals the one that has waited longest."""
    waiting = sorted(persona.open_questions(ctx.store, limit=200), key=lambda q: (q["created_at"], q["id"]))
    if not waiting:
        return ActionResult(success=True, message="no open questions to review")
    pick = ranked(ctx.focus, waiting, lambda q: f"{q['question']} {q['context']}")[0]
    return ActionResult(success=True, message=f"chose '{pick['question']}' from {len(waiting)} open question(s)",
                        artifacts=[Artifact(type="open_question", id=pick["id"], title=pick["question"][:80])],
                        data={"question_id": pick["id"], "findings": [f"question to pursue: {pick['question']}"]})
