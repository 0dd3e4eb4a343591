"""Model calls made by one action: every request carries the byte-identical cached prefix (so the
provider caches it across calls) and the action's tier and output limit; per-call context goes in
the prompt. Usage, cost and the offline flag are summed for the action's ActionResult."""
from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from cass_pipelines.domain.categories import ModelTier
from cass_pipelines.domain.registry import Registry
from cass_pipelines.llm.base import LLMClient, LLMError, LLMRequest, T, Usage
from cass_pipelines.llm.pricing import load_pricing
from cass_pipelines.services.handlers.base import ActionResult, HandlerContext
from cass_pipelines.services.metering import MeteredClient
from cass_pipelines.services.prompts import stable_prefix
from cass_pipelines.store.db import Store
from cass_pipelines.store.persona import persona_row


def system_prefix(store: Store, registry: Registry, llm: LLMClient, tier: str) -> str:
    """The stable prefix of `tier`, sized above its model's minimum cacheable length."""
    persona = persona_row(store)
    if persona is None:
        raise ValueError("the store has no persona: run `cass-pipelines init --sample` or load a persona first")
    return stable_prefix(persona, registry, load_pricing().rates(llm.model_for(tier)).min_cacheable_tokens)


class ModelCalls:
    """The calls of one action (or one work summary), with their summed usage and cost."""

    def __init__(self, llm: LLMClient, prefix: str, tier: str, max_tokens: int, purpose: str):
        if tier == ModelTier.NONE:
            raise ValueError(f"{purpose} is registered with model_tier 'none' but needs a model call")
        self.llm, self.prefix, self.tier, self.max_tokens, self.purpose = llm, prefix, str(tier), max_tokens, purpose
        self.usage = Usage()
        self.cost_usd = 0.0
        self.count = 0
        self.offline = False
        # Whether the calls go out as Message Batches (a MeteredClient for work no one waits for).
        self.batching = bool(getattr(llm, "batching", False))
        self._lock = threading.Lock()   # an action may call from several threads (memory summaries)

    @classmethod
    def for_action(cls, ctx: HandlerContext) -> "ModelCalls":
        return cls(ctx.llm, system_prefix(ctx.store, ctx.registry, ctx.llm, str(ctx.action.model_tier)),
                   ctx.action.model_tier,
                   ctx.action.max_output_tokens, ctx.action.id)

    def coming(self, calls: int) -> AbstractContextManager:
        """`calls` calls about to start together from several threads: batched, they go out as one batch."""
        return self.llm.coming(calls) if isinstance(self.llm, MeteredClient) else nullcontext()

    def structured(self, prompt: str, schema: type[T], *, web_search: bool = False,
                   max_tokens: int | None = None) -> T:
        result = self.llm.structured(LLMRequest(
            tier=self.tier, system_prefix=self.prefix, prompt=prompt, max_tokens=max_tokens or self.max_tokens,
            web_search=web_search, purpose=self.purpose), schema)
        with self._lock:
            self.usage += result.usage
            self.cost_usd += result.cost_usd
            self.count += 1
            self.offline = self.offline or result.offline
        if result.parsed is None:
            raise LLMError(f"{self.purpose}: the model returned no {schema.__name__} "
                           f"(stop reason {result.stop_reason})", request_id=result.request_id)
        return result.parsed

    def result(self, **fields: Any) -> ActionResult:
        """An ActionResult carrying these calls' usage, cost and offline flag."""
        usage = dict(zip(("input_tokens", "output_tokens", "cache_creation_input_tokens",
                          "cache_read_input_tokens"), self.usage.astuple()))
        offline = fields.pop("offline", False) or self.offline   # also rows written from offline output
        return ActionResult(usage=usage, cost_usd=round(self.cost_usd, 9), offline=offline, **fields)
