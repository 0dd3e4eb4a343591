"""Logs. Text by default; with CASS_LOG_FORMAT=json every line the CLI and its runs write to stderr is
one JSON object (python-json-logger), carrying the run id, job, step, partition, work unit and
action where there is one, with secrets from the environment redacted.

Runs use the `console` logger of loggers.py (Definitions(loggers=...)), so runs launched by the
daemon or the UI log the same way as runs of the CLI. This module imports no Dagster (CLI start-up).
"""
from __future__ import annotations

import io
import json
import logging
import os
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from cass_pipelines.llm.base import redact

FORMAT_VAR, LEVEL_VAR = "CASS_LOG_FORMAT", "CASS_LOG_LEVEL"
_DAGSTER_RECORD_ATTRS = ("dagster_meta", "dagster_event", "dagster_event_batch_metadata")


def json_logs() -> bool:
    return os.environ.get(FORMAT_VAR, "").strip().lower() == "json"


def run_log_level() -> str:
    """The level of run logs the CLI shows (its report says what happened; the UI has every event)."""
    return os.environ.get(LEVEL_VAR, "CRITICAL").upper()


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v) for v in value]
    return value


class CassJsonFormatter(JsonFormatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s",
                         datefmt="%Y-%m-%dT%H:%M:%S%z",
                         rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
                         reserved_attrs=[*logging.LogRecord("", 0, "", 0, "", (), None).__dict__,
                                         "message", "asctime", *_DAGSTER_RECORD_ATTRS])

    def add_fields(self, log_data: dict, record: logging.LogRecord, message_dict: dict) -> None:
        super().add_fields(log_data, record, message_dict)
        meta = getattr(record, "dagster_meta", None)
        if meta:
            tags = meta.get("job_tags") or {}
            event = meta.get("dagster_event")
            log_data.update({
                "message": meta.get("orig_message") or log_data.get("message"),
                "run_id": meta.get("run_id"), "job": meta.get("job_name"), "step": meta.get("step_key"),
                "partition": tags.get("dagster/partition"),
                **({"event": event.event_type_value} if event is not None else {})})
        for attr in ("unit", "action"):
            value = getattr(record, f"cass_{attr}", None)
            if value:
                log_data[attr] = value
        log_data.pop("cass_unit", None)
        log_data.pop("cass_action", None)

    def process_log_record(self, log_data: dict) -> dict:
        return _redacted({k: v for k, v in log_data.items() if v is not None})


def unit_extra(unit_id: str, action_id: str | None = None) -> dict:
    """`extra=` for a log call about a work unit (and action): JSON logs carry them as fields."""
    return {"cass_unit": unit_id, **({"cass_action": action_id} if action_id else {})}


class JsonLinesStream(io.TextIOBase):
    """stderr in JSON mode: JSON lines pass through; anything else written (an error message, a
    warning) becomes one JSON object per message, redacted."""

    def __init__(self, target):
        self.target, self._buffer = target, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._buffer += text
        if self._buffer.endswith("\n"):
            self._emit(self._buffer.rstrip("\n"))
            self._buffer = ""
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            self._emit(self._buffer)
            self._buffer = ""
        self.target.flush()

    def _emit(self, text: str) -> None:
        lines = text.split("\n")
        if all(_is_json_object(line) for line in lines):
            self.target.write(text + "\n")
        elif text.strip():
            record = logging.LogRecord("cass_pipelines", logging.ERROR, "", 0, text, (), None)
            self.target.write(CassJsonFormatter().format(record) + "\n")
        self.target.flush()


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def configure_cli_logging() -> None:
    """Text: leave stderr as it is. JSON: stdlib logging as JSON on stderr, and every other line
    written to stderr wrapped as a JSON object."""
    if not json_logs():
        return
    logging.captureWarnings(True)
    if not isinstance(sys.stderr, JsonLinesStream):
        sys.stderr = JsonLinesStream(sys.stderr)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(CassJsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(run_log_level())
