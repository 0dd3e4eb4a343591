"""Shared fixtures: every test gets its own CASS_HOME with the sample persona and conversations,
the offline LLM, and a Dagster instance of its own. Nothing touches the repository's .cass."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from support import NOW

from cass_pipelines.cli.main import main as cli_main
from cass_pipelines.domain.clock import NOW_ENV


@pytest.fixture(scope="session")
def blank_dagster_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Dagster instance made the way `init` makes one, created once: creating its SQLite storage costs
    about 2 s here, copying it a few ms."""
    import dagster as dg

    from cass_pipelines.execution import install_dagster_yaml

    home = tmp_path_factory.mktemp("blank_dagster")
    install_dagster_yaml(home)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.get():
            pass
    return home


def isolate_env(mp: pytest.MonkeyPatch, root: Path, blank_dagster_home: Path) -> None:
    """CASS_HOME=root/cass, a copy of the blank Dagster instance at root/dagster, the offline LLM, the
    injected "today" (tests/support.py), and nothing of the user's (no key, timezone, budget, registry)."""
    mp.setenv("CASS_HOME", str(root / "cass"))
    mp.setenv("CASS_LLM", "offline")
    mp.setenv(NOW_ENV, NOW.isoformat())
    mp.setenv("DAGSTER_HOME", str(root / "dagster"))
    shutil.copytree(blank_dagster_home, root / "dagster")
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "CASS_TIMEZONE", "CASS_DAILY_BUDGET_USD",
                "CASS_ACTIONS_FILE"):
        mp.delenv(var, raising=False)


@pytest.fixture
def cass_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blank_dagster_home: Path) -> dict[str, str]:
    isolate_env(monkeypatch, tmp_path, blank_dagster_home)
    return {k: v for k, v in os.environ.items()}


@pytest.fixture(scope="session")
def sample_template(tmp_path_factory: pytest.TempPathFactory, blank_dagster_home: Path) -> Path:
    """A CASS_HOME after `init --sample`, made once per session (about 1-3 s); tests get a copy (ms)."""
    root = tmp_path_factory.mktemp("sample_template")
    with pytest.MonkeyPatch.context() as mp:
        isolate_env(mp, root, blank_dagster_home)
        assert cli_main(["init", "--sample"]) == 0
    return root / "cass"


@pytest.fixture
def sample_home(cass_env: dict[str, str], sample_template: Path) -> dict[str, str]:
    """CASS_HOME initialised with the sample persona and conversations (a copy of the session's)."""
    shutil.copytree(sample_template, cass_env["CASS_HOME"])
    return cass_env


@pytest.fixture
def settings(tmp_path: Path):
    """Store-level budget tests: a $1.00 day with a $0.10 reserve (system $0.05, research $0.25)."""
    from cass_pipelines.domain.settings import Settings

    return Settings(home=tmp_path, daily_budget_usd=1.0, reserve_usd=0.1)


@pytest.fixture
def store(settings):
    """A migrated store in `settings`' home."""
    from cass_pipelines.store.db import Store
    from cass_pipelines.store.schema import migrate

    s = Store(settings.db_path)
    migrate(s)
    return s


@pytest.fixture
def runtime(sample_home):
    from cass_pipelines.services.runtime import open_runtime
    return open_runtime()


@pytest.fixture
def fake_anthropic(cass_env, monkeypatch: pytest.MonkeyPatch):
    """A local Messages-API server; ANTHROPIC_BASE_URL and a test ANTHROPIC_API_KEY point the SDK at it.
    The process's SDK clients are forgotten first: a server on a port an earlier one used is new to them."""
    from fake_anthropic import API_KEY, FakeAnthropic

    from cass_pipelines.llm.anthropic_backend import forget_connections

    forget_connections()
    with FakeAnthropic(lifetime_s=120) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
        yield server
