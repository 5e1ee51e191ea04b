"""EMA benchmarks on the `bench` preset (500 symbols x 8 years of daily bars) over the largest bar
family, bars_multi_tf (ten rolling timeframes), with the default periods (10, 20, 50, 100, 200).

The warehouse is prepared once per benchmark folder and shared by the cases (`ema-base/`): the
preset loaded up to the day before its last, then bars_1d, bars_multi_tf and emas_multi_tf built by
dbt, each in a child process so the figures of a case are its own. Cases:

- ema_compute_full: the model's pure compute (`quantwarehouse.ema_models.ema_table`) on the rows
  the model reads, EMA values per second (three per output row: ema, ema_bar, ema_v2), its own peak
  memory, and the dbt model's full build (dbt start-up excluded: dbt's own execution time of the
  model).
- ema_pandas_baseline: the same values with a plain pandas groupby().ewm() recomputation.
- ema_incremental_one_day: the last day loaded, bars refreshed incrementally, then the model's
  incremental inputs (the new rows of the symbols resumed from their carry, every row of those
  recomputed) computed against the full compute over all rows on the same warehouse, and the dbt
  incremental run of the model.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from benchmarks.harness import Case, Metrics, timed
from ingest.synthetic import resolve_preset
from quantwarehouse.ema import nominal_tf_days
from quantwarehouse.ema_models import ModelInputs, ema_table, model_inputs
from quantwarehouse.paths import DBT_PROJECT_DIR, REPO_ROOT, WAREHOUSE_ENV

PRESET = "bench"
PERIODS = (10, 20, 50, 100, 200)
BARS = "bars_multi_tf"
MODEL = "emas_multi_tf"
EMA_COLUMNS = 3  # ema, ema_bar, ema_v2 per output row
INVOCATION = "benchmark"


def own_peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def child(args: list[str], warehouse: Path) -> None:
    env = {**os.environ, WAREHOUSE_ENV: str(warehouse)}
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )


def ingest_until(warehouse: Path, day: str) -> None:
    command = [sys.executable, str(REPO_ROOT / "orchestrate.py"), "ingest", "--source", "synthetic"]
    child([*command, "--preset", PRESET, "--until", day, "--quiet"], warehouse)


def dbt_run(
    warehouse: Path, workdir: Path, *select: str, full_refresh: bool = False
) -> dict[str, float]:
    """`dbt run --select ...` in a child process; dbt's execution seconds of each model."""
    target = workdir / "dbt-target"
    args = [str(Path(sys.executable).with_name("dbt")), "run", "--select", *select]
    args += ["--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
    args += ["--target-path", str(target), "--log-path", str(workdir / "dbt-logs")]
    child([*args, *(["--full-refresh"] if full_refresh else [])], warehouse)
    results = json.loads((target / "run_results.json").read_text())["results"]
    return {r["unique_id"].split(".")[-1]: round(r["execution_time"], 2) for r in results}


def preset_days() -> tuple[str, str]:
    """The day before the preset's last (the base) and its last (the one-day append)."""
    last = resolve_preset(PRESET).end
    return str(last - timedelta(days=1)), str(last)


def base_warehouse(root: Path) -> tuple[Path, dict[str, Any]]:
    """The shared warehouse (prepared on first use) and the figures of its preparation."""
    folder = root / "ema-base"
    warehouse, figures_file = folder / "warehouse.duckdb", folder / "prepared.json"
    if not figures_file.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        base_day, _ = preset_days()
        ingest_s, _ = timed(lambda: ingest_until(warehouse, base_day))
        bars = dbt_run(warehouse, folder, f"+{BARS}")
        emas = dbt_run(warehouse, folder, MODEL)
        figures = {
            "ingest_s": round(ingest_s, 1),
            "dbt_bars_s": bars,
            "dbt_model_full_s": emas[MODEL],
        }
        figures_file.write_text(json.dumps(figures))
    return warehouse, json.loads(figures_file.read_text())


@dataclass
class StandIn:
    """What `model_inputs` reads from a dbt Python model's object."""

    this: Any
    is_incremental: bool
    vars: dict[str, list[str]] = field(default_factory=lambda: {"symbols": []})


@dataclass(frozen=True)
class This:
    database: str
    identifier: str

    def __str__(self) -> str:
        return f'"{self.database}"."main"."{self.identifier}"'


def inputs(con: duckdb.DuckDBPyConnection, *, incremental: bool) -> ModelInputs:
    database = con.sql("select current_database()").fetchall()[0][0]
    stand_in = StandIn(This(database, MODEL), incremental)
    return model_inputs(stand_in, con, con.table(BARS), PERIODS, daily=False)


def compute_figures(given: ModelInputs, prefix: str) -> Metrics:
    seconds, output = timed(lambda: ema_table(given, INVOCATION))
    values = output.rows.num_rows * EMA_COLUMNS
    return {
        f"{prefix}_rows_in": given.rows.num_rows,
        f"{prefix}_ema_values": values,
        f"{prefix}_compute_s": round(seconds, 3),
        f"{prefix}_values_per_s": round(values / seconds),
    }


def compute_full(workdir: Path) -> Metrics:
    warehouse, prepared = base_warehouse(workdir.parent)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        read_s, given = timed(lambda: inputs(con, incremental=False))
    figures = compute_figures(given, "full")
    return {
        **figures,
        "read_rows_s": round(read_s, 2),
        "compute_peak_rss_mb": own_peak_rss_mb(),
        "dbt_model_full_execution_s": prepared["dbt_model_full_s"],
        "dbt_bars_execution_s": json.dumps(prepared["dbt_bars_s"]),
    }


def pandas_emas(frame: pd.DataFrame) -> int:
    """The model's three values with plain pandas (ewm adjust=False, no SMA seed); the count."""
    frame = frame.sort_values(["symbol", "tf", "bar_date"])
    tf_days = frame.tf.map({tf: nominal_tf_days(tf) for tf in frame.tf.unique()})
    closed = frame[frame.closes_bar]
    count = 0
    for period in PERIODS:
        alpha = 2 / (period + 1)
        bar = closed.groupby(["symbol", "tf"]).close.ewm(alpha=alpha, adjust=False).mean()
        ema_bar = pd.Series(bar.to_numpy(), index=closed.index).reindex(frame.index)
        ema_bar = ema_bar.groupby([frame.symbol, frame.tf]).ffill()
        ema = ema_bar.where(frame.closes_bar, alpha * frame.close + (1 - alpha) * ema_bar)
        v2 = []
        for days, rows in frame.groupby(tf_days):
            span = int(days) * period
            v2.append(rows.groupby("symbol").close.ewm(span=span, adjust=False).mean())
        count += len(ema) + len(ema_bar) + sum(len(part) for part in v2)
    return count


def pandas_baseline(workdir: Path) -> Metrics:
    warehouse, _ = base_warehouse(workdir.parent)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = inputs(con, incremental=False).rows
    frame = rows.select(["symbol", "tf", "bar_date", "close", "closes_bar"]).to_pandas()
    del rows
    seconds, values = timed(lambda: pandas_emas(frame))
    return {
        "pandas_ema_values": values,
        "pandas_s": round(seconds, 2),
        "pandas_values_per_s": round(values / seconds),
        "pandas_peak_rss_mb": own_peak_rss_mb(),
    }


def incremental_one_day(workdir: Path) -> Metrics:
    base, _ = base_warehouse(workdir.parent)
    warehouse = workdir / "warehouse.duckdb"
    shutil.copyfile(base, warehouse)
    _, last_day = preset_days()
    ingest_until(warehouse, last_day)
    bars = dbt_run(warehouse, workdir, f"+{BARS}")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        read_s, given = timed(lambda: inputs(con, incremental=True))
        incremental = compute_figures(given, "incremental")
        full = compute_figures(inputs(con, incremental=False), "full")
    ratio = full["full_compute_s"] / incremental["incremental_compute_s"]
    model = dbt_run(warehouse, workdir, MODEL)
    return {
        **incremental,
        "incremental_read_s": round(read_s, 2),
        **full,
        "full_over_incremental_compute": round(ratio, 1),
        "dbt_bars_incremental_s": json.dumps(bars),
        "dbt_model_incremental_execution_s": model[MODEL],
        "compute_peak_rss_mb": own_peak_rss_mb(),
    }


CASES = [
    Case("ema_compute_full", "EMA compute over all of bars_multi_tf (bench preset)", compute_full),
    Case("ema_pandas_baseline", "the same EMAs with pandas groupby().ewm()", pandas_baseline),
    Case(
        "ema_incremental_one_day",
        "one more day: incremental EMA inputs and compute vs the full compute",
        incremental_one_day,
    ),
]
