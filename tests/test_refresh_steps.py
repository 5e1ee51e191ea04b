"""The pure parts of daily-refresh's steps: which symbols a gate failure is pinned on, which
symbols a step skips (and for which reason), and how several dbt invocations add up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import duckdb

from quantwarehouse.dbt import DbtResult, NodeResult
from quantwarehouse.refresh.config import load_refresh_config
from quantwarehouse.refresh.context import RefreshOptions, RunContext
from quantwarehouse.refresh.runner import TARGET_ORDER, is_deferred, target_steps
from quantwarehouse.refresh.steps import clipped, gate_exclusions, merged_models, shown


def failure(name: str, count: int | None, *symbols: str) -> SimpleNamespace:
    rows = tuple({"symbol": s, "value": 1} for s in symbols)
    return SimpleNamespace(name=name, unexpected_count=count, sample_rows=rows)


def gate(layer: str, *failures: SimpleNamespace, broken: str | None = None) -> SimpleNamespace:
    suites = [SimpleNamespace(suite="s.broken", status="failed", reason=broken)] if broken else []
    return SimpleNamespace(layer=layer, failures=failures, suites=suites)


def test_gate_failures_are_pinned_on_symbols_when_every_failing_row_is_known():
    results = [
        gate("bars", failure("bars.x: high >= low", 2, "AAA", "BBB")),
        gate("bars", failure("bars.y: volume >= 0", 1, "AAA")),
    ]
    symbols, unattributed = gate_exclusions(results)
    assert symbols == {"AAA": "quality gate bars: bars.x: high >= low", "BBB": symbols["BBB"]}
    assert unattributed == []


def test_gate_failures_that_cannot_be_pinned_stop_the_layers_downstream():
    too_many = failure("bars.x: high >= low", 50, *(f"S{i}" for i in range(20)))
    table_wide = failure("bars.x: documented columns present", None)
    symbols, unattributed = gate_exclusions(
        [gate("bars", too_many, table_wide, broken="could not read the rows")]
    )
    assert symbols == {}
    assert unattributed == [
        "s.broken: could not read the rows",
        "bars.x: high >= low",
        "bars.x: documented columns present",
    ]


def context(needs: dict[str, tuple[str, ...]]) -> RunContext:
    options = RefreshOptions(targets=("bars",), config=load_refresh_config())
    ctx = RunContext(options, "r", Path("/nowhere"), Path("/nowhere/w.duckdb"), None)  # type: ignore[arg-type]
    ctx.needs = needs
    return ctx


def test_failed_symbols_reach_every_step_needing_the_step_and_stale_ones_stay_local():
    ctx = context(
        {
            "gate raw": ("ingest",),
            "build bars": ("gate raw",),
            "build emas": ("build bars", "gate bars"),
            "gate bars": ("build bars",),
            "build returns and marts": ("build bars", "gate bars"),
        }
    )
    ctx.record_failed("gate raw", {"CCC": "quality gate raw: x"})
    ctx.record_failed("build bars", {"BBB": "failed in build bars: boom"})
    ctx.record_stale("build emas", {"DDD": "bars_multi_tf stale", "BBB": "stale too"})
    assert ctx.excluded_for("build bars") == {
        "BBB": "failed in build bars: boom",
        "CCC": "quality gate raw: x",
    }
    assert ctx.excluded_for("build emas") == {
        "DDD": "bars_multi_tf stale",
        "BBB": "stale too",
        "CCC": "quality gate raw: x",
    }
    assert ctx.excluded_for("build returns and marts") == {
        "BBB": "failed in build bars: boom",
        "CCC": "quality gate raw: x",
    }
    assert ctx.excluded_for("ingest") == {}


def node(name: str, rows: int | None, seconds: float) -> NodeResult:
    return NodeResult(
        name, "model", "success", seconds, rows_written=rows, materialized="incremental"
    )


def test_models_of_several_invocations_add_up():
    first = DbtResult(("run",), "i1", (node("bars_1d", 5, 1.0),), 3.0)
    nodes = (node("bars_1d", 0, 0.5), node("bars_multi_tf", 7, 2.0))
    second = DbtResult(("build",), "i2", nodes, 4.0)
    merged = {m.name: m for m in merged_models([first, second])}
    assert (merged["bars_1d"].rows_written, merged["bars_1d"].seconds) == (5, 1.5)
    assert merged["bars_multi_tf"].rows_written == 7


def test_short_texts_for_summary_lines():
    assert shown(["C", "A", "B"]) == "A, B, C"
    assert shown([f"S{i:02d}" for i in range(10)], limit=3) == "S00, S01, S02 and 7 more"
    assert clipped("x" * 10, limit=8) == "xxxxx..."
    assert clipped("short") == "short"


def test_a_run_holds_the_warehouse_open_and_checkpoints_it_once_at_the_end(tmp_path):
    ctx = context({})
    ctx.warehouse = tmp_path / "warehouse.duckdb"
    wal = tmp_path / "warehouse.duckdb.wal"
    with ctx.holding_warehouse():
        # dbt, the loader and the steps connect as usual: DuckDB hands them the held database.
        with duckdb.connect(str(ctx.warehouse)) as con:
            con.execute("create table t as select 1 as a")
        assert wal.exists(), "closing a connection of the held database checkpoints nothing"
        with ctx.reader() as con:
            assert con.execute("select a from t").fetchall() == [(1,)]
        with duckdb.connect(str(ctx.warehouse)) as con:  # a log past DuckDB's default 16 MB
            con.execute("create table logged (a bigint, b double)")
            for _ in range(20):
                con.execute("insert into logged select range, random() from range(100000)")
        assert wal.stat().st_size > 16 * 2**20, "the run checkpoints only when it closes"
    assert not wal.exists()
    with ctx.reader() as con:  # after the run: a read-only connection of its own
        assert con.execute("select a from t").fetchall() == [(1,)]


def test_a_gate_the_next_step_does_not_need_validates_while_the_run_goes_on():
    steps = [step for target in ("emas", "features") for step in target_steps(target, True)]
    ctx = context({step.name: step.needs for step in steps})
    ctx.gate_worker = object()  # type: ignore[assignment]
    deferred = [step.name for i, step in enumerate(steps) if is_deferred(ctx, step, steps[i + 1 :])]
    # build features needs the bars, not the EMAs; publish features needs its gate
    assert deferred == ["gate emas"]
    ctx.gate_worker = None  # validating in this process: each gate ends before the next step
    assert not any(is_deferred(ctx, step, steps[i + 1 :]) for i, step in enumerate(steps))


def test_the_bar_families_gate_holds_up_only_the_emas():
    steps = [step for target in TARGET_ORDER for step in target_steps(target, True)]
    ctx = context({step.name: step.needs for step in steps})
    ctx.gate_worker = object()  # type: ignore[assignment]
    deferred = [step.name for i, step in enumerate(steps) if is_deferred(ctx, step, steps[i + 1 :])]
    # gate bars, needed by build returns and marts, ends before the families' gate starts
    assert deferred == ["gate bar families", "gate emas"]
    assert "gate bar families" in ctx.needed_by("build emas")
    for step in ("build returns and marts", "publish returns matrix", "build features"):
        assert "gate bars" in ctx.needed_by(step) and "gate bar families" not in ctx.needed_by(step)


def test_the_modules_of_later_python_models_are_imported_ahead_in_the_background():
    probe = (
        "import sys\n"
        "from quantwarehouse.refresh.runner import target_steps, warm_imports\n"
        "steps = [*target_steps('emas', True), *target_steps('features', True)]\n"
        "before = 'scipy.signal' in sys.modules\n"
        "warm_imports(steps).join()\n"
        "print(before, 'scipy.signal' in sys.modules, warm_imports(steps))"
    )
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert (found.returncode, found.stdout.split()) == (0, ["False", "True", "None"]), found.stderr


def test_the_refresh_process_does_not_import_great_expectations():
    # Its import takes seconds of the run's interpreter: the gates' worker process pays it.
    probe = "import sys, quantwarehouse.refresh.runner; print('great_expectations' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert (found.returncode, found.stdout.strip()) == (0, "False"), found.stderr
