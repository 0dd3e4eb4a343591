"""Prices as data: pricing.json holds, per model, USD per million tokens for input, output, 5-minute
and 1-hour cache writes and cache reads, with the date and source of each figure, and the Message Batches discount (every
token rate of a batched request is that share of the list price).

Cost is always computed from the usage a response reported. A model without a price is a settings
error raised at startup, never a silent $0.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from cass_pipelines.domain.settings import Settings, SettingsError
from cass_pipelines.llm.base import Usage

PRICING_FILE = Path(__file__).with_name("pricing.json")
PER_TOKEN = 1_000_000


class UnknownModelError(SettingsError):
    def __init__(self, model: str, known: list[str]):
        super().__init__([f"model {model!r} has no price in {PRICING_FILE.name}; known models: {', '.join(known)}"])
        self.model = model


@dataclass(frozen=True)
class ModelRates:
    model: str
    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float
    min_cacheable_tokens: int   # a shorter cached prefix is not cached at all
    as_of: str
    source: str


@dataclass(frozen=True)
class Pricing:
    version: int
    models: dict[str, ModelRates]
    web_search_per_1k: float
    batch_factor: float = 1.0

    def rates(self, model: str, *, batch: bool = False) -> ModelRates:
        """The model's rates; with `batch`, its token rates in a Message Batch."""
        try:
            r = self.models[model]
        except KeyError:
            raise UnknownModelError(model, sorted(self.models)) from None
        if not batch:
            return r
        f = self.batch_factor
        return replace(r, input=r.input * f, output=r.output * f, cache_write_5m=r.cache_write_5m * f,
                       cache_write_1h=r.cache_write_1h * f, cache_read=r.cache_read * f)

    def cost(self, model: str, usage: Usage, *, batch: bool = False) -> float:
        """USD for one response. input_tokens are the uncached ones; cache writes are split by TTL.
        A batched response's tokens are billed at the batch discount; searches at their list price."""
        r = self.rates(model, batch=batch)
        written_5m = usage.cache_creation_input_tokens - usage.cache_creation_1h_input_tokens
        tokens = (usage.input_tokens * r.input + usage.output_tokens * r.output
                  + written_5m * r.cache_write_5m + usage.cache_creation_1h_input_tokens * r.cache_write_1h
                  + usage.cache_read_input_tokens * r.cache_read)
        return tokens / PER_TOKEN + usage.web_search_requests * self.web_search_per_1k / 1000

    def check_settings(self, settings: Settings) -> None:
        """Every configured model must be priced; raises SettingsError naming each one that is not."""
        missing = [f"models.{tier}: model {m!r} has no price in {PRICING_FILE.name}; known models: "
                   f"{', '.join(sorted(self.models))}" for tier, m in settings.models.items() if m not in self.models]
        if missing:
            raise SettingsError(missing)


def parse_pricing(data: dict) -> Pricing:
    models = {name: ModelRates(model=name, **entry)
              for name, entry in data["models"].items()}
    return Pricing(version=data["version"], models=models, web_search_per_1k=data["web_search_per_1k"]["usd"],
                   batch_factor=data.get("batch_discount", {}).get("factor", 1.0))


@lru_cache(maxsize=4)
def load_pricing(path: Path = PRICING_FILE) -> Pricing:
    return parse_pricing(json.loads(path.read_text(encoding="utf-8")))
