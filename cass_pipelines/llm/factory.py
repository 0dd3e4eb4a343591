"""Choose the LLM backend from settings and the environment (CASS_LLM=auto|anthropic|offline)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Mapping

from cass_pipelines.domain.settings import Settings

if TYPE_CHECKING:   # the backends load only when a client is made: `status` needs just the mode
    from cass_pipelines.llm.base import LLMClient


def resolve_mode(settings: Settings, env: Mapping[str, str] | None = None) -> str:
    """auto means anthropic when ANTHROPIC_API_KEY is set, offline otherwise."""
    env = os.environ if env is None else env
    if settings.llm_mode == "auto":
        return "anthropic" if env.get("ANTHROPIC_API_KEY") else "offline"
    return settings.llm_mode


def make_client(settings: Settings, mode: str | None = None) -> LLMClient:
    """The backend for `mode` (default: resolved from settings and environment). Checks that every
    configured model is priced, so a typo in a model name fails at startup."""
    from cass_pipelines.llm.offline import OfflineBackend
    from cass_pipelines.llm.pricing import load_pricing

    mode = mode or resolve_mode(settings)
    pricing = load_pricing()
    if mode == "offline":
        return OfflineBackend(settings, pricing)
    if mode == "anthropic":
        from cass_pipelines.llm.anthropic_backend import AnthropicBackend  # the SDK is slow to import
        return AnthropicBackend(settings, pricing)
    raise ValueError(f"unknown LLM mode {mode!r}; expected anthropic or offline")
