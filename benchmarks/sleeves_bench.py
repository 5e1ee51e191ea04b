"""Sleeve benchmarks: the walk-forward backtest against a plain pandas loop, and refresh-sleeves.

Walk-forward backtest: the plain pandas loop against `quantwarehouse.sleeves.backtest`.

`walk_forward_loop` is the straightforward version, kept as the baseline (and as the reference
the tests compare `walk_forward` with): at each rebalance it filters the long features frame and
calls `aggregate` and `metadata_as_of` on the whole inputs, then walks the holding period day by
day and atom by atom. Both make the same decisions through `rebalance_weights`.

`synthetic_market` builds the inputs: sector-factor returns with holes, late listings, and
ratings that follow 20-day momentum (in 1/15 steps, like the MA rating's 15 votes).

refresh-sleeves (`sleeve_refresh_<preset>`, presets demo and bench): the preset ingested up to the
day before its last and every layer built (prepared once per benchmark folder, timed; for bench
the base of benchmarks/refresh_bench is the same and is shared), then `orchestrate.py
refresh-sleeves` with the source up to the last day: the one-day data refresh, then the four
ratings sleeves in parallel, complete (validation and post-analysis included). Figures: the wall
time, the refresh's, each sleeve's, each production step's mean and max over the sleeves (from
their run manifests), each sleeve's peak memory and the case's (largest process).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from datetime import date, datetime, timedelta
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.harness import Case, Metrics, timed
from ingest.synthetic import resolve_preset
from quantwarehouse.paths import REPO_ROOT
from quantwarehouse.sleeves.backtest import (
    BPS,
    BacktestResult,
    assemble_result,
    atom_symbol_direction,
    rebalance_dates,
    rebalance_weights,
)
from quantwarehouse.sleeves.profiles import Profile, load_profile
from quantwarehouse.sleeves.selection import aggregate, metadata_as_of


def synthetic_market(
    symbols: int, days: int, seed: int = 7, first_day: str = "2022-01-01"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(features: bar_date, symbol, rating_all, rating_ma; returns: wide, NaN where no bar)."""
    rng = np.random.default_rng(seed)
    calendar = pd.date_range(first_day, periods=days, freq="D")
    names = [f"S{i:03d}USDT" for i in range(symbols)]
    sectors = np.arange(symbols) % 4
    factors = rng.normal(0.0, 0.025, (days, 4))
    drift = rng.normal(0.0, 0.002, symbols)
    raw = factors[:, sectors] + rng.normal(0.0, 0.02, (days, symbols)) + drift
    returns = pd.DataFrame(np.clip(raw, -0.9, 3.0), index=calendar, columns=names)
    for column in rng.choice(symbols, size=max(1, symbols // 10), replace=False):
        start = rng.integers(0, days - 3)
        returns.iloc[start : start + rng.integers(1, 4), column] = np.nan  # maintenance gaps
    for column in rng.choice(symbols, size=max(1, symbols // 8), replace=False):
        returns.iloc[: rng.integers(days // 4, days // 2), column] = np.nan  # late listings
    momentum = np.log1p(returns.fillna(0.0)).rolling(20, min_periods=1).sum()
    noise = rng.normal(0.0, 0.3, momentum.shape)
    rating_ma = np.clip(np.round((np.tanh(8 * momentum) + noise) * 15) / 15, -1, 1)
    rating_all = np.clip(
        np.round((rating_ma + rng.normal(0.0, 0.2, momentum.shape)) * 26) / 26, -1, 1
    )
    listed = returns.notna()
    long = pd.DataFrame(
        {
            "bar_date": np.repeat(calendar, symbols),
            "symbol": np.tile(names, days),
            "rating_all": rating_all.to_numpy().ravel(),
            "rating_ma": rating_ma.to_numpy().ravel(),
            "has_bar": listed.to_numpy().ravel(),
        }
    )
    features = long[long["has_bar"]].drop(columns="has_bar").reset_index(drop=True)
    return features, returns


def _holding_step(
    holdings: dict[str, float], returns: pd.DataFrame, day: pd.Timestamp
) -> tuple[float, dict[str, float], int]:
    """One day of buy and hold: the portfolio return, the drifted weights, missing returns."""
    atom_returns, missing = {}, 0
    for atom in holdings:
        symbol, direction = atom_symbol_direction(atom)
        value = returns.at[day, symbol] if symbol in returns and day in returns.index else np.nan
        if pd.isna(value):
            missing += 1
            value = 0.0
        atom_returns[atom] = value if direction == "LONG" else -min(value, 1.0)
    before = sum(holdings.values())
    after = sum(w * (1 + atom_returns[a]) for a, w in holdings.items())
    portfolio = after / before - 1 if before > 0 else 0.0
    drifted = {
        a: w * (1 + atom_returns[a]) / after if after > 0 else 0.0 for a, w in holdings.items()
    }
    return portfolio, drifted, missing


def walk_forward_loop(
    features: pd.DataFrame, returns: pd.DataFrame, profile: Profile, start: date, end: date
) -> BacktestResult:
    """The baseline: same rules as `walk_forward`, one date and one atom at a time."""
    field = profile.rating_field
    feature_dates = pd.to_datetime(features["bar_date"])
    dated = returns.set_axis(pd.DatetimeIndex(pd.to_datetime(returns.index)), axis=0)
    dates = rebalance_dates(start, end, profile.rebalance_days)
    days = pd.date_range(dates[0], pd.Timestamp(end).normalize(), freq="D")
    gross = pd.Series(0.0, index=days)
    holdings: dict[str, float] = {}
    history, turnovers, costs, records, missing_total = {}, {}, {}, [], 0
    for k, day in enumerate(dates):
        today = features[feature_dates == day]
        universe = sorted(today["symbol"][profile.rating_filter.mask(today[field])])
        aggregated = aggregate(universe, dated[dated.index <= day], profile.lookback_days, day)
        metadata = metadata_as_of(features, day, field)
        weights, record = rebalance_weights(
            aggregated.returns_window, aggregated.health, metadata, profile
        )
        atoms = set(weights.index) | set(holdings)
        turnover = sum(abs(weights.get(a, 0.0) - holdings.get(a, 0.0)) for a in atoms)
        turnovers[day], costs[day] = turnover, turnover * profile.cost_bps / BPS
        history[day] = weights
        records.append({"rebalance_date": day, **record})
        holdings = dict(weights.items())
        period_end = dates[k + 1] if k + 1 < len(dates) else days[-1]
        for t in pd.date_range(day + pd.Timedelta(days=1), period_end, freq="D"):
            gross[t], holdings, missing = _holding_step(holdings, dated, t)
            missing_total += missing
    return assemble_result(gross, history, turnovers, costs, records, missing_total)


def compare(optimizer: str, symbols: int, days: int) -> Metrics:
    from quantwarehouse.sleeves.backtest import walk_forward

    features, returns = synthetic_market(symbols, days)
    profile = dataclasses.replace(
        load_profile("binance_spot_rating_all_long"), primary_optimizer=optimizer
    )
    start, end = returns.index[200].date(), returns.index[-1].date()
    import_module("riskfolio")  # imported before timing: seconds that neither side should carry
    loop_s, baseline = timed(lambda: walk_forward_loop(features, returns, profile, start, end))
    fast_s, fast = timed(lambda: walk_forward(features, returns, profile, start, end))
    gap = float((baseline.daily_returns - fast.daily_returns).abs().max())
    asset_days = symbols * len(fast.daily_returns)  # every symbol, every backtested day
    return {
        "symbols": symbols,
        "days": days,
        "rebalances": len(fast.rebalances),
        "loop_s": round(loop_s, 2),
        "walk_forward_s": round(fast_s, 2),
        "speedup": round(loop_s / fast_s, 2),
        "loop_asset_days_per_s": round(asset_days / loop_s),
        "walk_forward_asset_days_per_s": round(asset_days / fast_s),
        "max_abs_return_difference": gap,
    }


# -- refresh-sleeves ---------------------------------------------------------------------------


def last_day(preset: str) -> date:
    return resolve_preset(preset).end


def prepared_base(root: Path, preset: str) -> tuple[Path, dict[str, Any]]:
    """The preset up to the day before its last, every layer built (once per folder)."""
    from benchmarks import refresh_bench  # its base, data folders and CLI runner

    if preset == refresh_bench.PRESET:
        return refresh_bench.base(root)
    folder = root / f"sleeves-base-{preset}"
    figures_file = folder / "prepared.json"
    if not figures_file.exists():
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "data").mkdir(parents=True)
        until = str(last_day(preset) - timedelta(days=1))
        ingest = ["ingest", "--source", "synthetic", "--preset", preset, "--until", until]
        ingest_s, _ = timed(lambda: refresh_bench.orchestrate(folder, *ingest, "--quiet"))
        build = ["daily-refresh", "--bars", "--returns", "--emas", "--features", "--quiet"]
        build_s, _ = timed(lambda: refresh_bench.orchestrate(folder, *build))
        figures = {"ingest_s": round(ingest_s, 1), "full_build_s": round(build_s, 1)}
        figures_file.write_text(json.dumps(figures))
    return folder, json.loads(figures_file.read_text())


def sleeve_manifests(folder: Path) -> list[dict[str, Any]]:
    runs = (folder / "data" / "runs").glob("*/run_manifest.json")
    return [
        m for m in (json.loads(p.read_text()) for p in runs) if "stages" in m and "profile" in m
    ]


def refresh_sleeves(preset: str, workdir: Path) -> Metrics:
    from benchmarks import refresh_bench

    base, prepared = prepared_base(workdir.parent, preset)
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "data").mkdir(parents=True)
    shutil.copyfile(base / "data" / "warehouse.duckdb", workdir / "data" / "warehouse.duckdb")
    config = workdir / "refresh.yml"
    config.write_text(
        f"source:\n  name: synthetic\n  options:\n    preset: {preset}\n"
        f"    until: {last_day(preset)}\n"
    )
    # A quality gate failing for some symbols fails the refresh; the sleeves still run (and
    # are timed) on what it wrote, and the figures say how the refresh ended.
    command = [
        sys.executable,
        str(REPO_ROOT / "orchestrate.py"),
        "refresh-sleeves",
        "--refresh-config",
        str(config),
        "--run-after-failed-refresh",
    ]
    wall, result = timed(
        lambda: subprocess.run(
            command,
            env=refresh_bench.environment(workdir),
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO_ROOT,
        )
    )
    refresh = re.search(r"data refresh: (\w+).* in ([0-9.]+)s\n", result.stdout)
    manifests = sleeve_manifests(workdir)
    figures: Metrics = {
        "refresh_sleeves_s": round(wall, 1),
        "exit_status": result.returncode,
        "data_refresh": refresh.group(1) if refresh else "not found",
        "data_refresh_s": float(refresh.group(2)) if refresh else "not found",
        "sleeves": len(manifests),
        "base_ingest_s": prepared["ingest_s"],
        "base_full_build_s": prepared["full_build_s"],
    }
    for manifest in sorted(manifests, key=lambda m: m["profile"]):
        began = datetime.fromisoformat(manifest["created_at"])
        ended = datetime.fromisoformat(manifest["finished_at"])
        figures[f"{manifest['profile']} s"] = round((ended - began).total_seconds(), 1)
        figures[f"{manifest['profile']} peak_rss_mb"] = manifest["peak_rss_mb"]
        figures[f"{manifest['profile']} status"] = manifest["status"]
    steps = pd.DataFrame(
        [{"step": s["name"], "s": s["seconds"] or 0.0} for m in manifests for s in m["stages"]]
    )
    for step, seconds in steps.groupby("step", sort=False)["s"]:
        figures[f"step {step} mean s"] = round(float(seconds.mean()), 2)
        figures[f"step {step} max s"] = round(float(seconds.max()), 2)
    return figures


CASES = [
    Case(
        "sleeve_refresh_demo",
        "refresh-sleeves on the demo preset (60 symbols x 3 years): one-day refresh + 4 sleeves",
        lambda workdir: refresh_sleeves("demo", workdir),
    ),
    Case(
        "sleeve_refresh_bench",
        "refresh-sleeves on the bench preset (500 symbols x 8 years): one-day refresh + 4 sleeves",
        lambda workdir: refresh_sleeves("bench", workdir),
    ),
    Case(
        "sleeve_backtest_equal_weight",
        "walk-forward, 120 symbols x 3 years, weekly, equal weight: loop vs walk_forward",
        lambda workdir: compare("equal_weight", 120, 3 * 365),
    ),
    Case(
        "sleeve_backtest_hrp",
        "walk-forward, 60 symbols x 2 years, weekly, HRP (riskfolio): loop vs walk_forward",
        lambda workdir: compare("hrp", 60, 2 * 365),
    ),
]
