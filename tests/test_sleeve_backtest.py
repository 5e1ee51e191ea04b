"""Walk-forward backtest: by hand on two assets, against the plain loop, and point in time."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from benchmarks.sleeves_bench import synthetic_market, walk_forward_loop
from quantwarehouse.sleeves.backtest import walk_forward
from quantwarehouse.sleeves.profiles import load_profile

DAYS = pd.date_range("2024-01-01", periods=15, freq="D")


def small_profile(direction: str = "LONG", optimizer: str = "equal_weight", **changes):
    name = (
        "binance_spot_rating_all_long" if direction == "LONG" else "binance_spot_rating_all_short"
    )
    base = load_profile(name)
    return dataclasses.replace(
        base,
        lookback_days=5,
        rebalance_days=2,
        cost_bps=10.0,
        primary_optimizer=optimizer,
        selection=dataclasses.replace(base.selection, target_count=2, min_history_days=0),
        **changes,
    )


def two_assets(rating: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    returns = pd.DataFrame({"AUSDT": 0.01, "BUSDT": -0.01}, index=DAYS)
    returns.loc[DAYS[11:15], "AUSDT"] = [0.10, -0.05, 0.02, 0.04]
    returns.loc[DAYS[11:15], "BUSDT"] = [-0.02, 0.03, 1.50, -0.01]
    features = pd.DataFrame(
        {
            "bar_date": np.repeat(DAYS, 2),
            "symbol": ["AUSDT", "BUSDT"] * len(DAYS),
            "rating_all": rating,
        }
    )
    return features, returns


def hand_backtest(a: list[float], b: list[float], cost_rate: float) -> tuple[list, list, list]:
    """Equal weight, rebalanced on days 10, 12 and 14, written out day by day."""
    wa = wb = 0.5
    gross, turnovers = [0.0], [1.0]  # day 10: bought from cash
    for day, (ra, rb) in enumerate(zip(a, b, strict=True), start=11):
        g = wa * ra + wb * rb
        gross.append(g)
        wa, wb = wa * (1 + ra) / (1 + g), wb * (1 + rb) / (1 + g)
        if day in (12, 14):
            turnovers.append(abs(0.5 - wa) + abs(0.5 - wb))
            wa = wb = 0.5
    costs = [t * cost_rate for t in turnovers]
    charged = {10: costs[0], 12: costs[1], 14: costs[2]}
    net = [(1 + g) * (1 - charged.get(day, 0.0)) - 1 for day, g in enumerate(gross, start=10)]
    return gross, net, turnovers


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_two_assets_by_hand(direction):
    features, returns = two_assets(0.5 if direction == "LONG" else -0.5)
    result = walk_forward(features, returns, small_profile(direction), DAYS[10], DAYS[14])
    a = [0.10, -0.05, 0.02, 0.04]
    b = [-0.02, 0.03, 1.50, -0.01]
    if direction == "SHORT":  # the atoms earn -clip(raw, upper=1): +150 % costs the short 100 %
        a, b = [-x for x in a], [-min(x, 1.0) for x in b]
    gross, net, turnovers = hand_backtest(a, b, 10 / 10_000)
    assert list(result.daily_returns.index) == list(DAYS[10:15])
    assert result.gross_returns.tolist() == pytest.approx(gross, abs=1e-15)
    assert result.daily_returns.tolist() == pytest.approx(net, abs=1e-15)
    assert result.turnover.tolist() == pytest.approx(turnovers, abs=1e-15)
    assert list(result.turnover.index) == [DAYS[10], DAYS[12], DAYS[14]]
    assert result.costs.tolist() == pytest.approx([t / 1000 for t in turnovers])
    atoms = [
        f"AUSDT:{direction}:{small_profile(direction).name}",
        f"BUSDT:{direction}:{small_profile(direction).name}",
    ]
    assert sorted(result.weights_history.columns) == atoms
    assert (result.weights_history == 0.5).all().all()
    assert result.rebalances["method"].tolist() == ["equal_weight"] * 3


def test_the_universe_is_read_as_of_each_rebalance_date():
    features, returns = two_assets(0.5)
    on_day_12 = (features["bar_date"] == DAYS[12]) & (features["symbol"] == "BUSDT")
    features.loc[on_day_12, "rating_all"] = -0.9  # fails rating_all > -0.3 on that day only
    result = walk_forward(features, returns, small_profile(), DAYS[10], DAYS[14])
    held = result.weights_history
    name = small_profile().name
    assert held.loc[DAYS[12], f"BUSDT:LONG:{name}"] == 0.0
    assert held.loc[DAYS[12], f"AUSDT:LONG:{name}"] == 1.0
    assert held.loc[DAYS[14], f"BUSDT:LONG:{name}"] == 0.5
    assert result.rebalances.set_index("rebalance_date").loc[DAYS[12], "universe"] == 1


def test_no_candidate_means_cash():
    features, returns = two_assets(-0.9)  # nobody passes the LONG filter
    result = walk_forward(features, returns, small_profile(), DAYS[10], DAYS[14])
    assert (result.daily_returns == 0).all() and (result.turnover == 0).all()
    assert result.rebalances["method"].tolist() == ["cash"] * 3
    assert result.weights_history.empty


@pytest.fixture(scope="module")
def market():
    return synthetic_market(symbols=30, days=320, seed=3)


def market_profile(optimizer: str, every: int):
    base = load_profile("binance_spot_rating_ma_long")
    return dataclasses.replace(base, primary_optimizer=optimizer, rebalance_days=every)


@pytest.mark.parametrize(("optimizer", "every"), [("equal_weight", 7), ("hrp", 30)])
def test_walk_forward_equals_the_plain_loop(market, optimizer, every):
    features, returns = market
    profile = market_profile(optimizer, every)
    start, end = returns.index[190].date(), returns.index[-1].date()
    fast = walk_forward(features, returns, profile, start, end)
    loop = walk_forward_loop(features, returns, profile, start, end)
    pd.testing.assert_frame_equal(fast.weights_history, loop.weights_history, atol=1e-12)
    pd.testing.assert_frame_equal(fast.rebalances, loop.rebalances, atol=1e-12)
    pd.testing.assert_series_equal(fast.daily_returns, loop.daily_returns, atol=1e-13)
    assert fast.missing_held_returns == loop.missing_held_returns
    assert fast.rebalances["selected"].gt(0).all()
    assert (fast.weights_history.sum(axis=1) - 1).abs().max() < 1e-12


def test_changing_data_after_a_rebalance_leaves_its_weights_unchanged(market):
    features, returns = market
    profile = market_profile("hrp", 14)
    start, end = returns.index[190].date(), returns.index[260].date()
    before = walk_forward(features, returns, profile, start, end)
    cut = before.weights_history.index[2]
    rng = np.random.default_rng(0)
    later = returns.index > cut
    changed_returns = returns.copy()
    changed_returns.loc[later] = rng.normal(0, 0.1, changed_returns.loc[later].shape)
    changed_returns.loc[later, changed_returns.columns[:3]] = np.nan
    changed_features = features.copy()
    future = pd.to_datetime(changed_features["bar_date"]) > cut
    changed_features.loc[future, "rating_ma"] = -changed_features.loc[future, "rating_ma"]
    after = walk_forward(changed_features, changed_returns, profile, start, end)
    kept = before.weights_history.index <= cut
    pd.testing.assert_frame_equal(
        before.weights_history[kept].loc[:, lambda w: (w != 0).any()],
        after.weights_history[kept].loc[:, lambda w: (w != 0).any()],
    )
    pd.testing.assert_series_equal(before.daily_returns[:cut], after.daily_returns[:cut])
    assert not before.weights_history[~kept].equals(after.weights_history[~kept])


def test_a_rebalance_date_without_any_features_row_holds_cash():
    features, returns = two_assets(0.5)
    features = features[pd.to_datetime(features["bar_date"]) != DAYS[12]]
    result = walk_forward(features, returns, small_profile(), DAYS[10], DAYS[14])
    by_date = result.rebalances.set_index("rebalance_date")
    assert by_date.loc[DAYS[12], "method"] == "cash" and by_date.loc[DAYS[12], "universe"] == 0
    assert (result.weights_history.loc[DAYS[12]] == 0).all()
    assert result.gross_returns[DAYS[13]] == 0.0
