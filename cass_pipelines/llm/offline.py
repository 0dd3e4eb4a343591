"""The offline backend: no network, deterministic for a given request and seed.

It writes from the prompt's own material, returns valid objects for any schema, and reports the
usage the real API would (prompt caching included), priced like the configured model, so budgets
behave as online. Every result says offline=True; callers store that flag with what they write.

Message Batches are simulated deterministically: a batch has ended by the time it is collected, and
each answer is the one the same request would get, billed at the batch price, with an id made from
its custom id (so collecting twice, in any process, gives the same ledger row).
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import replace

from pydantic import BaseModel, ValidationError

from cass_pipelines.domain.settings import Settings
from cass_pipelines.llm.backend import Backend
from cass_pipelines.llm.base import BatchAnswer, BatchItem, LLMError, LLMRequest, LLMResult, PromptCount
from cass_pipelines.llm.pricing import Pricing
from cass_pipelines.llm.simulate import (
    PromptCache,
    estimate_tokens,
    instance,
    material,
    seeded,
    truncated,
    write_text,
)


class OfflineBackend(Backend):
    mode = "offline"

    def __init__(self, settings: Settings, pricing: Pricing):
        super().__init__(settings, pricing)
        self._cache = PromptCache()

    def prefix_cached(self, request: LLMRequest) -> bool | None:
        """Whether this request's prefix will be read from cache: known exactly when simulated."""
        return self._cache.written(self.model_for(request.tier), request.system_prefix)

    def count_tokens(self, request: LLMRequest, schema: type[BaseModel] | None = None) -> PromptCount:
        """The same estimate the offline backend bills: the prefix plus the rest of the prompt."""
        json_schema = json.dumps(schema.model_json_schema()) if schema else ""
        prefix = estimate_tokens(request.system_prefix)
        rest = estimate_tokens(request.system_suffix) + estimate_tokens(request.prompt) + estimate_tokens(json_schema)
        return PromptCount(total=prefix + rest, prefix=prefix)

    def _call(self, request: LLMRequest, schema: type[BaseModel] | None) -> LLMResult:
        result = self._answer(request, schema.model_json_schema() if schema else None, batch=False,
                              request_id=f"offline_{uuid.uuid4().hex}")
        if schema is None:
            return result
        try:
            return replace(result, parsed=schema.model_validate_json(result.text))
        except ValidationError as exc:
            if result.stop_reason == "max_tokens":   # cut at the output bound: paid, as online
                raise LLMError(f"structured output cut at max_tokens={request.max_tokens}", retryable=True,
                               request_id=result.request_id, billed=result) from None
            # a schema feature the generator does not cover
            raise LLMError(f"offline backend cannot satisfy schema {schema.__name__}: {exc}") from None

    def submit_batch(self, items: list[BatchItem]) -> str:
        digest = hashlib.sha256("\x1f".join(i.custom_id for i in items).encode()).hexdigest()[:24]
        return f"offline_batch_{digest}"

    def collect_batch(self, batch_id: str, items: list[BatchItem]) -> dict[str, BatchAnswer] | None:
        return {i.custom_id: BatchAnswer(i.custom_id, self._answer(i.request, i.json_schema, batch=True,
                                                                   request_id=f"offline_{i.custom_id}"))
                for i in items}

    def _answer(self, request: LLMRequest, schema: dict | None, *, batch: bool, request_id: str) -> LLMResult:
        started = time.monotonic()
        model = self.model_for(request.tier)
        json_schema = json.dumps(schema) if schema else ""
        rng = seeded(self.settings.offline_seed, model, request.system_prefix, request.system_suffix,
                     request.prompt, json_schema)
        items = material(request.prompt, request.system_suffix, request.system_prefix)
        if schema is None:
            text = write_text(rng, items, request.max_tokens)
        else:
            text = json.dumps(instance(schema, rng, items), ensure_ascii=False)
        text, stop = truncated(text, request.max_tokens)
        rest = estimate_tokens(request.system_suffix) + estimate_tokens(request.prompt) + estimate_tokens(json_schema)
        usage = self._cache.usage(model, request.system_prefix, rest, estimate_tokens(text),
                                  request.cache_ttl or self.settings.cache_ttl,
                                  self.pricing.rates(model).min_cacheable_tokens)
        return LLMResult(text=text, parsed=None, usage=usage, model=model, request_id=request_id,
                         latency_ms=int((time.monotonic() - started) * 1000), attempts=1, offline=True,
                         cost_usd=self.pricing.cost(model, usage, batch=batch), stop_reason=stop)
