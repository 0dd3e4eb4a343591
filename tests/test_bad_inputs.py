"""A corpus of bad inputs over every input surface: registries, cass.toml, environment variables,
command-line arguments, import files, DuckDB files, an unwritable or full disk.

Each case runs the real CLI in this process against a copy of an initialised CASS_HOME and asserts:
the exit code (2 usage/config, 1 runtime failure), that the message names the source (file and
field or line, environment variable or argument), that no stack trace is printed, and that the
store is unchanged (or, for an import, holds exactly the good lines)."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable

import duckdb
import pytest
from support import NOW, days_before, utc

from cass_pipelines.cli.main import main
from cass_pipelines.config.registry import DEFAULT_REGISTRY_FILE
from cass_pipelines.domain.clock import NOW_ENV
from cass_pipelines.domain.settings import PARTITION_WINDOW_DAYS
from cass_pipelines.store import db
from cass_pipelines.store.schema import LATEST_VERSION

CLI = str(Path(sys.executable).parent / "cass-pipelines")
DEEP = 200_000
HUGE = "x" * 120_000


@dataclass
class Env:
    """What a case's setup may touch: the home, a scratch directory and the environment."""
    home: Path
    tmp: Path
    mp: pytest.MonkeyPatch

    @property
    def toml(self) -> Path:
        return self.home / "cass.toml"

    def setting(self, text: str) -> None:
        """Set one top-level setting: replace its line in cass.toml, or add it before the first table."""
        key = text.split("=", 1)[0].strip()
        lines = self.toml.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.split("=", 1)[0].strip() != key]
        self.toml.write_text("\n".join([text, *kept]) + "\n", encoding="utf-8")

    def replace(self, old: str, new: str) -> None:
        """Change one line of the initialised cass.toml (a table's entry)."""
        text = self.toml.read_text(encoding="utf-8")
        assert old in text
        self.toml.write_text(text.replace(old, new), encoding="utf-8")

    def registry(self, change: Callable[[dict], object] | None = None, text: str | None = None) -> Path:
        path = self.tmp / "actions.json"
        if text is None:
            data = json.loads(DEFAULT_REGISTRY_FILE.read_text(encoding="utf-8"))
            change(data)
            text = json.dumps(data)   # float('inf') becomes Infinity, as a hand-edited file might hold
        path.write_text(text, encoding="utf-8")
        self.mp.setenv("CASS_ACTIONS_FILE", str(path))
        return path

    def lines(self, *lines: object) -> Path:
        path = self.tmp / "in.jsonl"
        with path.open("wb") as out:
            for line in lines:
                raw = json.dumps(line) if isinstance(line, dict) else line
                out.write((raw.encode("utf-8") if isinstance(raw, str) else raw) + b"\n")
        return path


@dataclass
class Case:
    id: str
    argv: list[str]
    code: int
    names: list[str]                      # substrings the output must hold: the source and what is wrong
    setup: Callable[[Env], None] = lambda env: None
    added: int = 0                        # messages a partly bad import adds (the good lines)
    formats: dict = field(default_factory=dict)


def action(field_name: str, value: object, action_id: str = "session.reflection") -> Callable[[dict], None]:
    def change(data: dict) -> None:
        next(a for a in data["actions"] if a["id"] == action_id)[field_name] = value
    return change


def template(field_name: str, value: object, template_id: str = "synthesis") -> Callable[[dict], None]:
    def change(data: dict) -> None:
        next(t for t in data["templates"] if t["id"] == template_id)[field_name] = value
    return change


SENT = utc(days_before(10), 9, 20)   # a message's time on the suite's calendar: later ones are refused
BEFORE_PARTITIONS = days_before(PARTITION_WINDOW_DAYS + 1).isoformat()   # no start_date: a window ending today


def message(**over) -> dict:
    base = {"conversation_id": "new_conv", "message_id": "n1", "role": "user", "content": "hello",
            "created_at": SENT.isoformat()}
    return {**base, **over}


REG = "{tmp}/actions.json"
TOML = "{home}/cass.toml"
IN = "{tmp}/in.jsonl"

CASES = [
    # --- the action registry (CASS_ACTIONS_FILE) --------------------------------------------------------
    Case("registry nested 200,000 deep", ["catalog"], 2, [REG, "nested too deeply"],
         lambda e: e.registry(text="[" * DEEP + "]" * DEEP)),
    Case("registry object nested deep", ["validate"], 2, [REG, "nested too deeply"],
         lambda e: e.registry(text='{"a":' * DEEP + "1" + "}" * DEEP)),
    Case("action cost Infinity", ["catalog"], 2, [REG, "Infinity is not a JSON number"],
         lambda e: e.registry(action("estimated_cost_usd", float("inf")))),
    Case("action cost NaN", ["catalog"], 2, [REG, "NaN is not a JSON number"],
         lambda e: e.registry(action("estimated_cost_usd", float("nan")))),
    Case("action cost 1e308", ["catalog"], 2,
         [REG, "action 'session.reflection'", "field 'estimated_cost_usd'", "less than or equal to 100"],
         lambda e: e.registry(action("estimated_cost_usd", 1e308))),
    Case("action cost negative", ["catalog"], 2, [REG, "field 'estimated_cost_usd'", "greater than or equal to 0"],
         lambda e: e.registry(action("estimated_cost_usd", -1))),
    Case("max_output_tokens 1e12", ["catalog"], 2,
         [REG, "field 'max_output_tokens'", "less than or equal to 128000"],
         lambda e: e.registry(action("max_output_tokens", 10**12))),
    Case("max_output_tokens float 1e12", ["validate"], 2, [REG, "field 'max_output_tokens'"],
         lambda e: e.registry(action("max_output_tokens", 1e12))),
    Case("duration a billion minutes", ["catalog"], 2, [REG, "field 'default_duration_minutes'", "1440"],
         lambda e: e.registry(action("default_duration_minutes", 10**9))),
    Case("handler sys:exit", ["catalog"], 2,
         [REG, "field 'handler'", "'sys:exit' is outside the handler modules", "cass_pipelines.services.handlers"],
         lambda e: e.registry(action("handler", "sys:exit"))),
    Case("handler os:system", ["validate"], 2, [REG, "field 'handler'", "outside the handler modules"],
         lambda e: e.registry(action("handler", "os:system"))),
    Case("handler elsewhere in the project", ["catalog"], 2, [REG, "field 'handler'", "outside the handler modules"],
         lambda e: e.registry(action("handler", "cass_pipelines.config.registry:load_registry"))),
    Case("handler prefix look-alike", ["catalog"], 2, [REG, "outside the handler modules"],
         lambda e: e.registry(action("handler", "cass_pipelines.services.handlers_evil:run"))),
    Case("handler that does not import", ["catalog"], 2, [REG, "field 'handler'", "cannot import"],
         lambda e: e.registry(action("handler", "cass_pipelines.services.handlers.nope:run"))),
    Case("template weight NaN", ["catalog"], 2, [REG, "NaN is not a JSON number"],
         lambda e: e.registry(template("preferred_phases", {"morning": float("nan")}))),
    Case("template unknown action", ["catalog"], 2,
         [REG, "template 'synthesis'", "field 'action_sequence[0]'", "unknown action 'wiki.vanished'"],
         lambda e: e.registry(template("action_sequence", ["wiki.vanished"]))),
    Case("action id of 120 KB", ["catalog"], 2, [REG, "field 'id'", "(120002 chars)"],
         lambda e: e.registry(action("id", HUGE))),
    Case("template of 1,000 actions", ["catalog"], 2, [REG, "field 'action_sequence'", "at most 12"],
         lambda e: e.registry(template("action_sequence", ["session.reflection"] * 1000))),
    Case("registry top level a list", ["catalog"], 2, [REG, "top level must be an object"],
         lambda e: e.registry(text="[]")),
    Case("registry empty file", ["catalog"], 2, [REG, "line 1 column 1: invalid JSON"],
         lambda e: e.registry(text="")),
    Case("registry is a directory", ["catalog"], 2, ["{tmp}/regdir", "not a regular file"],
         lambda e: (e.tmp.joinpath("regdir").mkdir(), e.mp.setenv("CASS_ACTIONS_FILE", str(e.tmp / "regdir")))),
    Case("registry is /dev/zero", ["catalog"], 2, ["/dev/zero", "not a regular file"],
         lambda e: e.mp.setenv("CASS_ACTIONS_FILE", "/dev/zero")),
    Case("registry missing", ["catalog"], 2, ["{tmp}/missing.json", "no such file"],
         lambda e: e.mp.setenv("CASS_ACTIONS_FILE", str(e.tmp / "missing.json"))),
    Case("registry not UTF-8", ["catalog"], 2, [REG, "not UTF-8"],
         lambda e: (e.registry(text="{}"), (e.tmp / "actions.json").write_bytes(b'{"actions": "\xff"}'))),

    # --- cass.toml ------------------------------------------------------------------------------------
    Case("daily_budget_usd = inf", ["budget", "--json"], 2,
         [TOML, "field 'daily_budget_usd'", "finite number", "got inf"],
         lambda e: e.setting("daily_budget_usd = inf")),
    Case("daily_budget_usd = nan", ["catalog", "--json"], 2, [TOML, "field 'daily_budget_usd'", "finite"],
         lambda e: e.setting("daily_budget_usd = nan")),
    Case("daily_budget_usd = 1e308", ["budget"], 2,
         [TOML, "field 'daily_budget_usd'", "less than or equal to 10000"],
         lambda e: e.setting("daily_budget_usd = 1e308")),
    Case("daily_budget_usd negative", ["validate"], 2, [TOML, "field 'daily_budget_usd'", "greater than 0"],
         lambda e: e.setting("daily_budget_usd = -5")),
    Case("reserve_usd = inf", ["budget"], 2, [TOML, "field 'reserve_usd'", "finite"],
         lambda e: e.setting("reserve_usd = inf")),
    Case("request_timeout_s = 1e12", ["validate"], 2, [TOML, "field 'request_timeout_s'", "3600"],
         lambda e: e.setting("request_timeout_s = 1e12")),
    Case("idle_threshold_minutes = 1e15", ["validate"], 2, [TOML, "field 'idle_threshold_minutes'"],
         lambda e: e.setting("idle_threshold_minutes = 1000000000000000")),
    Case("category share nan", ["budget"], 2, [TOML, "field 'category_shares.research'", "finite"],
         lambda e: e.replace("research = 0.25", "research = nan")),
    Case("unpriced model", ["validate"], 2, [TOML, "field 'models.fast'", "'gpt-9' has no price"],
         lambda e: e.replace('fast = "claude-haiku-5-5"', 'fast = "gpt-9"')),
    Case("unpriced model refused before a run", ["run-phase", "morning"], 2, [TOML, "'gpt-9' has no price"],
         lambda e: e.replace('fast = "claude-haiku-5-5"', 'fast = "gpt-9"')),
    Case("model name of 120 KB", ["validate"], 2, [TOML, "field 'models'", "chars)"],
         lambda e: e.replace('fast = "claude-haiku-5-5"', f'fast = "{HUGE}"')),
    Case("cass.toml is a directory", ["status"], 2, [TOML, "not a regular file"],
         lambda e: (e.toml.unlink(), e.toml.mkdir())),
    Case("cass.toml is /dev/zero", ["plan"], 2, [TOML, "not a regular file"],
         lambda e: (e.toml.unlink(), e.toml.symlink_to("/dev/zero"))),
    Case("cass.toml invalid TOML", ["budget"], 2, [TOML, "invalid TOML", "line 1"],
         lambda e: e.setting("daily_budget_usd = = 5")),
    Case("cass.toml nested deep", ["validate"], 2, [TOML, "invalid TOML"],
         lambda e: e.setting("x = " + "[" * DEEP + "]" * DEEP)),
    Case("cass.toml not UTF-8", ["catalog"], 2, [TOML, "not UTF-8"],
         lambda e: e.toml.write_bytes(b'persona_name = "\xff"\n')),
    Case("cass.toml unknown field", ["catalog"], 2, [TOML, "field 'daily_budget'", "Extra inputs"],
         lambda e: e.setting("daily_budget = 5")),
    Case("handler_modules not modules", ["validate"], 2, [TOML, "field 'handler_modules'", "dotted module"],
         lambda e: e.setting('handler_modules = ["sys:exit"]')),
    Case("start_date year 1", ["validate"], 2, [TOML, "field 'start_date'", "2000-01-01"],
         lambda e: e.setting("start_date = 0001-01-01")),
    Case("persona_name of 120 KB", ["validate"], 2, [TOML, "field 'persona_name'", "at most 100"],
         lambda e: e.setting(f'persona_name = "{HUGE}"')),
    Case("timezone unknown", ["catalog"], 2, [TOML, "field 'timezone'", "unknown IANA timezone"],
         lambda e: e.replace('timezone = "UTC"', 'timezone = "Mars/Base"')),

    # --- environment variables ------------------------------------------------------------------------
    Case("CASS_DAILY_BUDGET_USD=inf", ["budget", "--json"], 2, ["CASS_DAILY_BUDGET_USD: field 'daily_budget_usd'"],
         lambda e: e.mp.setenv("CASS_DAILY_BUDGET_USD", "inf")),
    Case("CASS_DAILY_BUDGET_USD=1e308", ["catalog", "--json"], 2,
         ["CASS_DAILY_BUDGET_USD: field 'daily_budget_usd'", "10000"],
         lambda e: e.mp.setenv("CASS_DAILY_BUDGET_USD", "1e308")),
    Case("CASS_DAILY_BUDGET_USD=NaN", ["validate"], 2, ["CASS_DAILY_BUDGET_USD: field 'daily_budget_usd'"],
         lambda e: e.mp.setenv("CASS_DAILY_BUDGET_USD", "NaN")),
    Case("CASS_DAILY_BUDGET_USD=five", ["budget"], 2, ["CASS_DAILY_BUDGET_USD: field 'daily_budget_usd'", "'five'"],
         lambda e: e.mp.setenv("CASS_DAILY_BUDGET_USD", "five")),
    Case("env budget below the file's reserve", ["budget"], 2,
         ["CASS_DAILY_BUDGET_USD", TOML, "reserve_usd (0.5) must be below daily_budget_usd (0.1)"],
         lambda e: (e.setting("reserve_usd = 0.5"), e.mp.setenv("CASS_DAILY_BUDGET_USD", "0.1"))),
    Case("CASS_TIMEZONE unknown", ["plan"], 2, ["CASS_TIMEZONE: field 'timezone'", "'Mars/Base'"],
         lambda e: e.mp.setenv("CASS_TIMEZONE", "Mars/Base")),
    Case("CASS_LLM unknown", ["status"], 2, ["CASS_LLM: field 'llm_mode'", "'sometimes'"],
         lambda e: e.mp.setenv("CASS_LLM", "sometimes")),
    Case("CASS_LLM=anthropic without a key", ["validate"], 2, ["CASS_LLM", "ANTHROPIC_API_KEY", "not set"],
         lambda e: e.mp.setenv("CASS_LLM", "anthropic")),
    Case("run refused: anthropic without a key", ["run-phase", "morning"], 2, ["CASS_LLM", "ANTHROPIC_API_KEY"],
         lambda e: e.mp.setenv("CASS_LLM", "anthropic")),
    Case("trigger refused: anthropic without a key", ["trigger", "morning_reflection"], 2, ["CASS_LLM"],
         lambda e: e.mp.setenv("CASS_LLM", "anthropic")),
    Case("CASS_HOME is a file", ["status"], 2, ["CASS_HOME", "{tmp}/homefile", "is not a directory"],
         lambda e: ((e.tmp / "homefile").write_text("x"), e.mp.setenv("CASS_HOME", str(e.tmp / "homefile")))),
    Case("CASS_HOME is a file: init", ["init"], 2, ["CASS_HOME", "is not a directory"],
         lambda e: ((e.tmp / "homefile").write_text("x"), e.mp.setenv("CASS_HOME", str(e.tmp / "homefile")))),
    Case("DAGSTER_HOME is a file", ["status"], 2, ["DAGSTER_HOME", "{tmp}/dagfile", "is not a directory"],
         lambda e: ((e.tmp / "dagfile").write_text("x"), e.mp.setenv("DAGSTER_HOME", str(e.tmp / "dagfile")))),
    Case("DAGSTER_HOME is a file: run", ["run-day"], 2, ["DAGSTER_HOME", "is not a directory"],
         lambda e: ((e.tmp / "dagfile").write_text("x"), e.mp.setenv("DAGSTER_HOME", str(e.tmp / "dagfile")))),
    Case("ANTHROPIC_API_KEY with a newline", ["validate"], 2, ["ANTHROPIC_API_KEY", "value not shown"],
         lambda e: (e.mp.setenv("CASS_LLM", "anthropic"), e.mp.setenv("ANTHROPIC_API_KEY", "sk-ant-secret\n"))),
    Case("ANTHROPIC_BASE_URL not a URL", ["run-phase", "morning"], 2, ["ANTHROPIC_BASE_URL", "'localhost:9'"],
         lambda e: (e.mp.setenv("CASS_LLM", "anthropic"), e.mp.setenv("ANTHROPIC_API_KEY", "sk-ant-x"),
                    e.mp.setenv("ANTHROPIC_BASE_URL", "localhost:9"))),
    Case("DAGSTER_HOME relative", ["validate"], 2, ["DAGSTER_HOME", "'dagster'", "absolute"],
         lambda e: e.mp.setenv("DAGSTER_HOME", "dagster")),

    # --- command-line arguments -----------------------------------------------------------------------
    Case("trigger --focus of 120 KB", ["trigger", "synthesis", "--focus", HUGE], 2,
         ["--focus", "at most 2000 characters, got 120000"]),
    Case("pause --reason of 3000 chars", ["pause", "--reason", "r" * 3000], 2, ["--reason", "at most 2000"]),
    Case("trigger unknown template of 10 KB", ["trigger", "t" * 10_000], 2, ["unknown template", "chars)"]),
    Case("run-phase unknown phase", ["run-phase", "lunch"], 2, ["argument phase", "invalid choice: 'lunch'"]),
    Case("unknown command", ["teleport"], 2, ["invalid choice: 'teleport'"]),
    Case("--date 2026-02-30", ["plan", "--date", "2026-02-30"], 2, ["--date", "YYYY-MM-DD", "'2026-02-30'"]),
    Case("--date of 120 KB", ["budget", "--date", HUGE], 2, ["--date", "chars)"]),
    Case("--phases unknown", ["run-day", "--phases", "morning,lunch"], 2, ["--phases", "'lunch'"]),
    Case("--date before the first partition", ["run-phase", "morning", "--date", BEFORE_PARTITIONS], 2,
         [f"--date {BEFORE_PARTITIONS}", "no such partition"]),
    Case("--phases of 120 KB", ["run-day", "--phases", HUGE], 2, ["--phases", "chars)"]),
    Case("init --persona /dev/zero", ["init", "--persona", "/dev/zero"], 2, ["/dev/zero: not a regular file"]),
    Case("init --persona nested deep", ["init", "--persona", "{tmp}/p.json"], 2, ["{tmp}/p.json", "nested too deeply"],
         lambda e: (e.tmp / "p.json").write_text("[" * DEEP + "]" * DEEP)),
    Case("pause unknown category", ["pause", "--category", "fun"], 2, ["argument --category", "'fun'"]),

    # --- import-conversations -------------------------------------------------------------------------
    Case("import duplicate id, different content", ["import-conversations", IN], 2,
         [IN, "3: duplicate message ('new_conv', 'n1') with different content: line 1 has the same message id"],
         lambda e: e.lines(message(), message(message_id="n2"), message(content="changed")), added=2),
    Case("import duplicate of a stored message", ["import-conversations", IN], 2,
         [IN, "1: duplicate message ('conv_001', 'm01')", "already stored"],
         lambda e: e.lines(message(conversation_id="conv_001", message_id="m01", content="rewritten"))),
    Case("import duplicate across batches", ["import-conversations", IN], 2,
         [IN, "6001: duplicate message ('new_conv', 'm0')", "line 1 has the same message id"],
         lambda e: e.lines(*[message(message_id=f"m{i}") for i in range(6000)], message(message_id="m0", role="system")),
         added=6000),
    Case("import whitespace-only conversation id", ["import-conversations", IN], 2,
         [IN, "1: field 'conversation_id'", "must not be blank"], lambda e: e.lines(message(conversation_id="  \t"))),
    Case("import id with a NUL", ["import-conversations", IN], 2,
         [IN, "1: field 'message_id'", "control characters", "'m\\x001'"],
         lambda e: e.lines(message(message_id="m\x001"))),
    Case("import empty message id", ["import-conversations", IN], 2, [IN, "1: field 'message_id'"],
         lambda e: e.lines(message(message_id=""))),
    Case("import year 0001", ["import-conversations", IN], 2, [IN, "1: field 'created_at'", "before 2000-01-01"],
         lambda e: e.lines(message(created_at="0001-01-01T00:00:00+00:00"))),
    Case("import year 1999", ["import-conversations", IN], 2, [IN, "2: field 'created_at'", "before 2000-01-01"],
         lambda e: e.lines(message(), message(message_id="n2", created_at="1999-12-31T23:59:59Z")), added=1),
    Case("import year 9999", ["import-conversations", IN], 2,
         [IN, "1: field 'created_at'", "more than a day after the import"],
         lambda e: e.lines(message(created_at="9999-12-31T23:59:59+00:00"))),
    Case("import two days after today", ["import-conversations", IN], 2,
         [IN, "1: field 'created_at'", "more than a day after the import"],
         lambda e: e.lines(message(created_at=(NOW + timedelta(days=2)).isoformat()))),
    Case("import year 2100", ["import-conversations", IN], 2, [IN, "1: field 'created_at'", "more than a day after"],
         lambda e: e.lines(message(created_at="2100-01-01T00:00:00+00:00"))),
    Case("import naive time", ["import-conversations", IN], 2, [IN, "1: field 'created_at'", "UTC offset"],
         lambda e: e.lines(message(created_at=f"{SENT:%Y-%m-%dT%H:%M:%S}"))),
    Case("import /dev/zero", ["import-conversations", "/dev/zero"], 2,
         ["/dev/zero: not a regular file", "no newline within"]),
    Case("import a directory", ["import-conversations", "{tmp}"], 2, ["is a directory"]),
    Case("import a missing file", ["import-conversations", "{tmp}/nope.jsonl"], 2, ["{tmp}/nope.jsonl: no such file"]),
    Case("import a line nested 200,000 deep", ["import-conversations", IN], 2, [IN, "1: ", "nested too deeply"],
         lambda e: e.lines("[" * DEEP + "]" * DEEP)),
    Case("import a line that is not UTF-8", ["import-conversations", IN], 2, [IN, "1: not UTF-8"],
         lambda e: e.lines(b'{"conversation_id": "\xff"}')),
    Case("import a title of 120 KB", ["import-conversations", IN], 2, [IN, "1: field 'title'", "at most 500"],
         lambda e: e.lines(message(title=HUGE))),
    Case("import content NaN", ["import-conversations", IN], 2, [IN, "1: field 'content'"],
         lambda e: e.lines('{"conversation_id": "c", "message_id": "m", "role": "user", "content": NaN, '
                           f'"created_at": "{SENT:%Y-%m-%dT%H:%M:%SZ}"}}')),

    # --- the database -----------------------------------------------------------------------------------
    Case("database is a directory", ["budget"], 2, ["{home}/cass.duckdb: not a database file"],
         lambda e: ((e.home / "cass.duckdb").unlink(), (e.home / "cass.duckdb").mkdir())),
    Case("database of a future schema: plan", ["plan"], 2,
         ["{home}/cass.duckdb", "schema version 999 is newer", f"(version {LATEST_VERSION})"],
         lambda e: future_schema(e)),
    Case("database of a future schema: run", ["run-phase", "morning"], 2, ["schema version 999"],
         lambda e: future_schema(e)),
    Case("database of a future schema: budget", ["budget"], 2, ["schema version 999"], lambda e: future_schema(e)),
    Case("database of a future schema: validate", ["validate"], 2, ["schema version 999"], lambda e: future_schema(e)),
    Case("database of a future schema: import", ["import-conversations", IN], 2, ["schema version 999"],
         lambda e: (future_schema(e), e.lines(message()))),
]


def future_schema(env: Env) -> None:
    with duckdb.connect(str(env.home / "cass.duckdb")) as conn:
        conn.execute("INSERT INTO schema_version (version, description, applied_at) VALUES (999, 'future', now())")


def snapshot(home: Path) -> dict:
    """What must not change: row counts of the tables people depend on and every message's content."""
    path = home / "cass.duckdb"
    if not path.is_file():
        return {}
    with duckdb.connect(str(path), read_only=True) as conn:
        tables = ["messages", "conversations", "work_units", "llm_ledger", "control_flags", "schema_version",
                  "day_plans", "reservations"]
        out = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
        out["stored"] = conn.execute(
            "SELECT md5(coalesce(string_agg(conversation_id || message_id || role || content || created_at::TEXT, '|' "
            "ORDER BY conversation_id, message_id), '')) FROM messages "
            "WHERE conversation_id <> 'new_conv'").fetchone()[0]
    return out


@pytest.fixture(scope="module")
def initialised_home(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("template")
    env = {"CASS_HOME": str(root / "cass"), "CASS_LLM": "offline", "DAGSTER_HOME": str(root / "dagster"),
           NOW_ENV: NOW.isoformat()}
    with pytest.MonkeyPatch.context() as mp:
        for var in ("ANTHROPIC_API_KEY", "CASS_TIMEZONE", "CASS_DAILY_BUDGET_USD", "CASS_ACTIONS_FILE"):
            mp.delenv(var, raising=False)
        for k, v in env.items():
            mp.setenv(k, v)
        assert main(["init", "--sample"]) == 0
    return root / "cass"


@pytest.fixture
def home(initialised_home, cass_env, tmp_path) -> Path:
    home = Path(cass_env["CASS_HOME"])
    shutil.copytree(initialised_home, home)
    return home


def check_output(captured, names: list[str]) -> None:
    text = captured.out + captured.err
    assert "Traceback" not in text and 'File "' not in text, text[:2000]
    for line in captured.err.splitlines():
        assert line.startswith("cass-pipelines"), captured.err[:2000]
        assert len(line) <= 800, line[:200]
    for name in names:
        assert name in text, f"{name!r} not in {text[:1500]!r}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, home: Path, tmp_path: Path, monkeypatch, capsys):
    env = Env(home, tmp_path, monkeypatch)
    case.setup(env)
    fill = {"home": str(home), "tmp": str(tmp_path)}
    before = snapshot(home)
    capsys.readouterr()
    code = main([a.format(**fill) if "{" in a and len(a) < 200 else a for a in case.argv])
    captured = capsys.readouterr()
    assert code == case.code, captured.err[:2000] or captured.out[:2000]
    check_output(captured, [n.format(**fill) for n in case.names])
    after = snapshot(home)
    if case.added:
        assert after.pop("messages") - before.pop("messages") == case.added
        after.pop("conversations"), before.pop("conversations")
    assert after == before


def test_the_corpus_covers_every_surface():
    assert len(CASES) >= 60


# --- failures of the machine: a full disk, a read-only home ----------------------------------------

def test_a_full_disk_during_import_is_one_line_and_loses_nothing(home, tmp_path, monkeypatch, capsys):
    path = Env(home, tmp_path, monkeypatch).lines(message(), message(message_id="n2"))
    before = snapshot(home)

    def full(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    monkeypatch.setattr(db.Store, "transaction", full)
    capsys.readouterr()
    assert main(["import-conversations", str(path)]) == 1
    captured = capsys.readouterr()
    check_output(captured, [f"{home / 'cass.duckdb'}: No space left on device"])
    assert len(captured.err.splitlines()) == 1
    assert snapshot(home) == before


def test_a_full_disk_during_init_is_one_line(cass_env, monkeypatch, capsys):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_text", full)
    assert main(["init"]) == 1
    check_output(capsys.readouterr(), ["cass.toml: No space left on device"])


def test_status_with_an_unusable_dagster_instance_shows_the_rest(home, monkeypatch, capsys):
    import cass_pipelines.execution as execution
    from cass_pipelines.store import dagster_runs

    def read_only(settings):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(settings.home / "dagster"))

    monkeypatch.setattr(execution, "instance_for", read_only)
    monkeypatch.setattr(dagster_runs, "recent_runs", lambda home: None)   # only Dagster could read its runs
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["recent_runs"] == [] and "Read-only file system" in out["recent_runs_error"]
    assert out["budget"]["daily_limit_usd"] == 5.0


def test_json_output_is_always_json(home, monkeypatch, capsys):
    """A non-finite number that slipped past every bound is refused, not printed as `Infinity`."""
    import cass_pipelines.cli.money_cmds as money_cmds

    real = money_cmds.budget_status
    monkeypatch.setattr(money_cmds, "budget_status", lambda *a: {**real(*a), "spent_usd": float("inf")})
    capsys.readouterr()
    assert main(["budget", "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "--json: the output holds a number JSON cannot represent" in captured.err


def test_import_of_dev_null_is_an_empty_file(home, capsys):
    before = snapshot(home)
    assert main(["import-conversations", "/dev/null", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["lines_read"] == 0 and out["messages_added"] == 0 and out["bad_lines"] == []
    assert snapshot(home) == before


def test_a_failed_action_logs_one_line_and_the_run_error_keeps_its_cause(home, monkeypatch, capsys):
    import cass_pipelines.services.handlers.sessions as sessions

    def boom(ctx):
        raise RuntimeError("simulated handler crash")

    monkeypatch.setattr(sessions, "synthesis", boom)
    capsys.readouterr()
    assert main(["trigger", "synthesis", "--json"]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and 'File "' not in captured.err
    out = json.loads(captured.out)
    assert "session.synthesis: RuntimeError: simulated handler crash" in out["work_unit"]["error"]
    import dagster as dg

    records = dg.DagsterInstance.get().all_logs(out["run_id"])
    traces = [r.user_message for r in records if r.level == 10 and "Traceback" in r.user_message]
    assert traces and "simulated handler crash" in traces[0]   # the trace is in the run's logs, at debug


# --- across the process boundary ---------------------------------------------------------------------

def test_the_console_script_prints_one_line_and_a_trace_only_with_debug(home, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * DEEP + "]" * DEEP, encoding="utf-8")
    env = {**os.environ, "CASS_ACTIONS_FILE": str(deep)}
    plain = subprocess.run([CLI, "catalog"], env=env, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2 and plain.stdout == ""
    assert plain.stderr.splitlines() == [f"cass-pipelines catalog: {deep}: invalid registry: JSON nested too deeply "
                                         "(a registry is two levels of objects)"]
    env["CASS_DAILY_BUDGET_USD"] = "inf"
    debug = subprocess.run([CLI, "--debug", "budget"], env=env, capture_output=True, text=True, timeout=120)
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    assert debug.stderr.splitlines()[-1].startswith("cass-pipelines budget: CASS_DAILY_BUDGET_USD: ")


def _unshare_works() -> bool:
    if not shutil.which("unshare") or not shutil.which("mount"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare and mount (a private mount namespace)")
def test_a_real_read_only_home_and_a_real_full_disk(initialised_home, tmp_path):
    """In a private mount namespace: the sample home on a read-only tmpfs, then a fresh one on a tiny tmpfs."""
    mnt, big = tmp_path / "mnt", tmp_path / "big.jsonl"
    mnt.mkdir()
    with big.open("w") as out:
        for i in range(20_000):
            out.write(json.dumps(message(conversation_id=f"c{i % 50}", message_id=f"m{i}", content="x" * 300)) + "\n")
    script = f"""
        set -u
        mount -t tmpfs -o size=64m tmpfs {mnt} && cp -r {initialised_home} {mnt}/cass && mount -o remount,ro {mnt}
        CASS_HOME={mnt}/cass {CLI} status; echo "status=$?"
        CASS_HOME={mnt}/cass {CLI} validate; echo "validate=$?"
        umount {mnt} && mount -t tmpfs -o size=3m tmpfs {mnt}
        CASS_HOME={mnt}/full {CLI} init > /dev/null; echo "init=$?"
        CASS_HOME={mnt}/full {CLI} import-conversations {big}; echo "import=$?"
    """
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, capture_output=True, text=True,
                          timeout=240)
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text[-3000:]
    assert "status=1" in text and f'{mnt}/cass/cass.duckdb": Read-only file system' in proc.stderr
    assert "validate=2" in text and "Read-only file system" in proc.stdout
    assert "init=0" in text and "import=1" in text and "No space left on device" in proc.stderr
    assert all(line.startswith("cass-pipelines") for line in proc.stderr.splitlines()), proc.stderr
