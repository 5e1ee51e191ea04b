"""Optimizers: HRP against PyPortfolioOpt's with the same distance, linkage and leaf order; minimum
variance and maximum Sharpe against their closed forms; caps; the stable-sum gate and fallback."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from quantwarehouse.sleeves.optimize import (
    StableSumError,
    normalized,
    optimize,
    stable_sum_gate,
)
from quantwarehouse.sleeves.profiles import HrpSettings, load_profile

pypfopt = pytest.importorskip("pypfopt")  # test-only reference (pyproject dev extras)

PROFILE = load_profile("binance_spot_rating_all_long")


def profile_with(**changes):
    return dataclasses.replace(PROFILE, **changes)


@pytest.fixture(scope="module")
def returns() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    factors = rng.normal(0, 0.02, (250, 3))
    loadings = rng.uniform(0, 1, (8, 3))
    noise = rng.normal(0, 0.01, (250, 8)) * rng.uniform(0.5, 2.0, 8)
    columns = [f"S{i}USDT:LONG:x" for i in range(8)]
    return pd.DataFrame(factors @ loadings.T + noise, columns=columns)


@pytest.mark.parametrize("linkage", ["single", "average", "complete"])
def test_hrp_matches_pypfopt_with_linkage_leaf_order(returns, linkage):
    profile = profile_with(hrp=HrpSettings("pearson", linkage, leaf_order=False))
    ours = optimize(returns, profile, methods=("hrp",)).weights["hrp"]
    # PyPortfolioOpt: distance sqrt((1 - rho) / 2), scipy linkage, leaves in the tree's order
    theirs = pd.Series(pypfopt.HRPOpt(returns).optimize(linkage_method=linkage))
    pd.testing.assert_series_equal(ours, theirs[ours.index], check_names=False, atol=1e-12)


def test_hrp_with_optimal_leaf_order_matches_pypfopt_on_that_order(returns):
    profile = profile_with(hrp=HrpSettings("pearson", "single", leaf_order=True))
    ours = optimize(returns, profile, methods=("hrp",)).weights["hrp"]
    distance = np.sqrt(np.clip((1 - returns.corr().to_numpy()) / 2, 0, 1))
    condensed = squareform(distance, checks=False)
    link = hierarchy.optimal_leaf_ordering(hierarchy.linkage(condensed, "single"), condensed)
    order = [returns.columns[i] for i in hierarchy.leaves_list(link)]
    theirs = pypfopt.HRPOpt._raw_hrp_allocation(returns.cov(), order)
    pd.testing.assert_series_equal(ours, theirs[ours.index], check_names=False, atol=1e-12)
    plain = optimize(
        returns, profile_with(hrp=HrpSettings("pearson", "single", False)), methods=("hrp",)
    )
    assert not np.allclose(ours, plain.weights["hrp"])  # the ordering matters: it is stated


def test_settings_state_distance_linkage_and_leaf_order(returns):
    result = optimize(returns, PROFILE, methods=("hrp",))
    hrp = result.settings["hrp"]
    assert hrp["distance"] == "sqrt((1 - rho) / 2)"
    assert (hrp["codependence"], hrp["linkage"], hrp["leaf_order"]) == ("pearson", "single", True)
    assert hrp["leaf_order_rule"].startswith("optimal leaf ordering")
    assert hrp["library"].startswith("riskfolio-lib 7.")
    assert result.settings["stable_sum_gate"]["fallback_chain"] == ["hrp", "equal_weight"]


def independent(seed: int) -> pd.DataFrame:
    """Nearly uncorrelated returns with sample means and volatilities set exactly."""
    rng = np.random.default_rng(seed)
    draws = rng.normal(0, 1, (400, 4))
    standard = (draws - draws.mean(axis=0)) / draws.std(axis=0, ddof=1)
    means, vols = np.array([0.002, 0.003, 0.004, 0.0025]), np.array([0.01, 0.02, 0.03, 0.015])
    return pd.DataFrame(standard * vols + means, columns=["A", "B", "C", "D"])


def test_min_variance_and_max_sharpe_match_their_closed_forms():
    frame = independent(1)
    cov, mu = frame.cov().to_numpy(), frame.mean().to_numpy()
    inverse = np.linalg.inv(cov)
    minvar = inverse @ np.ones(4) / (np.ones(4) @ inverse @ np.ones(4))
    sharpe = inverse @ mu / (np.ones(4) @ inverse @ mu)
    assert (minvar > 0).all() and (sharpe > 0).all()  # long-only constraints are not binding
    result = optimize(frame, PROFILE, methods=("min_variance", "max_sharpe"))
    assert result.weights["min_variance"].to_numpy() == pytest.approx(minvar, abs=1e-4)
    assert result.weights["max_sharpe"].to_numpy() == pytest.approx(sharpe, abs=1e-3)


def test_every_method_is_long_only_sums_to_one_and_respects_caps(returns):
    caps = pd.Series(0.2, index=returns.columns)
    result = optimize(returns, PROFILE, caps)
    assert list(result.weights.columns) == ["hrp", "min_variance", "max_sharpe", "equal_weight"]
    for method, weights in result.weights.items():
        assert weights.sum() == pytest.approx(1.0, abs=1e-12), method
        assert (weights >= 0).all(), method
        if method != "equal_weight":
            assert weights.max() <= 0.2 + 1e-6, method
    assert result.chosen_method == "hrp" and not result.fallback_used
    assert result.settings["constraints"]["caps"] == dict.fromkeys(returns.columns, 0.2)


def test_one_atom_gets_everything():
    frame = pd.DataFrame({"A": [0.01, -0.02, 0.03]})
    result = optimize(frame, PROFILE)
    assert result.weights.loc["A"].tolist() == [1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "the solver returned no weights"),
        ([0.5, -0.5], "negative weight -0.5"),
        ([0.5, np.nan], "weights are not all finite"),
        ([0.0, 0.0], "weights sum to 0, within 1e-6 of 0"),
        ([4e-7, 5e-7], "weights sum to 9e-07, within 1e-6 of 0"),
    ],
)
def test_the_stable_sum_gate_rejects_without_dividing(raw, reason):
    series = None if raw is None else pd.Series(raw, index=["a", "b"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a division by ~0 would warn (or give inf)
        record = stable_sum_gate("m", series)
    assert not record.passed and record.reason == reason


def test_the_gate_passes_small_but_stable_sums_and_clears_solver_noise():
    record = stable_sum_gate("m", pd.Series([2e-6, 3e-6, -1e-12]))
    assert record.passed and record.raw_sum == pytest.approx(5e-6)
    assert normalized(pd.Series([2e-6, 3e-6, -1e-12])).tolist() == pytest.approx([0.4, 0.6, 0.0])


def zero_mean_returns() -> pd.DataFrame:
    """Returns whose sample means are exactly 0 (dyadic values, each day mirrored)."""
    rng = np.random.default_rng(3)
    half = rng.integers(1, 8, (60, 4)) / 64.0 * np.where(rng.random((60, 4)) < 0.5, 1, -1)
    frame = pd.DataFrame(np.vstack([half, -half]), columns=["A", "B", "C", "D"])
    assert (frame.mean() == 0).all()
    return frame


def test_a_rejected_primary_falls_back_to_hrp_and_says_why():
    # Maximum Sharpe has no solution when every mean is 0: riskfolio returns no weights.
    result = optimize(zero_mean_returns(), profile_with(primary_optimizer="max_sharpe"))
    gates = {g["method"]: g for g in result.gates}
    assert not gates["max_sharpe"]["passed"]
    assert gates["max_sharpe"]["reason"].startswith("the solver returned no weights")
    assert "max_sharpe" not in result.weights
    assert result.chosen_method == "hrp" and result.fallback_used
    assert result.fallback_reason.startswith("max_sharpe rejected: the solver returned no weights")
    assert result.final_weights.sum() == pytest.approx(1.0)


def test_fallback_reaches_equal_weight_when_hrp_is_not_configured():
    profile = profile_with(optimizers=("max_sharpe",), primary_optimizer="max_sharpe")
    result = optimize(zero_mean_returns(), profile)
    assert [g["method"] for g in result.gates] == ["max_sharpe", "hrp"]
    assert result.chosen_method == "hrp"  # hrp is run for the fallback although not listed


def test_with_the_gate_off_a_rejected_primary_stops_the_run():
    profile = profile_with(
        primary_optimizer="max_sharpe",
        gates=dataclasses.replace(PROFILE.gates, stable_sum=False),
    )
    with pytest.raises(
        StableSumError, match=r"max_sharpe: weights rejected .*; gates.stable_sum is off"
    ):
        optimize(zero_mean_returns(), profile)


def test_riskfolio_matmul_warnings_are_silenced_at_the_call_site(returns):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimize(returns, PROFILE, methods=("min_variance", "max_sharpe"))
    assert not [w for w in caught if "matrix multiplication" in str(w.message)]


def test_bad_inputs_are_refused_with_the_atoms_named(returns):
    holes = returns.copy()
    holes.iloc[3, 2] = np.nan
    with pytest.raises(ValueError, match="missing values cannot be optimized: S2USDT:LONG:x"):
        optimize(holes, PROFILE)
    with pytest.raises(ValueError, match=r"caps sum to 0.8 < 1"):
        optimize(returns, PROFILE, pd.Series(0.1, index=returns.columns))
