"""Handlers for world.* actions. check_events gathers what is known about current events relevant to
my interests (web search only when settings.web_search is on, and it says so either way);
summarize_state owns the unit's "note" and keeps it as a dated world-state wiki note."""
from __future__ import annotations

from pydantic import BaseModel, Field

from cass_pipelines.services.handlers import slices, writeback
from cass_pipelines.services.handlers.base import ActionResult, HandlerContext
from cass_pipelines.services.handlers.calls import ModelCalls
from cass_pipelines.services.handlers.handoff import Outbox, write_pending
from cass_pipelines.services.handlers.quoting import NOTICE
from cass_pipelines.services.handlers.sourcing import search_instruction, source_line
from cass_pipelines.store import persona


class Event(BaseModel):
    headline: str = Field(description="what is happening, in a few words")
    summary: str = Field(description="what I know about it and how current that is")
    relevance: str = Field(description="why it matters to my interests")
    source: str = Field(default="", description="the source URL, if I used one")


class Events(BaseModel):
    events: list[Event] = Field(default_factory=list)


def check_events(ctx: HandlerContext) -> ActionResult:
    web = ctx.settings.web_search
    calls = ModelCalls.for_action(ctx)
    out = calls.structured("\n\n".join([
        "I am checking what is going on in the world that bears on my interests. " + search_instruction(web), NOTICE,
        slices.edges(persona.growth_edges(ctx.store)), slices.questions(persona.open_questions(ctx.store, 8)),
        slices.plan(ctx), "What I return:\n- events: up to five, each with headline, summary, relevance, source."]),
        Events, web_search=web)
    events = out.events[:5]
    sourced = source_line(web, [e.source for e in events])
    body = "\n".join([f"- {e.headline.strip()}: {e.summary.strip()} (why it matters: {e.relevance.strip()})"
                      for e in events] or ["- nothing I could speak to"]) + f"\n\n{sourced}"
    box = Outbox(ctx, calls)
    box.deliver("note", [{"title": f"Events gathered {ctx.date}", "body": body, "source": ctx.action.id}],
                writeback.document("world_events"))
    return calls.result(success=True, message=f"gathered {len(events)} event(s). {sourced} {box.summary()}",
                        artifacts=box.artifacts,
                        data={**box.data, "sourced": sourced,
                              "findings": [f"{e.headline.strip()}: {e.summary.strip()}" for e in events]})


def summarize_state(ctx: HandlerContext) -> ActionResult:
    return write_pending(ctx, "note", required=True)
