"""Entry point: `cass-pipelines COMMAND`. Every read command takes --json.

Every error is one line on stderr, `cass-pipelines COMMAND: SOURCE: what is wrong`, and an exit code:
0 ok, 1 a runtime failure (a run failed, the database or the disk refused), 2 a usage or
configuration error (bad argument, setting, registry or input file), 3 refused while paused.
A stack trace is printed only with `--debug`.
"""
from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from typing import NoReturn

import duckdb

from cass_pipelines.cli import day_cmds, dlq_cmd, ledger_cmd, money_cmds, ops_cmds, setup_cmds, week_cmds
from cass_pipelines.cli.output import EXIT_FAILED, EXIT_USAGE, CliError
from cass_pipelines.config.registry import RegistryError
from cass_pipelines.domain.clock import ClockError
from cass_pipelines.domain.settings import SettingsError
from cass_pipelines.llm.base import redact
from cass_pipelines.services.logs import configure_cli_logging
from cass_pipelines.services.runtime import NotInitialisedError
from cass_pipelines.store.schema import SchemaTooNewError

GROUPS = [setup_cmds, day_cmds, week_cmds, ledger_cmd, money_cmds, dlq_cmd, ops_cmds]
MAX_LINE_CHARS = 600   # an error line, however long the underlying message


class Parser(argparse.ArgumentParser):
    """argparse's usage errors as one line (its default prints the whole usage first), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cass-pipelines", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="print the stack trace of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def one_line(text: str) -> str:
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + "..."


def describe(exc: BaseException) -> tuple[list[str], int]:
    """The lines to print for an error and the exit code."""
    if isinstance(exc, (SettingsError, RegistryError)):
        return list(exc.errors), EXIT_USAGE
    if isinstance(exc, CliError):
        return [str(exc)], exc.code
    if isinstance(exc, (NotInitialisedError, SchemaTooNewError, ClockError)):
        return [str(exc)], EXIT_USAGE
    if isinstance(exc, duckdb.Error):   # e.g. the file stays locked by another process after the open retries
        return [f"database error: {exc}"], EXIT_FAILED
    if isinstance(exc, OSError):        # a full disk, a read-only home, a path that is a file
        where = f"{exc.filename}: " if exc.filename else ""
        return [f"{where}{exc.strerror or exc}"], EXIT_FAILED
    if isinstance(exc, RecursionError):
        return ["input nested too deeply to process"], EXIT_USAGE
    return [f"unexpected error: {type(exc).__name__}: {exc} (run with --debug for the stack trace)"], EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    # Dagster's beta/preview notices are for developers of this project, not its users.
    warnings.filterwarnings("ignore", module="dagster")
    warnings.filterwarnings("ignore", message=".*(beta|preview).*", category=Warning)
    configure_cli_logging()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:   # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        lines, code = describe(exc)
        for line in lines:
            print(f"cass-pipelines {args.command}: {redact(one_line(line))}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
