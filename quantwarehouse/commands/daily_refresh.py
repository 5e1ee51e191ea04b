"""`orchestrate.py daily-refresh`: bring the warehouse's layers up to date, target by target.

The command line only: the flags, their validation, and the hand-over to
`quantwarehouse.refresh.runner` (steps, lock, progress, manifest, summary, alerts). Targets are
explicit (no default: a run with no target is an error listing them); `--all` ingests the new
data of the configured source (configs/refresh.yml) first, then refreshes every layer with its
quality gates.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from quantwarehouse.cli import CliError
from quantwarehouse.commands.ingest import parse_symbols
from quantwarehouse.logs import setup_logging
from quantwarehouse.manifest import CACHE_ENV
from quantwarehouse.refresh.config import DEFAULT_CONFIG, load_refresh_config
from quantwarehouse.refresh.context import RefreshOptions
from quantwarehouse.refresh.filters import (
    EmaFilter,
    parse_combos,
    parse_periods,
    parse_tfs,
    valid_periods,
    valid_timeframes,
)
from quantwarehouse.refresh.runner import (
    ALL_TARGETS,
    COMMAND,
    TARGET_HELP,
    TARGET_ORDER,
    run_refresh,
)

log = logging.getLogger(__name__)

LOG_NAME = "refresh"


def target_flags() -> str:
    return ", ".join([*(f"--{t}" for t in TARGET_ORDER), "--all"])


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        COMMAND,
        help="refresh the warehouse's layers (bars, returns, EMAs, features) incrementally",
        description=(
            "Refresh the warehouse from what the raw layer holds. Choose targets explicitly "
            f"({target_flags()}); they run in the order {' -> '.join(TARGET_ORDER)}; --all "
            "first ingests the new data of the configured source and runs the quality gates "
            "after each layer. Each model recomputes only the symbols with data newer than its "
            "watermark (state.<model>). Symbols whose bars failed or are stale are skipped "
            "downstream, the others proceed. Holds the writer lock, logs to "
            ".logs/refresh-YYYY-MM-DD.log, keeps a run manifest in data/runs/<run_id>/, ends "
            "with a summary, and exits 1 when anything failed (the reason in the last line)."
        ),
    )
    targets = parser.add_argument_group("targets (at least one)")
    for target in TARGET_ORDER:
        targets.add_argument(f"--{target}", action="store_true", help=TARGET_HELP[target])
    targets.add_argument(
        "--all",
        action="store_true",
        help=(
            f"ingest (configs/refresh.yml), then {', '.join(TARGET_ORDER)}, each followed by "
            "its quality gates"
        ),
    )
    scope = parser.add_argument_group("what to recompute")
    scope.add_argument(
        "--symbols",
        "--ids",
        dest="symbols",
        help="comma-separated symbols: only these are recomputed (the others wait for a later run)",
    )
    scope.add_argument(
        "--tfs",
        help=f"comma-separated timeframes of bar families and EMAs: {','.join(valid_timeframes())}",
    )
    scope.add_argument(
        "--periods",
        help=f"comma-separated EMA periods: {', '.join(map(str, valid_periods()))}",
    )
    scope.add_argument(
        "--tf-period-combos",
        help="comma-separated TF:PERIOD pairs of EMAs, e.g. 7d:10,7d:20",
    )
    scope.add_argument(
        "--full-refresh",
        action="store_true",
        help=(
            "rebuild every model from scratch; with --symbols, delete those symbols' rows and "
            "state in every model (one transaction) and recompute them from their first bar"
        ),
    )
    scope.add_argument(
        "--resume",
        action="store_true",
        help=(
            "continue a failed run: skip steps and symbols whose state tables show them current "
            "(and the ingest when the same load already succeeded)"
        ),
    )
    checks = parser.add_argument_group("checks, caching and alerts")
    checks.add_argument(
        "--validate",
        action="store_true",
        help="run the quality gates after each layer on the slice it changed (always with --all)",
    )
    checks.add_argument(
        "--cache",
        action="store_true",
        help=(
            "skip a step whose inputs (code, parameters, data watermarks) are unchanged since it "
            f"succeeded in an earlier run (also {CACHE_ENV}=1)"
        ),
    )
    checks.add_argument(
        "--alert-on-error",
        action="store_true",
        help=(
            "also alert on quality gate violations (failures always alert when Telegram or a "
            "webhook is configured: QWH_TELEGRAM_BOT_TOKEN + QWH_TELEGRAM_CHAT_ID, "
            "QWH_ALERT_WEBHOOK_URL)"
        ),
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"refresh config: source and thresholds (default {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (steps, symbols per step, what is skipped and why); change nothing",
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("--quiet", action="store_true", help="summary and errors only (cron)")
    verbosity.add_argument(
        "--verbose", action="store_true", help="every dbt node and dbt's own output"
    )
    parser.set_defaults(handler=run)


def _targets(args: argparse.Namespace) -> tuple[str, ...]:
    if args.all:
        return ALL_TARGETS
    chosen = tuple(t for t in TARGET_ORDER if getattr(args, t))
    if not chosen:
        raise CliError(f"no target given; choose one or more of {target_flags()}")
    return chosen


def _ema_filter(args: argparse.Namespace) -> EmaFilter:
    ema_filter = EmaFilter(
        tfs=parse_tfs(args.tfs),
        periods=parse_periods(args.periods),
        combos=parse_combos(args.tf_period_combos),
    )
    ema_filter.check_not_empty()
    return ema_filter


def options_from_args(args: argparse.Namespace) -> RefreshOptions:
    targets = _targets(args)
    ema_filter = _ema_filter(args)
    if ema_filter and not {"bars", "emas"} & set(targets):
        raise CliError(
            "--tfs, --periods and --tf-period-combos apply to --bars and --emas (or --all)"
        )
    if args.resume and args.full_refresh:
        raise CliError("--resume cannot be combined with --full-refresh: a rebuild starts over")
    return RefreshOptions(
        targets=targets,
        config=load_refresh_config(args.config),
        symbols=parse_symbols(args.symbols),
        ema_filter=ema_filter,
        full_refresh=args.full_refresh,
        resume=args.resume,
        validate=args.validate or args.all,
        cache=args.cache,
        alert_on_error=args.alert_on_error,
        dry_run=args.dry_run,
        quiet=args.quiet,
        verbose=args.verbose,
    )


def run(args: argparse.Namespace) -> int:
    # Logging first, so that an error in the options is logged once and printed once.
    log_file = setup_logging(LOG_NAME, verbose=args.verbose, quiet=args.quiet)
    log.debug("log file %s", log_file)
    options = options_from_args(args)
    return run_refresh(options, sys.argv[1:])
