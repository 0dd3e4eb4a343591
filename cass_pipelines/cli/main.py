"""Entry point: `cass-pipelines COMMAND`. Every read command takes --json."""
from __future__ import annotations

import argparse
import sys
import warnings

import duckdb

from cass_pipelines.cli import day_cmds, dlq_cmd, ledger_cmd, money_cmds, setup_cmds
from cass_pipelines.cli.output import CliError
from cass_pipelines.core.clock import ClockError
from cass_pipelines.core.registry import RegistryError
from cass_pipelines.core.runtime import NotInitialisedError
from cass_pipelines.core.settings import SettingsError

GROUPS = [setup_cmds, day_cmds, ledger_cmd, money_cmds, dlq_cmd]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cass-pipelines", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Dagster's beta/preview notices are for developers of this project, not its users.
    warnings.filterwarnings("ignore", module="dagster")
    warnings.filterwarnings("ignore", message=".*(beta|preview).*", category=Warning)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (CliError, SettingsError, RegistryError, NotInitialisedError, ClockError) as exc:
        print(f"cass-pipelines {args.command}: {exc}", file=sys.stderr)
        return getattr(exc, "code", 1)
    except duckdb.Error as exc:   # e.g. the file stays locked by another process after the open retries
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"cass-pipelines {args.command}: database error: {detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
