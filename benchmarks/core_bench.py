"""Warehouse core benchmark (bars and returns) on the `bench` preset, at two history lengths.

For each history length (the preset's first 4 years, then all 8), a base: the preset ingested up
to a day, then `daily-refresh --bars --returns` from scratch (the full build: staging, bars_1d, the
bar families, returns_daily, the marts, the returns matrix). Then, each on the base's warehouse
(restored in the same folder, so that dbt's target folder and its parse stay, as on an operator's
machine):

- one_day: the next day arrives (`ingest --until` one day later), then the same refresh;
- revision: one bar of one symbol two years before the base day is revised (a Binance CSV of that
  one row with another close, through the `files` source), then the same refresh.

Figures: wall time and the refresh's own peak memory of each, the models' own time (dbt's node
time of the models, without the process start, dbt's per-node overhead and the data tests), the
ratios to the full build of both (goal: at most 10 %), and how the one-day refresh grows from 4 to
8 years of history (goal: with the new data, not the history, so close to 1).
"""

from __future__ import annotations

import csv
import shutil
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb

from benchmarks.harness import Case, Metrics
from benchmarks.refresh_bench import (
    PRESET,
    last_manifest,
    orchestrate,
    restore_warehouse,
    save_warehouse,
    step_seconds,
)
from ingest.synthetic import resolve_preset

REFRESH = ("daily-refresh", "--bars", "--returns", "--quiet")
HISTORY_YEARS = (4, 8)
GOAL_SHARE = 0.10
REVISED_CLOSE_FACTOR = 1.01


def base_day(years: int) -> date:
    """The last day of the base: `years` of the preset's calendar, less the day that arrives."""
    preset = resolve_preset(PRESET)
    return min(preset.start + timedelta(days=round(365.25 * years)), preset.end) - timedelta(days=1)


def ingest_until(folder: Path, day: date) -> None:
    command = ["ingest", "--source", "synthetic", "--preset", PRESET, "--until", str(day)]
    orchestrate(folder, *command, "--quiet")


def write_revision(folder: Path, warehouse: Path, day: date) -> str:
    """A Binance kline CSV revising the close of the longest-lived symbol's bar of `day`."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        row = con.sql(
            f"""
            select
                symbol, epoch_ms(open_time), open, high, low, close, volume, epoch_ms(close_time),
                quote_volume, trade_count, taker_buy_base_volume, taker_buy_quote_volume
            from main.stg_klines
            where interval = '1d' and cast(open_time as date) = date '{day}'
            order by symbol
            limit 1
            """
        ).fetchone()
    if row is None:
        raise RuntimeError(f"{warehouse}: no daily kline on {day} to revise")
    symbol, open_ms, open_, high, low, close, *rest = row
    revised = close * REVISED_CLOSE_FACTOR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{symbol}-1d-{day:%Y-%m}.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerow([open_ms, open_, max(high, revised), low, revised, *rest, 0])
    return symbol


def refresh(folder: Path) -> Metrics:
    run = orchestrate(folder, *REFRESH)
    manifest = last_manifest(folder)
    figures: Metrics = {"s": run.seconds, "peak_mb": run.peak_mb}
    figures |= {f"step {name} s": seconds for name, seconds in step_seconds(manifest).items()}
    figures["models s"] = round(sum(model_seconds(manifest).values()), 2)
    return figures


def model_seconds(manifest: dict[str, Any]) -> dict[str, float]:
    """Each model's own execution time (dbt's node time), from the run manifest."""
    return {
        name: seconds
        for stage in manifest["stages"]
        for name, seconds in ((stage.get("outputs") or {}).get("model_seconds") or {}).items()
    }


def history(workdir: Path, years: int) -> Metrics:
    day = base_day(years)
    folder = workdir / f"{years}y"
    shutil.rmtree(folder, ignore_errors=True)
    ingest_until(folder, day)
    figures: Metrics = {f"{years}y base day": str(day)}
    figures |= {f"{years}y full {key}": value for key, value in refresh(folder).items()}
    save_warehouse(folder)

    ingest_until(folder, day + timedelta(days=1))
    figures |= {f"{years}y one_day {key}": value for key, value in refresh(folder).items()}

    restore_warehouse(folder)
    csv_folder = folder / "revision-csv"
    symbol = write_revision(csv_folder, folder / "data" / "warehouse.duckdb", day - timedelta(730))
    orchestrate(folder, "ingest", "--source", "files", "--path", str(csv_folder), "--quiet")
    figures[f"{years}y revision symbol"] = symbol
    figures |= {f"{years}y revision {key}": value for key, value in refresh(folder).items()}

    for case in ("one_day", "revision"):
        for label, measure in (("wall", "s"), ("models", "models s")):
            share = float(figures[f"{years}y {case} {measure}"])
            share /= float(figures[f"{years}y full {measure}"])
            figures[f"{years}y {case} / full ({label})"] = round(share, 3)
    return figures


def core_refresh(workdir: Path) -> Metrics:
    figures: Metrics = {"goal share of full": GOAL_SHARE}
    for years in HISTORY_YEARS:
        figures |= history(workdir, years)
    for label, measure in (("wall", "s"), ("models", "models s")):
        short, long = (float(figures[f"{years}y one_day {measure}"]) for years in HISTORY_YEARS)
        figures[f"one_day growth 8y / 4y ({label})"] = round(long / short, 2)
    return figures


CASES = [
    Case(
        "core_refresh",
        "bars + returns on the bench preset at 4 and 8 years: full build, one new day, one old "
        "revision (wall, peak memory, ratios)",
        core_refresh,
    ),
]
