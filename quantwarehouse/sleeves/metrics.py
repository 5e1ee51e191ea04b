"""Performance metrics of a daily return series; crypto trades every day, so a year is 365 days.

With r_1..r_n the daily returns, P periods per year and equity E_t = prod_{s<=t} (1 + r_s),
E_0 = 1:

- total_return = E_n - 1; cagr = E_n ** (P / n) - 1
- volatility = stdev(r, ddof=1) * sqrt(P)
- sharpe = mean(r) / stdev(r, ddof=1) * sqrt(P) (risk-free rate 0)
- sortino = mean(r) * P / (sqrt(mean(min(r, 0) ** 2)) * sqrt(P)) (target 0)
- max_drawdown = min over t of E_t / max_{s<=t} E_s - 1, E_0 included (a first-day loss counts)
- calmar = cagr / |max_drawdown|
- hit_rate = share of days with r > 0 (a flat day is not a hit)

A ratio whose denominator is 0 is None, as is every figure of an empty series; so is a metric
that is not finite. These are the definitions of empyrical (tested against it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from quantwarehouse.sleeves.jsonable import day_text

DAYS_PER_YEAR = 365


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _ratio(numerator: float, denominator: float) -> float | None:
    return _finite(numerator / denominator) if denominator != 0 else None


def max_drawdown(returns: np.ndarray) -> float:
    equity = np.concatenate([[1.0], np.cumprod(1.0 + returns)])
    return float((equity / np.maximum.accumulate(equity) - 1.0).min())


def performance_metrics(
    daily_returns: pd.Series, periods_per_year: int = DAYS_PER_YEAR
) -> dict[str, Any]:
    """The module's metrics as a JSON-able dict; missing returns are an error (not skipped)."""
    if daily_returns.isna().any():
        first = daily_returns.index[daily_returns.isna().to_numpy()][0]
        raise ValueError(f"daily returns have missing values (first at {first})")
    r = daily_returns.to_numpy(dtype="float64")
    n = r.size
    figures: dict[str, Any] = {
        "days": n,
        "start": day_text(daily_returns.index[0]) if n else None,
        "end": day_text(daily_returns.index[-1]) if n else None,
        "periods_per_year": periods_per_year,
    }
    names = ("total_return", "cagr", "volatility", "sharpe", "sortino", "max_drawdown")
    if n == 0:
        return figures | dict.fromkeys((*names, "calmar", "hit_rate"))
    final = float(np.prod(1.0 + r))
    stdev = float(r.std(ddof=1)) if n > 1 else float("nan")
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2))) * math.sqrt(periods_per_year)
    cagr = _finite(final ** (periods_per_year / n) - 1.0)
    drawdown = max_drawdown(r)
    return figures | {
        "total_return": _finite(final - 1.0),
        "cagr": cagr,
        "volatility": _finite(stdev * math.sqrt(periods_per_year)),
        "sharpe": _ratio(float(r.mean()) * math.sqrt(periods_per_year), stdev),
        "sortino": _ratio(float(r.mean()) * periods_per_year, downside),
        "max_drawdown": _finite(drawdown),
        "calmar": _ratio(cagr, abs(drawdown)) if cagr is not None else None,
        "hit_rate": float((r > 0).mean()),
    }
