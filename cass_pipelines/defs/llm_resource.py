"""The LLM layer as a Dagster resource: which backend a run uses, overridable per deployment or run."""
from __future__ import annotations

from typing import Optional

import dagster as dg
from pydantic import Field

from cass_pipelines.domain.settings import Settings, SettingsError
from cass_pipelines.llm.base import LLMClient
from cass_pipelines.llm.factory import make_client

MODES = ("auto", "anthropic", "offline")


class LLMResource(dg.ConfigurableResource):
    mode: Optional[str] = Field(default=None, description="auto | anthropic | offline; unset follows CASS_LLM")

    def get_client(self, settings: Settings) -> LLMClient:
        """A new client; keep it for the run (the offline backend's simulated cache lives in it)."""
        if self.mode is None:
            return make_client(settings)
        if self.mode not in MODES:
            raise SettingsError([f"LLMResource.mode: expected one of {', '.join(MODES)}, got {self.mode!r}"])
        return make_client(settings.model_copy(update={"llm_mode": self.mode}))
