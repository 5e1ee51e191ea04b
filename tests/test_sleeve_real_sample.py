"""The sleeve library on the real Binance sample (../shared/data): ten symbols, 2017-2018, with
the project's own ratings; one production pass through every step, and the backtest."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.sleeves_bench import walk_forward_loop
from quantwarehouse.features import symbol_features
from quantwarehouse.sleeves.audit import AuditTrail, environment_info, frame_hash, verify_audit
from quantwarehouse.sleeves.backtest import walk_forward
from quantwarehouse.sleeves.metrics import performance_metrics
from quantwarehouse.sleeves.optimize import optimize
from quantwarehouse.sleeves.preopt import preopt_analysis
from quantwarehouse.sleeves.profiles import load_profile
from quantwarehouse.sleeves.selection import aggregate, metadata_as_of, select_htr
from quantwarehouse.sleeves.sign_test import sign_test
from quantwarehouse.sleeves.synthesis import synthesize

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def market() -> tuple[pd.DataFrame, pd.DataFrame]:
    from quantwarehouse.paths import REAL_SAMPLE_DIR

    if not REAL_SAMPLE_DIR.is_dir():
        pytest.skip(f"real sample not found at {REAL_SAMPLE_DIR}")
    bars = []
    for path in sorted(Path(REAL_SAMPLE_DIR).glob("*_1d_*.csv")):
        frame = pd.read_csv(path)
        bars.append(
            pd.DataFrame(
                {
                    "symbol": path.name.split("_")[0],
                    "bar_date": pd.to_datetime(frame["open_time_ms"], unit="ms"),
                    "high": frame["high"],
                    "low": frame["low"],
                    "close": frame["close"],
                    "volume": frame["volume"],
                    "source_batch_id": 1,
                }
            )
        )
    features = pd.concat([symbol_features(b) for b in bars], ignore_index=True)
    closes = pd.concat(bars).pivot(index="bar_date", columns="symbol", values="close")
    return features, closes.pct_change(fill_method=None)


def short_profile():
    base = load_profile("binance_spot_rating_all_short")
    return dataclasses.replace(
        base,
        lookback_days=60,
        selection=dataclasses.replace(base.selection, target_count=4, min_history_days=60),
    )


def test_one_production_pass_on_real_data(market, tmp_path):
    features, returns = market
    profile = short_profile()
    as_of = pd.Timestamp("2018-06-21")
    today = features[pd.to_datetime(features["bar_date"]) == as_of]  # bar_date: dates
    candidates = today["symbol"][profile.rating_filter.mask(today["rating_all"])].tolist()
    trail = AuditTrail(tmp_path / "audit.jsonl")
    trail.genesis("real_1", profile.name, environment_info(), profile.to_dict())

    trail.intent("aggregate", {"candidates": candidates, "as_of": as_of})
    aggregated = aggregate(candidates, returns, profile.lookback_days, as_of)
    trail.outcome("aggregate", "success", frame_hash(returns), frame_hash(aggregated.health), {})
    assert aggregated.returns_window.index[-1] == as_of

    selection = select_htr(
        aggregated.returns_window,
        aggregated.health,
        metadata_as_of(features, as_of, profile.rating_field),
        profile,
    )
    assert len(selection.selected) >= profile.selection.target_count
    assert set(selection.decisions["symbol"]) == set(candidates)

    atoms = synthesize(aggregated.returns_window, selection.selected, "SHORT", profile.name)
    before = sign_test(atoms.returns, aggregated.returns_window, atoms.atoms)
    assert before["status"] == "PASS" and before["short_atoms"] == len(selection.selected)

    analysis = preopt_analysis(atoms.returns, profile)
    result = optimize(atoms.returns, profile, analysis.caps)
    assert not result.fallback_used
    for method, weights in result.weights.items():
        assert weights.sum() == pytest.approx(1.0, abs=1e-12), method
        assert (weights >= 0).all(), method
    after = sign_test(atoms.returns, aggregated.returns_window, atoms.atoms, result.weights)
    assert after["status"] == "PASS" and after["checked_weights"]

    trail.intent("optimize", {"methods": list(profile.optimizers)})
    trail.outcome("optimize", "success", frame_hash(atoms.returns), frame_hash(result.weights), {})
    trail.close("success")
    assert verify_audit(tmp_path / "audit.jsonl") == (True, [])


def test_backtest_on_real_data_equals_the_loop(market):
    features, returns = market
    profile = dataclasses.replace(short_profile(), rebalance_days=14, primary_optimizer="hrp")
    start, end = pd.Timestamp("2018-03-01"), pd.Timestamp("2018-07-15")
    fast = walk_forward(features, returns, profile, start, end)
    loop = walk_forward_loop(features, returns, profile, start, end)
    pd.testing.assert_frame_equal(fast.weights_history, loop.weights_history, atol=1e-12)
    pd.testing.assert_series_equal(fast.daily_returns, loop.daily_returns, atol=1e-13)
    figures = performance_metrics(fast.daily_returns)
    assert figures["days"] == (end - start).days + 1
    assert all(figures[k] is not None for k in ("cagr", "volatility", "sharpe", "max_drawdown"))
