"""The end-of-run summary of `daily-refresh`: per step its status, time and rows written, then the
quality of what was loaded (gaps flagged, OHLC repairs, rejects), the symbols skipped and why,
and the gate results."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from quantwarehouse.dbt import NodeResult
from quantwarehouse.refresh.context import CACHED, FAILED, PARTIAL, SKIPPED, RunContext, StepReport
from quantwarehouse.refresh.filters import EMA_MODELS
from quantwarehouse.refresh.state import relation_exists


def _model_line(model: NodeResult) -> str:
    if model.status != "success":
        return f"{model.name}: {model.status}"
    rows = "a view" if model.rows_written is None else f"{model.rows_written} rows written"
    return f"{model.name}: {model.status}, {rows} in {model.seconds:.1f}s"


def step_lines(report: StepReport) -> list[str]:
    head = f"step {report.step}: {report.status} in {report.seconds:.1f}s"
    if report.symbols is not None:
        head += f" ({report.symbols} symbols)"
    if report.status in (SKIPPED, CACHED, FAILED, PARTIAL) and report.reason:
        head += f": {report.reason}"
    lines = [head]
    lines += [f"  {_model_line(model)}" for model in report.models]
    lines += [f"  {line}" for line in report.lines]
    return lines


def _invocations(reports: Sequence[StepReport]) -> dict[str, tuple[str, ...]]:
    """Per model, the dbt invocations of this run that wrote it."""
    found: dict[str, tuple[str, ...]] = {}
    for report in reports:
        if report.status in (SKIPPED, CACHED):
            continue
        for model in report.models:
            if model.status == "success":
                found[model.name] = report.invocation_ids
    return found


def _written(
    con: duckdb.DuckDBPyConnection, relation: str, invocations: Sequence[str], measures: str
) -> tuple:
    """`measures` (aggregates) over the rows of `relation` these dbt invocations wrote."""
    return con.execute(
        f"select {measures} from {relation} where invocation_id in (select unnest(?))",
        [list(invocations)],
    ).fetchone()


def quality_lines(
    con: duckdb.DuckDBPyConnection, reports: Sequence[StepReport], before: int
) -> list[str]:
    """Gaps flagged, OHLC repairs and rejects of the batches this run brought into the bars."""
    lines: list[str] = []
    invocations = _invocations(reports)
    if "kline_gaps" in invocations:
        gaps, missing = con.execute(
            "select count(*), coalesce(sum(missing_bar_count), 0) from main.kline_gaps"
        ).fetchone()
        lines.append(f"gaps flagged: {gaps} kline gaps ({missing} missing bars) in kline_gaps")
    if invocations.get("returns_daily"):
        (spans,) = _written(
            con, "main.returns_daily", invocations["returns_daily"],
            "count(*) filter (where spans_missing_days)",
        )  # fmt: skip
        lines.append(f"returns written over missing days (flagged): {spans}")
    if invocations.get("bars_1d"):
        highs, lows = _written(
            con, "main.bars_1d", invocations["bars_1d"],
            "count(*) filter (where repaired_high), count(*) filter (where repaired_low)",
        )  # fmt: skip
        lines.append(f"OHLC repairs in daily bars written: {highs} highs, {lows} lows")
        lines += reject_lines(con, before)
    return lines


def reject_lines(con: duckdb.DuckDBPyConnection, before: int) -> list[str]:
    newest = con.execute("select coalesce(max(batch_id), 0) from raw.load_batches").fetchone()[0]
    if newest <= before:
        return [f"rejects: no load batch after batch {before}"]
    rows = con.execute(
        "select reason, count(*) as n from raw.rejects where batch_id > ? "
        "group by reason order by n desc, reason limit 5",
        [before],
    ).fetchall()
    total = con.execute("select count(*) from raw.rejects where batch_id > ?", [before]).fetchone()
    lines = [f"rejects in load batches {before + 1}..{newest}: {total[0]}"]
    lines += [f"  {n} x {reason}" for reason, n in rows]
    return lines


def filter_lines(con: duckdb.DuckDBPyConnection, ctx: RunContext) -> list[str]:
    """Whether the EMA models honoured the filters: the partitions this run's invocations wrote."""
    ema_filter = ctx.options.ema_filter
    if not ema_filter:
        return []
    invocations = _invocations(list(ctx.reports.values()))
    lines = [f"EMA filter: {ema_filter.describe()}"]
    for model, ids in invocations.items():
        if model not in EMA_MODELS or not ids or not relation_exists(con, f"main.{model}"):
            continue
        measure = "list(distinct {'tf': tf, 'period': period})"
        (written,) = _written(con, f"main.{model}", ids, measure)
        pairs = [(item["tf"], item["period"]) for item in written or []]
        outside = sorted(f"{tf}:{p}" for tf, p in pairs if not ema_filter.keeps(tf, p))
        if outside:
            lines.append(
                f"  WARNING {model} also recomputed {', '.join(outside[:6])}"
                f"{' ...' if len(outside) > 6 else ''}: it does not honour the filter vars "
                f"{sorted(ema_filter.dbt_vars)} (python_models/emas)"
            )
    return lines


def exclusion_lines(con: duckdb.DuckDBPyConnection, ctx: RunContext) -> list[str]:
    """A warning for every model that wrote rows of a symbol its step skipped: the model does
    not honour the dbt var `exclude_symbols` (macros/incremental/state.sql)."""
    lines = []
    for report in ctx.reports.values():
        excluded = sorted(ctx.excluded_for(report.step))
        if not excluded or not report.invocation_ids:
            continue
        rebuilt = set(report.outputs.get("rebuilt", ()))
        for model in ctx.graph.incremental(m.name for m in report.models if m.name not in rebuilt):
            written = con.execute(
                f"select distinct symbol from {model.relation} "
                "where invocation_id in (select unnest(?)) and symbol in (select unnest(?)) "
                "order by symbol",
                [list(report.invocation_ids), excluded],
            ).fetchall()
            if written:
                names = ", ".join(symbol for (symbol,) in written)
                lines.append(
                    f"WARNING {model.name} recomputed {names}, which '{report.step}' skipped: it "
                    "does not honour the dbt var exclude_symbols"
                )
    return lines


def skipped_symbol_lines(ctx: RunContext) -> list[str]:
    """The symbols steps skipped, and why: failed in a step (skipped by the steps after it), or
    stale inputs (skipped by the step that found them)."""
    lines = [
        f"skipped {symbol} after '{step}': {reason}"
        for step, symbols in ctx.failed.items()
        for symbol, reason in sorted(symbols.items())
    ]
    lines += [
        f"skipped {symbol} in '{step}': {reason}"
        for step, symbols in ctx.stale.items()
        for symbol, reason in sorted(symbols.items())
    ]
    return lines


def skipped_lines(ctx: RunContext, not_requested: Sequence[str]) -> list[str]:
    lines = [f"skipped target --{t}: not requested" for t in not_requested]
    lines += skipped_symbol_lines(ctx)
    for report in ctx.reports.values():
        models = [n.name for n in report.skipped_nodes if n.resource_type == "model"]
        others = len(report.skipped_nodes) - len(models)
        if report.skipped_nodes:
            named = f"models {', '.join(models)} and " if models else ""
            lines.append(
                f"skipped in step {report.step}: {named}{others} other nodes (upstream failed)"
            )
    current = [
        model.name
        for report in ctx.reports.values()
        for model in report.models
        if model.materialized == "incremental" and model.rows_written == 0
    ]
    if current:
        lines.append(
            f"skipped recomputation (no load batch after their watermark): {', '.join(current)}"
        )
    return lines


def summary_lines(
    ctx: RunContext, *, total: float, not_requested: Sequence[str], extra: Sequence[str] = ()
) -> list[str]:
    reports = list(ctx.reports.values())
    failed = any(r.failed for r in reports)
    options = ctx.options
    scope = ", ".join(options.targets)
    if options.full_refresh:
        scope += ", full refresh" + (f" of {', '.join(options.symbols)}" if options.symbols else "")
    elif options.symbols:
        scope += f", symbols {', '.join(options.symbols)}"
    lines = [
        f"daily-refresh {ctx.run_id}: {'failed' if failed else 'success'} in {total:.1f}s ({scope})"
    ]
    for report in reports:
        lines += step_lines(report)
    if ctx.warehouse.exists():
        with ctx.reader() as con:
            if relation_exists(con, "raw.load_batches"):
                lines += quality_lines(con, reports, ctx.batch_before)
            lines += filter_lines(con, ctx)
            lines += exclusion_lines(con, ctx)
    lines += skipped_lines(ctx, not_requested)
    lines += list(extra)
    lines.append(f"run manifest: {ctx.run_dir / 'run_manifest.json'}")
    return lines
