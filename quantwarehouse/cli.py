"""`orchestrate.py`: the one command-line entry point. Each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib import import_module

from quantwarehouse.lock import WarehouseLockedError

# subcommand -> module with `add_parser(subparsers)` and `run(args) -> int`
COMMAND_MODULES: tuple[str, ...] = (
    "quantwarehouse.commands.ingest",
    "quantwarehouse.commands.scan",
    "quantwarehouse.commands.daily_refresh",
    "quantwarehouse.commands.sql",
    "quantwarehouse.commands.docs",
    "quantwarehouse.commands.validate",
    "quantwarehouse.commands.production",
    "quantwarehouse.commands.refresh_sleeves",
    "quantwarehouse.commands.audit",
)

log = logging.getLogger("quantwarehouse")
# Commands that keep stdout for data (sql) configure no logging: errors are printed once, below,
# not a second time by logging's last-resort handler.
log.addHandler(logging.NullHandler())


class CliError(Exception):
    """A user error: printed as the last line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrate.py",
        description=(
            "quantwarehouse: load crypto market data into DuckDB, build bars, returns and "
            "features with dbt, and run the research on top of it."
        ),
        epilog="Run `orchestrate.py <command> --help` for a command's options.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for module_name in COMMAND_MODULES:
        import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
