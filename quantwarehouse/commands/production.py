"""`orchestrate.py production`: one sleeve production run (quantwarehouse/production.py)."""

from __future__ import annotations

import argparse
import logging
import sys

from quantwarehouse.logs import log_summary, setup_logging
from quantwarehouse.production import (
    STEPS,
    ProductionOptions,
    plan_lines,
    prepare_run,
    run_production,
)

log = logging.getLogger(__name__)

COMMAND = "production"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    steps = ", ".join(f"{n} {s.name}" for n, s in enumerate(STEPS, start=1))
    parser = subparsers.add_parser(
        COMMAND,
        help="run one sleeve profile: selection, optimization, reports, validation",
        description=(
            "Produce one sleeve from its profile (configs/profiles/<name>.yml): every step is a "
            f"dbt Python model ({steps}) writing its table into data/runs/<run_id>/run.duckdb, "
            "with the warehouse attached read-only (it is never written). The run directory "
            "also gets the artifacts (weights.csv, tearsheet.html, sign tests, INDEX.md, ...), "
            "run_manifest.json and the hash-chained audit.jsonl. A failing step stops the run; "
            "the last line names it (exit status 1). Holds a reader lock on the warehouse, so a "
            "writer (daily-refresh) cannot start meanwhile. Logs to .logs/production-DATE.log."
        ),
    )
    parser.add_argument(
        "--profile",
        required=True,
        help="profile name (configs/profiles/<name>.yml) or the path of a profile file",
    )
    parser.add_argument(
        "--run-id",
        help="name of the run and of its folder under data/runs (default: <time>_<hex>_<profile>)",
    )
    parser.add_argument(
        "--skip-validation",
        action="store_true",
        help="skip the validation step, the walk-forward backtest (recorded as skipped)",
    )
    parser.add_argument(
        "--skip-analysis",
        action="store_true",
        help="skip the post_analysis step, its plots (recorded as skipped)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="validate the profile and print the plan only"
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("--quiet", action="store_true", help="summary and errors only")
    verbosity.add_argument("--verbose", action="store_true", help="dbt's own output too")
    testing = parser.add_argument_group("testing")
    testing.add_argument(
        "--inject-sign-error",
        metavar="SYMBOL",
        default="",
        help=(
            "synthesize SYMBOL's atom ('first': the first atom) with the wrong sign, to see the "
            "directional sign-test gate stop the run; never for a real run"
        ),
    )
    parser.set_defaults(handler=run)


def options_from_args(args: argparse.Namespace) -> ProductionOptions:
    return ProductionOptions(
        profile=args.profile,
        run_id=args.run_id,
        skip_validation=args.skip_validation,
        skip_analysis=args.skip_analysis,
        inject_sign_error=args.inject_sign_error,
        verbose=args.verbose,
    )


def run(args: argparse.Namespace) -> int:
    setup_logging(COMMAND, verbose=args.verbose, quiet=args.quiet)
    options = options_from_args(args)
    prepared = prepare_run(options)
    if args.dry_run:
        print("\n".join(plan_lines(prepared)))
        return 0
    outcome = run_production(options, prepared)
    log_summary(outcome.summary_lines())
    if outcome.ok:
        return 0
    manifest = outcome.manifest
    reason = (
        f"production run {outcome.run_id} failed at step '{manifest.failed_step}': {manifest.error}"
    )
    log.error("error: %s", reason)
    print(f"error: {reason}", file=sys.stderr)
    return 1
