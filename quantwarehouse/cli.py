"""`orchestrate.py`: the one command-line entry point. Each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib import import_module

from quantwarehouse.lock import WarehouseLockedError

# subcommand -> module with `add_parser(subparsers)` adding it, and the handler it sets
COMMAND_MODULES: dict[str, str] = {
    "ingest": "quantwarehouse.commands.ingest",
    "scan": "quantwarehouse.commands.scan",
    "daily-refresh": "quantwarehouse.commands.daily_refresh",
    "sql": "quantwarehouse.commands.sql",
    "docs": "quantwarehouse.commands.docs",
    "validate": "quantwarehouse.commands.validate",
    "production": "quantwarehouse.commands.production",
    "refresh-sleeves": "quantwarehouse.commands.refresh_sleeves",
    "audit": "quantwarehouse.commands.audit",
}

log = logging.getLogger("quantwarehouse")
# Commands that keep stdout for data (sql) configure no logging: errors are printed once, below,
# not a second time by logging's last-resort handler.
log.addHandler(logging.NullHandler())


class CliError(Exception):
    """A user error: printed as the last line, exit status 2."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of `command` alone: its module is the only one imported
    (the sleeves' modules alone take a third of a second to import, which cron's daily refresh
    need not pay)."""
    parser = argparse.ArgumentParser(
        prog="orchestrate.py",
        description=(
            "quantwarehouse: load crypto market data into DuckDB, build bars, returns and "
            "features with dbt, and run the research on top of it."
        ),
        epilog="Run `orchestrate.py <command> --help` for a command's options.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, module_name in COMMAND_MODULES.items():
        if command in (None, name):
            import_module(module_name).add_parser(subparsers)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The command `argv` names first, if it is one; None (every command) for the top-level
    help and for what the full parser must refuse."""
    first = next(iter(argv), None)
    return first if first in COMMAND_MODULES else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command(argv))
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except (CliError, ValueError, FileNotFoundError) as exc:
        log.error("error: %s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WarehouseLockedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
