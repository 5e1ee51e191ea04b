"""`orchestrate.py daily-refresh`: bring the warehouse's layers up to date, target by target.

A target is a list of steps; targets always run in `TARGET_ORDER`, whatever the order of the flags.
A step is a dbt build of a selection (`DbtBuildStep`) or a file published from the warehouse
(`PublishStep`). New layers (ingest, EMAs, features, gates) are new entries of `TARGETS`: each gets
its `--<target>` flag, its place in `--all`, its plan lines and its summary lines for free.

The whole run holds the writer lock; `--dry-run` takes no lock, opens the warehouse read-only (if
at all) and prints the plan. A failing step stops the run: the steps after it are skipped, the
summary says so, and the last line gives the reason (exit status 1).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import duckdb

from quantwarehouse.cli import CliError
from quantwarehouse.commands.ingest import parse_symbols
from quantwarehouse.dbt import DbtRunError, NodeResult, list_nodes, one_line, run_dbt
from quantwarehouse.lakehouse import PublishedFile, publish_returns_matrix, returns_matrix_path
from quantwarehouse.lock import WriterLock, current_writer
from quantwarehouse.logs import log_summary, setup_logging
from quantwarehouse.paths import warehouse_path
from quantwarehouse.progress import Progress
from quantwarehouse.runs import new_run_id

log = logging.getLogger(__name__)

COMMAND = "daily-refresh"
LOG_NAME = "refresh"


@dataclass(frozen=True)
class RefreshOptions:
    targets: tuple[str, ...]
    full_refresh: bool = False
    symbols: tuple[str, ...] = ()
    dry_run: bool = False
    quiet: bool = False
    verbose: bool = False

    @property
    def dbt_vars(self) -> dict[str, object]:
        """Vars every dbt step receives; `symbols` restricts the models' dirty detection."""
        return {"symbols": list(self.symbols)} if self.symbols else {}


@dataclass
class StepReport:
    """What one step did: its models (for dbt steps), detail lines, and why it failed or skipped."""

    step: str
    status: str
    seconds: float = 0.0
    models: tuple[NodeResult, ...] = ()
    skipped_nodes: tuple[NodeResult, ...] = ()
    invocation_id: str | None = None
    lines: list[str] = field(default_factory=list)
    reason: str | None = None


class Step(Protocol):
    name: str

    def plan(self, options: RefreshOptions) -> list[str]:
        """What the step would do, without doing it."""
        ...

    def run(self, options: RefreshOptions) -> StepReport: ...


@dataclass(frozen=True)
class DbtBuildStep:
    """`dbt build --select <selection>`: models, their tests and unit tests."""

    name: str
    select: tuple[str, ...]

    def dbt_args(self, options: RefreshOptions) -> list[str]:
        return [
            "build",
            "--select",
            *self.select,
            *(["--full-refresh"] if options.full_refresh else []),
        ]

    def plan(self, options: RefreshOptions) -> list[str]:
        lines = [f"dbt {' '.join(self.dbt_args(options))}"]
        if options.dbt_vars:
            lines[0] += f" --vars {options.dbt_vars}"
        nodes = list_nodes(self.select, variables=options.dbt_vars)
        with _read_only_warehouse() as con:
            for node in nodes:
                lines.append(
                    _model_plan(con, node["name"], node["config"]["materialized"], options)
                )
        return lines

    def run(self, options: RefreshOptions) -> StepReport:
        started = time.perf_counter()
        try:
            result = run_dbt(
                self.dbt_args(options),
                variables=options.dbt_vars,
                echo=options.verbose,
                on_node_done=_log_node,
            )
        except DbtRunError as exc:
            nodes = exc.result.nodes if exc.result else ()
            return StepReport(
                self.name,
                "failed",
                time.perf_counter() - started,
                models=tuple(n for n in nodes if n.resource_type == "model"),
                skipped_nodes=tuple(n for n in nodes if n.status == "skipped"),
                reason=str(exc),
            )
        return StepReport(
            self.name,
            "success",
            result.seconds,
            models=result.models,
            invocation_id=result.invocation_id,
        )


@dataclass(frozen=True)
class PublishStep:
    """Write a file from the warehouse (e.g. the returns matrix) under the lakehouse folder."""

    name: str
    target: Callable[[], Path]
    publish: Callable[[duckdb.DuckDBPyConnection], PublishedFile]

    def plan(self, options: RefreshOptions) -> list[str]:
        path = self.target()
        state = "replacing the current file" if path.exists() else "a new file"
        return [f"write {path} ({state}), atomically"]

    def run(self, options: RefreshOptions) -> StepReport:
        started = time.perf_counter()
        with duckdb.connect(str(warehouse_path())) as con:
            published = self.publish(con)
        line = f"wrote {published.path}: {published.rows} dates x {published.columns} symbols"
        log.info("  %s", line)
        return StepReport(self.name, "success", time.perf_counter() - started, lines=[line])


# target -> its steps, run in this order; `--all` runs every target.
TARGETS: dict[str, tuple[Step, ...]] = {
    "bars": (DbtBuildStep("build bars", ("staging", "bars")),),
    "returns": (
        DbtBuildStep("build returns and marts", ("returns", "marts")),
        PublishStep("publish returns matrix", returns_matrix_path, publish_returns_matrix),
    ),
}
TARGET_ORDER: tuple[str, ...] = ("bars", "returns")
TARGET_HELP: dict[str, str] = {
    "bars": "dbt build of staging and every bars model (models/staging, models/bars)",
    "returns": (
        "dbt build of returns and marts (models/returns, models/marts), then publish the wide "
        "returns matrix (data/lakehouse/returns_matrix.parquet)"
    ),
}


def target_flags() -> str:
    return ", ".join([*(f"--{t}" for t in TARGET_ORDER), "--all"])


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        COMMAND,
        help="refresh the warehouse's layers (bars, returns, ...) incrementally",
        description=(
            "Refresh the warehouse from what the raw layer holds. Choose targets explicitly "
            f"({target_flags()}); they run in the order {' -> '.join(TARGET_ORDER)}. Each model "
            "recomputes only the symbols with data newer than its watermark. Holds the writer "
            "lock, logs to .logs/refresh-YYYY-MM-DD.log and ends with a summary."
        ),
    )
    targets = parser.add_argument_group("targets (at least one)")
    for target in TARGET_ORDER:
        targets.add_argument(f"--{target}", action="store_true", help=TARGET_HELP[target])
    targets.add_argument(
        "--all", action="store_true", help=f"every target, in order: {', '.join(TARGET_ORDER)}"
    )
    parser.add_argument(
        "--full-refresh",
        action="store_true",
        help="rebuild every model from scratch instead of incrementally",
    )
    parser.add_argument(
        "--symbols",
        help=(
            "comma-separated symbols: incremental models recompute only these (the others stay "
            "pending for the next run); not with --full-refresh"
        ),
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (steps, models, their watermarks) and change nothing",
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("--quiet", action="store_true", help="summary and errors only")
    verbosity.add_argument(
        "--verbose", action="store_true", help="every dbt node and dbt's own output"
    )
    parser.set_defaults(handler=run)


def options_from_args(args: argparse.Namespace) -> RefreshOptions:
    chosen = TARGET_ORDER if args.all else tuple(t for t in TARGET_ORDER if getattr(args, t))
    if not chosen:
        raise CliError(f"no target given; choose one or more of {target_flags()}")
    symbols = parse_symbols(args.symbols)
    if symbols and args.full_refresh:
        raise CliError(
            "--symbols cannot be combined with --full-refresh: a full rebuild replaces every "
            "symbol's rows"
        )
    return RefreshOptions(
        targets=chosen,
        full_refresh=args.full_refresh,
        symbols=symbols,
        dry_run=args.dry_run,
        quiet=args.quiet,
        verbose=args.verbose,
    )


def run(args: argparse.Namespace) -> int:
    # Logging first, so that an error in the options is logged once and printed once.
    log_file = setup_logging(LOG_NAME, verbose=args.verbose, quiet=args.quiet)
    log.debug("log file %s", log_file)
    options = options_from_args(args)
    if options.dry_run:
        print_plan(options)
        return 0
    target = warehouse_path()
    if not target.exists():
        raise FileNotFoundError(
            f"no warehouse at {target}: run `python orchestrate.py ingest` first"
        )
    run_id = new_run_id("refresh")
    with WriterLock(target, run_id, COMMAND):
        log.info("daily-refresh %s: %s on %s", run_id, ", ".join(options.targets), target)
        started = time.perf_counter()
        before = 0 if options.full_refresh else _bars_watermark()
        reports = run_steps(options)
        lines = summary_lines(
            run_id, options, reports, before=before, total=time.perf_counter() - started
        )
    log_summary(lines)
    failed = next((r for r in reports if r.status == "failed"), None)
    if failed is None:
        return 0
    reason = f"daily-refresh failed at step '{failed.step}': {failed.reason}"
    log.error("error: %s", reason)
    print(f"error: {reason}", file=sys.stderr)
    return 1


def selected_steps(options: RefreshOptions) -> list[Step]:
    return [step for target in options.targets for step in TARGETS[target]]


def run_steps(options: RefreshOptions) -> list[StepReport]:
    steps = selected_steps(options)
    progress = Progress(COMMAND, len(steps), quiet=options.quiet)
    reports: list[StepReport] = []
    for done, step in enumerate(steps, start=1):
        if any(r.status == "failed" for r in reports):
            reports.append(StepReport(step.name, "skipped", reason="an earlier step failed"))
            continue
        log.info("step %d/%d: %s", done, len(steps), step.name)
        started = time.perf_counter()
        try:
            reports.append(step.run(options))
        except Exception as exc:  # the step's own failure: reported, and the run stops here
            log.debug("step %s failed", step.name, exc_info=True)
            reason = one_line(f"{type(exc).__name__}: {exc}")
            reports.append(
                StepReport(step.name, "failed", time.perf_counter() - started, reason=reason)
            )
        progress.update(done, step.name)
    return reports


def _log_node(node: NodeResult) -> None:
    level = logging.INFO if node.resource_type == "model" or node.failed else logging.DEBUG
    log.log(level, "  %s %s: %s in %.1fs", node.resource_type, node.name, node.status, node.seconds)


# -- plan (dry run) -----------------------------------------------------------------------------


@contextmanager
def _read_only_warehouse() -> Iterator[duckdb.DuckDBPyConnection | None]:
    """A read-only connection to the warehouse, or None when it is absent or being written."""
    target = warehouse_path()
    if not target.exists():
        yield None
        return
    try:
        con = duckdb.connect(str(target), read_only=True)
    except duckdb.IOException:
        holder = current_writer(target)
        who = f" by {holder.describe()}" if holder else ""
        log.warning("  (watermarks not shown: the warehouse is being written%s)", who)
        yield None
        return
    try:
        yield con
    finally:
        con.close()


def _table_exists(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
    row = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [schema, name],
    ).fetchone()
    return bool(row and row[0])


def _model_plan(
    con: duckdb.DuckDBPyConnection | None, name: str, materialized: str, options: RefreshOptions
) -> str:
    line = f"  {name} ({materialized})"
    if materialized != "incremental":
        return line
    if options.full_refresh:
        return f"{line}: full rebuild"
    if con is None:
        return f"{line}: watermark not readable"
    if not _table_exists(con, "state", name):
        return f"{line}: first build, every symbol"
    partitions, low, high, updated = con.execute(
        "select count(*), min(last_batch_id), max(last_batch_id), max(updated_at) "
        f"from state.{name}"
    ).fetchone()
    newer = con.execute(
        "select count(*) from raw.load_batches where batch_id > ?", [low or 0]
    ).fetchone()[0]
    scope = f"; only {', '.join(options.symbols)}" if options.symbols else ""
    return (
        f"{line}: {partitions} partitions at batches {low}..{high} "
        f"(updated {updated:%Y-%m-%d %H:%M}), {newer} load batches since; "
        f"recomputes the symbols they touched{scope}"
    )


def print_plan(options: RefreshOptions) -> None:
    """Log the steps the run would take, with each model's watermark; change nothing."""
    steps = selected_steps(options)
    log.info("daily-refresh --dry-run on %s (nothing is changed)", warehouse_path())
    if not warehouse_path().exists():
        log.warning(
            "no warehouse at %s yet: run `python orchestrate.py ingest` first", warehouse_path()
        )
    for done, step in enumerate(steps, start=1):
        log.info("step %d/%d: %s", done, len(steps), step.name)
        for line in step.plan(options):
            log.info("  %s", line)
    skipped = [t for t in TARGET_ORDER if t not in options.targets]
    for target in skipped:
        log.info("not planned: --%s (not requested)", target)


# -- summary ------------------------------------------------------------------------------------


def _bars_watermark() -> int:
    """The newest load batch bars_1d had processed before this run (0 before its first build)."""
    with duckdb.connect(str(warehouse_path()), read_only=True) as con:
        if not _table_exists(con, "state", "bars_1d"):
            return 0
        return int(
            con.execute("select coalesce(max(last_batch_id), 0) from state.bars_1d").fetchone()[0]
        )


def _quality_lines(
    con: duckdb.DuckDBPyConnection, reports: Sequence[StepReport], before: int
) -> list[str]:
    """Gaps flagged, OHLC repairs and rejects of the batches this run brought into the bars."""
    lines: list[str] = []
    invocations = {
        m.name: r.invocation_id for r in reports if r.status == "success" for m in r.models
    }
    if "kline_gaps" in invocations:
        gaps, missing = con.execute(
            "select count(*), coalesce(sum(missing_bar_count), 0) from main.kline_gaps"
        ).fetchone()
        lines.append(f"gaps flagged: {gaps} kline gaps ({missing} missing bars) in kline_gaps")
    if "returns_daily" in invocations:
        spans = con.execute(
            "select count(*) from main.returns_daily "
            "where invocation_id = ? and spans_missing_days",
            [invocations["returns_daily"]],
        ).fetchone()[0]
        lines.append(f"returns written over missing days (flagged): {spans}")
    if "bars_1d" in invocations:
        repairs = con.execute(
            "select count(*) filter (where repaired_high), count(*) filter (where repaired_low) "
            "from main.bars_1d where invocation_id = ?",
            [invocations["bars_1d"]],
        ).fetchone()
        lines.append(f"OHLC repairs in daily bars written: {repairs[0]} highs, {repairs[1]} lows")
        lines += _reject_lines(con, before)
    return lines


def _reject_lines(con: duckdb.DuckDBPyConnection, before: int) -> list[str]:
    newest = con.execute("select coalesce(max(batch_id), 0) from raw.load_batches").fetchone()[0]
    if newest <= before:
        return [f"rejects: no load batch after batch {before}"]
    rows = con.execute(
        "select reason, count(*) as n from raw.rejects where batch_id > ? "
        "group by reason order by n desc, reason limit 5",
        [before],
    ).fetchall()
    total = sum(n for _, n in rows)
    lines = [f"rejects in load batches {before + 1}..{newest}: {total}"]
    lines += [f"  {n} x {reason}" for reason, n in rows]
    return lines


def summary_lines(
    run_id: str,
    options: RefreshOptions,
    reports: Sequence[StepReport],
    *,
    before: int,
    total: float,
) -> list[str]:
    failed = any(r.status == "failed" for r in reports)
    lines = [
        f"daily-refresh {run_id}: {'failed' if failed else 'success'} in {total:.1f}s "
        f"({', '.join(options.targets)}{', full refresh' if options.full_refresh else ''})"
    ]
    for report in reports:
        lines.append(f"step {report.step}: {report.status} in {report.seconds:.1f}s")
        lines += [f"  {_model_line(model)}" for model in report.models]
        lines += [f"  {line}" for line in report.lines]
    with duckdb.connect(str(warehouse_path())) as con:
        lines += _quality_lines(con, reports, before)
    lines += _skipped_lines(options, reports)
    return lines


def _model_line(model: NodeResult) -> str:
    if model.status != "success":
        return f"{model.name}: {model.status}"
    rows = "a view" if model.rows_written is None else f"{model.rows_written} rows written"
    return f"{model.name}: {model.status}, {rows} in {model.seconds:.1f}s"


def _skipped_nodes_line(report: StepReport) -> list[str]:
    """Nodes dbt skipped because a node they depend on failed: the models by name, tests counted."""
    models = [n.name for n in report.skipped_nodes if n.resource_type == "model"]
    others = len(report.skipped_nodes) - len(models)
    if not report.skipped_nodes:
        return []
    named = f"models {', '.join(models)} and " if models else ""
    return [f"skipped in step {report.step}: {named}{others} other nodes (upstream failed)"]


def _skipped_lines(options: RefreshOptions, reports: Sequence[StepReport]) -> list[str]:
    lines = [
        f"skipped target --{t}: not requested" for t in TARGET_ORDER if t not in options.targets
    ]
    lines += [f"skipped step {r.step}: {r.reason}" for r in reports if r.status == "skipped"]
    for report in reports:
        lines += _skipped_nodes_line(report)
    for report in reports:
        lines += [
            f"skipped recomputation of {m.name}: no load batch after its watermark"
            for m in report.models
            if m.materialized == "incremental" and m.rows_written == 0
        ]
    return lines
