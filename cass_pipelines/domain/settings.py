"""Settings: one pydantic model (config/settings.py reads it from CASS_HOME/cass.toml and the environment).

Every invalid field is reported at once with its name and the bad value. Secrets (the API key)
are never a setting: the SDK reads ANTHROPIC_API_KEY from the environment itself.
"""
from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cass_pipelines.domain.categories import PHASES, Category
from cass_pipelines.domain.errors import shown

DEFAULT_SHARES = {
    "system": 0.05, "journal": 0.05, "memory": 0.10, "research": 0.25,
    "reflection": 0.20, "growth": 0.15, "curiosity": 0.10, "creative": 0.10,
}
DEFAULT_MODELS = {"fast": "claude-haiku-5-5", "deep": "claude-sonnet-5-5"}
RESERVE_SHARE = 0.10
DEFAULT_PHASE_HOURS = {"morning": (6, 12), "afternoon": (12, 18), "evening": (18, 22), "night": (22, 6)}
# Stated maxima: a typo (1e308, an extra zero run) is refused, never spent or waited for.
MAX_DAILY_BUDGET_USD = 10_000.0
MAX_CONFIG_BYTES = 1024 * 1024
# Without a start_date the date partitions are the last 30 days and today: what the UI's "Materialize
# all" and a backfill offer stays 124 phase partitions (each a paid LLM day), not every day since 2026.
PARTITION_WINDOW_DAYS = 30
_MODULE_PREFIX = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class SettingsError(ValueError):
    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("invalid settings:\n  " + "\n  ".join(errors))


class Settings(BaseModel):
    # Infinity and NaN are never a setting: every number below is finite and bounded.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    home: Path
    persona_name: str = Field(default="Cass", min_length=1, max_length=100)
    timezone: str = "UTC"
    start_date: Annotated[date, Field(ge=date(2000, 1, 1), le=date(2100, 12, 31))] | None = None
    phase_hours: dict[str, tuple[int, int]] = Field(default_factory=lambda: dict(DEFAULT_PHASE_HOURS))
    daily_budget_usd: float = Field(default=5.0, gt=0, le=MAX_DAILY_BUDGET_USD)
    reserve_usd: float = Field(default=0.5, ge=0, le=MAX_DAILY_BUDGET_USD)
    category_shares: dict[Category, float] = Field(
        default_factory=lambda: {Category(k): v for k, v in DEFAULT_SHARES.items()})
    soft_alert_share: float = Field(default=0.8, gt=0, le=1)
    degrade_below_share: float = Field(default=0.25, ge=0, le=1)
    llm_mode: Literal["auto", "anthropic", "offline"] = "auto"
    models: dict[Literal["fast", "deep"], str] = Field(default_factory=lambda: dict(DEFAULT_MODELS))  # type: ignore[arg-type]
    max_retries: int = Field(default=4, ge=0, le=20)
    request_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    attempt_timeout_s: float = Field(default=60.0, gt=0, le=3600)   # one HTTP attempt; a hung one is retried
    llm_concurrency: int = Field(default=8, ge=1, le=64)   # interactive calls in flight at once (memory summaries)
    step_concurrency: int = Field(default=8, ge=1, le=64)  # a run's ready steps at once: a phase's units side by side
    cache_ttl: Literal["5m", "1h"] = "5m"
    # Memory summarising and night work go through Message Batches (half price); a job waits up to
    # batch_wait_s for its batch, looking at it soon, then less often up to every batch_poll_s, then
    # defers its unit (collected later).
    batch_work: bool = True
    batch_wait_s: float = Field(default=1800.0, ge=0, le=24 * 3600)
    batch_poll_s: float = Field(default=10.0, gt=0, le=3600)
    web_search: bool = False
    offline_seed: int = Field(default=0, ge=0, le=2**32 - 1)
    idle_threshold_minutes: int = Field(default=30, ge=0, le=7 * 24 * 60)
    memory_chunk_tokens: int = Field(default=6000, ge=500, le=100_000)
    history_window: int = Field(default=8, ge=1, le=50)   # recent work summaries the planner sees
    max_units_per_phase: int = Field(default=4, ge=0, le=12)
    actions_file: Path | None = None
    # Module prefixes (besides cass_pipelines.services.handlers) whose functions a registry may name as
    # handlers: a user's own package is opted in here, never any importable callable.
    handler_modules: tuple[str, ...] = Field(default=(), max_length=20)

    @field_validator("handler_modules")
    @classmethod
    def _module_prefixes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [m for m in v if not _MODULE_PREFIX.match(m)]
        if bad:
            raise ValueError(f"expected dotted module names such as 'mypkg.handlers', got {shown(bad)}")
        return v

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
        too_long = {tier: shown(m) for tier, m in v.items() if not 0 < len(m) <= 100}
        if too_long:
            raise ValueError(f"model names are 1 to 100 characters, got {too_long}")
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
            if 0 < budget <= MAX_DAILY_BUDGET_USD:  # an invalid budget reports its own error, not a derived one
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

    def first_date(self, today: date) -> date:
        """The first date partition: start_date, or PARTITION_WINDOW_DAYS before today (in the agent's
        timezone) when it is not set."""
        return self.start_date or today - timedelta(days=PARTITION_WINDOW_DAYS)

    def category_limit(self, category: str) -> float:
        return round(self.daily_budget_usd * self.category_shares.get(Category(category), 0.0), 6)
