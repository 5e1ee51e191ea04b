"""Walk-forward backtest: the plain pandas loop against `quantwarehouse.sleeves.backtest`.

`walk_forward_loop` is the straightforward version, kept as the baseline (and as the reference
the tests compare `walk_forward` with): at each rebalance it filters the long features frame and
calls `aggregate` and `metadata_as_of` on the whole inputs, then walks the holding period day by
day and atom by atom. Both make the same decisions through `rebalance_weights`.

`synthetic_market` builds the inputs: sector-factor returns with holes, late listings, and
ratings that follow 20-day momentum (in 1/15 steps, like the MA rating's 15 votes).
"""

from __future__ import annotations

import dataclasses
from datetime import date
from importlib import import_module

import numpy as np
import pandas as pd

from benchmarks.harness import Case, Metrics, timed
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
    return {
        "symbols": symbols,
        "days": days,
        "rebalances": len(fast.rebalances),
        "loop_s": round(loop_s, 2),
        "walk_forward_s": round(fast_s, 2),
        "speedup": round(loop_s / fast_s, 2),
        "max_abs_return_difference": gap,
    }


CASES = [
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
