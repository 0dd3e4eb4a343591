"""Settings: one pydantic model from CASS_HOME/cass.toml plus environment overrides.

Every invalid field is reported at once with its name and the bad value. Secrets (the API key)
are never a setting: the SDK reads ANTHROPIC_API_KEY from the environment itself.
"""
from __future__ import annotations

import os
import tomllib
from datetime import date
from pathlib import Path
from typing import Literal, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cass_pipelines.core.categories import PHASES, Category

DEFAULT_SHARES = {
    "system": 0.05, "journal": 0.05, "memory": 0.10, "research": 0.25,
    "reflection": 0.20, "growth": 0.15, "curiosity": 0.10, "creative": 0.10,
}
DEFAULT_MODELS = {"fast": "claude-haiku-5-5", "deep": "claude-sonnet-5-5"}
RESERVE_SHARE = 0.10
DEFAULT_PHASE_HOURS = {"morning": (6, 12), "afternoon": (12, 18), "evening": (18, 22), "night": (22, 6)}


class SettingsError(ValueError):
    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("invalid settings:\n  " + "\n  ".join(errors))


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path
    persona_name: str = "Cass"
    timezone: str = "UTC"
    start_date: date = date(2026, 1, 1)
    phase_hours: dict[str, tuple[int, int]] = Field(default_factory=lambda: dict(DEFAULT_PHASE_HOURS))
    daily_budget_usd: float = Field(default=5.0, gt=0)
    reserve_usd: float = Field(default=0.5, ge=0)
    category_shares: dict[Category, float] = Field(
        default_factory=lambda: {Category(k): v for k, v in DEFAULT_SHARES.items()})
    soft_alert_share: float = Field(default=0.8, gt=0, le=1)
    degrade_below_share: float = Field(default=0.25, ge=0, le=1)
    llm_mode: Literal["auto", "anthropic", "offline"] = "auto"
    models: dict[Literal["fast", "deep"], str] = Field(default_factory=lambda: dict(DEFAULT_MODELS))
    max_retries: int = Field(default=4, ge=0, le=20)
    request_timeout_s: float = Field(default=120.0, gt=0)
    attempt_timeout_s: float = Field(default=60.0, gt=0)   # one HTTP attempt; a hung one is retried
    llm_concurrency: int = Field(default=8, ge=1, le=64)   # model calls in flight at once (memory summaries)
    cache_ttl: Literal["5m", "1h"] = "5m"
    web_search: bool = False
    offline_seed: int = 0
    idle_threshold_minutes: int = Field(default=30, ge=0)
    memory_chunk_tokens: int = Field(default=6000, ge=500)
    history_window: int = Field(default=8, ge=1, le=50)   # recent work summaries the planner sees
    max_units_per_phase: int = Field(default=4, ge=0, le=12)
    actions_file: Path | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {v!r}") from None
        return v

    @field_validator("phase_hours")
    @classmethod
    def _phase_hours(cls, v: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        if set(v) != set(PHASES):
            raise ValueError(f"must define exactly the phases {list(PHASES)}, got {sorted(v)}")
        problems = [f"{phase}: hours must be 0-23 and differ, got ({start}, {end})"
                    for phase, (start, end) in v.items()
                    if not (0 <= start < 24 and 0 <= end < 24) or start == end]
        # Contiguous cycle: each phase starts where the previous one ends, in PHASES order.
        problems += [f"{prev} ends at {v[prev][1]} but {cur} starts at {v[cur][0]}"
                     for prev, cur in zip(PHASES, PHASES[1:] + PHASES[:1]) if v[prev][1] != v[cur][0]]
        # A day runs morning to night: each phase starts later on the clock than the one before,
        # so only the night may run past midnight (a night starting at 00:00 would precede its morning).
        starts = [v[p][0] for p in PHASES]
        if starts != sorted(starts) or len(set(starts)) != len(starts):
            problems.append(f"phases must start in the order {', '.join(PHASES)} within the day "
                            f"(only the night may run past midnight), got starts {starts}")
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @field_validator("category_shares")
    @classmethod
    def _shares(cls, v: dict[Category, float]) -> dict[Category, float]:
        problems = []
        bad = {str(k): s for k, s in v.items() if not (0 <= s <= 1)}
        if bad:
            problems.append(f"each share must be in [0, 1], got {bad}")
        # A category left out would silently get no budget, so its work would never run.
        missing = [c.value for c in Category if c not in v]
        if missing:
            problems.append(f"missing categories {missing}: list every category (0 to give one no budget)")
        if sum(v.values()) > 1.0 + 1e-9:
            problems.append(f"shares must sum to at most 1, got {sum(v.values()):.3f}")
        if problems:
            raise ValueError("; ".join(problems))
        return {Category(k): s for k, s in v.items()}

    @field_validator("models")
    @classmethod
    def _all_tiers(cls, v: dict[str, str]) -> dict[str, str]:
        # A [models] table naming one tier keeps the default for the other (no run-time "no model" error).
        return {**DEFAULT_MODELS, **v}

    @model_validator(mode="before")
    @classmethod
    def _default_reserve(cls, data: dict) -> dict:
        """Unless set, the emergency reserve is a tenth of the daily budget ($0.50 of $5.00), so a
        smaller budget (CASS_DAILY_BUDGET_USD=0.05) still has a sensible reserve."""
        if isinstance(data, dict) and "reserve_usd" not in data:
            try:
                budget = float(data.get("daily_budget_usd", 5.0))
            except (TypeError, ValueError):
                budget = 0.0
            if budget > 0:  # an invalid budget reports its own error, not a derived one
                data = {**data, "reserve_usd": round(budget * RESERVE_SHARE, 6)}
        return data

    @model_validator(mode="after")
    def _reserve_below_limit(self) -> "Settings":
        if self.reserve_usd >= self.daily_budget_usd:
            raise ValueError(
                f"reserve_usd ({self.reserve_usd}) must be below daily_budget_usd ({self.daily_budget_usd})")
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def db_path(self) -> Path:
        return self.home / "cass.duckdb"

    @property
    def config_file(self) -> Path:
        return self.home / "cass.toml"

    def category_limit(self, category: str) -> float:
        return round(self.daily_budget_usd * self.category_shares.get(Category(category), 0.0), 6)


_ENV = {
    "CASS_TIMEZONE": "timezone",
    "CASS_DAILY_BUDGET_USD": "daily_budget_usd",
    "CASS_LLM": "llm_mode",
    "CASS_ACTIONS_FILE": "actions_file",
}


def cass_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("CASS_HOME") or Path.cwd() / ".cass").resolve()


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read CASS_HOME/cass.toml (if present) and apply environment overrides."""
    env = os.environ if env is None else env
    home = cass_home(env)
    raw: dict = {}
    config = home / "cass.toml"
    errors: list[str] = []
    if config.exists():
        try:
            raw = tomllib.loads(config.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError([f"{config}: invalid TOML: {exc}"]) from None
        except UnicodeDecodeError as exc:
            raise SettingsError([f"{config}: byte {exc.start}: not UTF-8: {exc.reason}"]) from None
    source = {k: str(config) for k in raw}
    if isinstance(raw.get("actions_file"), str) and not Path(raw["actions_file"]).is_absolute():
        raw["actions_file"] = str(home / raw["actions_file"])   # relative to CASS_HOME, not the cwd
    for var, field in _ENV.items():
        if env.get(var):
            raw[field] = env[var]
            source[field] = var
    raw["home"] = home
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(settings)"
            origin = source.get(str(err["loc"][0]) if err["loc"] else "", str(config))
            shown = "" if isinstance(err.get("input"), dict) else f" (got {err.get('input')!r})"
            errors.append(f"{origin}: field '{field}': {err['msg']}{shown}")
        raise SettingsError(errors) from None


SAMPLE_CONFIG = """\
# cass-pipelines settings. Environment overrides: CASS_TIMEZONE, CASS_DAILY_BUDGET_USD, CASS_LLM,
# CASS_ACTIONS_FILE. The API key is read from ANTHROPIC_API_KEY only; never put it here.
persona_name = "Cass"
timezone = "{timezone}"
daily_budget_usd = 5.0
# reserve_usd = 0.5           # emergency reserve only critical work may use; default: 10% of the budget
llm_mode = "auto"             # auto | anthropic | offline (auto = anthropic when ANTHROPIC_API_KEY is set)
idle_threshold_minutes = 30
max_units_per_phase = 4

[phase_hours]
morning = [6, 12]
afternoon = [12, 18]
evening = [18, 22]
night = [22, 6]

[category_shares]
system = 0.05
journal = 0.05
memory = 0.10
research = 0.25
reflection = 0.20
growth = 0.15
curiosity = 0.10
creative = 0.10

[models]
fast = "claude-haiku-5-5"
deep = "claude-sonnet-5-5"
"""
