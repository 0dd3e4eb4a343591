"""Choose the LLM backend from settings and the environment (CASS_LLM=auto|anthropic|offline)."""
from __future__ import annotations

import os
from typing import Mapping

from cass_pipelines.core.settings import Settings
from cass_pipelines.llm.base import LLMClient


def resolve_mode(settings: Settings, env: Mapping[str, str] | None = None) -> str:
    """auto means anthropic when ANTHROPIC_API_KEY is set, offline otherwise."""
    env = os.environ if env is None else env
    if settings.llm_mode == "auto":
        return "anthropic" if env.get("ANTHROPIC_API_KEY") else "offline"
    return settings.llm_mode


def make_client(settings: Settings, mode: str | None = None) -> LLMClient:
    raise NotImplementedError("LLM backends: issue 3")
