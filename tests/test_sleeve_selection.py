"""Strict health, the selection measures (checked by hand) and the four HTR stages.

The universes are built so that each stage is the one that ends the selection: clusters come
from shared factors (correlation ~0.9 inside, ~0 across), efficiency ratios are set exactly by
shifting each asset's log returns (a shift changes no correlation).
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq

from quantwarehouse.sleeves.profiles import load_profile
from quantwarehouse.sleeves.selection import (
    aggregate,
    efficiency_ratio,
    metadata_as_of,
    permutation_entropy,
    select_htr,
)

DAYS = pd.date_range("2024-01-01", periods=60, freq="D")
LONG = load_profile("binance_spot_rating_all_long")


# --- strict health ---------------------------------------------------------------------------


def test_strict_health_vetoes_any_missing_bar_in_the_window():
    returns = pd.DataFrame(0.01, index=DAYS, columns=["AUSDT", "BUSDT", "CUSDT", "OLDUSDT"])
    returns.loc[DAYS[45], "BUSDT"] = np.nan  # a gap inside the window
    returns.loc[: DAYS[49], "CUSDT"] = np.nan  # listed 10 days before the end
    returns.loc[DAYS[5], "OLDUSDT"] = np.nan  # a gap before the window: irrelevant
    result = aggregate(["AUSDT", "BUSDT", "CUSDT", "OLDUSDT", "GONEUSDT"], returns, 30)
    assert list(result.returns_window.index) == list(DAYS[30:])
    health = result.health.set_index("symbol")
    assert health["healthy"].to_dict() == {
        "AUSDT": True,
        "BUSDT": False,
        "CUSDT": False,
        "OLDUSDT": True,
        "GONEUSDT": False,
    }
    assert health.loc["BUSDT", "missing_bars"] == 1
    assert health.loc["BUSDT", "reason"] == (
        "unhealthy: 1 missing bar(s) in the window, first 2024-02-15"
    )
    assert health.loc["CUSDT", "missing_bars"] == 20
    assert health.loc["GONEUSDT", "reason"] == "unhealthy: no returns for this symbol"


def test_a_day_missing_for_every_symbol_is_a_missing_bar_too():
    returns = pd.DataFrame(0.01, index=DAYS.delete(50), columns=["AUSDT"])  # no row at all
    health = aggregate(["AUSDT"], returns, 30).health
    assert not health.loc[0, "healthy"] and health.loc[0, "missing_bars"] == 1


def test_the_window_ends_on_the_as_of_date_and_reads_nothing_later():
    returns = pd.DataFrame(0.01, index=DAYS, columns=["AUSDT"])
    returns.loc[DAYS[40] :, "AUSDT"] = np.nan
    result = aggregate(["AUSDT"], returns, 30, as_of=DAYS[39].date())
    assert result.returns_window.index[-1] == DAYS[39]
    assert bool(result.health.loc[0, "healthy"])


# --- measures by hand ------------------------------------------------------------------------


def test_permutation_entropy_by_hand():
    frame = pd.DataFrame(
        {
            "monotone": [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07],
            "ties": [0.0] * 7,  # ties ranked by position: one pattern
        }
    )
    # four runs of three: (lo, hi, mid), (mid, lo, hi), (lo, hi, mid), (mid, lo, hi)
    zigzag = pd.DataFrame({"zigzag": [0.01, 0.03, 0.02, 0.04, 0.03, 0.05]})
    frame["three_patterns"] = [0.01, 0.02, 0.03, 0.04, 0.02, 0.05, 0.01]
    # runs: (1,2,3) inc, (2,3,4) inc, (3,4,2) ranks (1,2,0), (4,2,5) ranks (1,0,2),
    # (2,5,1) ranks (1,2,0): counts 2, 2, 1 over 5 runs
    shares = [2 / 5, 2 / 5, 1 / 5]
    expected = -sum(p * math.log(p) for p in shares) / math.log(6)
    entropy = permutation_entropy(frame)
    assert entropy["monotone"] == 0.0
    assert permutation_entropy(zigzag)["zigzag"] == pytest.approx(math.log(2) / math.log(6))
    assert entropy["ties"] == 0.0
    assert entropy["three_patterns"] == pytest.approx(expected, abs=1e-12)


def test_permutation_entropy_of_a_series_with_a_hole_is_undefined():
    frame = pd.DataFrame({"a": [0.01, np.nan, 0.02, 0.03]})
    assert np.isnan(permutation_entropy(frame)["a"])


def test_efficiency_ratio_by_hand():
    prices = [100.0, 110.0, 99.0, 121.0]  # up 10 %, down 10 %, up 22.2 %
    returns = pd.DataFrame({"a": pd.Series(prices).pct_change().dropna().to_numpy()})
    path = abs(math.log(110 / 100)) + abs(math.log(99 / 110)) + abs(math.log(121 / 99))
    assert efficiency_ratio(returns)["a"] == pytest.approx(math.log(121 / 100) / path, rel=1e-12)
    falling = pd.DataFrame({"a": [-0.1, 0.05, -0.2]})
    net = math.log(0.9) + math.log(1.05) + math.log(0.8)
    total = -math.log(0.9) + math.log(1.05) - math.log(0.8)
    assert efficiency_ratio(falling)["a"] == pytest.approx(-net / total, rel=1e-12)
    assert efficiency_ratio(falling, signed=True)["a"] == pytest.approx(net / total, rel=1e-12)
    assert efficiency_ratio(pd.DataFrame({"flat": [0.0, 0.0]}))["flat"] == 0.0


def test_metadata_as_of_reads_nothing_after_the_date():
    features = pd.DataFrame(
        {
            "bar_date": pd.to_datetime(["2024-01-01", "2024-01-10", "2024-01-10", "2024-01-11"]),
            "symbol": ["AUSDT", "AUSDT", "BUSDT", "CUSDT"],
            "rating_all": [0.1, 0.4, -0.2, 0.9],
        }
    )
    meta = metadata_as_of(features, pd.Timestamp("2024-01-10"), "rating_all").set_index("symbol")
    assert meta.to_dict("index") == {
        "AUSDT": {"history_days": 10, "rating_all": 0.4},
        "BUSDT": {"history_days": 1, "rating_all": -0.2},
    }


# --- HTR stages ------------------------------------------------------------------------------


def with_efficiency(noise: np.ndarray, target: float) -> np.ndarray:
    """Simple returns whose log returns are `noise + c`, c set so that |sum| / sum|.| = target."""

    def gap(c: float) -> float:
        shifted = noise + c
        return abs(shifted.sum()) / np.abs(shifted).sum() - target

    balanced = -noise.mean()  # the shift where the net move, and so the ratio, is 0
    shift = balanced if target == 0 else brentq(gap, balanced, balanced + 1.0, xtol=1e-15)
    return np.expm1(noise + shift)


def universe(spec: dict[str, tuple[int, float]], seed: int = 5) -> pd.DataFrame:
    """Returns over DAYS: symbol -> (cluster factor, efficiency ratio)."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(0.0, 0.03, (len(DAYS), 1 + max(c for c, _ in spec.values())))
    columns = {}
    for symbol, (cluster, efficiency) in spec.items():
        noise = factors[:, cluster] + rng.normal(0.0, 0.01, len(DAYS))
        columns[symbol] = with_efficiency(noise, efficiency)
    return pd.DataFrame(columns, index=DAYS)


def meta_for(returns: pd.DataFrame, ratings: dict[str, float], history: int = 400):
    return pd.DataFrame(
        {"symbol": list(ratings), "history_days": history, "rating_all": list(ratings.values())}
    )


def profile_with(target: int, per_cluster: int, floor: float, direction: str = "LONG"):
    base = LONG if direction == "LONG" else load_profile("binance_spot_rating_all_short")
    return dataclasses.replace(
        base,
        lookback_days=len(DAYS),
        selection=dataclasses.replace(
            base.selection,
            target_count=target,
            per_cluster=per_cluster,
            entropy_cap=1.0,
            efficiency_floor=floor,
            min_history_days=100,
        ),
    )


def run(returns, ratings, profile, metadata=None):
    aggregated = aggregate(list(returns.columns), returns, profile.lookback_days)
    meta = metadata if metadata is not None else meta_for(returns, ratings)
    return select_htr(aggregated.returns_window, aggregated.health, meta, profile)


def decision(result, symbol: str) -> dict:
    return result.decisions.set_index("symbol").loc[symbol].to_dict()


GOOD = 0.30  # efficiency of trending assets
BORDER = 0.18  # passes only the relaxed floor (0.2 x 0.8 = 0.16)


def test_the_universe_builder_sets_efficiency_and_clusters():
    returns = universe({"A1": (0, GOOD), "A2": (0, BORDER), "B1": (1, 0.0)})
    ratio = efficiency_ratio(returns)
    assert ratio["A1"] == pytest.approx(GOOD) and ratio["A2"] == pytest.approx(BORDER)
    assert ratio["B1"] == pytest.approx(0.0, abs=1e-12)
    rho = returns.corr()
    assert rho.loc["A1", "A2"] > 0.8 and abs(rho.loc["A1", "B1"]) < 0.4


def test_stage_1_ends_with_the_best_per_cluster():
    returns = universe(
        {
            s: (c, GOOD)
            for c, group in enumerate(["A", "B", "C"])
            for s in (f"{group}1", f"{group}2", f"{group}3")
        }
    )
    ratings = {s: 0.9 - 0.1 * i for i, s in enumerate(returns.columns)}
    result = run(returns, ratings, profile_with(target=6, per_cluster=2, floor=0.2))
    assert result.stage_ended == 1
    assert sorted(result.selected) == ["A1", "A2", "B1", "B2", "C1", "C2"]
    assert result.stage_counts == {1: 6}
    assert "Ended at stage 1: 6 >= target 6" in result.stage_reason
    assert re.fullmatch(
        r"kept at stage 1: rank 1 of 3 in cluster \d", decision(result, "A1")["reason"]
    )
    assert re.fullmatch(
        r"kept at stage 1: rank 2 of 3 in cluster \d", decision(result, "A2")["reason"]
    )
    clusters = result.decisions.set_index("symbol")["cluster"]
    assert clusters["A1"] == clusters["A3"] != clusters["B1"] == clusters["B3"] != clusters["C1"]
    assert decision(result, "A3")["reason"].startswith("outranked in cluster")
    assert not decision(result, "A3")["kept"] and pd.isna(decision(result, "A3")["stage"])


def test_the_score_is_the_rating_for_long_and_its_opposite_for_short():
    returns = universe({"A1": (0, GOOD), "A2": (0, GOOD), "A3": (0, GOOD)})
    ratings = {"A1": 0.2, "A2": 0.6, "A3": -0.4}
    long_pick = run(returns, ratings, profile_with(1, 1, 0.2)).selected
    short_pick = run(returns, ratings, profile_with(1, 1, 0.2, direction="SHORT")).selected
    assert (long_pick, short_pick) == (["A2"], ["A3"])


def test_stage_2_relaxes_the_thresholds():
    returns = universe(
        {"A1": (0, GOOD), "A2": (0, BORDER), "B1": (1, GOOD), "B2": (1, BORDER), "C1": (2, 0.05)}
    )
    ratings = dict.fromkeys(returns.columns, 0.5)
    result = run(returns, ratings, profile_with(target=4, per_cluster=2, floor=0.2))
    assert result.stage_ended == 2 and result.stage_counts == {1: 2, 2: 4}
    assert sorted(result.selected) == ["A1", "A2", "B1", "B2"]
    assert decision(result, "A2")["reason"].startswith("kept at stage 2")
    assert decision(result, "A1")["reason"].startswith("kept at stage 1")
    # C1 (0.05) fails even the relaxed floor 0.16; the selection ended before stage 3 helped it
    assert decision(result, "C1")["reason"] == "vetoed: efficiency 0.050 < floor 0.160"
    assert "relaxed: entropy cap 1.000, efficiency floor 0.160" in result.stage_reason


def test_stage_3_adds_the_best_member_of_each_empty_cluster():
    returns = universe(
        {"A1": (0, GOOD), "A2": (0, GOOD), "B1": (1, GOOD), "B2": (1, GOOD),
         "C1": (2, 0.0), "C2": (2, 0.01)}
    )  # fmt: skip
    ratings = {"A1": 0.5, "A2": 0.5, "B1": 0.5, "B2": 0.5, "C1": 0.1, "C2": 0.3}
    result = run(returns, ratings, profile_with(target=5, per_cluster=2, floor=0.2))
    assert result.stage_ended == 3 and result.stage_counts == {1: 4, 2: 4, 3: 5}
    assert "C2" in result.selected and "C1" not in result.selected
    assert decision(result, "C2")["reason"].startswith("kept at stage 3: best member of cluster")
    assert "efficiency 0.010 < floor 0.160" in decision(result, "C2")["veto"]


def test_stage_4_fills_globally_and_only_then_ignores_vetoes():
    returns = universe(
        {"A1": (0, GOOD), "A2": (0, GOOD), "A3": (0, GOOD), "B1": (1, 0.0), "B2": (1, 0.0),
         "YOUNG": (2, GOOD), "SICK": (2, GOOD)}
    )  # fmt: skip
    returns.loc[DAYS[50], "SICK"] = np.nan
    ratings = {"A1": 0.9, "A2": 0.8, "A3": 0.7, "B1": 0.6, "B2": 0.5, "YOUNG": 1.0, "SICK": 1.0}
    meta = meta_for(returns, ratings)
    meta.loc[meta["symbol"] == "YOUNG", "history_days"] = 30  # < min_history_days 100

    filled = run(returns, ratings, profile_with(target=5, per_cluster=2, floor=0.2), meta)
    assert filled.stage_ended == 4 and filled.stage_counts == {1: 2, 2: 2, 3: 3, 4: 5}
    assert filled.selected == ["A1", "A2", "B1", "A3", "B2"]
    assert decision(filled, "A3")["reason"] == "kept at stage 4: global rank 5"
    assert decision(filled, "YOUNG")["reason"] == ("vetoed: history 30 days < min_history_days 100")

    short = run(returns, ratings, profile_with(target=8, per_cluster=2, floor=0.2), meta)
    assert short.stage_ended == 4 and len(short.selected) == 6
    assert short.selected[-1] == "YOUNG"
    assert decision(short, "YOUNG")["reason"] == ("kept at stage 4: global rank 1, veto ignored")
    assert "SICK" not in short.selected  # strict health is never ignored
    assert decision(short, "SICK")["reason"].startswith("vetoed: unhealthy: 1 missing bar")
    assert "short of the target: 6 < 8" in short.stage_reason
    assert "1 unhealthy candidate(s) are never selected" in short.stage_reason


def test_missing_metadata_is_a_strict_veto():
    returns = universe({"A1": (0, GOOD), "A2": (0, GOOD), "A3": (0, GOOD)})
    meta = meta_for(returns, {"A1": 0.5, "A2": np.nan})  # A3: no row, A2: no rating
    result = run(returns, {}, profile_with(target=1, per_cluster=3, floor=0.2), meta)
    assert result.selected == ["A1"] and result.stage_ended == 1
    assert decision(result, "A2")["reason"] == "vetoed: missing metadata: null rating_all"
    assert decision(result, "A3")["reason"] == "vetoed: missing metadata: no row"


def test_an_empty_universe_ends_at_stage_4_with_nothing():
    empty = pd.DataFrame(index=DAYS)
    result = run(empty, {}, profile_with(target=3, per_cluster=1, floor=0.2))
    assert result.selected == [] and result.stage_ended == 4
    assert result.decisions.empty
