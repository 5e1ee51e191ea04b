"""Pre-optimization: correlation distance and clusters, antifragility and regime caps by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import skew

from quantwarehouse.sleeves.preopt import (
    antifragility,
    correlation_clusters,
    correlation_distance,
    preopt_analysis,
    regime_caps,
)
from quantwarehouse.sleeves.profiles import ClusterSettings, RegimeSettings, load_profile


def test_distance_is_sqrt_of_half_one_minus_rho():
    base = pd.Series([0.01, -0.02, 0.03, 0.0, -0.01])
    other = pd.Series([0.02, 0.01, -0.01, 0.03, -0.02])
    frame = pd.DataFrame({"a": base, "same": 2 * base, "anti": -base, "other": other, "flat": 0.0})
    distance = correlation_distance(frame)
    rho = float(np.corrcoef(base, other)[0, 1])
    assert distance.loc["a", "same"] == pytest.approx(0.0, abs=1e-7)
    assert distance.loc["a", "anti"] == pytest.approx(1.0)
    assert distance.loc["a", "other"] == pytest.approx(math.sqrt((1 - rho) / 2))
    assert distance.loc["a", "flat"] == pytest.approx(math.sqrt(0.5))  # undefined rho counts as 0
    assert distance.loc["flat", "flat"] == 0.0


def test_clusters_follow_shared_factors_and_are_numbered_in_leaf_order():
    rng = np.random.default_rng(2)
    factors = rng.normal(0, 0.03, (200, 2))
    columns = {
        name: factors[:, k] + rng.normal(0, 0.005, 200)
        for k, names in enumerate((["a1", "a2", "a3"], ["b1", "b2"]))
        for name in names
    }
    clusters = correlation_clusters(pd.DataFrame(columns), ClusterSettings("average", 0.4))
    labels = clusters.labels
    assert labels["a1"] == labels["a2"] == labels["a3"] != labels["b1"] == labels["b2"]
    assert labels[clusters.leaf_order[0]] == 1
    assert clusters.linkage.shape == (4, 4)
    one = correlation_clusters(pd.DataFrame({"x": [0.1, 0.2]}), ClusterSettings())
    assert one.labels.to_dict() == {"x": 1} and one.linkage.shape == (0, 4)


def test_antifragility_by_hand():
    days = 126  # half of 252: the sample factor is 0.5
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(
        {
            "right_tail": np.concatenate([rng.normal(0, 0.01, days - 3), [0.2, 0.25, 0.3]]),
            "left_tail": np.concatenate([rng.normal(0, 0.01, days - 3), [-0.2, -0.25, -0.3]]),
            "plain": rng.normal(0, 0.01, days),
        }
    )
    table = antifragility(frame).set_index("atom")
    skews = {c: skew(frame[c], bias=False) for c in frame}
    tails = {}
    for column in frame:
        ordered = np.sort(frame[column].to_numpy())
        position = 0.95 * (days - 1)  # numpy's linear interpolation
        below = ordered[int(position)]
        cut = below + (position - int(position)) * (ordered[int(position) + 1] - below)
        tails[column] = ordered[ordered >= cut].mean()
    for column in frame:
        assert table.loc[column, "skew"] == pytest.approx(skews[column], rel=1e-9)
        assert table.loc[column, "tail_mean"] == pytest.approx(tails[column], rel=1e-12)
        scaled_skew = (skews[column] - min(skews.values())) / (
            max(skews.values()) - min(skews.values())
        )
        scaled_tail = (tails[column] - min(tails.values())) / (
            max(tails.values()) - min(tails.values())
        )
        expected = (scaled_skew + scaled_tail) / 2 * 0.5
        assert table.loc[column, "antifragility"] == pytest.approx(expected, rel=1e-9)
    assert table["antifragility"].idxmax() == "right_tail"
    assert table.loc["right_tail", "antifragility"] == pytest.approx(0.5)  # top on both, x 0.5


def test_antifragility_with_one_atom_is_neutral():
    table = antifragility(pd.DataFrame({"x": np.linspace(-0.01, 0.02, 300)}))
    assert table.loc[0, "skew_scaled"] == 0.5 and table.loc[0, "sample_factor"] == 1.0


def regime_frame() -> pd.DataFrame:
    calm, wild = np.tile([0.01, -0.01], 40), np.tile([0.05, -0.05], 10)
    return pd.DataFrame(
        {
            "heating": np.concatenate([calm, wild]),  # last 20 days the most volatile
            "cooling": np.concatenate([wild, calm]),
        }
    )


def test_regime_caps_cap_atoms_in_their_high_volatility_regime():
    settings = RegimeSettings(window_days=20, quantile=0.8, max_weight=0.9, high_vol_cap=0.2)
    table = regime_caps(regime_frame(), settings).set_index("atom")
    rolling = regime_frame().rolling(20).std()
    for atom in ("heating", "cooling"):
        assert table.loc[atom, "recent_vol"] == pytest.approx(
            rolling[atom].iloc[-1] * math.sqrt(365)
        )
        assert table.loc[atom, "vol_threshold"] == pytest.approx(
            rolling[atom].dropna().quantile(0.8) * math.sqrt(365)
        )
    assert table["high_vol"].to_dict() == {"heating": True, "cooling": False}
    assert table["cap"].to_dict() == {"heating": 0.2, "cooling": 0.9}
    assert not table["cap_raised"].any()


def test_caps_that_cannot_hold_a_whole_portfolio_are_raised_to_equal_weight():
    frame = regime_frame()[["heating"]].assign(
        heating2=lambda f: f["heating"] * 2, heating3=lambda f: f["heating"] * 3
    )
    settings = RegimeSettings(window_days=20, quantile=0.8, max_weight=0.25, high_vol_cap=0.1)
    table = regime_caps(frame, settings)
    assert table["high_vol"].all()
    assert table["cap"].tolist() == pytest.approx([1 / 3] * 3)
    assert table["cap_raised"].all()


def test_preopt_analysis_uses_the_profile_settings():
    profile = load_profile("binance_spot_rating_all_short")
    frame = regime_frame().rename(columns=lambda c: f"{c.upper()}USDT:SHORT:x")
    result = preopt_analysis(frame, profile)
    assert result.atoms == list(frame.columns)
    regimes = result.regimes.set_index("atom")
    assert regimes["high_vol"].tolist() == [True, False]
    # 0.10 + 0.25 cannot hold a portfolio of two: both caps rise to 1/2
    assert result.caps.to_dict() == {"HEATINGUSDT:SHORT:x": 0.5, "COOLINGUSDT:SHORT:x": 0.5}
    assert set(result.clusters.columns) == {"atom", "cluster", "leaf_position"}
    assert result.linkage.shape == (1, 4)
    assert result.correlation.shape == (2, 2)
