"""The steps of `daily-refresh`: ingest, dbt builds, quality gates, published files.

Every step can describe itself without doing anything (`plan`, for `--dry-run`), run
(`run` -> `StepReport`), and say what its result depends on (`fingerprint`, for the stage cache).
A step names the steps it `needs`: when one of them failed as a whole or was stopped by a quality
gate, the step is skipped with that reason.

A dbt step that fails in a model is retried symbol by symbol (bisection over the symbols the
failed models had pending, `dbt run` restricted with the var `symbols`), so that one bad symbol
does not hold back the others: the symbols that still fail are skipped by every step needing this
one and the step ends `partial`. Before returns, EMAs and features run, the state tables are
checked: a symbol whose inputs lag (see `state.stale_symbols`) is skipped by that step, with the
reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import duckdb

from expectations.gates import (
    SAMPLE_LIMIT,
    GateResult,
    GateSession,
    GateSettings,
    PendingGate,
    Slice,
)
from expectations.suites import layer_suites
from ingest.loader import run_load
from ingest.raw_store import RawStore
from quantwarehouse.dbt import DbtResult, DbtRunError, NodeResult, list_nodes, one_line, run_dbt
from quantwarehouse.lakehouse import PublishedFile
from quantwarehouse.manifest import hash_files
from quantwarehouse.paths import DBT_PROJECT_DIR, REPO_ROOT
from quantwarehouse.progress import Progress
from quantwarehouse.refresh.context import (
    CACHED,
    FAILED,
    PARTIAL,
    SKIPPED,
    SUCCESS,
    RunContext,
    StepReport,
)
from quantwarehouse.refresh.filters import selected_models
from quantwarehouse.refresh.state import (
    RAW_SCHEMA,
    Model,
    count_symbol_rows,
    delete_symbols,
    load_batches_like,
    newest_load_batch,
    pending_symbols,
    relation_exists,
    stale_symbols,
    state_fingerprint,
)
from quantwarehouse.warehouse import connect

log = logging.getLogger("quantwarehouse.commands.daily_refresh")
T = TypeVar("T")

# A symbol no data has: a run restricted to it recomputes nothing, which tells a failure that
# does not depend on the data (a bug, a missing relation) from one caused by some symbol's rows.
NO_SYMBOL = "-"
# Unit tests test the code, not the data: `make test` runs them (dbt's advice: not in production).
BUILD_RESOURCE_TYPES = frozenset({"model", "test", "seed", "snapshot"})
SHOWN_SYMBOLS = 8


def clipped(text: str, limit: int = 240) -> str:
    """A long error message cut for a summary line (the log keeps it whole)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(symbols: Iterable[str], limit: int = SHOWN_SYMBOLS) -> str:
    """`A, B, C and 12 more`."""
    names = sorted(symbols)
    head = ", ".join(names[:limit])
    return f"{head} and {len(names) - limit} more" if len(names) > limit else head


class Step(Protocol):
    name: str
    needs: tuple[str, ...]

    def plan(self, ctx: RunContext, con: duckdb.DuckDBPyConnection | None) -> list[str]: ...

    def run(self, ctx: RunContext) -> StepReport: ...

    def fingerprint(self, ctx: RunContext) -> list[object] | None:
        """What the step's result depends on (None: never cached)."""
        ...


def _code_files(*folders: Path, suffixes: tuple[str, ...] = (".sql", ".py", ".yml")) -> list[Path]:
    return [
        path
        for folder in folders
        for path in folder.rglob("*")
        if path.is_file() and path.suffix in suffixes and "__pycache__" not in path.parts
    ]


def dbt_code_hash() -> str:
    """The dbt project's code: models, macros, the project file, and the Python they import."""
    folders = [REPO_ROOT / name for name in ("models", "python_models", "macros", "quantwarehouse")]
    files = [*_code_files(*folders), DBT_PROJECT_DIR / "dbt_project.yml"]
    return hash_files(files, REPO_ROOT)


# -- ingest ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestStep:
    """Load the new data of the configured source (configs/refresh.yml) into the raw layer. A
    failed load stops nothing: the layers still refresh from what the raw layer holds."""

    name: str = "ingest"
    needs: tuple[str, ...] = ()

    def plan(self, ctx: RunContext, con: duckdb.DuckDBPyConnection | None) -> list[str]:
        config = ctx.options.config
        lines = [f"load from {config.describe_source()} (config {config.path})"]
        if ctx.options.resume and con is not None:
            source = config.build_source()
            batch = load_batches_like(con, source.name, source.parameters())
            if batch is not None:
                lines.append(f"skipped with --resume: load batch {batch} loaded the same already")
        return lines

    def fingerprint(self, ctx: RunContext) -> list[object] | None:
        return None  # the source may hold new data whatever the parameters: always load

    def run(self, ctx: RunContext) -> StepReport:
        started = time.perf_counter()
        config = ctx.options.config
        source = config.build_source()
        if ctx.options.resume and ctx.warehouse.exists():
            with ctx.reader() as con:
                batch = load_batches_like(con, source.name, source.parameters())
            if batch is not None:
                return StepReport(
                    self.name,
                    SKIPPED,
                    reason=f"--resume: load batch {batch} already loaded {source.name} with "
                    "the same parameters",
                )
        progress: Progress | None = None

        def report(done: int, total: int, label: str) -> None:
            nonlocal progress
            progress = progress or Progress(f"ingest {source.name}", total, quiet=ctx.options.quiet)
            progress.update(done, label)

        try:
            with connect(ctx.warehouse) as con:
                summary = run_load(source, RawStore(con), workers=config.source_options.workers,
                                   progress=report)  # fmt: skip
        except Exception as exc:  # e.g. the source is unreachable: the layers refresh what raw has
            log.debug("ingest failed", exc_info=True)
            reason = one_line(f"{type(exc).__name__}: {exc}")
            return StepReport(self.name, FAILED, time.perf_counter() - started, reason=reason)
        ok = summary.status == "success"
        return StepReport(
            self.name,
            SUCCESS if ok else FAILED,
            time.perf_counter() - started,
            lines=summary.lines(),
            reason=None if ok else f"load batch {summary.batch_id} {summary.status}",
            outputs={
                "batch_id": summary.batch_id,
                "rows_inserted": summary.stats.rows.inserted,
                "rows_revised": summary.stats.rows.revised,
                "rows_rejected": summary.stats.rows.rejected,
            },
        )


# -- reset (--full-refresh --symbols) --------------------------------------------------------------


@dataclass(frozen=True)
class ResetSymbolsStep:
    """Delete the symbols' rows and state from every incremental model the run builds, in one
    transaction; the dbt steps after it then recompute them from their first bar."""

    models: Callable[[RunContext], list[Model]]
    name: str = "reset symbols"
    needs: tuple[str, ...] = ()

    def plan(self, ctx: RunContext, con: duckdb.DuckDBPyConnection | None) -> list[str]:
        symbols = ctx.options.full_refresh_symbols
        if con is None:
            return [f"delete the rows and state of {shown(symbols)} (nothing built yet)"]
        counts = count_symbol_rows(con, self.models(ctx), symbols)
        lines = [f"delete the rows and state of {shown(symbols)}, in one transaction, from:"]
        lines += [f"  {model}: {rows} rows" for model, rows in counts.items()]
        return lines

    def fingerprint(self, ctx: RunContext) -> list[object] | None:
        return None

    def run(self, ctx: RunContext) -> StepReport:
        started = time.perf_counter()
        symbols = ctx.options.full_refresh_symbols
        with duckdb.connect(str(ctx.warehouse)) as con:
            deleted = delete_symbols(con, self.models(ctx), symbols)
        lines = [f"deleted {rows} rows of {shown(symbols)} from {m}" for m, rows in deleted.items()]
        for line in lines:
            log.info("  %s", line)
        return StepReport(self.name, SUCCESS, time.perf_counter() - started, lines=lines)


# -- dbt builds -----------------------------------------------------------------------------------


@dataclass
class Isolation:
    """The outcome of retrying a failed dbt step symbol group by symbol group."""

    failed: dict[str, str] = field(default_factory=dict)
    results: list[DbtResult] = field(default_factory=list)
    runs: int = 0


def merged_models(results: Sequence[DbtResult]) -> tuple[NodeResult, ...]:
    """Per model across several invocations: rows written and seconds added up, last status."""
    merged: dict[str, NodeResult] = {}
    for result in results:
        for node in result.models:
            before = merged.get(node.name)
            if before is None:
                merged[node.name] = node
                continue
            rows = None
            if before.rows_written is not None or node.rows_written is not None:
                rows = (before.rows_written or 0) + (node.rows_written or 0)
            merged[node.name] = replace(
                node, rows_written=rows, seconds=before.seconds + node.seconds
            )
    return tuple(merged.values())


def dbt_timings(results: Sequence[DbtResult]) -> dict[str, float]:
    """dbt's wall time and its nodes' own execution time: the difference is dbt's overhead
    (start-up, compilation, connections)."""
    return {
        "dbt_seconds": round(sum(r.seconds for r in results), 3),
        "node_seconds": round(sum(n.seconds for r in results for n in r.nodes), 3),
        "dbt_invocations": len(results),
    }


def _log_node(node: NodeResult) -> None:
    level = logging.INFO if node.resource_type == "model" or node.failed else logging.DEBUG
    log.log(level, "  %s %s: %s in %.1fs", node.resource_type, node.name, node.status, node.seconds)


@dataclass(frozen=True)
class DbtStep:
    """`dbt build --select <selection>`: models and their data tests (see `runs_data_tests`).

    checks_inputs  check the incremental models it reads are fresh first (returns, EMAs, features)
    ema_filtered   the EMA filters apply: families left out, filter vars passed
    imports        modules its Python models import (the runner imports them ahead: warm_imports)
    """

    name: str
    select: tuple[str, ...]
    needs: tuple[str, ...] = ()
    checks_inputs: bool = False
    ema_filtered: bool = False
    imports: tuple[str, ...] = ()

    # -- what it builds

    @staticmethod
    def runs_data_tests(ctx: RunContext) -> bool:
        """dbt's data tests run on the rows the build wrote (the var data_tests_on_written_rows,
        see macros/tests/get_where_subquery.sql); with the quality gates, which check that slice
        too, they are left out."""
        return not ctx.options.validate

    def nodes(self, ctx: RunContext) -> list[dict[str, Any]]:
        """The nodes `dbt build` runs (models, data tests unless the gates run), narrowed by the
        EMA filters."""
        key = ("nodes", self.name)
        if key not in ctx.memo:
            kinds = BUILD_RESOURCE_TYPES - (set() if self.runs_data_tests(ctx) else {"test"})
            found = list_nodes(self.select, resource_type="all", manifest=ctx.dbt_manifest)
            found = [n for n in found if n["resource_type"] in kinds]
            if self.ema_filtered and ctx.options.ema_filter:
                models = [n["name"] for n in found if n["resource_type"] == "model"]
                kept = set(selected_models(models, ctx.options.ema_filter))
                found = [n for n in found if n["resource_type"] != "model" or n["name"] in kept]
            ctx.memo[key] = found
        return ctx.memo[key]

    def model_names(self, ctx: RunContext) -> list[str]:
        return [n["name"] for n in self.nodes(ctx) if n["resource_type"] == "model"]

    def selection(self, ctx: RunContext) -> list[str]:
        narrowed = self.ema_filtered and bool(ctx.options.ema_filter)
        return self.model_names(ctx) if narrowed else list(self.select)

    def incremental(self, ctx: RunContext) -> list[Model]:
        return ctx.graph.incremental(self.model_names(ctx))

    def dbt_args(self, ctx: RunContext) -> list[str]:
        rebuild = ["--full-refresh"] if ctx.options.rebuilds_everything else []
        excluded = ["unit_test"] if self.runs_data_tests(ctx) else ["unit_test", "test"]
        exclusions = [arg for kind in excluded for arg in ("--exclude-resource-type", kind)]
        return ["build", "--select", *self.selection(ctx), *rebuild, *exclusions]

    def variables(self, ctx: RunContext, symbols: Iterable[str] = ()) -> dict[str, object]:
        found: dict[str, object] = {}
        symbols = sorted(symbols)
        if symbols:
            found["symbols"] = symbols
        excluded = ctx.excluded_for(self.name)
        if excluded:
            found["exclude_symbols"] = sorted(excluded)
        if self.ema_filtered:
            found.update(ctx.options.ema_filter.dbt_vars)
        if self.runs_data_tests(ctx):
            found["data_tests_on_written_rows"] = True
        return found

    def fingerprint(self, ctx: RunContext) -> list[object] | None:
        if ctx.options.full_refresh:
            return None  # a rebuild is asked for: never skipped
        models = self.incremental(ctx)
        with ctx.reader() as con:
            data = state_fingerprint(con, [*models, *ctx.graph.ancestors(m.name for m in models)])
            raw = newest_load_batch(con)
        non_incremental = [
            n["name"]
            for n in self.nodes(ctx)
            if n["resource_type"] == "model"
            and n["config"].get("materialized") not in ("incremental", "view")
        ]
        # Tables (marts) are rebuilt whole and may read the run's date (symbol_freshness).
        day = datetime.now(UTC).date().isoformat() if non_incremental else None
        return [self.dbt_args(ctx), self.variables(ctx, ctx.options.symbols), data, raw, day]

    # -- plan

    def plan(self, ctx: RunContext, con: duckdb.DuckDBPyConnection | None) -> list[str]:
        lines = [f"dbt {' '.join(self.dbt_args(ctx))}"]
        variables = self.variables(ctx, ctx.options.symbols)
        if variables:
            lines[0] += f" --vars {variables}"
        for node in self.nodes(ctx):
            if node["resource_type"] == "model":
                materialized = node["config"]["materialized"]
                lines.append(_model_plan(ctx, con, self.name, node["name"], materialized))
        tests = sum(1 for n in self.nodes(ctx) if n["resource_type"] != "model")
        if tests:
            lines.append(f"  and {tests} data tests on the rows written")
        if self.checks_inputs and con is not None:
            lines += self._plan_inputs(ctx, con)
        return lines

    def _plan_inputs(self, ctx: RunContext, con: duckdb.DuckDBPyConnection) -> list[str]:
        ancestors = ctx.graph.ancestors(self.model_names(ctx))
        missing = [a.name for a in ancestors if not relation_exists(con, a.state)]
        if missing:
            return [f"  inputs: {', '.join(missing)} not built yet (built earlier in this run?)"]
        stale = stale_symbols(con, ancestors, ctx.options.config.max_days_behind)
        if not stale:
            names = ", ".join(a.name for a in ancestors)
            return [f"  inputs fresh now ({names}): no symbol skipped so far"]
        return [f"  would skip {s.symbol}: {s.reason}" for s in stale.values()]

    # -- run

    def run(self, ctx: RunContext) -> StepReport:
        started = time.perf_counter()
        if self.checks_inputs:
            problem = self._check_inputs(ctx)
            if problem is not None:
                return problem
        symbols: list[str] = list(ctx.options.symbols)
        pending = self._pending(ctx)
        if ctx.options.resume and pending is not None:
            if not pending:
                return StepReport(
                    self.name,
                    SKIPPED,
                    reason="--resume: every symbol is current in "
                    + ", ".join(f"state.{m.name}" for m in self.incremental(ctx)),
                    symbols=0,
                )
            symbols = sorted(pending)
        count = len(pending) if pending is not None else None
        if count is not None:
            log.info("  %d symbols to recompute%s", count, self._excluded_note(ctx))
        rebuilt = self._rebuilt(ctx)
        if rebuilt and ctx.excluded_for(self.name):
            log.warning(
                "  %s built from scratch: every symbol is, the skipped ones too (dirty detection, "
                "which skips them, starts with the next run)",
                ", ".join(rebuilt),
            )
        nodes = self.nodes(ctx)
        progress = Progress(self.name, len(nodes), quiet=ctx.options.quiet)
        finished = 0

        def on_node(node: NodeResult) -> None:
            nonlocal finished
            finished += 1
            _log_node(node)
            progress.update(min(finished, len(nodes)), node.name)

        try:
            result = self._invoke(ctx, self.dbt_args(ctx), symbols, on_node)
        except DbtRunError as exc:
            return self._recover(ctx, exc, started, symbols, count)
        progress.update(len(nodes), "done")
        return StepReport(
            self.name,
            SUCCESS,
            time.perf_counter() - started,
            models=result.models,
            invocation_ids=(result.invocation_id,),
            symbols=count,
            outputs={**dbt_timings([result]), "rebuilt": rebuilt},
        )

    def _rebuilt(self, ctx: RunContext) -> list[str]:
        """The incremental models dbt builds from scratch: not built yet, or --full-refresh."""
        models = self.incremental(ctx)
        if ctx.options.rebuilds_everything or not ctx.warehouse.exists():
            return [m.name for m in models]
        with ctx.reader() as con:
            return [m.name for m in models if not relation_exists(con, m.relation)]

    def _excluded_note(self, ctx: RunContext) -> str:
        excluded = ctx.excluded_for(self.name)
        return f" ({len(excluded)} skipped: {shown(excluded)})" if excluded else ""

    def _invoke(
        self,
        ctx: RunContext,
        args: list[str],
        symbols: Iterable[str],
        on_node: Callable[[NodeResult], None] | None = _log_node,
    ) -> DbtResult:
        return run_dbt(
            args,
            variables=self.variables(ctx, symbols),
            echo=ctx.options.verbose,
            on_node_done=on_node,
            manifest=ctx.dbt_manifest,
            write_json=False,  # the run manifest and stage logs record the results
        )

    def _pending(self, ctx: RunContext) -> set[str] | None:
        """The symbols the step's incremental models have not caught up with (None: no such
        model, or no warehouse yet), without the excluded ones."""
        models = self.incremental(ctx)
        if not models or not ctx.warehouse.exists():
            return None
        with ctx.reader() as con:
            found = {s for m in models for s in pending_symbols(con, m, only=ctx.options.symbols)}
        return found - set(ctx.excluded_for(self.name))

    def _check_inputs(self, ctx: RunContext) -> StepReport | None:
        """Skip the symbols whose inputs are stale; fail when an input was never built."""
        ancestors = ctx.graph.ancestors(self.model_names(ctx))
        with ctx.reader() as con:
            missing = [a.name for a in ancestors if not relation_exists(con, a.state)]
            if missing:
                return StepReport(
                    self.name,
                    FAILED,
                    reason=f"it reads {', '.join(missing)}, not built yet: run daily-refresh "
                    "--bars first (or --all)",
                    blocks_downstream=True,
                )
            stale = stale_symbols(con, ancestors, ctx.options.config.max_days_behind)
        wanted = set(ctx.options.symbols)
        reasons = {s: v.reason for s, v in stale.items() if not wanted or s in wanted}
        for symbol, reason in reasons.items():
            log.warning("  skipping %s in %s: %s", symbol, self.name, reason)
        ctx.record_stale(self.name, reasons)
        return None

    # -- partial failure

    def _recover(
        self,
        ctx: RunContext,
        exc: DbtRunError,
        started: float,
        symbols: list[str],
        count: int | None,
    ) -> StepReport:
        nodes = exc.result.nodes if exc.result else ()
        failed_models = [n.name for n in nodes if n.resource_type == "model" and n.failed]
        whole = StepReport(
            self.name,
            FAILED,
            time.perf_counter() - started,
            models=tuple(n for n in nodes if n.resource_type == "model"),
            skipped_nodes=tuple(n for n in nodes if n.status == "skipped"),
            reason=str(exc),
            blocks_downstream=True,
            symbols=count,
        )
        if not failed_models or ctx.options.rebuilds_everything:
            return whole
        candidates = set(symbols) or self._failed_model_pending(ctx, failed_models)
        if not candidates:
            return whole
        log.warning(
            "  %s failed in %s; retrying its %d symbols in groups to find the failing ones",
            self.name,
            ", ".join(failed_models),
            len(candidates),
        )
        isolation = self._isolate(ctx, failed_models, sorted(candidates))
        if isolation is None:
            whole.lines.append("the failure does not depend on the symbols: not retried further")
            return whole
        ctx.record_failed(
            self.name,
            {s: f"failed in {self.name}: {clipped(why)}" for s, why in isolation.failed.items()},
        )
        for symbol, why in isolation.failed.items():
            log.error("  %s failed for %s: %s", self.name, symbol, why)
        try:
            final = self._invoke(ctx, self.dbt_args(ctx), symbols)
        except DbtRunError as again:
            whole.reason = f"{again} (after skipping {shown(isolation.failed)})"
            return whole
        results = [*isolation.results, final]
        return StepReport(
            self.name,
            PARTIAL,
            time.perf_counter() - started,
            models=merged_models(results),
            invocation_ids=tuple(r.invocation_id for r in results),
            reason=f"failed for {len(isolation.failed)} symbols: {shown(isolation.failed)}",
            failed_symbols=dict(isolation.failed),
            symbols=count,
            outputs=dbt_timings(results),
            lines=[
                f"retried in {isolation.runs} dbt runs of {', '.join(failed_models)}; "
                f"the others were built"
            ],
        )

    def _failed_model_pending(self, ctx: RunContext, models: Sequence[str]) -> set[str]:
        with ctx.reader() as con:
            return {
                s
                for m in ctx.graph.incremental(models)
                for s in pending_symbols(con, m, only=ctx.options.symbols)
            } - set(ctx.excluded_for(self.name))

    def _isolate(
        self, ctx: RunContext, models: Sequence[str], candidates: list[str]
    ) -> Isolation | None:
        """Bisect the candidates with `dbt run` of the failed models; None when the models fail
        even with no symbol to recompute (the failure is not in the data)."""
        args = ["run", "--select", *models]
        isolation = Isolation()

        def attempt(group: Sequence[str]) -> str | None:
            isolation.runs += 1
            try:
                isolation.results.append(self._invoke(ctx, args, group, on_node=None))
            except DbtRunError as exc:
                failures = exc.result.failures if exc.result else ()
                return one_line("; ".join(f.describe() for f in failures) or str(exc))
            return None

        if attempt([NO_SYMBOL]) is not None:
            return None
        budget = 4 * max(1, len(candidates).bit_length()) + 4
        groups = [candidates]
        while groups:
            group = groups.pop()
            if isolation.runs >= budget:
                reason = "not isolated (retry budget spent)"
                isolation.failed.update(dict.fromkeys(group, reason))
                continue
            error = attempt(group)
            if error is None:
                continue
            if len(group) == 1:
                isolation.failed[group[0]] = error
            else:
                middle = len(group) // 2
                groups += [group[middle:], group[:middle]]
        return isolation


def _model_plan(
    ctx: RunContext,
    con: duckdb.DuckDBPyConnection | None,
    step: str,
    name: str,
    materialized: str,
) -> str:
    line = f"  {name} ({materialized})"
    if materialized != "incremental":
        return line
    if ctx.options.rebuilds_everything:
        return f"{line}: full rebuild"
    if con is None:
        return f"{line}: first build, every symbol"
    model = ctx.graph.models[name]
    if not relation_exists(con, model.state):
        return f"{line}: first build, every symbol"
    partitions, low, high, updated = con.execute(
        "select count(*), min(last_batch_id), max(last_batch_id), max(updated_at) "
        f"from {model.state}"
    ).fetchone()
    pending = pending_symbols(con, model, only=ctx.options.symbols)
    excluded = set(ctx.excluded_for(step))
    skipped = sorted(set(pending) & excluded)
    todo = sorted(set(pending) - excluded)
    text = (
        f"{line}: {partitions} partitions at batches {low}..{high} "
        f"(updated {updated:%Y-%m-%d %H:%M}); {len(todo)} symbols pending now"
    )
    if todo:
        text += f" ({shown(todo)})"
    if skipped:
        text += f"; skipping {shown(skipped)}"
    return text


# -- quality gates --------------------------------------------------------------------------------


def gate_exclusions(results: Iterable[Any]) -> tuple[dict[str, str], list[str]]:
    """Per failing symbol the first failed expectation; and the failed expectations that cannot
    be pinned on symbols (table-wide, or more failing rows than the gate reports)."""
    symbols: dict[str, str] = {}
    unattributed: list[str] = []
    for result in results:
        unattributed += [
            f"{suite.suite}: {suite.reason}"
            for suite in result.suites
            if suite.status == "failed" and suite.reason
        ]
        for failure in result.failures:
            found = {str(r["symbol"]) for r in failure.sample_rows if r.get("symbol") is not None}
            counted = failure.unexpected_count
            if not found or counted is None or counted > len(failure.sample_rows):
                unattributed.append(f"{failure.name}")
                continue
            for symbol in found:
                symbols.setdefault(symbol, f"quality gate {result.layer}: {failure.name}")
    return symbols, unattributed


def _changed_anything(report: StepReport | None) -> bool:
    """Whether a step wrote rows (a load, or rows of an incremental model); True if unknown."""
    if report is None:
        return True
    if report.status in (SKIPPED, CACHED):
        return False
    if "batch_id" in report.outputs:
        return report.outputs.get("rows_inserted", 0) + report.outputs.get("rows_revised", 0) > 0
    incremental = [m for m in report.models if m.materialized == "incremental"]
    return not incremental or any(m.rows_written for m in incremental)


def _kept_in_summary(line: str) -> bool:
    """A gate's verdict and its failures, not every passing suite."""
    text = line.lstrip()
    return line == text or text.startswith(("FAILED", "e.g.")) or ": failed:" in text


@dataclass(frozen=True)
class GateStep:
    """The Great Expectations gates of some layers, on the slice the step `after` changed:
    the rows its dbt invocations wrote (models), or the load batches it brought (raw, staging)."""

    name: str
    layers: tuple[str, ...]
    after: str
    needs: tuple[str, ...] = ()

    def plan(self, ctx: RunContext, con: duckdb.DuckDBPyConnection | None) -> list[str]:
        lines = []
        for layer in self.layers:
            suites = layer_suites(layer)
            checks = sum(len(s.checks) for s in suites)
            lines.append(
                f"gate {layer}: {len(suites)} suites, {checks} expectations, on what "
                f"'{self.after}' changes"
            )
        return lines

    def fingerprint(self, ctx: RunContext) -> list[object] | None:
        models = {
            name
            for layer in self.layers
            for s in layer_suites(layer)
            for schema, name in (r.split(".") for r in s.relations)
            if schema != RAW_SCHEMA
        }
        # Only dbt's relations need the parsed project: the raw gate runs while it is parsing.
        incremental = ctx.graph.incremental(sorted(models)) if models else []
        with ctx.reader() as con:
            data = state_fingerprint(con, incremental)
            raw = newest_load_batch(con)
        code = hash_files(_code_files(REPO_ROOT / "expectations"), REPO_ROOT)
        return [list(self.layers), code, data, raw, ctx.options.config.gates.__dict__]

    def _slices(self, ctx: RunContext, layer: str) -> list[Any]:
        report = ctx.reports.get(self.after)
        symbols = ctx.options.symbols
        if layer in ("raw", "staging"):
            first = report.outputs.get("batch_id") if report and layer == "raw" else None
            return [Slice(min_batch_id=first or ctx.batch_before + 1, symbols=symbols)]
        invocations = report.invocation_ids if report else ()
        return [Slice(invocation_id=i, symbols=symbols) for i in invocations]

    @staticmethod
    def _session(ctx: RunContext) -> GateSession:
        """The run's gate session: one GE context for every gate step of the run."""
        if "gate session" not in ctx.memo:
            ctx.memo["gate session"] = GateSession(ctx.run_dir, validator=ctx.gate_worker)
        return ctx.memo["gate session"]

    def run(self, ctx: RunContext) -> StepReport:
        return self.start(ctx)()

    def start(self, ctx: RunContext) -> Callable[[], StepReport]:
        """Read the frames and submit the suites; the function returned waits for the verdicts
        and makes the report. With the gates' worker the run may go on meanwhile, reading the
        frames included (in a thread: about a second for the bar families or the EMAs on bench,
        mostly in DuckDB, which lets go of the interpreter)."""
        started = time.perf_counter()
        if not _changed_anything(ctx.reports.get(self.after)):
            skipped = StepReport(self.name, SKIPPED, reason=f"'{self.after}' changed nothing")
            return lambda: skipped
        slices = [(layer, s) for layer in self.layers for s in self._slices(ctx, layer)]
        for layer, slice_ in slices:
            log.info("  gate %s on %s", layer, slice_.describe())
        session = self._session(ctx)  # here: gates in the background share it
        submit = _in_background if ctx.gate_worker is not None else _at_once
        submitted = submit(lambda: self._submit(ctx, session, slices))

        def finish() -> StepReport:
            pending = submitted()
            results = [gate.result() for gate in pending]
            # Until the last verdict came, not until asked for: the run may have gone on.
            ready = max((gate.ready_at for gate in pending), default=started)
            return self._report(ctx, results, ready - started)

        return finish

    @staticmethod
    def _submit(
        ctx: RunContext, session: GateSession, slices: list[tuple[str, Slice]]
    ) -> list[PendingGate]:
        gates = ctx.options.config.gates
        settings = GateSettings(
            max_days_behind=gates.max_days_behind,
            chunk_rows=gates.chunk_rows,
            sample_rows=SAMPLE_LIMIT,
        )
        with ctx.reader() as con:
            pending = [
                session.start(con, layer, slice=slice_, settings=settings)
                for layer, slice_ in slices
            ]
        session.build_docs()  # once for the step's layers, rendered after their validations
        return pending

    def _report(self, ctx: RunContext, results: list[GateResult], seconds: float) -> StepReport:
        """The step's report from its gates' results."""
        lines = []
        for result in results:
            full = result.lines()
            for line in full:
                log.info("  %s", line)
            lines += [line for line in full if _kept_in_summary(line)]
        failed = [r for r in results if not r.passed]
        if not failed:
            return StepReport(self.name, SUCCESS, seconds, lines=lines)
        symbols, unattributed = gate_exclusions(failed)
        skipped_before = set(ctx.excluded_for(self.after))
        if not unattributed and set(symbols) <= skipped_before:
            # e.g. a symbol missing on the latest date because its new day was skipped upstream
            line = f"failed only on symbols skipped before: {shown(symbols)} (already reported)"
            log.info("  %s", line)
            return StepReport(self.name, SUCCESS, seconds, lines=[*lines, line])
        for symbol, reason in symbols.items():
            log.error("  %s failed %s", symbol, reason)
        ctx.record_failed(self.name, symbols)
        expectations = [f.name for r in failed for f in r.failures]
        reason = f"{len(expectations)} expectations failed: {'; '.join(expectations[:3])}"
        if unattributed:
            reason += " (not pinned on symbols: the layers downstream stop)"
        return StepReport(
            self.name,
            FAILED,
            seconds,
            lines=lines,
            reason=reason,
            failed_symbols=symbols,
            blocks_downstream=bool(unattributed),
            is_violation=True,
        )


# -- published files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishStep:
    """Write a file (the returns matrix) or a folder of files (the features matrix) from the
    warehouse under the lakehouse folder."""

    name: str
    model: str
    target: Callable[[], Path]
    publish: Callable[[duckdb.DuckDBPyConnection], PublishedFile]
    needs: tuple[str, ...] = ()

    def plan(self, ctx: RunContext, con: duckdb.DuckDBPyConnection | None) -> list[str]:
        path = self.target()
        if path.is_dir():
            state = "rewriting the files whose rows changed"
        else:
            state = "replacing the current file" if path.exists() else "new"
        return [f"write {path} from {self.model} ({state}), each file atomically"]

    def fingerprint(self, ctx: RunContext) -> list[object] | None:
        path = self.target()
        stat = path.stat() if path.exists() else None
        with ctx.reader() as con:
            data = state_fingerprint(con, ctx.graph.incremental([self.model]))
        written = [stat.st_size, stat.st_mtime_ns] if stat else None
        return [str(path), data, written]

    def run(self, ctx: RunContext) -> StepReport:
        started = time.perf_counter()
        with ctx.reader() as con:
            published = self.publish(con)
        line = f"wrote {published.path}: {published.rows} rows x {published.columns} columns"
        if published.detail:
            line += f"; {published.detail}"
        log.info("  %s", line)
        return StepReport(
            self.name,
            SUCCESS,
            time.perf_counter() - started,
            lines=[line],
            outputs={"path": str(published.path), "rows": published.rows},
        )


def _in_background(work: Callable[[], T]) -> Callable[[], T]:
    """Start `work` in a thread; the function returned waits for its result (or its error)."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gate-frames")
    future = executor.submit(work)
    executor.shutdown(wait=False)
    return future.result


def _at_once(work: Callable[[], T]) -> Callable[[], T]:
    """Do `work` now; the function returned gives its result."""
    result = work()
    return lambda: result
