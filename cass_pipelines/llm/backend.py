"""What the Anthropic and offline backends share: checked models, tier -> model, one `_call`."""
from __future__ import annotations

from pydantic import BaseModel

from cass_pipelines.domain.settings import Settings
from cass_pipelines.llm.base import LLMRequest, LLMResult, T, model_for
from cass_pipelines.llm.pricing import Pricing


class Backend:
    mode: str

    def __init__(self, settings: Settings, pricing: Pricing):
        pricing.check_settings(settings)   # an unpriced model is a settings error, never a silent $0
        self.settings = settings
        self.pricing = pricing

    def model_for(self, tier: str) -> str:
        return model_for({str(k): v for k, v in self.settings.models.items()}, tier)

    def text(self, request: LLMRequest) -> LLMResult:
        return self._call(request, None)

    def structured(self, request: LLMRequest, schema: type[T]) -> LLMResult[T]:
        return self._call(request, schema)

    def _call(self, request: LLMRequest, schema: type[BaseModel] | None) -> LLMResult:
        raise NotImplementedError
