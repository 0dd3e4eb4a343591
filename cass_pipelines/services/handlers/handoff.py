"""Who writes what: one writer per kind of record in a work unit, so nothing is written twice.

A producing step (a session, research, memory summaries) writes each kind of record it made
itself, unless a later step of the same unit owns that kind (WRITERS): then it leaves the items in
`ActionResult.data["pending"]` and the owner writes them. So in `morning_reflection`
(session.reflection, self.record_insight) self.record_insight writes the insights; in
`creative_session` (session.creative alone) the session writes them itself. A producer always
reports what it made in its ActionResult (insights, questions), whoever writes it, so the work
summary sees it. An owner takes the pending items of earlier results since the last step that
wrote that kind (`data["wrote"]`), and marks the kind as written.
"""
from __future__ import annotations

from typing import Any, Callable

from cass_pipelines.services.handlers.base import ActionResult, Artifact, HandlerContext
from cass_pipelines.services.handlers.calls import ModelCalls

WRITERS: dict[str, tuple[str, ...]] = {
    "insights": ("self.record_insight",),
    "observations": ("self.add_observation",),
    "questions": ("self.add_open_question",),
    "edge_state": ("self.update_growth_edge",),
    "note": ("wiki.create_note", "wiki.update_note", "world.summarize_state"),
    "titles": ("memory.generate_conversation_title",),
}

Items = list[dict[str, Any]]
Writer = Callable[[HandlerContext, Items, bool], list[Artifact]]


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


def take(ctx: HandlerContext, kind: str) -> tuple[Items, bool]:
    """Pending items of `kind` from earlier steps not yet written, and whether any came from offline output."""
    items: Items = []
    offline = False
    for result in ctx.previous:
        if kind in result.data.get("wrote", []):
            items, offline = [], False
        mine = result.data.get("pending", {}).get(kind, [])
        items += mine
        offline = offline or (bool(mine) and result.offline)
    return items, offline


def write_pending(ctx: HandlerContext, kind: str, write: Writer, *, required: bool = False) -> ActionResult:
    """The whole job of an owning step: write what earlier steps of the unit left of its kind."""
    items, offline = take(ctx, kind)
    if not items:
        if required:
            raise ValueError(f"{ctx.action.id}: no earlier step of unit {ctx.work_unit_id} left any {kind} to "
                             f"write (earlier steps: {', '.join(r.message[:60] for r in ctx.previous) or 'none'})")
        return ActionResult(success=True, message=f"no {kind} to write: earlier steps left none")
    artifacts = write(ctx, items, offline)
    return ActionResult(success=True, message=f"wrote {len(artifacts)} record(s) from {len(items)} {kind}",
                        artifacts=artifacts, offline=offline, data={"wrote": [kind]})
