"""What the CLI and Dagster share: settings, registry, store and LLM client, built once per process."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Mapping

from cass_pipelines.core.registry import Registry, load_registry
from cass_pipelines.core.settings import Settings, load_settings
from cass_pipelines.llm.base import LLMClient
from cass_pipelines.llm.factory import make_client, resolve_mode
from cass_pipelines.llm.pricing import Pricing, load_pricing
from cass_pipelines.store.db import Store


@dataclass
class Runtime:
    settings: Settings
    registry: Registry
    store: Store
    llm_mode: str

    @cached_property
    def llm(self) -> LLMClient:
        return make_client(self.settings, self.llm_mode)

    @cached_property
    def pricing(self) -> Pricing:
        return load_pricing()


def open_runtime(env: Mapping[str, str] | None = None, store: Store | None = None) -> Runtime:
    settings = load_settings(env)
    registry = load_registry(settings.actions_file)
    return Runtime(settings=settings, registry=registry, store=store or Store(settings.db_path),
                   llm_mode=resolve_mode(settings, env))
