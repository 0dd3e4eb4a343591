"""Helpers for the handler tests (no tests here): contexts over the sample home, a unit runner that
passes earlier results on as the runner does, a counting wrapper around the real offline client,
and a client that always fails."""
from __future__ import annotations

from datetime import datetime, timedelta

from cass_pipelines.config.registry import resolve_handler
from cass_pipelines.domain.phases import phase_at
from cass_pipelines.llm.base import LLMError, LLMRequest
from cass_pipelines.services.handlers.base import ActionResult, HandlerContext


class CountingLLM:
    """The real offline client, counting calls and keeping each request."""

    def __init__(self, inner):
        self.inner, self.mode, self.requests = inner, inner.mode, []

    @property
    def calls(self) -> int:
        return len(self.requests)

    def model_for(self, tier: str) -> str:
        return self.inner.model_for(tier)

    def text(self, request: LLMRequest):
        self.requests.append(request)
        return self.inner.text(request)

    def structured(self, request: LLMRequest, schema):
        self.requests.append(request)
        return self.inner.structured(request, schema)


class FailingLLM:
    mode = "offline"

    def model_for(self, tier: str) -> str:
        return "claude-haiku-5-5"   # a priced model: the call itself fails

    def text(self, request):
        raise LLMError("provider unavailable (test)", status=529, retryable=True)

    structured = lambda self, request, schema: self.text(request)  # noqa: E731


def sample_now(rt) -> datetime:
    """Mid-morning of the day after the sample's last message: every sample conversation is idle.
    Fixed at first use for a runtime, so messages a test adds later do not move it."""
    if not hasattr(rt, "sample_now"):
        last = rt.store.scalar("SELECT max(created_at) FROM messages").astimezone(rt.settings.tz)
        rt.sample_now = (last + timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
    return rt.sample_now


def context(rt, action_id: str, *, template_id: str = "", focus: str = "", previous=(), llm=None,
            now: datetime | None = None, unit_id: str = "unit_test", settings=None) -> HandlerContext:
    now = now or sample_now(rt)
    settings = settings or rt.settings
    day, phase = phase_at(now, settings)
    return HandlerContext(action=rt.registry.actions[action_id], work_unit_id=unit_id,
                          template_id=template_id or "manual", focus=focus, motivation="because I chose it",
                          date=day, phase=phase, about_day=day, about_phase=phase, now=now, store=rt.store, llm=llm or rt.llm, settings=settings,
                          registry=rt.registry, previous=list(previous))


def run_action(rt, action_id: str, **kw) -> ActionResult:
    return resolve_handler(rt.registry.actions[action_id].handler)(context(rt, action_id, **kw))


def run_template(rt, template_id: str, *, unit_id: str | None = None, **kw) -> list[ActionResult]:
    """Every action of the template in order, each seeing the earlier results (as core.runner does)."""
    results: list[ActionResult] = []
    for action_id in rt.registry.templates[template_id].action_sequence:
        results.append(run_action(rt, action_id, template_id=template_id, previous=results,
                                  unit_id=unit_id or f"unit_{template_id}", **kw))
    return results


def count(rt, sql: str, params=()) -> int:
    return rt.store.scalar(sql, params)
