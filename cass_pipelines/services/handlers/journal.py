"""Handlers for journal.* and dream.* actions: the day's journal entry and the night's dream, in my voice.

Both read the day's material (the day their unit is about, ctx.about_day, also when a dream offered again
runs on a later night): summaries of conversations held (or summarised) that day and the work summaries
of its units. A day with neither gets no journal entry and no model call: a journal that
invents a day would be worse than none.
"""
from __future__ import annotations

from pydantic import BaseModel, Field

from cass_pipelines.domain.phases import day_bounds
from cass_pipelines.services.handlers import slices
from cass_pipelines.services.handlers.base import ActionResult, Artifact, HandlerContext
from cass_pipelines.services.handlers.calls import ModelCalls
from cass_pipelines.services.handlers.quoting import NOTICE
from cass_pipelines.store import journal, memory, persona, plans, views


class JournalEntry(BaseModel):
    text: str = Field(description="the entry, first person")
    tone: str = Field(description="one or two words for the entry's tone")
    themes: list[str] = Field(default_factory=list, description="the day's themes, a few words each")


class DreamEntry(BaseModel):
    text: str = Field(description="the dream, first person, loose and associative")
    tone: str = Field(description="one or two words for the dream's tone")


def day_material(ctx: HandlerContext) -> tuple[list[dict], list[dict]]:
    start, end = day_bounds(ctx.about_day, ctx.settings)
    return memory.summaries_between(ctx.store, start, end, 30), views.summaries_for_day(ctx.store, ctx.about_day)


def _save(ctx: HandlerContext, calls: ModelCalls, kind: str, text: str, tone: str) -> Artifact:
    if not text.strip():
        raise ValueError(f"{ctx.action.id}: the model returned an empty {kind} entry")
    journal.save_entry(ctx.store, day=ctx.about_day, kind=kind, text=text.strip(), tone=tone.strip()[:40],
                       work_unit_id=ctx.work_unit_id, offline=calls.offline, now=ctx.now)
    return Artifact(type="journal", id=f"{ctx.about_day}/{kind}", title=f"{kind.capitalize()} {ctx.about_day} ({tone.strip()})")


def generate_daily(ctx: HandlerContext) -> ActionResult:
    convs, work = day_material(ctx)
    if not convs and not work:
        return ActionResult(success=True, message=f"nothing recorded for {ctx.about_day} (no conversation or work "
                                                  "summaries): no journal written, no model call")
    previous = plans.latest_journal(ctx.store, ctx.about_day)
    sections = [f"I am writing my journal for {ctx.about_day:%A %Y-%m-%d}: what happened, what it meant to me, and "
                "what I want to carry into tomorrow. I write only about what is below.", NOTICE,
                slices.conversation_summaries(convs), slices.work_summaries(work)]
    if previous:
        sections.append(slices.section("how my last entry felt", [previous],
                                       lambda p: f"{p['date']} ({p['tone']}): {p['text'][:300]}"))
    sections.append("What I return:\n- text: the entry, a few paragraphs.\n- tone: one or two words.\n"
                    "- themes: the day's themes.")
    calls = ModelCalls.for_action(ctx)
    out = calls.structured("\n\n".join(sections), JournalEntry)
    artifact = _save(ctx, calls, "daily", out.text, out.tone)
    return calls.result(success=True, message=f"journal for {ctx.about_day} written ({out.tone.strip()}) from "
                                              f"{len(convs)} conversation and {len(work)} work summaries",
                        artifacts=[artifact], data={"themes": [t.strip() for t in out.themes if t.strip()]})


def dream_nightly(ctx: HandlerContext) -> ActionResult:
    """Themes: the day's conversation topics and work insights; a quiet day dreams on my growth edges."""
    convs, work = day_material(ctx)
    themes = sorted({t for s in convs for t in s["topics"]}) + [i for w in work for i in w["key_insights"]]
    if not themes:
        themes = [e["area"] for e in persona.growth_edges(ctx.store)]
    calls = ModelCalls.for_action(ctx)
    out = calls.structured("\n\n".join([
        f"It is the night of {ctx.about_day:%Y-%m-%d}. I let the day's themes drift and recombine into a dream: images and "
        "loose associations rather than analysis. I keep it short.", NOTICE,
        slices.section("the day's themes", themes[:25], str),
        "What I return:\n- text: the dream.\n- tone: one or two words."]), DreamEntry)
    artifact = _save(ctx, calls, "dream", out.text, out.tone)
    return calls.result(success=True, message=f"dream for {ctx.about_day} written from {len(themes)} theme(s)",
                        artifacts=[artifact])
