"""Handlers for research.* actions: keep the research queue and research its questions.

Each researched question is one fast call (with the web search tool only when settings.web_search
is on). Its write-up goes out as a note (a 'research_finding' document, or the unit's wiki note when
a wiki step follows), its key points as insights and its follow-ups as new questions, through the
unit's Outbox (handoff.py). Answering the open question itself is left to a session.
"""
from __future__ import annotations

from pydantic import BaseModel, Field

from cass_pipelines.services.handlers import slices, writeback
from cass_pipelines.services.handlers.base import ActionResult, Artifact, HandlerContext
from cass_pipelines.services.handlers.calls import ModelCalls
from cass_pipelines.services.handlers.exclusive import claimed
from cass_pipelines.services.handlers.handoff import Outbox
from cass_pipelines.services.handlers.quoting import NOTICE, quote
from cass_pipelines.services.handlers.sourcing import search_instruction, source_line
from cass_pipelines.services.handlers.terms import ranked
from cass_pipelines.store import research as queue
from cass_pipelines.store import selfmodel

BATCH_SIZE = 3


class Findings(BaseModel):
    findings: str = Field(description="what I found, first person, with how sure I am")
    key_points: list[str] = Field(default_factory=list, description="the main points, one sentence each")
    follow_up_questions: list[str] = Field(default_factory=list, description="questions this leaves open")
    sources: list[str] = Field(default_factory=list, description="sources actually used (URLs); empty without search")


def refresh_queue(ctx: HandlerContext) -> ActionResult:
    added, dropped = queue.refresh_queue(ctx.store, ctx.now)
    waiting = queue.queued(ctx.store)
    return ActionResult(
        success=True, message=f"research queue: {len(added)} question(s) added, {len(dropped)} dropped (answered "
                              f"elsewhere), {len(waiting)} waiting",
        artifacts=[Artifact(type="research_item", id=i["id"], title=i["question"][:80]) for i in added],
        data={"queued": len(waiting)})


def _candidates(ctx: HandlerContext) -> list[dict]:
    """Queued items closest to the focus (oldest first among equals). The question an earlier step chose
    comes first, queued now if it was not."""
    items = ranked(ctx.focus, queue.queued(ctx.store), lambda i: i["question"])
    chosen = slices.earlier(ctx, "question_id")
    if chosen:
        mine = [i for i in items if i["source_question_id"] == chosen]
        if not mine:
            mine = [queue.enqueue(ctx.store, q["question"], q["id"], ctx.now)
                    for q in selfmodel.questions_by_id(ctx.store, [chosen]) if q["status"] == "open"]
        items = mine + [i for i in items if i["source_question_id"] != chosen]
    return items


def _research(ctx: HandlerContext, calls: ModelCalls, box: Outbox, item: dict) -> tuple[Findings, str]:
    web = ctx.settings.web_search
    out = calls.structured("\n\n".join([
        "I am researching a question from my research queue. " + search_instruction(web), NOTICE,
        quote("the question", item["question"]), slices.plan(ctx),
        "What I return:\n- findings: what I found, and how sure I am.\n- key_points: up to four main points.\n"
        "- follow_up_questions: up to two questions this leaves open.\n- sources: the sources I used, if any."]),
        Findings, web_search=web)
    sourced = source_line(web, out.sources)
    body = "\n\n".join([out.findings.strip(), *(f"- {p.strip()}" for p in out.key_points if p.strip()), sourced])
    points = [p.strip() for p in out.key_points if p.strip()][:4]
    box.deliver("note", [{"title": item["question"][:120], "body": body, "source": ctx.action.id}],
                writeback.document("research_finding"))
    box.deliver("insights", [{"text": p, "source": ctx.action.id} for p in points], writeback.insights)
    box.deliver("questions", [{"question": q.strip(), "context": f"follow-up to: {item['question'][:120]}"}
                              for q in out.follow_up_questions[:2] if q.strip()], writeback.questions)
    queue.mark_done(ctx.store, item["id"], ctx.now)
    return out, sourced


def _run(ctx: HandlerContext, count: int) -> ActionResult:
    with claimed(ctx, "research", _candidates(ctx), count, lambda i: i["id"]) as taken:   # not another unit's
        items = taken.items
        if not items:
            return ActionResult(success=True,
                                message="the research queue is empty: nothing researched, no model call")
        calls = ModelCalls.for_action(ctx)
        box = Outbox(ctx, calls)
        findings, raised, sourced = [], [], ""
        try:
            for item in items:
                out, sourced = _research(ctx, calls, box, item)
                taken.finish(item)
                findings += [p.strip() for p in out.key_points if p.strip()][:4]
                raised += [q.strip() for q in out.follow_up_questions[:2] if q.strip()]
        except BaseException:   # a later question refused or failed: the ones answered (done, paid) keep
            box.write_all()     # their write-ups as documents, since the unit's note writer will not run
            raise
    done = [Artifact(type="research_item", id=i["id"], title=f"researched: {i['question'][:70]}") for i in items]
    return calls.result(
        success=True, message=f"researched {len(items)} question(s). {sourced} {box.summary()}",
        artifacts=done + box.artifacts, insights=findings, questions_raised=raised,
        data={**box.data, "findings": findings, "sourced": sourced,
              "question_id": items[0]["source_question_id"]})


def run_single(ctx: HandlerContext) -> ActionResult:
    return _run(ctx, 1)


def run_batch(ctx: HandlerContext) -> ActionResult:
    return _run(ctx, BATCH_SIZE)
