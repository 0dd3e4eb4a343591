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


@pytest.fixture
def cass_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blank_dagster_home: Path) -> dict[str, str]:
    home = tmp_path / "cass"
    monkeypatch.setenv("CASS_HOME", str(home))
    monkeypatch.setenv("CASS_LLM", "offline")
    monkeypatch.setenv(NOW_ENV, NOW.isoformat())   # the injected "today" (tests/support.py)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    shutil.copytree(blank_dagster_home, tmp_path / "dagster")
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "CASS_TIMEZONE", "CASS_DAILY_BUDGET_USD",
                "CASS_ACTIONS_FILE"):
        monkeypatch.delenv(var, raising=False)
    return {k: v for k, v in os.environ.items()}


@pytest.fixture
def sample_home(cass_env: dict[str, str]) -> dict[str, str]:
    """CASS_HOME initialised with the sample persona and conversations."""
    assert cli_main(["init", "--sample"]) == 0
    return cass_env


@pytest.fixture
def runtime(sample_home):
    from cass_pipelines.services.runtime import open_runtime
    return open_runtime()


@pytest.fixture
def fake_anthropic(cass_env, monkeypatch: pytest.MonkeyPatch):
    """A local Messages-API server; ANTHROPIC_BASE_URL and a test ANTHROPIC_API_KEY point the SDK at it."""
    from fake_anthropic import API_KEY, FakeAnthropic

    with FakeAnthropic(lifetime_s=120) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
        yield server
