"""`orchestrate.py ingest`: land data from a source in the raw layer."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from pathlib import Path

from ingest.intervals import check_interval
from ingest.loader import run_load
from ingest.options import IngestOptions, days_before
from ingest.raw_store import RawStore
from ingest.sources import SOURCE_MODULES, build_source
from quantwarehouse.lock import WriterLock
from quantwarehouse.logs import log_summary, setup_logging
from quantwarehouse.paths import warehouse_path
from quantwarehouse.progress import Progress
from quantwarehouse.runs import new_run_id
from quantwarehouse.warehouse import connect


def parse_date(flag: str, value: str | None, reference: date | None = None) -> date | None:
    """A date, or with a `reference` day also `-Nd`: N days before it."""
    if value is None:
        return None
    try:
        day = days_before(value, reference) if reference is not None else None
        return day or date.fromisoformat(value)
    except (ValueError, OverflowError):
        expected = (
            "YYYY-MM-DD" if reference is None else f"YYYY-MM-DD or -Nd (days before {reference})"
        )
        raise ValueError(f"{flag}: {value!r} is not a date; expected {expected}") from None


def parse_symbols(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    symbols = tuple(s.strip().upper() for s in value.split(",") if s.strip())
    bad = [s for s in symbols if not s.isalnum()]
    if bad:
        raise ValueError(f"--symbols: {', '.join(bad)} not valid; expected e.g. BTCUSDT,ETHUSDT")
    return symbols


def positive_int(flag: str, value: int) -> int:
    if value < 1:
        raise ValueError(f"{flag}: expected a positive integer, got {value}")
    return value


def options_from_args(args: argparse.Namespace) -> IngestOptions:
    until = parse_date("--until", args.until)
    reference = until or datetime.now(UTC).date()
    start = parse_date("--start", args.start, reference)
    end = parse_date("--end", args.end, reference)
    if start and end and start > end:
        raise ValueError(f"--start {start} is after --end {end}")
    if args.freshness_hours is not None and args.freshness_hours < 0:
        raise ValueError(f"--freshness-hours: expected a number >= 0, got {args.freshness_hours}")
    return IngestOptions(
        symbols=parse_symbols(args.symbols),
        interval=check_interval(args.interval) if args.interval else None,
        start=start,
        end=end,
        path=Path(args.path) if args.path else None,
        base_url=args.base_url,
        preset=args.preset,
        until=until,
        seed=args.seed,
        force=args.force,
        freshness_hours=args.freshness_hours,
        workers=positive_int("--workers", args.workers),
        mapping=Path(args.mapping) if args.mapping else None,
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ingest",
        help="load market data from a source into the raw layer",
        description=(
            "Load klines and symbol metadata from a source into the raw tables. Loading the "
            "same data twice changes nothing; changed values are stored as new revisions; bad "
            "rows go to raw.rejects with the reason."
        ),
    )
    parser.add_argument(
        "--source", required=True, choices=sorted(SOURCE_MODULES), help="where the data comes from"
    )
    parser.add_argument("--symbols", help="comma-separated symbols (default: the source's own)")
    parser.add_argument("--interval", help="kline interval, e.g. 1d, 4h, 1m")
    relative = "or -Nd: N days before --until, else before today; written --start=-200d"
    parser.add_argument("--start", help=f"first day to load (YYYY-MM-DD, UTC, {relative})")
    parser.add_argument("--end", help="last day to load (YYYY-MM-DD, UTC, or -Nd as --start)")
    parser.add_argument("--path", help="local folder (binance-vision archive layout, or files)")
    parser.add_argument("--base-url", help="archive or REST base URL (binance-vision, binance-api)")
    parser.add_argument("--preset", help="synthetic preset: tiny, demo, bench or minute")
    parser.add_argument("--until", help="synthetic: generate history up to this day (YYYY-MM-DD)")
    parser.add_argument("--seed", type=int, help="synthetic: random seed (default 7)")
    parser.add_argument(
        "--mapping",
        help="files: YAML column mapping (default: the one in configs/mappings/ whose "
        "file_pattern matches the files)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="reload symbols and files even when fresh or already loaded",
    )
    parser.add_argument(
        "--freshness-hours",
        type=float,
        help="skip symbols loaded within this many hours (source default)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=4,
        help="parallel readers (default 4); writes go through one connection",
    )
    parser.add_argument("--run-id", help="name of this run (default: generated)")
    parser.add_argument("--quiet", action="store_true", help="summary and errors only")
    parser.add_argument("--verbose", action="store_true", help="more detail in the output")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    source = build_source(args.source, options)
    setup_logging("ingest", verbose=args.verbose, quiet=args.quiet)
    run_id = args.run_id or new_run_id("ingest")
    target = warehouse_path()
    with WriterLock(target, run_id, "ingest"), connect(target) as con:
        store = RawStore(con)
        progress: Progress | None = None

        def report(done: int, total: int, label: str) -> None:
            nonlocal progress
            progress = progress or Progress(f"ingest {args.source}", total, quiet=args.quiet)
            progress.update(done, label)

        summary = run_load(source, store, workers=options.workers, progress=report)
    log_summary(summary.lines())
    return 0 if summary.status == "success" else 1
