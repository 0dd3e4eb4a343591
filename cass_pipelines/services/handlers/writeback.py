"""Writers: put one kind of pending item into the store and name the rows as artifacts.

Used both by a producer writing its own output and by the self.*/wiki.* step that owns the kind
(see handoff.py). Item shapes: insights {text, source}; observations {edge_id, text}; questions
{question, context}; edge_state {edge_id, current_state}; note {title, body, source}; titles
{conversation_id, title}.
"""
from __future__ import annotations

from cass_pipelines.services.handlers import slices
from cass_pipelines.services.handlers.base import Artifact, HandlerContext, Items
from cass_pipelines.services.handlers.sourcing import NO_LIVE_SOURCE
from cass_pipelines.services.handlers.terms import best_match
from cass_pipelines.store import memory, notes, selfmodel


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def insights(ctx: HandlerContext, items: Items, offline: bool) -> list[Artifact]:
    rows = [(i["text"], i["source"].rsplit(".", 1)[-1], i["source"]) for i in items]
    ids = selfmodel.add_insights(ctx.store, rows, work_unit_id=ctx.work_unit_id, offline=offline, now=ctx.now)
    return [Artifact(type="insight", id=i, title=_short(r[0])) for i, r in zip(ids, rows)]


def observations(ctx: HandlerContext, items: Items, offline: bool) -> list[Artifact]:
    pairs = [(i["edge_id"], i["text"]) for i in items]
    unknown = sorted({e for e, _ in pairs if selfmodel.edge(ctx.store, e) is None})
    if unknown:
        raise ValueError(f"{ctx.action.id}: observations name unknown growth edge(s) {unknown}")
    ids = selfmodel.add_observations(ctx.store, pairs, work_unit_id=ctx.work_unit_id, offline=offline, now=ctx.now)
    return [Artifact(type="observation", id=i, title=f"{e}: {_short(t, 60)}") for i, (e, t) in zip(ids, pairs)]


def questions(ctx: HandlerContext, items: Items, offline: bool) -> list[Artifact]:
    added = selfmodel.add_questions(ctx.store, [(i["question"], i["context"]) for i in items],
                                    raised_by=ctx.work_unit_id, offline=offline, now=ctx.now)
    return [Artifact(type="open_question", id=qid, title=_short(q)) for qid, q in added]


def edge_state(ctx: HandlerContext, items: Items, offline: bool) -> list[Artifact]:
    out = []
    for item in items:
        edge = selfmodel.edge(ctx.store, item["edge_id"])
        if edge is None:
            raise ValueError(f"{ctx.action.id}: no growth edge {item['edge_id']!r}")
        note = (f"My current state on '{edge['area']}' moved on. Before: {edge['current_state']} "
                f"Now: {item['current_state']}")
        obs = selfmodel.set_edge_state(ctx.store, edge["id"], item["current_state"], note,
                                       work_unit_id=ctx.work_unit_id, offline=offline, now=ctx.now)
        out += [Artifact(type="growth_edge", id=edge["id"], title=f"{edge['area']}: {_short(item['current_state'], 60)}"),
                Artifact(type="observation", id=obs, title=f"{edge['id']}: state change recorded")]
    return out


def titles(ctx: HandlerContext, items: Items, offline: bool) -> list[Artifact]:
    titled = set(memory.set_titles(ctx.store, [(i["conversation_id"], i["title"]) for i in items]))
    return [Artifact(type="conversation", id=i["conversation_id"], title=i["title"]) for i in items
            if i["conversation_id"] in titled]


def compose(items: Items) -> tuple[str, str]:
    """One titled text from a unit's note items, in the order they were made; the last (most worked-over)
    item gives the title."""
    if len(items) == 1:
        return items[0]["title"], items[0]["body"]
    return items[-1]["title"], "\n\n".join(f"## {i['title']} ({i['source']})\n\n{i['body']}" for i in items)


def wiki_note(ctx: HandlerContext, items: Items, offline: bool) -> list[Artifact]:
    title, body = compose(items)
    note_id = notes.add_note(ctx.store, title=title, body=body, work_unit_id=ctx.work_unit_id, offline=offline,
                             now=ctx.now)
    return [Artifact(type="wiki_note", id=note_id, title=title)]


def document(kind: str):
    """A writer that keeps the note items as one document of `kind` (pieces that are not wiki knowledge)."""
    def write(ctx: HandlerContext, items: Items, offline: bool) -> list[Artifact]:
        title, body = compose(items)
        doc_id = notes.add_document(ctx.store, kind=kind, title=title, body=body, work_unit_id=ctx.work_unit_id,
                                    offline=offline, now=ctx.now)
        return [Artifact(type="document", id=doc_id, title=title)]
    return write



def extend_note(ctx: HandlerContext, note: Artifact, items: Items, offline: bool) -> list[Artifact]:
    """The items as a dated section of an existing wiki note."""
    title, body = compose(items)
    notes.append_to_note(ctx.store, note.id, f"## {title} ({ctx.date})\n\n{body}", work_unit_id=ctx.work_unit_id,
                         offline=offline, now=ctx.now)
    return [Artifact(type="wiki_note", id=note.id, title=f"{note.title} (extended)")]


def focus_note(ctx: HandlerContext, items: Items, offline: bool) -> list[Artifact]:
    """wiki.update_note's: the findings as a dated section of the note the focus names; a new note if none
    matches."""
    title, body = compose(items)
    about = ctx.focus.strip() or title
    target = best_match(about, notes.notes(ctx.store), lambda n: n["title"])
    if target is None:
        return wiki_note(ctx, [{"title": about[:120], "body": body, "source": ctx.action.id}], offline)
    notes.append_to_note(ctx.store, target["id"], f"## {title} ({ctx.date})\n\n{body}",
                         work_unit_id=ctx.work_unit_id, offline=offline, now=ctx.now)
    return [Artifact(type="wiki_note", id=target["id"], title=f"{target['title']} (updated)")]


def world_state_note(ctx: HandlerContext, items: Items, offline: bool) -> list[Artifact]:
    """world.summarize_state's: the gathered events as a dated world-state wiki note, saying where they came
    from."""
    _, body = compose(items)
    sourced = slices.earlier(ctx, "sourced") or NO_LIVE_SOURCE
    if sourced not in body:
        body += f"\n\n{sourced}"
    return wiki_note(ctx, [{"title": f"World state {ctx.date}", "body": body, "source": ctx.action.id}], offline)
