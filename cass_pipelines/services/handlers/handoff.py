"""Who writes what: one writer per kind of record in a work unit, so nothing is written twice.

A producing step (a session, research, memory summaries) writes each kind of record it made
itself, unless a later step of the same unit owns that kind (WRITERS): then it leaves the items in
`ActionResult.data["pending"]` and the owner writes them. So in `morning_reflection`
(session.reflection, self.record_insight) self.record_insight writes the insights; in
`creative_session` (session.creative alone) the session writes them itself. A producer always
reports what it made in its ActionResult (insights, questions), whoever writes it, so the work
summary sees it. An owner takes the pending items of earlier results since the last step that
wrote that kind (`data["wrote"]`), and marks the kind as written. A unit that ends before an owner
runs (a failure, a sequence stopped early) keeps what was left for it as the owner would
(`keep_left_over`), and marks it `kept` in the producers' results, so a retry of the unit keeps it once.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from cass_pipelines.services.handlers import writeback
from cass_pipelines.services.handlers.base import ActionResult, Artifact, HandlerContext, Items, Writer
from cass_pipelines.services.handlers.calls import ModelCalls
from cass_pipelines.store import plans

# The steps that own each kind, and how each writes it (writeback.py).
WRITERS: dict[str, dict[str, Writer]] = {
    "insights": {"self.record_insight": writeback.insights},
    "observations": {"self.add_observation": writeback.observations},
    "questions": {"self.add_open_question": writeback.questions},
    "edge_state": {"self.update_growth_edge": writeback.edge_state},
    "note": {"wiki.create_note": writeback.wiki_note, "wiki.update_note": writeback.focus_note,
             "world.summarize_state": writeback.world_state_note},
    "titles": {"memory.generate_conversation_title": writeback.titles},
}


def later_owner(ctx: HandlerContext, kind: str) -> str | None:
    """The step after this one in the unit's template that owns `kind`, if any."""
    template = ctx.registry.templates.get(ctx.template_id)
    sequence = template.action_sequence if template else (ctx.action.id,)
    position = len(ctx.previous)
    if position >= len(sequence) or sequence[position] != ctx.action.id:
        position = sequence.index(ctx.action.id) if ctx.action.id in sequence else len(sequence)
    return next((a for a in sequence[position + 1:] if a in WRITERS[kind]), None)


class Outbox:
    """What a producing step made, per kind: written now, or left for the unit's owner of the kind."""

    def __init__(self, ctx: HandlerContext, calls: ModelCalls):
        self.ctx, self.calls = ctx, calls   # rows written now carry the calls' offline flag
        self.artifacts: list[Artifact] = []
        self.pending: dict[str, Items] = {}
        self.wrote: list[str] = []
        self.owners: dict[str, str] = {}
        self._writers: dict[str, Writer] = {}

    def deliver(self, kind: str, items: Items, write_now: Writer) -> None:
        if not items:
            return
        owner = later_owner(self.ctx, kind)
        if owner:
            self.pending.setdefault(kind, []).extend(items)
            self.owners[kind] = owner
            self._writers[kind] = write_now
        else:
            self.artifacts += write_now(self.ctx, items, self.calls.offline)
            if kind not in self.wrote:
                self.wrote.append(kind)

    def write_all(self) -> None:
        """Write what was left for later owners now: the step is failing, so its result (and with it the
        pending items) will never reach them, though what made the items is done and paid for."""
        for kind, items in self.pending.items():
            self.artifacts += self._writers[kind](self.ctx, items, self.calls.offline)
            self.wrote.append(kind)
        self.pending = {}

    @property
    def data(self) -> dict[str, Any]:
        return {"pending": self.pending, "wrote": self.wrote}

    def summary(self) -> str:
        return "; ".join([f"wrote {len(self.artifacts)} record(s)"] + [
            f"left {len(items)} {kind} for {self.owners[kind]}" for kind, items in self.pending.items()])


def _unwritten(results: list[ActionResult], kind: str) -> tuple[Items, bool, list[int]]:
    """Items of `kind` the results left pending and no later one wrote, whether any came from offline
    output, and the indexes of the results that left them."""
    items: Items = []
    sources: list[int] = []
    offline = False
    for index, result in enumerate(results):
        if kind in result.data.get("wrote", []):
            items, offline, sources = [], False, []
        mine = result.data.get("pending", {}).get(kind, [])
        items += mine
        offline = offline or (bool(mine) and result.offline)
        sources += [index] if mine else []
    return items, offline, sources


def take(ctx: HandlerContext, kind: str) -> tuple[Items, bool]:
    """Pending items of `kind` from earlier steps not yet written, and whether any came from offline output."""
    items, offline, _ = _unwritten(ctx.previous, kind)
    return items, offline


def keep_left_over(ctx: HandlerContext, results: dict[int, ActionResult]) -> tuple[list[str], list[str]]:
    """The unit ends with `results` (its actions' by position): what they left for owners that will not
    run is written now by the step of the template that would have written it, as it would, kind by kind,
    each in one transaction with its mark in the stored results that left it (`kept`, the records written
    added to the last one's artifacts: a retry of the unit, the steps after and its summary find them).
    Returns what was written ("2 record(s) of insights") and why a kind could not be (it stays pending: a
    retry has it)."""
    template = ctx.registry.templates.get(ctx.template_id)
    sequence = template.action_sequence if template else ()
    every = [results[p] for p in sorted(results)]   # what an owner after them all would have seen
    done, failed = [], []
    for kind, owners in WRITERS.items():
        items, offline, sources = _unwritten(list(results.values()), kind)
        made_by = [list(results)[i] for i in sources]   # the positions of the results that left them
        owner = next((a for a in sequence[made_by[-1] + 1:] if a in owners), None) if items else None
        if owner is None:
            continue

        def keep(_conn) -> tuple[list[Artifact], dict[int, ActionResult]]:
            written, _ = _write(replace(ctx, action=ctx.registry.actions[owner], previous=every), kind, items, offline)
            marked = {p: kept(results[p], kind, written if p == made_by[-1] else []) for p in made_by}
            for position, result in marked.items():
                plans.set_action_result(ctx.store, ctx.work_unit_id, position, result.model_dump(mode="json"))
            return written, marked
        try:
            written, marked = ctx.store.grouped(keep)
        except Exception as exc:   # a kind that cannot be written keeps none of the others from it
            failed.append(f"{kind}: {type(exc).__name__}: {exc}")
            continue
        results.update(marked)
        done += [f"{len(written)} record(s) of {kind}"] if written else []
    return done, failed


def kept(result: ActionResult, kind: str, written: list[Artifact]) -> ActionResult:
    """`result` with its pending items of `kind` marked kept (written when the unit ended early: `kept`
    names, per kind, the records written) and those records among its artifacts."""
    pending = {k: v for k, v in result.data.get("pending", {}).items() if k != kind}
    marks = {**_kept(result), kind: [a.id for a in written]}
    return result.model_copy(update={"artifacts": result.artifacts + written,
                                     "data": {**result.data, "pending": pending, "kept": marks}})


def _kept(result: ActionResult) -> dict[str, list[str]]:
    """The kinds kept from this result and the ids of the records written (its first form was a list of kinds)."""
    marks = result.data.get("kept", {})
    return {kind: [] for kind in marks} if isinstance(marks, list) else marks


def _kept_note(ctx: HandlerContext) -> Artifact | None:
    """The wiki note what earlier steps left was kept in when the unit ended early, if any."""
    ids = {i for r in ctx.previous for i in _kept(r).get("note", [])}
    return next((a for r in ctx.previous for a in r.artifacts if a.type == "wiki_note" and a.id in ids), None)


def write_pending(ctx: HandlerContext, kind: str, *, required: bool = False) -> ActionResult:
    """The whole job of an owning step: write what earlier steps of the unit left of its kind, as WRITERS
    says this step writes it."""
    items, offline = take(ctx, kind)
    if not items and any(kind in _kept(r) for r in ctx.previous):
        return ActionResult(success=True, message=f"no {kind} to write: what earlier steps left was kept when "
                                                  "the unit ended early; this is a run of it again")
    if not items:
        if required:
            raise ValueError(f"{ctx.action.id}: no earlier step of unit {ctx.work_unit_id} left any {kind} to "
                             f"write (earlier steps: {', '.join(r.message[:60] for r in ctx.previous) or 'none'})")
        return ActionResult(success=True, message=f"no {kind} to write: earlier steps left none")
    artifacts, extended = _write(ctx, kind, items, offline)
    message = (f"added {len(items)} note(s) to {extended.id}, kept when the unit ended early" if extended
               else f"wrote {len(artifacts)} record(s) from {len(items)} {kind}")
    return ActionResult(success=True, message=message, artifacts=artifacts, offline=offline, data={"wrote": [kind]})


def _write(ctx: HandlerContext, kind: str, items: Items, offline: bool) -> tuple[list[Artifact], Artifact | None]:
    """`items` written as `ctx`'s step, an owner of `kind`, writes them (WRITERS); a note goes on in the one
    kept when the unit ended early before, if any (then named second), not beside it."""
    extended = _kept_note(ctx) if kind == "note" else None
    if extended is not None:
        return writeback.extend_note(ctx, extended, items, offline), extended
    return WRITERS[kind][ctx.action.id](ctx, items, offline), None
