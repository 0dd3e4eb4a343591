"""init, validate, catalog, import-conversations."""
from __future__ import annotations

import argparse
import json
import os
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from cass_pipelines.cli.output import EXIT_USAGE, CliError, emit, table
from cass_pipelines.config.registry import DEFAULT_REGISTRY_FILE, read_registry_file
from cass_pipelines.config.settings import SAMPLE_CONFIG, load_settings
from cass_pipelines.domain.clock import clock_from_env
from cass_pipelines.domain.settings import SettingsError
from cass_pipelines.services.runtime import open_runtime, require_initialised
from cass_pipelines.store import conversations, persona
from cass_pipelines.store.db import Store
from cass_pipelines.store.schema import migrate

if TYPE_CHECKING:
    from cass_pipelines.services.importer import ImportReport

# The importer, the persona reader and the preflight are imported where used: a read command
# (status, budget) starts without them.
SAMPLE_CONVERSATIONS = Path(__file__).resolve().parent.parent / "data" / "sample_conversations.jsonl"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="create CASS_HOME, the schema, and optionally the sample persona and data")
    p.add_argument("--sample", action="store_true", help="load the Cass persona and sample conversations")
    p.add_argument("--persona", type=Path, help="load this persona file instead of the sample one")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("validate", help="check settings, registry and templates; non-zero exit on any error")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("catalog", help="the actions and templates in force")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_catalog)

    p = sub.add_parser("import-conversations", help="stream-import conversations from a JSONL file")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_import)


def import_file(store: Store, path: Path, shift: timedelta = timedelta(0)) -> ImportReport:
    from cass_pipelines.services.importer import ImportReport, first_lines, read_batches

    report = ImportReport()
    now = clock_from_env().now()
    seen_before = []   # conflicts with a stored message: from an earlier line of this file, or stored before
    for batch in read_batches(path, report, shift=shift, now=now):
        convs, msgs, conflicts = conversations.import_batch(store, batch, now)
        report.conversations_added += convs
        report.messages_added += msgs
        for index, earlier in conflicts:
            if earlier is None:
                seen_before.append(batch[index])
            else:
                report.duplicate(batch[index], batch[earlier]._line)
    firsts = first_lines(path, {(m.conversation_id, m.message_id) for m in seen_before})
    for msg in seen_before:
        first = firsts.get((msg.conversation_id, msg.message_id))
        report.duplicate(msg, first if first is not None and first < msg._line else None)
    report.bad_lines.sort(key=lambda b: b["line"])
    return report


def sample_conversation_ids() -> set[str]:
    return {json.loads(line)["conversation_id"] for line in SAMPLE_CONVERSATIONS.open(encoding="utf-8") if line.strip()}


def sample_shift(today: date) -> timedelta:
    """Shift the sample so its last day is yesterday in the agent's timezone: idle, not yet summarised."""
    last = max(line.split('"created_at": "')[1][:10] for line in SAMPLE_CONVERSATIONS.open(encoding="utf-8"))
    return timedelta(days=(today - date.fromisoformat(last)).days - 1)


def cmd_init(args: argparse.Namespace) -> int:
    from cass_pipelines.execution import prepare_instance  # imports Dagster: only for init

    home = load_settings().home   # a bad CASS_HOME or CASS_TIMEZONE is reported now, before anything is written
    home.mkdir(parents=True, exist_ok=True)
    config = home / "cass.toml"
    if not config.exists():
        config.write_text(SAMPLE_CONFIG.format(timezone=os.environ.get("CASS_TIMEZONE") or "UTC"), encoding="utf-8")
    settings = load_settings()
    store = Store(settings.db_path)
    applied = migrate(store)
    out = {"home": str(home), "database": str(settings.db_path), "config": str(config),
           "migrations_applied": applied, **prepare_instance(settings)}
    if args.sample or args.persona:
        from cass_pipelines.config.persona import SAMPLE_PERSONA_FILE, load_persona

        try:
            seed = load_persona(args.persona or SAMPLE_PERSONA_FILE)
        except ValueError as exc:
            raise CliError(f"persona file: {exc}") from None
        persona.seed_persona(store, seed, clock_from_env().now())
        out["persona"] = seed.name
    if args.sample:
        from cass_pipelines.services.importer import ImportReport

        today = clock_from_env().now().astimezone(settings.tz).date()
        # Loaded on an earlier day, the sample stays where it was: shifted to today, each of its lines would
        # be a duplicate of a stored message with other times.
        ids = sample_conversation_ids()
        out["import"] = ({**ImportReport().as_dict(), "already_loaded": True} if conversations.stored(store, ids) == ids
                         else import_file(store, SAMPLE_CONVERSATIONS, sample_shift(today)).as_dict())
    emit(out, args.json, lambda d: "\n".join(
        [f"CASS_HOME   {d['home']}", f"database    {d['database']}", f"config      {d['config']}",
         f"schema      {'migrated ' + str(d['migrations_applied']) if d['migrations_applied'] else 'up to date'}",
         f"dagster     {d['dagster_home']} (dagster.yaml {d['dagster_yaml']})"]
        + ([f"persona     {d['persona']}"] if "persona" in d else [])
        + ([f"sample      already loaded ({len(sample_conversation_ids())} conversations)"
            if d["import"].get("already_loaded") else f"sample      {d['import']['conversations_added']} "
            f"conversations, {d['import']['messages_added']} messages added"] if "import" in d else [])))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Settings, registry, and what a run needs besides (prices, an API key, writable homes, the schema)."""
    errors: list[str] = []
    try:
        settings = load_settings()
        registry_file = settings.actions_file or DEFAULT_REGISTRY_FILE
        handler_modules = settings.handler_modules
    except SettingsError as exc:
        settings = None
        errors.extend(exc.errors)
        # Still check the registry the user meant, not the shipped one.
        registry_file = Path(os.environ["CASS_ACTIONS_FILE"]) if os.environ.get("CASS_ACTIONS_FILE") \
            else DEFAULT_REGISTRY_FILE
        handler_modules = ()
    registry, reg_errors = read_registry_file(Path(registry_file), handler_modules)
    errors.extend(reg_errors)
    if settings is not None:
        from cass_pipelines.execution import instance_config_problems
        from cass_pipelines.services.preflight import run_problems

        errors.extend(run_problems(settings) + instance_config_problems(settings))
    out = {"ok": not errors, "registry": str(registry_file),
           "actions": len(registry.actions) if registry else 0,
           "templates": len(registry.templates) if registry else 0, "errors": errors}
    emit(out, args.json, lambda d: (
        f"ok: {d['actions']} actions, {d['templates']} templates ({d['registry']})" if d["ok"]
        else f"{len(d['errors'])} error(s):\n" + "\n".join(f"  {e}" for e in d["errors"])))
    return 0 if not errors else EXIT_USAGE


def cmd_catalog(args: argparse.Namespace) -> int:
    rt = open_runtime()
    reg = rt.registry
    out = {
        "actions": [a.model_dump(mode="json") for a in reg.actions.values()],
        "templates": [{**t.model_dump(mode="json"), "estimated_cost_usd": reg.template_cost(t.id),
                       "duration_minutes": reg.template_duration(t.id)} for t in reg.templates.values()],
    }
    emit(out, args.json, lambda d: "\n\n".join([
        table([[a["id"], a["category"], a["model_tier"], a["priority"], f"${a['estimated_cost_usd']:.3f}"]
               for a in d["actions"]], ["action", "category", "tier", "priority", "estimate"]),
        table([[t["id"], t["category"], " > ".join(t["action_sequence"]), ",".join(t["preferred_phases"]),
                f"${t['estimated_cost_usd']:.3f}"] for t in d["templates"]],
              ["template", "category", "actions", "phases", "estimate"])]))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from cass_pipelines.services.importer import ImportRefused

    if args.file.is_dir():
        raise CliError(f"{args.file}: is a directory; expected a JSONL file")
    if not args.file.exists():
        raise CliError(f"{args.file}: no such file")
    try:   # a device or a file that cannot be opened: its real reason, not "no such file"
        args.file.open("rb").close()
    except OSError as exc:
        raise CliError(f"{args.file}: cannot read: {exc.strerror}") from None
    settings = load_settings()
    require_initialised(settings)
    store = Store(settings.db_path)
    migrate(store)
    try:
        report = import_file(store, args.file)
    except ImportRefused as exc:
        raise CliError(str(exc)) from None
    emit(report.as_dict(), args.json, lambda d: "\n".join(
        [f"{d['conversations_added']} conversations and {d['messages_added']} messages added "
         f"from {d['lines_read']} lines; {d['bad_line_count']} bad line(s)"]
        + [f"  {args.file}:{b['line']}: {b['error']}" for b in d["bad_lines"]]
        + ([f"  ... and {d['bad_line_count'] - len(d['bad_lines'])} more"]
           if d["bad_line_count"] > len(d["bad_lines"]) else [])))
    return 0 if not report.bad_line_count else 2
