"""Walk-forward validation of a sleeve profile, point in time (ARCHITECTURE.md invariant 5).

Rebalance dates are `start`, `start + rebalance_days`, ... up to `end`. At the close of each:

1. the eligible universe is the symbols whose features-matrix row of that very date passes the
   profile's rating filter (a symbol without a row that day is not eligible);
2. strict health, HTR selection, synthesis, regime caps and the primary optimizer (with its
   stable-sum fallback) run on the `lookback_days` window ending that day, with metadata from
   the features matrix up to that day: nothing dated later is read;
3. the new weights replace the drifted old ones; turnover = sum |w_new - w_drifted| (the first
   rebalance buys from cash: turnover 1), cost = turnover * cost_bps / 10,000 of equity.

Between rebalances the positions drift with their atoms' returns (buy and hold): a SHORT atom
earns -clip(raw, upper=1.0) like in production. A held symbol without a return on a day (a gap
or a delisting after the rebalance) earns 0 that day, counted in `missing_held_returns`. The
daily return of day t is sum_i w_i,t-1 r_i,t over the drifted weights; on a rebalance date the
cost is charged at the close: net = (1 + gross) * (1 - cost) - 1. An empty selection holds cash.

`walk_forward` lays the inputs out once: the rating matrix, the returns over a calendar, prefix
sums from which each window's efficiency ratio and pattern counts (entropy) come in O(1) per
symbol, and the rolling volatility of the atom returns for the regime caps; each holding period
is an array product. `benchmarks/sleeves_bench.walk_forward_loop` is the plain pandas loop it is
tested and timed against (same decisions; measures equal to rounding, entropy exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from quantwarehouse.sleeves.optimize import optimize
from quantwarehouse.sleeves.preopt import caps_from_volatility, regime_caps
from quantwarehouse.sleeves.profiles import Profile
from quantwarehouse.sleeves.selection import (
    PATTERN_CODES,
    WindowMeasures,
    entropy_from_counts,
    health_table,
    pattern_codes,
    select_htr,
)
from quantwarehouse.sleeves.synthesis import short_returns, synthesize

BPS = 10_000


@dataclass(frozen=True)
class BacktestResult:
    daily_returns: pd.Series  # net of costs, every calendar day from start to end
    gross_returns: pd.Series
    weights_history: pd.DataFrame  # rebalance date x atom, weights set at that close (0 = none)
    turnover: pd.Series  # per rebalance date
    costs: pd.Series  # per rebalance date, fraction of equity
    rebalances: pd.DataFrame  # per rebalance date: universe, selection, method, fallback
    missing_held_returns: int


def rebalance_dates(start: date, end: date, every_days: int) -> list[pd.Timestamp]:
    first, last = pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize()
    if last < first:
        raise ValueError(f"end {last:%Y-%m-%d} is before start {first:%Y-%m-%d}")
    return list(pd.date_range(first, last, freq=f"{every_days}D"))


def rebalance_weights(
    window_returns: pd.DataFrame,
    health: pd.DataFrame,
    metadata: pd.DataFrame,
    profile: Profile,
    measures: WindowMeasures | None = None,
    volatility: pd.DataFrame | None = None,
) -> tuple[pd.Series, dict[str, Any]]:
    """One rebalance: selection, atoms, regime caps, primary optimizer (weights by atom id).

    `measures` and `volatility` (rolling volatility of each symbol's atom returns, the rows whose
    windows lie inside the lookback window) may come precomputed; else they are computed here.
    """
    selection = select_htr(window_returns, health, metadata, profile, measures)
    record: dict[str, Any] = {
        "universe": len(health),
        "healthy": int(health["healthy"].sum()),
        "selected": len(selection.selected),
        "stage_ended": selection.stage_ended,
    }
    if not selection.selected:
        return pd.Series(dtype="float64"), record | {"method": "cash", "fallback": ""}
    atoms = synthesize(window_returns, selection.selected, profile.direction, profile.name)
    if volatility is None:
        regimes = regime_caps(atoms.returns, profile.regime)
    else:
        rolling = volatility[selection.selected].to_numpy()
        regimes = caps_from_volatility(rolling, list(atoms.returns.columns), profile.regime)
    caps = pd.Series(regimes["cap"].to_numpy(), index=regimes["atom"])
    result = optimize(atoms.returns, profile, caps, methods=(profile.primary_optimizer,))
    return result.final_weights, record | {
        "method": result.chosen_method,
        "fallback": result.fallback_reason,
    }


def atom_symbol_direction(atom: str) -> tuple[str, str]:
    symbol, direction, _ = atom.split(":", 2)
    return symbol, direction


def held_returns(raw: pd.DataFrame, atoms: list[str]) -> tuple[np.ndarray, int]:
    """Atom returns over holding days (missing raw returns as 0) and how many were missing."""
    symbols, directions = (
        zip(*map(atom_symbol_direction, atoms), strict=True) if atoms else ((), ())
    )
    values = raw.reindex(columns=list(symbols)).to_numpy(dtype="float64", copy=True)
    holes = np.isnan(values)
    values[holes] = 0.0
    short = np.array([direction == "SHORT" for direction in directions], dtype=bool)
    values[:, short] = short_returns(values[:, short])
    return values, int(holes.sum())


def hold(weights: np.ndarray, returns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Daily returns of buy-and-hold `weights` over `returns` (days x atoms), and the end weights.

    Day t returns sum_i w_i,t-1 r_i,t with the weights drifted by growth; a portfolio worth
    nothing (cash, or wiped out) returns 0.
    """
    if len(returns) == 0:
        return np.empty(0), weights
    growth = np.cumprod(1.0 + returns, axis=0)
    value = np.concatenate([[weights.sum()], growth @ weights])
    before = value[:-1]
    ratio = np.divide(value[1:], before, out=np.ones(len(returns)), where=before > 0)
    drifted = weights * growth[-1] / value[-1] if value[-1] > 0 else np.zeros_like(weights)
    return ratio - 1.0, drifted


def turnover_between(new: pd.Series, drifted: pd.Series) -> float:
    """sum |w_new - w_drifted| over the atoms of either."""
    before = dict(drifted.items())
    traded = sum(abs(weight - before.pop(atom, 0.0)) for atom, weight in new.items())
    return float(traded + sum(abs(weight) for weight in before.values()))


def _prefix_sums(values: np.ndarray) -> np.ndarray:
    """Row prefix sums with a leading zero row: rows [a, b) sum to p[b] - p[a]."""
    return np.concatenate([np.zeros((1, *values.shape[1:])), np.cumsum(values, axis=0)])


@dataclass(frozen=True)
class _Inputs:
    """Features and returns laid out once over a calendar, with prefix sums for the measures."""

    ratings: pd.DataFrame  # bar_date x symbol, the profile's rating field
    first_dates: dict[str, pd.Timestamp]  # symbol -> first features date
    returns: pd.DataFrame  # every calendar day x symbol
    known: set[str]
    net: np.ndarray  # prefix sums of ln(1 + r), holes as 0
    path: np.ndarray  # prefix sums of |ln(1 + r)|
    patterns: np.ndarray  # per pattern code, prefix counts of runs of three by first day
    volatility: pd.DataFrame  # rolling stdev of the atom returns (the profile's direction)

    def measures(self, first: int, last: int, symbols: list[str]) -> WindowMeasures:
        """Entropy and efficiency over calendar rows first..last, from the prefix sums."""
        columns = self.returns.columns.get_indexer(symbols)
        net = self.net[last + 1, columns] - self.net[first, columns]
        path = self.path[last + 1, columns] - self.path[first, columns]
        with np.errstate(divide="ignore", invalid="ignore"):
            signed = np.where(path != 0, net / path, 0.0)
        counts = self.patterns[:, last - 1, columns] - self.patterns[:, first, columns]
        entropy = entropy_from_counts(counts, last - first - 1)
        return WindowMeasures(
            pd.Series(entropy, index=symbols),
            pd.Series(np.abs(signed), index=symbols),
            pd.Series(signed, index=symbols),
        )


def _prepare(
    features: pd.DataFrame, returns: pd.DataFrame, profile: Profile, start: date, end: date
) -> _Inputs:
    frame = features.assign(bar_date=pd.to_datetime(features["bar_date"]))
    ratings = frame.pivot(index="bar_date", columns="symbol", values=profile.rating_field)
    dated = returns.set_axis(pd.DatetimeIndex(pd.to_datetime(returns.index)), axis=0)
    first_day = pd.Timestamp(start) - timedelta(days=profile.lookback_days)
    calendar = pd.date_range(min(first_day, dated.index.min()), pd.Timestamp(end), freq="D")
    wide = dated.reindex(calendar)
    values = wide.to_numpy(dtype="float64")
    logs = np.nan_to_num(np.log1p(values))
    codes = pattern_codes(values)
    atom_returns = wide if profile.direction == "LONG" else short_returns(wide)
    return _Inputs(
        ratings=ratings,
        first_dates=frame.groupby("symbol")["bar_date"].min().to_dict(),
        returns=wide,
        known=set(returns.columns),
        net=_prefix_sums(logs),
        path=_prefix_sums(np.abs(logs)),
        patterns=np.stack([_prefix_sums(codes == code) for code in PATTERN_CODES]),
        volatility=atom_returns.rolling(profile.regime.window_days).std(),
    )


def _universe(inputs: _Inputs, day: pd.Timestamp, profile: Profile) -> list[str]:
    if day not in inputs.ratings.index:
        return []
    row = inputs.ratings.loc[day]
    return sorted(row.index[profile.rating_filter.mask(row).to_numpy()])


def _metadata(inputs: _Inputs, day: pd.Timestamp, symbols: list[str], field: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "symbol": symbols,
            "history_days": [(day - inputs.first_dates[s]).days + 1 for s in symbols],
            field: inputs.ratings.reindex(index=[day], columns=symbols).to_numpy()[0],
        }
    )


def walk_forward(
    features: pd.DataFrame,
    returns: pd.DataFrame,
    profile: Profile,
    start: date,
    end: date,
) -> BacktestResult:
    """Walk-forward backtest (module docstring).

    `features`: long rows (bar_date, symbol, the profile's rating field); `returns`: wide simple
    returns (index date, columns symbol), a missing bar as a missing value or a missing row.
    """
    inputs = _prepare(features, returns, profile, start, end)
    dates = rebalance_dates(start, end, profile.rebalance_days)
    days = pd.date_range(dates[0], pd.Timestamp(end).normalize(), freq="D")
    gross = pd.Series(0.0, index=days)
    drifted = pd.Series(dtype="float64")
    history, turnovers, costs, records = {}, {}, {}, []
    missing_total = 0
    for k, day in enumerate(dates):
        symbols = _universe(inputs, day, profile)
        last = inputs.returns.index.get_loc(day)
        first = last - profile.lookback_days + 1
        window = inputs.returns.iloc[first : last + 1].reindex(columns=symbols)
        weights, record = rebalance_weights(
            window,
            health_table(window, inputs.known),
            _metadata(inputs, day, symbols, profile.rating_field),
            profile,
            inputs.measures(first, last, symbols),
            inputs.volatility.iloc[first + profile.regime.window_days - 1 : last + 1],
        )
        turnovers[day] = turnover_between(weights, drifted)
        costs[day] = turnovers[day] * profile.cost_bps / BPS
        history[day] = weights
        records.append({"rebalance_date": day, **record})
        period_end = dates[k + 1] if k + 1 < len(dates) else days[-1]
        holding = inputs.returns.loc[day + timedelta(days=1) : period_end]
        atoms = list(weights.index)
        values, missing = held_returns(holding, atoms)
        missing_total += missing
        daily, end_weights = hold(weights.to_numpy(), values)
        gross.loc[holding.index] = daily
        drifted = pd.Series(end_weights, index=atoms)
    return assemble_result(gross, history, turnovers, costs, records, missing_total)


def assemble_result(
    gross: pd.Series,
    history: dict[pd.Timestamp, pd.Series],
    turnovers: dict[pd.Timestamp, float],
    costs: dict[pd.Timestamp, float],
    records: list[dict[str, Any]],
    missing_held_returns: int,
) -> BacktestResult:
    """The result from per-day gross returns and per-rebalance weights, turnover, cost, records."""
    cost = pd.Series(costs, dtype="float64")
    net = (1.0 + gross) * (1.0 - cost.reindex(gross.index, fill_value=0.0)) - 1.0
    weights = pd.DataFrame(history).T.fillna(0.0)
    weights.index.name = "rebalance_date"
    rebalances = pd.DataFrame(records)
    rebalances["turnover"] = rebalances["rebalance_date"].map(turnovers)
    rebalances["cost"] = rebalances["rebalance_date"].map(costs)
    return BacktestResult(
        daily_returns=net.rename("net_return"),
        gross_returns=gross.rename("gross_return"),
        weights_history=weights,
        turnover=pd.Series(turnovers, dtype="float64", name="turnover"),
        costs=cost.rename("cost"),
        rebalances=rebalances,
        missing_held_returns=missing_held_returns,
    )
