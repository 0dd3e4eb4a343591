"""Reading the action registry: a JSON file (the packaged definitions.json or CASS_ACTIONS_FILE), every
error with file, template or action and field; handlers are imported here to prove they exist."""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Callable

from pydantic import ValidationError

from cass_pipelines.domain.errors import shown
from cass_pipelines.domain.registry import REQUIRED_TEMPLATES, ActionDef, Registry, TemplateDef

DEFAULT_REGISTRY_FILE = Path(__file__).resolve().parent.parent / "data" / "definitions.json"
# Handlers come from this package, or from module prefixes a user lists in `handler_modules`.
HANDLER_PACKAGE = "cass_pipelines.services.handlers"
MAX_REGISTRY_BYTES = 16 * 1024 * 1024


class RegistryError(ValueError):
    """The registry file is unusable; `errors` lists every problem found."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("invalid action registry:\n  " + "\n  ".join(errors))


def handler_allowed(path: str, handler_modules: tuple[str, ...] = ()) -> bool:
    """Only the project's handler package and the module prefixes a user listed (never `sys:exit`)."""
    module_name = path.partition(":")[0]
    return any(module_name == prefix or module_name.startswith(prefix + ".")
               for prefix in (HANDLER_PACKAGE, *handler_modules))


def resolve_handler(path: str) -> Callable:
    module_name, _, attr = path.partition(":")
    module = importlib.import_module(module_name)
    fn = getattr(module, attr)
    if not callable(fn):
        raise TypeError(f"{path} is not callable")
    return fn


def _pydantic_errors(where: str, exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(object)"
        value = err.get("input")
        got = "" if isinstance(value, dict) else f" (got {shown(value)})"
        out.append(f"{where}: field '{field}': {err['msg']}{got}")
    return out


def check_registry_data(data: object, source: str,
                        handler_modules: tuple[str, ...] = ()) -> tuple[Registry | None, list[str]]:
    """Validate parsed registry JSON; returns the registry (None if any error) and every error."""
    errors: list[str] = []
    if not isinstance(data, dict) or not isinstance(data.get("actions"), list) or not isinstance(
        data.get("templates"), list
    ):
        return None, [f"{source}: top level must be an object with lists 'actions' and 'templates'"]

    actions: dict[str, ActionDef] = {}
    invalid_actions: set[str] = set()   # present in the file but failing validation (reported once, there)
    for i, raw in enumerate(data["actions"]):
        ident = raw.get("id") if isinstance(raw, dict) else None
        where = f"{source}: action {shown(ident)}" if isinstance(ident, str) and ident else f"{source}: actions[{i}]"
        try:
            action = ActionDef.model_validate(raw)
        except ValidationError as exc:
            errors.extend(_pydantic_errors(where, exc))
            if isinstance(ident, str):
                invalid_actions.add(ident)
            continue
        if action.id in actions:
            errors.append(f"{where}: field 'id': duplicate action id (actions[{i}])")
            continue
        if not handler_allowed(action.handler, handler_modules):
            errors.append(f"{where}: field 'handler': {shown(action.handler)} is outside the handler modules; "
                          f"allowed: {', '.join((HANDLER_PACKAGE, *handler_modules))} (add a module prefix to "
                          "handler_modules in cass.toml to use your own)")
        else:
            try:
                resolve_handler(action.handler)
            except Exception as exc:  # any import problem is a registry error, reported with the path
                errors.append(f"{where}: field 'handler': cannot import {shown(action.handler)}: {exc}")
        actions[action.id] = action

    templates: dict[str, TemplateDef] = {}
    for i, raw in enumerate(data["templates"]):
        ident = raw.get("id") if isinstance(raw, dict) else None
        where = (f"{source}: template {shown(ident)}" if isinstance(ident, str) and ident
                 else f"{source}: templates[{i}]")
        # The action references are checked even when other fields are invalid, so one pass shows all.
        sequence = raw.get("action_sequence") if isinstance(raw, dict) else None
        if isinstance(sequence, (list, tuple)):
            for pos, action_id in enumerate(sequence):
                if not isinstance(action_id, str) or action_id in actions:
                    continue
                if action_id in invalid_actions:
                    errors.append(f"{where}: field 'action_sequence[{pos}]': action {shown(action_id)} is invalid "
                                  f"(see its errors)")
                else:
                    errors.append(f"{where}: field 'action_sequence[{pos}]': unknown action {shown(action_id)}")
        try:
            template = TemplateDef.model_validate(raw)
        except ValidationError as exc:
            errors.extend(_pydantic_errors(where, exc))
            continue
        if template.id in templates:
            errors.append(f"{where}: field 'id': duplicate template id (templates[{i}])")
            continue
        # A template needs idle if it says so or any of its actions does: one flag for the planner.
        if any(actions[a].requires_idle for a in template.action_sequence if a in actions):
            template = template.model_copy(update={"requires_idle": True})
        templates[template.id] = template

    if not templates and not errors:
        errors.append(f"{source}: no templates defined")
    elif data["templates"]:
        errors += [f"{source}: template {shown(t)} is missing: {why}" for t, why in REQUIRED_TEMPLATES.items()
                   if t not in templates and not any(isinstance(r, dict) and r.get("id") == t for r in data["templates"])]
    if errors:
        return None, errors
    return Registry(source=source, actions=actions, templates=templates), []


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number (JSON has no Infinity or NaN)")


def read_registry_file(path: Path, handler_modules: tuple[str, ...] = ()) -> tuple[Registry | None, list[str]]:
    try:
        if not path.is_file():
            reason = "no such file" if not path.exists() else "not a regular file (a directory or device)"
            return None, [f"{path}: cannot read: {reason}"]
        if path.stat().st_size > MAX_REGISTRY_BYTES:
            return None, [f"{path}: larger than {MAX_REGISTRY_BYTES} bytes; not an action registry"]
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [f"{path}: cannot read: {exc.strerror}"]
    except UnicodeDecodeError as exc:
        return None, [f"{path}: byte {exc.start}: not UTF-8: {exc.reason}"]
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        return None, [f"{path}: line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}"]
    except ValueError as exc:
        return None, [f"{path}: invalid JSON: {exc}"]
    except RecursionError:
        return None, [f"{path}: invalid registry: JSON nested too deeply (a registry is two levels of objects)"]
    return check_registry_data(data, str(path), handler_modules)


def load_registry(path: Path | str | None = None, handler_modules: tuple[str, ...] = ()) -> Registry:
    registry, errors = read_registry_file(Path(path) if path else DEFAULT_REGISTRY_FILE, handler_modules)
    if errors:
        raise RegistryError(errors)
    assert registry is not None
    return registry
