"""`orchestrate.py scan`: run the scanners in configs/scanners/ and list their candidates."""

from __future__ import annotations

import argparse
from pathlib import Path

from ingest.scanners.config import SCANNERS_DIR, ScannerConfig, load_scanners
from ingest.scanners.run import CANDIDATES_TABLE, run_scan
from quantwarehouse.commands.ingest import parse_date
from quantwarehouse.lock import WriterLock
from quantwarehouse.logs import log_summary, setup_logging
from quantwarehouse.paths import export_dir, warehouse_path
from quantwarehouse.runs import new_run_id, validate_run_id
from quantwarehouse.warehouse import connect


def parse_names(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scan",
        help="run the scanners and list candidate symbols",
        description=(
            "Run the scanners defined in configs/scanners/*.yml over the warehouse, as of the "
            "latest bar date (or --as-of), using only bars up to that date. Each scanner's "
            f"candidates go to data/export/<run_id>/<scanner>.json and to {CANDIDATES_TABLE}. "
            "A scanner whose inputs are missing (e.g. ratings before the features matrix is "
            "built) fails with the reason; the others still run. Exit status 1 when any failed."
        ),
    )
    parser.add_argument("--scanners", help="comma-separated scanner names (default: all)")
    parser.add_argument("--run-id", help="name of this run (default: generated)")
    parser.add_argument("--as-of", help="scan as of this day (YYYY-MM-DD; default: latest bar)")
    parser.add_argument(
        "--config-dir",
        help="folder of scanner configs (default: configs/scanners in the repository)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="validate the configs and show the plan only"
    )
    parser.add_argument("--quiet", action="store_true", help="summary and errors only")
    parser.add_argument("--verbose", action="store_true", help="more detail in the output")
    parser.set_defaults(handler=run)


def plan_lines(scanners: list[ScannerConfig], run_id: str, as_of: str) -> list[str]:
    target = export_dir() / run_id
    lines = [f"dry run: {len(scanners)} scanners valid, as of {as_of}; nothing written"]
    for scanner in scanners:
        lines += scanner.describe()
        lines.append(f"  would write {target / (scanner.name + '.json')} and {CANDIDATES_TABLE}")
    return lines


def run(args: argparse.Namespace) -> int:
    folder = Path(args.config_dir) if args.config_dir else SCANNERS_DIR
    scanners = load_scanners(folder, parse_names(args.scanners))
    run_id = validate_run_id(args.run_id) if args.run_id else new_run_id("scan")
    as_of = parse_date("--as-of", args.as_of)
    if args.dry_run:
        print("\n".join(plan_lines(scanners, run_id, str(as_of or "the latest bar date"))))
        return 0
    target = warehouse_path()
    if not target.exists():
        raise FileNotFoundError(f"no warehouse at {target}: load and build it first")
    setup_logging("scan", verbose=args.verbose, quiet=args.quiet)
    with WriterLock(target, run_id, "scan"), connect(target) as con:
        report = run_scan(con, scanners, run_id=run_id, export_folder=export_dir(), as_of=as_of)
    log_summary(report.lines())
    return 0 if report.ok else 1
