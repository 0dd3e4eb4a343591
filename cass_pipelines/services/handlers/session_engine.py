"""One engine for every `session.*` action; each session is a SessionSpec (what I set out to do,
which slice of my self-model and memory I look at, where the piece is kept).

A session makes one structured call in the agent's voice and writes back what it produced:
questions it answered are closed with the answer (by the session itself), and insights,
observations, new questions, an edge's restated current state and the piece itself go through
the unit's Outbox (handoff.py): written now, or by the later self.*/wiki.* step that owns them.
Ids the model may name (growth edges, open questions) are enums in the output schema built per
call, so it can only refer to what it was shown.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from pydantic import BaseModel, Field, create_model

from cass_pipelines.services.handlers import slices, writeback
from cass_pipelines.services.handlers.base import ActionResult, Artifact, HandlerContext
from cass_pipelines.services.handlers.calls import ModelCalls
from cass_pipelines.services.handlers.handoff import Outbox
from cass_pipelines.services.handlers.quoting import NOTICE
from cass_pipelines.store import selfmodel

MAX_INSIGHTS, MAX_QUESTIONS, MAX_OBSERVATIONS = 5, 3, 3


@dataclass
class Material:
    """What a session sees, and what it may refer to by id."""
    sections: list[str]
    edges: list[dict] = field(default_factory=list)       # may record observations on these
    questions: list[dict] = field(default_factory=list)   # may answer these
    state_edge: dict | None = None                        # may restate this edge's current state


@dataclass(frozen=True)
class SessionSpec:
    kind: str                                   # names the piece, its document kind and its insights
    intent: str                                 # what I set out to do, in my words
    gather: Callable[[HandlerContext], Material]
    keep_as: Literal["document", "wiki_note"] = "document"


def output_model(m: Material) -> type[BaseModel]:
    fields: dict = {
        "title": (str, Field(description="a short title for what I made")),
        "body": (str, Field(description="the piece itself, in my own voice")),
        "insights": (list[str], Field(default_factory=list, description="what I now understand, one sentence each")),
        "questions_raised": (list[str], Field(default_factory=list, description="new questions worth keeping open")),
    }
    if m.edges:
        observation = create_model("EdgeObservation", text=(str, ...),
                                   edge_id=(Literal[tuple(e["id"] for e in m.edges)], ...))  # type: ignore[arg-type,misc,maybe-unrecognized-str-typeform]
        fields["observations"] = (list[observation], Field(default_factory=list))  # type: ignore[valid-type]
    if m.questions:
        answer = create_model("QuestionAnswer", answer=(str, ...),
                              question_id=(Literal[tuple(q["id"] for q in m.questions)], ...))  # type: ignore[arg-type,misc,maybe-unrecognized-str-typeform]
        fields["questions_addressed"] = (list[answer], Field(default_factory=list))  # type: ignore[valid-type]
    if m.state_edge:
        fields["current_state"] = (str, Field(description="where I am now on this growth edge"))
    return create_model("SessionOutput", **fields)


def prompt(ctx: HandlerContext, spec: SessionSpec, m: Material) -> str:
    wanted = [f"- title: a short title for this {spec.kind} piece.",
              "- body: the piece itself, in my own voice, grounded only in what is above.",
              f"- insights: up to {MAX_INSIGHTS} things I now understand, one sentence each.",
              f"- questions_raised: up to {MAX_QUESTIONS} new questions worth keeping open; none is fine."]
    if m.edges:
        wanted.append(f"- observations: up to {MAX_OBSERVATIONS} observations on my growth edges, each naming "
                      "an edge listed above by its id.")
    if m.questions:
        wanted.append("- questions_addressed: the open questions listed above that I can now honestly answer, "
                      "by id, each with my answer; none is fine.")
    if m.state_edge:
        wanted.append(f"- current_state: one or two sentences on where I am now with "
                      f"'{m.state_edge['area']}'.")
    parts = [spec.intent, f"It is {ctx.date:%A %Y-%m-%d}, {ctx.phase}.", slices.plan(ctx), NOTICE,
             *m.sections, slices.unit_so_far(ctx), "What I return:\n" + "\n".join(wanted)]
    return "\n\n".join(p for p in parts if p)


def _clean(texts: list[str], limit: int) -> list[str]:
    out: list[str] = []
    for t in (t.strip() for t in texts):
        if t and t not in out:
            out.append(t)
    return out[:limit]


def run_session(ctx: HandlerContext, spec: SessionSpec) -> ActionResult:
    m = spec.gather(ctx)
    calls = ModelCalls.for_action(ctx)
    out: Any = calls.structured(prompt(ctx, spec, m), output_model(m))   # a model built for this material
    if not out.body.strip():
        raise ValueError(f"{ctx.action.id}: the model returned an empty piece")
    title = out.title.strip() or f"{spec.kind.replace('_', ' ').capitalize()} {ctx.date}"
    found, raised = _clean(out.insights, MAX_INSIGHTS), _clean(out.questions_raised, MAX_QUESTIONS)

    answers = {a.question_id: a.answer.strip() for a in getattr(out, "questions_addressed", []) if a.answer.strip()}
    closed = selfmodel.answer_questions(ctx.store, list(answers.items()), addressed_by=ctx.work_unit_id,
                                        offline=calls.offline, now=ctx.now)
    asked = {q["id"]: q["question"] for q in m.questions}
    answered = [f"{asked[q]} — {answers[q]}" for q in closed]

    box = Outbox(ctx, calls)
    box.deliver("insights", [{"text": t, "source": ctx.action.id} for t in found], writeback.insights)
    box.deliver("observations", [{"edge_id": o.edge_id, "text": o.text.strip()}
                                 for o in getattr(out, "observations", [])[:MAX_OBSERVATIONS] if o.text.strip()],
                writeback.observations)
    box.deliver("questions", [{"question": q, "context": f"raised in {ctx.action.id} ({ctx.focus})"}
                              for q in raised if q not in asked.values()], writeback.questions)
    if m.state_edge and out.current_state.strip():
        box.deliver("edge_state", [{"edge_id": m.state_edge["id"], "current_state": out.current_state.strip()}],
                    writeback.edge_state)
    keep = writeback.wiki_note if spec.keep_as == "wiki_note" else writeback.document(spec.kind)
    box.deliver("note", [{"title": title, "body": out.body.strip(), "source": ctx.action.id}], keep)

    artifacts = [Artifact(type="open_question", id=q, title=f"answered: {asked[q][:70]}") for q in closed]
    return calls.result(
        success=True, message=f"{spec.kind} '{title}': {len(found)} insight(s), {len(closed)} question(s) "
                              f"answered; {box.summary()}",
        artifacts=artifacts + box.artifacts, insights=found, questions_raised=raised, questions_addressed=answered,
        data={**box.data, "title": title})
