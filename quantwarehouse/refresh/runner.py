"""How `daily-refresh` runs its steps: the plan, the lock, progress, the run manifest and its
stage cache, the summary, alerts and the exit status.

Targets always run in `TARGET_ORDER` (`--all`: ingest first, then every target with its quality
gates). Steps name the steps they need: a step whose need failed as a whole is skipped, the
others go on (a failing EMA build does not stop the features). A gate whose verdict the next
step does not need validates in the gates' worker while the run goes on (`is_deferred`); it is
waited for before the first step needing it, or at the end. Symbols that failed or whose
inputs are stale are skipped downstream (`RunContext.excluded`). The exit status is 1 when any
step failed (even partly) or any gate failed, and the last line on stderr says why.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import duckdb

from expectations.worker import GateWorker
from quantwarehouse.alerts import (
    TELEGRAM_CHAT_ENV,
    TELEGRAM_TOKEN_ENV,
    WEBHOOK_URL_ENV,
    Alert,
    AlertSettings,
    is_configured,
    send_alert,
)
from quantwarehouse.cli import CliError
from quantwarehouse.dbt import DbtRunError, one_line, parse_project
from quantwarehouse.lakehouse import publish_returns_matrix, returns_matrix_path
from quantwarehouse.lakehouse_features import features_matrix_path, publish_features_matrix
from quantwarehouse.lock import WriterLock
from quantwarehouse.logs import log_summary
from quantwarehouse.manifest import (
    RunManifest,
    cache_enabled,
    cached_stage,
    hash_parts,
    past_manifests,
    typical_seconds,
)
from quantwarehouse.paths import runs_dir, warehouse_path
from quantwarehouse.progress import Progress
from quantwarehouse.refresh.context import (
    CACHED,
    FAILED,
    SKIPPED,
    SUCCESS,
    ProjectLoad,
    RefreshOptions,
    RunContext,
    StepReport,
)
from quantwarehouse.refresh.state import known_symbols, relation_exists
from quantwarehouse.refresh.steps import (
    DbtStep,
    GateStep,
    IngestStep,
    PublishStep,
    ResetSymbolsStep,
    Step,
    dbt_code_hash,
    shown,
)
from quantwarehouse.refresh.summary import skipped_symbol_lines, summary_lines
from quantwarehouse.runs import new_run_id

log = logging.getLogger("quantwarehouse.commands.daily_refresh")

Finish = Callable[[], StepReport]  # a started step's report (waits for what it still does)

COMMAND = "daily-refresh"
TARGET_ORDER: tuple[str, ...] = ("bars", "returns", "emas", "features")
ALL_TARGETS: tuple[str, ...] = ("ingest", *TARGET_ORDER)
TARGET_HELP: dict[str, str] = {
    "bars": "dbt build of staging and the bar families (models/staging, models/bars)",
    "returns": (
        "dbt build of returns and marts (models/returns, models/marts), then publish the wide "
        "returns matrix (data/lakehouse/returns_matrix.parquet)"
    ),
    "emas": "dbt build of the EMA models (python_models/emas)",
    "features": (
        "dbt build of the features matrix (python_models/features), then publish its monthly "
        "files (data/lakehouse/features_matrix/)"
    ),
}
BARS_NEEDS = ("build bars", "gate bars")


def target_steps(target: str, validate: bool) -> list[Step]:
    """A target's steps in order; its gate steps only with `validate`."""
    gates = {
        "ingest": [GateStep("gate raw", ("raw",), after="ingest", needs=("ingest",))],
        "bars": [
            GateStep("gate bars", ("staging", "bars"), after="build bars", needs=("build bars",)),
            GateStep("gate bar families", ("bar_families",), after="build bars",
                     needs=("build bars",)),
        ],
        "returns": [GateStep("gate returns", ("returns",), after="build returns and marts",
                             needs=("build returns and marts",))],
        "emas": [GateStep("gate emas", ("emas",), after="build emas", needs=("build emas",))],
        "features": [GateStep("gate features", ("features",), after="build features",
                              needs=("build features",))],
    }[target]  # fmt: skip
    build: dict[str, list[Step]] = {
        "ingest": [IngestStep()],
        "bars": [
            DbtStep("build bars", ("staging", "bars"), needs=("gate raw",), ema_filtered=True)
        ],
        "returns": [
            DbtStep("build returns and marts", ("returns", "marts"), BARS_NEEDS, checks_inputs=True)
        ],
        "emas": [
            DbtStep(
                "build emas",
                ("emas",),
                (*BARS_NEEDS, "gate bar families"),
                checks_inputs=True,
                ema_filtered=True,
                imports=("quantwarehouse.ema_models",),
            )
        ],
        "features": [
            DbtStep(
                "build features",
                ("features",),
                BARS_NEEDS,
                checks_inputs=True,
                imports=("quantwarehouse.features",),
            )
        ],
    }
    publish: dict[str, list[Step]] = {
        "returns": [
            PublishStep("publish returns matrix", "returns_daily", returns_matrix_path,
                        publish_returns_matrix, needs=("build returns and marts", "gate returns"))
        ],
        "features": [
            PublishStep("publish features matrix", "features_matrix", features_matrix_path,
                        publish_features_matrix, needs=("build features", "gate features"))
        ],
    }  # fmt: skip
    return [*build[target], *(gates if validate else []), *publish.get(target, [])]


def build_steps(options: RefreshOptions) -> list[Step]:
    steps = [step for target in options.targets for step in target_steps(target, options.validate)]
    if not options.full_refresh_symbols:
        return steps
    dbt_steps = [step for step in steps if isinstance(step, DbtStep)]
    reset = ResetSymbolsStep(models=lambda ctx: [m for s in dbt_steps for m in s.incremental(ctx)])
    # The builds recompute the reset symbols: they must not run on a reset that failed.
    steps = [
        replace(step, needs=(*step.needs, reset.name)) if isinstance(step, DbtStep) else step
        for step in steps
    ]
    return [reset, *steps]


# -- the run --------------------------------------------------------------------------------------


def check_symbols(options: RefreshOptions, warehouse: Path) -> None:
    """Refuse symbols the raw layer has never seen, listing the ones it has (with --all the
    ingest may bring them: not checked)."""
    if not options.symbols or not warehouse.exists() or "ingest" in options.targets:
        return
    try:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            known = known_symbols(con)
    except duckdb.IOException:  # being written by another process: the lock will say by whom
        return
    unknown = [s for s in options.symbols if s not in known]
    if unknown:
        raise CliError(
            f"--symbols: unknown symbol {', '.join(unknown)}; the warehouse has "
            f"{len(known)} symbols: {shown(known, 40)}"
        )


def _bars_watermark(con: duckdb.DuckDBPyConnection) -> int:
    """The newest load batch bars_1d had processed before this run (0 before its first build)."""
    if not relation_exists(con, "state.bars_1d"):
        return 0
    return int(
        con.execute("select coalesce(max(last_batch_id), 0) from state.bars_1d").fetchone()[0]
    )


def new_context(options: RefreshOptions, run_id: str) -> RunContext:
    """Read what the run starts from: the warehouse's watermarks, and the parsed dbt project
    (in the background: see `ProjectLoad`); start the gates' worker (`expectations.worker`)."""
    warehouse = warehouse_path()
    log.debug("parsing the dbt project")
    ctx = RunContext(
        options=options,
        run_id=run_id,
        run_dir=runs_dir() / run_id,
        warehouse=warehouse,
        project=ProjectLoad(lambda: parse_project(write_json=False)),
    )
    if warehouse.exists():
        with ctx.reader() as con:
            ctx.batch_before = _bars_watermark(con)
    if options.validate and not options.dry_run:
        ctx.gate_worker = GateWorker(ctx.run_dir)
    return ctx


def _hash(step: Step, ctx: RunContext) -> str | None:
    if not ctx.warehouse.exists():
        return None
    parts = step.fingerprint(ctx)
    if parts is None:
        return None
    if "code" not in ctx.memo:  # the code does not change during a run: hashed once
        ctx.memo["code"] = dbt_code_hash()
    return hash_parts([step.name, ctx.memo["code"], *parts])


def start_one(ctx: RunContext, step: Step, record: RunManifest, past: list[dict]) -> Finish:
    """Start `step`; the function returned gives its report, recorded in the run manifest. A gate
    step's verdicts come from the gates' worker: they may be waited for later (see run_steps)."""
    blocked = ctx.blocked_by(step.needs)
    if blocked is not None:
        report = StepReport(step.name, SKIPPED, reason=blocked, blocks_downstream=True)
        record.finish(step.name, SKIPPED, error=blocked)
        return lambda: report
    input_hash = _hash(step, ctx)
    if input_hash is not None and cache_enabled(ctx.options.cache):
        hit = cached_stage(past, step.name, input_hash)
        if hit is not None:
            record.finish(step.name, CACHED, error=None, cached_from=hit)
            cached = StepReport(
                step.name, CACHED, reason=f"stage cache: inputs unchanged since run {hit}"
            )
            return lambda: cached
    record.start(step.name, input_hash)
    started = time.perf_counter()
    begin = step.start if isinstance(step, GateStep) else _ran(step)
    with record.stage_log(step.name):
        try:
            finish = begin(ctx)
        except Exception as exc:
            failure = _failure(step, started, exc)
            finish = lambda: failure  # noqa: E731

    def finished() -> StepReport:
        with record.stage_log(step.name):
            try:
                report = finish()
            except Exception as exc:
                report = _failure(step, started, exc)
        _record_end(ctx, step, record, report)
        return report

    return finished


def _ran(step: Step) -> Callable[[RunContext], Finish]:
    """A step run to its end at once, as a start whose finish is its report."""

    def begin(ctx: RunContext) -> Finish:
        report = step.run(ctx)
        return lambda: report

    return begin


def _failure(step: Step, started: float, exc: Exception) -> StepReport:
    """The step's own failure: reported; the steps needing it skip."""
    log.debug("step %s failed", step.name, exc_info=True)
    return StepReport(
        step.name, FAILED, time.perf_counter() - started,
        reason=one_line(f"{type(exc).__name__}: {exc}"), blocks_downstream=True,
    )  # fmt: skip


def _record_end(ctx: RunContext, step: Step, record: RunManifest, report: StepReport) -> None:
    if report.status == SUCCESS:
        # What the result is valid for: the inputs, and the outputs as the step left them.
        record.stage(step.name).input_hash = _hash(step, ctx)
    outputs = {
        **report.outputs,
        "invocation_ids": list(report.invocation_ids),
        "rows_written": {m.name: m.rows_written for m in report.models},
        "model_seconds": {m.name: round(m.seconds, 3) for m in report.models},
        "symbols": report.symbols,
        "failed_symbols": report.failed_symbols,
    }
    error = report.reason if report.failed or report.status == SKIPPED else None
    record.finish(
        step.name, report.status, seconds=round(report.seconds, 3), outputs=outputs, error=error
    )


def _time_left(steps: Sequence[Step], past: list[dict]) -> float | None:
    """The remaining steps' durations in the last run where they succeeded, if all are known."""
    known = [typical_seconds(past, step.name) for step in steps]
    return None if any(s is None for s in known) else sum(s for s in known if s is not None)


def warm_imports(steps: Sequence[Step]) -> threading.Thread | None:
    """Import, in a background thread, the modules the Python models of `steps` import and this
    process has not imported yet (scipy.signal alone, behind the EMA and features models, takes a
    second). The thread, if one was needed, is returned started."""
    modules = [
        module
        for step in steps
        if isinstance(step, DbtStep)
        for module in step.imports
        if module not in sys.modules
    ]
    if not modules:
        return None
    thread = threading.Thread(
        target=lambda: [importlib.import_module(m) for m in modules],
        name="warm-imports",
        daemon=True,
    )
    thread.start()
    return thread


def is_deferred(ctx: RunContext, step: Step, following: Sequence[Step]) -> bool:
    """Whether the run goes on while `step` finishes: a gate validating in the gates' worker,
    when the next step other than a gate does not need it (its verdict is then waited for before
    the first step that does, or at the end). A gate followed by another gate is not deferred
    when the step after them needs it: its suites then go to the worker before the other's."""
    if not isinstance(step, GateStep) or ctx.gate_worker is None:
        return False
    builds = [s for s in following if not isinstance(s, GateStep)]
    return bool(builds) and step.name not in ctx.needed_by(builds[0].name)


def _conclude(ctx: RunContext, name: str, finish: Finish) -> None:
    report = finish()
    ctx.reports[name] = report
    status = f"  {name}: {report.status} in {report.seconds:.1f}s"
    if report.reason and report.status != SUCCESS:
        status += f" ({report.reason})"
    log.log(logging.ERROR if report.failed else logging.INFO, status)


def run_steps(ctx: RunContext, steps: Sequence[Step], record: RunManifest) -> None:
    past = past_manifests(runs_dir(), COMMAND, exclude=ctx.run_id)
    progress = Progress(COMMAND, len(steps), quiet=ctx.options.quiet)
    pending: dict[str, Finish] = {}
    for index, step in enumerate(steps, start=1):
        for name in [n for n in pending if n in ctx.needed_by(step.name)]:
            _conclude(ctx, name, pending.pop(name))
        log.info("step %d/%d: %s", index, len(steps), step.name)
        if isinstance(step, GateStep) and ctx.project.loaded():
            # The gate waits for the gates' worker: a core and the interpreter are free (before
            # the project is loaded, its parse has the interpreter).
            warm_imports(steps[index:])
        finish = start_one(ctx, step, record, past)
        if is_deferred(ctx, step, steps[index:]):
            log.info("  %s: validating in the gates' worker while the next steps run", step.name)
            pending[step.name] = finish
        else:
            _conclude(ctx, step.name, finish)
        remaining = steps[index:]
        eta = _time_left(remaining, past)
        if remaining:
            left = f", ~{eta:.0f}s by earlier runs" if eta is not None else ""
            log.info("  remaining: %s%s", ", ".join(s.name for s in remaining), left)
        progress.update(index, step.name, eta=eta)
    for name, finish in pending.items():
        _conclude(ctx, name, finish)


def _failure_reason(reports: Sequence[StepReport]) -> str | None:
    failed = [r for r in reports if r.failed]
    if not failed:
        return None
    return "; ".join(f"step '{r.step}' {r.status}: {r.reason}" for r in failed)


def alert_severity(reports: Sequence[StepReport], alert_on_error: bool) -> str | None:
    """ "error" when a step failed, "warning" when only quality gates failed and
    --alert-on-error is given, else None (no alert)."""
    if any(r.failed and not r.is_violation for r in reports):
        return "error"
    if alert_on_error and any(r.is_violation for r in reports):
        return "warning"
    return None


def alert_lines(ctx: RunContext, summary: Sequence[str]) -> list[str]:
    """Send an alert on failures (and on gate violations with --alert-on-error); what happened."""
    reports = list(ctx.reports.values())
    severity = alert_severity(reports, ctx.options.alert_on_error)
    if severity is None:
        return []
    settings = AlertSettings.from_env()
    if not is_configured(settings):
        if not ctx.options.alert_on_error:
            return []
        note = settings.half_configured() or (
            f"no alert channel configured (set {TELEGRAM_TOKEN_ENV} and {TELEGRAM_CHAT_ENV}, "
            f"or {WEBHOOK_URL_ENV})"
        )
        return [f"alerts: none sent: {note}"]
    what = "failed" if severity == "error" else "quality gates failed"
    alert = Alert(
        title=f"quantwarehouse daily-refresh {ctx.run_id} {what}",
        lines=(
            *(f"{r.step}: {r.status}: {r.reason}" for r in reports if r.failed),
            *skipped_symbol_lines(ctx)[:10],
            summary[0],
        ),
        run_id=ctx.run_id,
        severity=severity,
    )
    return [delivery.describe() for delivery in send_alert(alert, settings)]


def print_plan(ctx: RunContext, steps: Sequence[Step], not_requested: Sequence[str]) -> None:
    """Log the steps the run would take and what each would do; change nothing."""
    options = ctx.options
    log.info("daily-refresh --dry-run on %s (nothing is changed)", ctx.warehouse)
    if options.symbols:
        log.info("symbols: %s", ", ".join(options.symbols))
    if options.ema_filter:
        log.info("EMA filter: %s (dbt vars %s)", options.ema_filter.describe(),
                 options.ema_filter.dbt_vars)  # fmt: skip
    for flag in ("resume", "validate", "cache", "alert_on_error"):
        if getattr(options, flag):
            log.info("--%s", flag.replace("_", "-"))
    con = None
    if ctx.warehouse.exists():
        con = ctx.reader()
    else:
        log.warning("no warehouse at %s yet: it is created by the ingest", ctx.warehouse)
    try:
        for index, step in enumerate(steps, start=1):
            log.info("step %d/%d: %s", index, len(steps), step.name)
            for line in step.plan(ctx, con):
                log.info("  %s", line)
    finally:
        if con is not None:
            con.close()
    for target in not_requested:
        log.info("not planned: --%s (not requested)", target)


def fail(reason: str) -> int:
    """The last line of a failed run (exit status 1)."""
    log.error("error: daily-refresh failed: %s", reason)
    print(f"error: daily-refresh failed: {reason}", file=sys.stderr)
    return 1


def abort(run_id: str, reason: str) -> int:
    """A run that could not start its steps (the dbt project does not parse): alert, fail."""
    settings = AlertSettings.from_env()
    if is_configured(settings):
        alert = Alert(f"quantwarehouse daily-refresh {run_id} failed", (reason,), run_id=run_id)
        for delivery in send_alert(alert, settings):
            log.info(delivery.describe())
    return fail(reason)


def start(options: RefreshOptions, run_id: str, steps: Sequence[Step]) -> RunContext:
    """The run's context; the dbt project must parse unless the first step (the ingest) can run
    while it does, in which case a parse failure stops the run after that step."""
    ctx = new_context(options, run_id)
    ctx.needs = {step.name: step.needs for step in steps}
    if not steps or not isinstance(steps[0], IngestStep) or options.dry_run:
        try:
            ctx.project.manifest()  # raises DbtRunError when the project does not parse
        except DbtRunError:
            ctx.stop_gate_worker()
            raise
    return ctx


def run_refresh(options: RefreshOptions, arguments: list[str]) -> int:
    steps = build_steps(options)
    order = ALL_TARGETS if "ingest" in options.targets else TARGET_ORDER
    not_requested = [t for t in order if t not in options.targets]
    target = warehouse_path()
    if "ingest" not in options.targets and not target.exists():
        raise FileNotFoundError(
            f"no warehouse at {target}: run `python orchestrate.py ingest` (or daily-refresh "
            "--all) first"
        )
    run_id = new_run_id("refresh")
    if options.dry_run:
        check_symbols(options, target)
        try:
            ctx = start(options, run_id, steps)
        except DbtRunError as exc:
            return fail(str(exc))
        print_plan(ctx, steps, not_requested)
        return 0
    with WriterLock(target, run_id, COMMAND):
        check_symbols(options, target)
        try:
            ctx = start(options, run_id, steps)
        except DbtRunError as exc:
            return abort(run_id, str(exc))
        log.info("daily-refresh %s: %s on %s", run_id, ", ".join(options.targets), target)
        record = RunManifest(ctx.run_dir, run_id, COMMAND, arguments)
        record.plan(step.name for step in steps)
        started = time.perf_counter()
        try:
            with ctx.holding_warehouse():
                run_steps(ctx, steps, record)
        except DbtRunError as exc:  # the project, parsed during the ingest, does not parse
            record.close(FAILED, str(exc))
            return abort(run_id, str(exc))
        finally:
            ctx.stop_gate_worker()
        reason = _failure_reason(list(ctx.reports.values()))
        record.close(FAILED if reason else SUCCESS, reason)
    lines = summary_lines(ctx, total=time.perf_counter() - started, not_requested=not_requested)
    lines += alert_lines(ctx, lines)
    log_summary(lines)
    return 0 if reason is None else fail(reason)
