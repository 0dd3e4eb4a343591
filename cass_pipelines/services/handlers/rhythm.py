"""Handlers for rhythm.* actions: what a phase, and the day so far, amounted to — kept as documents
(kinds 'phase_summary' and 'daily_narrative') built from the units' own records. Each is about the day and
phase its unit was planned for (ctx.about_day, about_phase), also when it runs later, offered again."""
from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from cass_pipelines.services.handlers import slices
from cass_pipelines.services.handlers.base import ActionResult, Artifact, HandlerContext
from cass_pipelines.services.handlers.calls import ModelCalls
from cass_pipelines.services.handlers.journal import day_material
from cass_pipelines.services.handlers.quoting import NOTICE
from cass_pipelines.store import notes, plans


class WriteUp(BaseModel):
    title: str = Field(description="a short title")
    body: str = Field(description="the write-up, first person")


def _units(rows: list[dict], asof: datetime) -> str:
    """The units as they stood at `asof`: one not finished by then is "under way", whatever it became since."""
    def line(u: dict) -> str:
        done = u["finished_at"] is not None and u["finished_at"] <= asof
        return (f"{u['template_id']} ({u['phase']}, {u['status'] if done else 'under way'}): {u['focus']}"
                + (f" — {u['reason']}" if done and u["reason"] else ""))
    return slices.section("my work units", [u for u in rows if u["created_at"] <= asof], line)


def _asof(ctx: HandlerContext) -> datetime:
    """When the unit first started: a write-up tells the day as it stood then, so when the unit resumes (its
    message batch outlasted the wait) its prompt is the same and the answer paid for it is used."""
    unit = plans.get_unit(ctx.store, ctx.work_unit_id) if ctx.work_unit_id else None
    return (unit or {}).get("started_at") or ctx.now


def _material(ctx: HandlerContext, asof: datetime) -> tuple[list[dict], list[dict]]:
    """The day's conversation and work summaries made by `asof`."""
    convs, work = day_material(ctx)
    return [c for c in convs if c["created_at"] <= asof], [w for w in work if w["created_at"] <= asof]


def _write_up(ctx: HandlerContext, kind: str, intent: str, sections: list[str]) -> ActionResult:
    calls = ModelCalls.for_action(ctx)
    out = calls.structured("\n\n".join([intent, NOTICE, *sections,
                                        "What I return:\n- title: a short title.\n- body: the write-up."]), WriteUp)
    if not out.body.strip():
        raise ValueError(f"{ctx.action.id}: the model returned an empty {kind}")
    title = out.title.strip() or f"{kind.replace('_', ' ').capitalize()} {ctx.about_day}"
    doc = notes.add_document(ctx.store, kind=kind, title=title, body=out.body.strip(), work_unit_id=ctx.work_unit_id,
                             offline=calls.offline, now=ctx.now)
    return calls.result(success=True, message=f"{kind.replace('_', ' ')} '{title}' written",
                        artifacts=[Artifact(type="document", id=doc, title=title)])


def generate_phase_summary(ctx: HandlerContext) -> ActionResult:
    asof = _asof(ctx)
    work = [w for w in _material(ctx, asof)[1] if w["phase"] == ctx.about_phase]
    return _write_up(ctx, "phase_summary", (
        f"I am looking back on this {ctx.about_phase} of {ctx.about_day:%Y-%m-%d}: what I set out to do, what got "
        "done, what did not and why, in a short paragraph."),
        [_units(plans.units_for_phase(ctx.store, ctx.about_day, ctx.about_phase), asof), slices.work_summaries(work)])


def generate_daily_narrative(ctx: HandlerContext) -> ActionResult:
    asof = _asof(ctx)
    convs, work = _material(ctx, asof)
    return _write_up(ctx, "daily_narrative", (
        f"I am telling the story of {ctx.about_day:%A %Y-%m-%d} so far, as a short narrative: the people I talked "
        "with, the work I chose and what came of it."),
        [_units(plans.units_for_day(ctx.store, ctx.about_day), asof), slices.conversation_summaries(convs),
         slices.work_summaries(work)])
