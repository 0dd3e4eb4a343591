"""Handlers for wiki.* actions: no model call. create_note and update_note own the unit's "note"
(handoff.py): they write what earlier steps found. link_notes connects the unit's note to notes
that share enough terms with it."""
from __future__ import annotations

from cass_pipelines.services.handlers.base import ActionResult, Artifact, HandlerContext
from cass_pipelines.services.handlers.handoff import write_pending
from cass_pipelines.services.handlers.terms import terms
from cass_pipelines.store import notes

MIN_SHARED_TERMS = 3
MAX_LINKS = 5


def create_note(ctx: HandlerContext) -> ActionResult:
    return write_pending(ctx, "note", required=True)


def update_note(ctx: HandlerContext) -> ActionResult:
    return write_pending(ctx, "note", required=True)


def link_notes(ctx: HandlerContext) -> ActionResult:
    mine = next((a for r in reversed(ctx.previous) for a in r.artifacts if a.type == "wiki_note"), None)
    if mine is None:
        raise ValueError(f"{ctx.action.id}: no earlier step of unit {ctx.work_unit_id} wrote a wiki note to link")
    note = notes.note(ctx.store, mine.id)
    if note is None:
        raise ValueError(f"{ctx.action.id}: wiki note {mine.id} named by an earlier step does not exist")
    wanted = terms(f"{note['title']} {note['body']}")
    shared = sorted(((len(wanted & terms(f"{n['title']} {n['body']}")), n["id"]) for n in notes.notes(ctx.store)
                     if n["id"] != note["id"] and n["id"] not in note["links"]), reverse=True)
    chosen = [nid for count, nid in shared if count >= MIN_SHARED_TERMS][:MAX_LINKS]
    added = notes.link(ctx.store, note["id"], chosen, ctx.now) if chosen else []
    return ActionResult(success=True, offline=note["offline"],
                        message=f"linked '{note['title']}' to {len(added)} note(s) sharing at least "
                                f"{MIN_SHARED_TERMS} terms",
                        artifacts=[Artifact(type="wiki_note", id=note["id"], title=note["title"])]
                        + [Artifact(type="wiki_note", id=nid, title="linked note") for nid in added],
                        data={"links": added})
