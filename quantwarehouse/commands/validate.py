"""`orchestrate.py validate`: run the Great Expectations gates of the warehouse's layers.

Reads the warehouse read-only, validates whole tables layer by layer (every layer, even after one
fails: this is an audit), writes the Data Docs under `data/runs/<run_id>/data_docs/`, prints per
layer the expectations evaluated and failed with sample rows, and exits 1 when any gate fails.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import duckdb

from expectations.suites import LAYER_ORDER, layer_suites
from quantwarehouse.cli import CliError
from quantwarehouse.commands.scan import parse_names
from quantwarehouse.lock import current_writer
from quantwarehouse.logs import log_summary, setup_logging
from quantwarehouse.paths import runs_dir, warehouse_path
from quantwarehouse.progress import Progress
from quantwarehouse.runs import new_run_id, validate_run_id
from quantwarehouse.warehouse import connect

log = logging.getLogger(__name__)

COMMAND = "validate"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        COMMAND,
        help="run the Great Expectations quality gates of each layer (read-only)",
        description=(
            "Validate the warehouse with the Great Expectations suites of each layer "
            f"({', '.join(LAYER_ORDER)}), on whole tables: keys, nulls, OHLC consistency, "
            "volumes, return bounds, ratings, rows per symbol against the calendar, symbols "
            "vanishing on the latest date, freshness. Opens the warehouse read-only and changes "
            "nothing in it; writes the Data Docs report to data/runs/<run_id>/data_docs/. "
            "Exit status 1 when any gate fails."
        ),
    )
    parser.add_argument(
        "--layers",
        help=f"comma-separated layers, run in pipeline order (default: {','.join(LAYER_ORDER)})",
    )
    parser.add_argument("--run-id", help="name of this run: its report folder (default: generated)")
    parser.add_argument(
        "--max-days-behind",
        type=int,
        default=None,
        help="freshness: days a listed symbol's last daily bar may lag the newest one (default 2)",
    )
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=None,
        help="rows read and validated at a time (default 200000); bounds the memory used",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="list the layers and suites to run; validate nothing"
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("--quiet", action="store_true", help="summary and errors only")
    verbosity.add_argument("--verbose", action="store_true", help="one line per suite as it runs")
    parser.set_defaults(handler=run)


def parse_layers(value: str | None) -> tuple[str, ...]:
    chosen = parse_names(value)
    unknown = [layer for layer in chosen if layer not in LAYER_ORDER]
    if unknown:
        expected = ", ".join(LAYER_ORDER)
        raise CliError(f"--layers: unknown layer {', '.join(unknown)}; expected some of {expected}")
    return tuple(layer for layer in LAYER_ORDER if not chosen or layer in chosen)


def _at_least(flag: str, value: int | None, low: int, default: int) -> int:
    if value is None:
        return default
    if value < low:
        raise CliError(f"{flag}: expected a whole number >= {low}, got {value}")
    return value


def plan_lines(layers: Sequence[str], run_dir: Path) -> list[str]:
    lines = [f"validate --dry-run on {warehouse_path()}: nothing is read or written"]
    for layer in layers:
        lines.append(f"gate {layer}:")
        lines += [f"  {spec.name}: {len(spec.checks)} expectations on {spec.table.relation}"
                  for spec in layer_suites(layer)]  # fmt: skip
    lines.append(f"would write the Data Docs to {run_dir / 'data_docs'}")
    return lines


def _open_read_only(target: Path) -> duckdb.DuckDBPyConnection:
    try:
        return connect(target, read_only=True)
    except duckdb.IOException as exc:
        holder = current_writer(target)
        who = f" by {holder.describe()}" if holder else ""
        raise CliError(
            f"cannot open {target} read-only: it is being written{who}; validate when that run "
            f"ends ({' '.join(str(exc).split())})"
        ) from exc


def run(args: argparse.Namespace) -> int:
    setup_logging(COMMAND, verbose=args.verbose, quiet=args.quiet)
    layers = parse_layers(args.layers)
    run_id = validate_run_id(args.run_id) if args.run_id else new_run_id(COMMAND)
    run_dir = runs_dir() / run_id
    if args.dry_run:
        print("\n".join(plan_lines(layers, run_dir)))
        return 0
    # Great Expectations takes seconds to import: only when validating.
    from expectations.gates import GateSession, GateSettings

    defaults = GateSettings()
    settings = GateSettings(
        max_days_behind=_at_least(
            "--max-days-behind", args.max_days_behind, 0, defaults.max_days_behind
        ),
        chunk_rows=_at_least("--chunk-rows", args.chunk_rows, 1, defaults.chunk_rows),
    )
    progress = Progress(COMMAND, len(layers), quiet=args.quiet)
    results = []
    session = GateSession(run_dir)  # one GE context, Data Docs rendered once for every layer
    with _open_read_only(warehouse_path()) as con:
        for done, layer in enumerate(layers, start=1):
            log.info("gate %s ...", layer)
            results.append(session.run(con, layer, settings=settings))
            progress.update(done, layer)
    session.build_docs()
    lines = [line for result in results for line in result.lines()]
    failed = [r.layer for r in results if not r.passed]
    verdict = f"failed: {', '.join(failed)}" if failed else "passed"
    lines.append(f"validate {run_id}: {verdict}; report {run_dir / 'data_docs' / 'index.html'}")
    log_summary(lines)
    if not failed:
        return 0
    failures = sum(len(r.failures) for r in results)
    reason = f"{failures} expectations failed in layers {', '.join(failed)} (see above)"
    print(f"error: {reason}", file=sys.stderr)
    return 1
