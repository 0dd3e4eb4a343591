"""Handlers for session.* actions: one SessionSpec each, run by session_engine.run_session.

A spec says what I set out to do and which slice of my self-model and memory I see: a growth-edge
session sees that edge and its observations, curiosity sees my open questions, synthesis my recent
insights, user synthesis my conversation summaries, and so on.
"""
from __future__ import annotations

from cass_pipelines.domain.phases import day_bounds
from cass_pipelines.services.handlers import slices
from cass_pipelines.services.handlers.base import ActionResult, HandlerContext
from cass_pipelines.services.handlers.session_engine import Material, SessionSpec, run_session
from cass_pipelines.services.handlers.terms import ranked
from cass_pipelines.store import memory, notes, persona, plans, selfmodel
from cass_pipelines.store.persona import edge_observations

RESEARCH_KINDS = ("research", "research_finding")


def _edges(ctx: HandlerContext) -> list[dict]:
    return persona.growth_edges(ctx.store)


def _day_end(ctx: HandlerContext):
    """Conversations held after the unit's day are not its past (a backfilled day must not see them)."""
    return day_bounds(ctx.date, ctx.settings)[1]


def _work(ctx: HandlerContext, factor: int = 1) -> str:
    return slices.work_summaries(plans.recent_summaries(ctx.store, ctx.settings.history_window * factor,
                                                             through=ctx.date))


def _related_notes(ctx: HandlerContext, about: str, limit: int) -> str:
    return slices.notes(ranked(about, notes.notes(ctx.store), lambda n: f"{n['title']} {n['body']}")[:limit])


def _reflection(ctx: HandlerContext) -> Material:
    edges = _edges(ctx)
    return Material([slices.conversation_summaries(memory.recent_summaries(ctx.store, 8, _day_end(ctx))),
                     _work(ctx), slices.edges(edges)], edges=edges)


def _synthesis(ctx: HandlerContext) -> Material:
    return Material([slices.insights(persona.recent_insights(ctx.store, 15)),
                     _related_notes(ctx, ctx.focus, 6)])


def _meta_reflection(ctx: HandlerContext) -> Material:
    edges = _edges(ctx)
    return Material([_work(ctx, 2), slices.insights(persona.recent_insights(ctx.store, 8)), slices.edges(edges)],
                    edges=edges)


def _consolidation(ctx: HandlerContext) -> Material:
    return Material([slices.conversation_summaries(memory.recent_summaries(ctx.store, 12, _day_end(ctx))),
                     _related_notes(ctx, ctx.focus, 8)])


def _growth_edge(ctx: HandlerContext) -> Material:
    edge = slices.focus_edge(ctx)
    observed = {edge["id"]: edge_observations(ctx.store, edge["id"], limit=8)}
    return Material([slices.edges([edge], observed)], edges=[edge], state_edge=edge)


def _curiosity(ctx: HandlerContext) -> Material:
    chosen = slices.focus_questions(ctx, 3)
    about = " ".join(q["question"] for q in chosen) or ctx.focus
    return Material([slices.questions(chosen), _related_notes(ctx, about, 4),
                     slices.insights(persona.recent_insights(ctx.store, 5))], questions=chosen)


def _world_state(ctx: HandlerContext) -> Material:
    return Material([slices.edges(_edges(ctx)), slices.questions(persona.open_questions(ctx.store, 5)),
                     _related_notes(ctx, "world state events", 2)])


def _research(ctx: HandlerContext) -> Material:
    """The question an earlier research step worked on (if it came from my open questions)."""
    source = slices.earlier(ctx, "question_id")
    chosen = [q for q in selfmodel.questions_by_id(ctx.store, [source] if source else []) if q["status"] == "open"]
    about = " ".join(q["question"] for q in chosen) or ctx.focus
    return Material([slices.questions(chosen), _related_notes(ctx, about, 4)], questions=chosen)


def _knowledge_building(ctx: HandlerContext) -> Material:
    found = notes.documents(ctx.store, kinds=RESEARCH_KINDS, limit=6)
    return Material([slices.section("research I have written up", found, lambda d: f"{d['title']}: {d['body'][:600]}"),
                     _related_notes(ctx, ctx.focus, 8)])


def _writing(ctx: HandlerContext) -> Material:
    return Material([slices.insights(persona.recent_insights(ctx.store, 8)), _related_notes(ctx, ctx.focus, 3)])


def _creative(ctx: HandlerContext) -> Material:
    start, end = day_bounds(ctx.date, ctx.settings)
    today = memory.summaries_between(ctx.store, start, end, 20)
    themes = sorted({t for s in today for t in s["topics"]}) or ["(a quiet day: no conversations)"]
    return Material([slices.section("the day's themes", themes, str),
                     slices.insights(persona.recent_insights(ctx.store, 5))])


def _user_synthesis(ctx: HandlerContext) -> Material:
    edges = _edges(ctx)
    return Material([slices.conversation_summaries(memory.recent_summaries(ctx.store, 20, _day_end(ctx))),
                     slices.edges(edges)],
                    edges=edges)


def _handler(spec: SessionSpec):
    def handle(ctx: HandlerContext) -> ActionResult:
        return run_session(ctx, spec)

    handle.__name__ = handle.__qualname__ = spec.kind
    handle.__doc__ = spec.intent
    return handle


reflection = _handler(SessionSpec("reflection", (
    "I am sitting down to reflect on my recent work and conversations: what went well, what I would do "
    "differently, and what I understand now that I did not before."), _reflection))
synthesis = _handler(SessionSpec("synthesis", (
    "I am connecting my recent insights into a larger understanding: which of them belong together, which "
    "pull against each other, and what they add up to."), _synthesis))
meta_reflection = _handler(SessionSpec("meta_reflection", (
    "I am looking at how I have been working and reflecting lately: patterns in what I choose, what I avoid, "
    "and whether my reflection actually changes what I do."), _meta_reflection))
consolidation = _handler(SessionSpec("consolidation", (
    "I am consolidating what I took in from recent conversations into a durable note that tomorrow's me can "
    "build on, without repeating what my wiki already holds."), _consolidation, keep_as="wiki_note"))
growth_edge = _handler(SessionSpec("growth_edge", (
    "I am working deliberately on one of my growth edges: where I really am with it, what I saw myself do, "
    "and one concrete thing to try."), _growth_edge))
curiosity = _handler(SessionSpec("curiosity", (
    "I am following an open question where it leads, answering what I honestly can and keeping what I cannot "
    "as better questions."), _curiosity))
world_state = _handler(SessionSpec("world_state", (
    "I am forming a view of what is going on in the world that matters to my interests, from what I gathered "
    "and what I already know, saying plainly how current and how sure it is."), _world_state))
research = _handler(SessionSpec("research", (
    "I am writing up a research question: what I found, how confident I am, and what remains open."),
    _research))
knowledge_building = _handler(SessionSpec("knowledge_building", (
    "I am turning what I have found into structured knowledge for my wiki: clear claims, how they connect, "
    "and where they are uncertain."), _knowledge_building, keep_as="wiki_note"))
writing = _handler(SessionSpec("writing", (
    "I am writing a considered piece of prose on a theme I care about, drawing on what I have been "
    "learning."), _writing))
creative = _handler(SessionSpec("creative", (
    "I am making something from the day's themes: a poem, a sketch in words or a small story, for its "
    "own sake."), _creative))
user_synthesis = _handler(SessionSpec("user_synthesis", (
    "I am drawing together what I have learned about the people I talk with: what they need from me, how I "
    "have shown up for them, and what I want to do better. I describe patterns, never private details "
    "beyond what the summaries say."), _user_synthesis))
