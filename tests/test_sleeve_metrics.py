"""Performance metrics: by hand on tiny series, and against empyrical (an independent library)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from quantwarehouse.sleeves.metrics import performance_metrics

empyrical = pytest.importorskip("empyrical")  # test-only reference (pyproject dev extras)


def series(values: list[float]) -> pd.Series:
    return pd.Series(values, index=pd.date_range("2024-01-01", periods=len(values), freq="D"))


def test_metrics_by_hand():
    r = [0.10, -0.20, 0.05, 0.0]
    figures = performance_metrics(series(r))
    final = 1.1 * 0.8 * 1.05 * 1.0  # 0.924
    mean = sum(r) / 4  # -0.0125
    stdev = math.sqrt(sum((x - mean) ** 2 for x in r) / 3)
    downside = math.sqrt((0.20**2) / 4)  # only the -20 % day is below 0
    assert figures["days"] == 4 and figures["start"] == "2024-01-01"
    assert figures["end"] == "2024-01-04"
    assert figures["total_return"] == pytest.approx(final - 1)
    assert figures["cagr"] == pytest.approx(final ** (365 / 4) - 1)
    assert figures["volatility"] == pytest.approx(stdev * math.sqrt(365))
    assert figures["sharpe"] == pytest.approx(mean / stdev * math.sqrt(365))
    assert figures["sortino"] == pytest.approx(mean * 365 / (downside * math.sqrt(365)))
    # equity 1, 1.1, 0.88, 0.924, 0.924: the trough 0.88 after the peak 1.1
    assert figures["max_drawdown"] == pytest.approx(0.88 / 1.1 - 1)
    assert figures["calmar"] == pytest.approx((final ** (365 / 4) - 1) / 0.2)
    assert figures["hit_rate"] == 0.5  # the flat day is not a hit


def test_a_first_day_loss_is_a_drawdown_from_the_starting_equity():
    assert performance_metrics(series([-0.1, 0.05]))["max_drawdown"] == pytest.approx(-0.1)


def test_undefined_ratios_are_null_and_the_result_is_json():
    flat = performance_metrics(series([0.0, 0.0, 0.0]))
    assert flat["sharpe"] is None and flat["sortino"] is None and flat["calmar"] is None
    assert flat["max_drawdown"] == 0.0 and flat["hit_rate"] == 0.0
    one = performance_metrics(series([0.01]))
    assert one["volatility"] is None and one["sharpe"] is None
    empty = performance_metrics(pd.Series([], dtype="float64"))
    assert empty["days"] == 0 and empty["cagr"] is None
    json.dumps([flat, one, empty], allow_nan=False)


def test_missing_returns_are_an_error_naming_the_day():
    with pytest.raises(ValueError, match="missing values \\(first at 2024-01-02"):
        performance_metrics(series([0.01, np.nan, 0.02]))


def test_metrics_match_empyrical_with_365_day_years():
    rng = np.random.default_rng(8)
    r = series(list(rng.normal(0.001, 0.03, 500)))
    figures = performance_metrics(r)
    year = 365
    assert figures["cagr"] == pytest.approx(empyrical.annual_return(r, annualization=year))
    assert figures["volatility"] == pytest.approx(
        empyrical.annual_volatility(r, annualization=year)
    )
    assert figures["sharpe"] == pytest.approx(empyrical.sharpe_ratio(r, annualization=year))
    assert figures["sortino"] == pytest.approx(empyrical.sortino_ratio(r, annualization=year))
    assert figures["max_drawdown"] == pytest.approx(empyrical.max_drawdown(r))
    assert figures["calmar"] == pytest.approx(empyrical.calmar_ratio(r, annualization=year))
    assert figures["total_return"] == pytest.approx(empyrical.cum_returns_final(r))
