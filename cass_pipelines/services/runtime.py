"""What the CLI and Dagster share: settings, registry, store and LLM client, built once per process."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from cass_pipelines.config.registry import load_registry
from cass_pipelines.config.settings import load_settings
from cass_pipelines.domain.registry import Registry
from cass_pipelines.domain.settings import Settings, SettingsError
from cass_pipelines.llm.factory import make_client, resolve_mode
from cass_pipelines.store.db import Store

if TYPE_CHECKING:
    from cass_pipelines.llm.base import LLMClient
    from cass_pipelines.llm.pricing import Pricing


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
        from cass_pipelines.llm.pricing import load_pricing

        return load_pricing()


class NotInitialisedError(RuntimeError):
    """CASS_HOME has no database: `cass-pipelines init` was never run there."""

    def __init__(self, db_path: Path):
        super().__init__(f"no database at {db_path}; run 'cass-pipelines init' first")
        self.db_path = db_path


def require_initialised(settings: Settings) -> None:
    """The one check that CASS_HOME was initialised. It creates nothing (opening DuckDB would)."""
    if settings.db_path.exists() and not settings.db_path.is_file():
        raise SettingsError([f"CASS_HOME: {settings.db_path}: not a database file (a directory or device); "
                             "move it away, or point CASS_HOME elsewhere"])
    if not settings.db_path.is_file():
        raise NotInitialisedError(settings.db_path)


def open_store(env: Mapping[str, str] | None = None) -> tuple[Settings, Store]:
    """Settings and the store of an initialised CASS_HOME, for reads that need no registry or LLM."""
    settings = load_settings(env)
    require_initialised(settings)
    return settings, Store(settings.db_path)


def open_runtime(env: Mapping[str, str] | None = None, store: Store | None = None,
                 must_exist: bool = False) -> Runtime:
    """With `must_exist`, an uninitialised CASS_HOME raises NotInitialisedError before anything is opened."""
    settings = load_settings(env)
    if must_exist and store is None:
        require_initialised(settings)
    registry = load_registry(settings.actions_file, settings.handler_modules)
    return Runtime(settings=settings, registry=registry, store=store or Store(settings.db_path),
                   llm_mode=resolve_mode(settings, env))
