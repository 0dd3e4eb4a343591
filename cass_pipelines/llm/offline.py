"""The offline backend: no network, deterministic for a given request and seed.

It writes from the prompt's own material, returns valid objects for any schema, and reports the
usage the real API would (prompt caching included), priced like the configured model, so budgets
behave as online. Every result says offline=True; callers store that flag with what they write.
"""
from __future__ import annotations

import json
import time
import uuid

from pydantic import BaseModel, ValidationError

from cass_pipelines.domain.settings import Settings
from cass_pipelines.llm.backend import Backend
from cass_pipelines.llm.base import LLMError, LLMRequest, LLMResult, PromptCount
from cass_pipelines.llm.pricing import Pricing
from cass_pipelines.llm.simulate import PromptCache, estimate_tokens, instance, material, seeded, write_text


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
        started = time.monotonic()
        model = self.model_for(request.tier)
        json_schema = json.dumps(schema.model_json_schema()) if schema else ""
        rng = seeded(self.settings.offline_seed, model, request.system_prefix, request.system_suffix,
                     request.prompt, json_schema)
        items = material(request.prompt, request.system_suffix, request.system_prefix)
        parsed = None
        if schema is None:
            text = write_text(rng, items, request.max_tokens)
        else:
            value = instance(json.loads(json_schema), rng, items)
            try:
                parsed = schema.model_validate(value)
            except ValidationError as exc:  # a schema feature the generator does not cover
                raise LLMError(f"offline backend cannot satisfy schema {schema.__name__}: {exc}") from None
            text = json.dumps(value, ensure_ascii=False)
        rest = estimate_tokens(request.system_suffix) + estimate_tokens(request.prompt) + estimate_tokens(json_schema)
        usage = self._cache.usage(model, request.system_prefix, rest, estimate_tokens(text), self.settings.cache_ttl,
                                  self.pricing.rates(model).min_cacheable_tokens)
        return LLMResult(text=text, parsed=parsed, usage=usage, model=model,
                         request_id=f"offline_{uuid.uuid4().hex}",
                         latency_ms=int((time.monotonic() - started) * 1000), attempts=1, offline=True,
                         cost_usd=self.pricing.cost(model, usage), stop_reason="end_turn")
