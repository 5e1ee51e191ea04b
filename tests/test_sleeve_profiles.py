"""Sleeve profiles: the shipped four load; bad files fail naming the file, the key and what fits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ingest.scanners.config import SCANNERS_DIR
from quantwarehouse.config import ConfigError
from quantwarehouse.sleeves.profiles import PROFILES_DIR, available_profiles, load_profile

SHIPPED = {
    "binance_spot_rating_all_long": ("LONG", "rating_all", "rating_all > -0.3"),
    "binance_spot_rating_all_short": ("SHORT", "rating_all", "rating_all < 0"),
    "binance_spot_rating_ma_long": ("LONG", "rating_ma", "rating_ma > -0.3"),
    "binance_spot_rating_ma_short": ("SHORT", "rating_ma", "rating_ma < 0"),
}
GOOD = (PROFILES_DIR / "binance_spot_rating_all_long.yml").read_text()


def test_the_four_shipped_profiles_load_with_the_domain_rules():
    assert set(SHIPPED) <= set(available_profiles())
    for name, (direction, field, rule) in SHIPPED.items():
        profile = load_profile(name)
        assert (profile.name, profile.direction, profile.rating_field) == (name, direction, field)
        assert profile.rating_filter.describe() == rule
        assert profile.scanner == name
        assert profile.selection.target_count == 15
        assert profile.primary_optimizer in profile.optimizers
        assert profile.to_dict()["rating_filter"] == rule


def test_a_profile_loads_by_path_too():
    path = PROFILES_DIR / "binance_spot_rating_ma_short.yml"
    assert load_profile(path) == load_profile("binance_spot_rating_ma_short")
    assert load_profile(str(path)).name == "binance_spot_rating_ma_short"


def test_unknown_profile_name_lists_the_available_ones():
    with pytest.raises(ConfigError) as caught:
        load_profile("binance_spot_rating_all_lng")
    message = str(caught.value)
    assert "unknown profile 'binance_spot_rating_all_lng'" in message
    for name in SHIPPED:
        assert name in message


def write_profile(folder: Path, text: str, name: str = "my_sleeve") -> Path:
    path = folder / f"{name}.yml"
    path.write_text(text)
    return path


def replaced(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            replaced("direction: LONG", "direction: BUY"),
            r"direction: unknown value 'BUY'; allowed: LONG, SHORT",
        ),
        (
            replaced("rating_field: rating_all", "rating_field: rsi"),
            r"rating_field: unknown value 'rsi'; allowed: rating_all, rating_ma, rating_osc",
        ),
        (GOOD + "rebalance_every: 3\n", r"rebalance_every: unknown key; allowed keys: .*gates"),
        (
            replaced("primary_optimizer: hrp", "primary_optimizer: herc"),
            r"primary_optimizer: unknown value 'herc'; allowed: hrp, min_variance, "
            r"max_sharpe, equal_weight",
        ),
        (
            replaced(
                "optimizers: [hrp, min_variance, max_sharpe, equal_weight]",
                "optimizers: [hrp, cvar]",
            ),
            r"optimizers\[1\]: unknown value 'cvar'; allowed: hrp, min_variance",
        ),
        (
            replaced(
                "optimizers: [hrp, min_variance, max_sharpe, equal_weight]",
                "optimizers: [min_variance]",
            ),
            r"primary_optimizer: unknown value 'hrp'; allowed: min_variance",
        ),
        (
            replaced("  linkage: single", "  linkage: centroid"),
            r"hrp.linkage: unknown value 'centroid'; allowed: single, complete, average",
        ),
        (
            replaced("  codependence: pearson", "  codependence: mutual_info"),
            r"hrp.codependence: unknown value 'mutual_info'; allowed: pearson, spearman, kendall",
        ),
        (
            replaced("  high_vol_cap: 0.10", "  high_vol_cap: 0.5"),
            r"regime.high_vol_cap: expected at most max_weight \(0.25\), got 0.5",
        ),
        (
            replaced("  entropy_cap: 0.99", "  entropy_cap: 1.5"),
            r"selection.entropy_cap: expected a value between 0 and 1, got 1.5",
        ),
        (
            replaced("  target_count: 15", "  target_count: 0"),
            r"selection.target_count: expected a value >= 1, got 0",
        ),
        (
            replaced("rebalance_days: 7", "rebalance_days: weekly"),
            r"rebalance_days: expected an integer, got a string \('weekly'\)",
        ),
        (replaced("lookback_days: 180", ""), r"lookback_days: missing; expected an integer"),
        (
            replaced("  sign_test: true", "  sign_test: maybe"),
            r"gates.sign_test: expected true or false, got a string \('maybe'\)",
        ),
        (
            replaced("scanner: binance_spot_rating_all_long", "scanner: no_such_scanner"),
            r"scanner: no scanner 'no_such_scanner' in .*; available: .*"
            r"binance_spot_rating_all_long",
        ),
    ],
)
def test_bad_profiles_name_the_file_key_and_allowed_values(tmp_path, text, expected):
    path = write_profile(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_profile(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert re.search(expected, message), message


def test_the_rating_filter_must_be_the_scanners_own(tmp_path):
    path = write_profile(tmp_path, replaced("threshold: -0.3", "threshold: -0.2"))
    with pytest.raises(ConfigError) as caught:
        load_profile(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: threshold: the profile keeps rating_all > -0.2")
    assert "filters rating_all > -0.3" in message
    assert str(SCANNERS_DIR / "binance_spot_rating_all_long.yml") in message


def test_the_direction_must_be_the_scanners_intent(tmp_path):
    text = replaced("direction: LONG", "direction: SHORT")
    with pytest.raises(ConfigError, match="direction: SHORT disagrees with scanner"):
        load_profile(write_profile(tmp_path, text))


def test_profile_names_are_file_names_with_safe_characters(tmp_path):
    path = write_profile(tmp_path, GOOD, name="Bad Name")
    with pytest.raises(ConfigError, match="the profile name 'Bad Name'"):
        load_profile(path)


def test_optional_sections_take_their_defaults(tmp_path):
    minimal = "\n".join(
        line
        for line in [
            "scanner: binance_spot_rating_ma_short",
            "direction: SHORT",
            "rating_field: rating_ma",
            "threshold: 0",
            "lookback_days: 90",
            "optimizers: [equal_weight]",
            "primary_optimizer: equal_weight",
            "rebalance_days: 3",
        ]
    )
    profile = load_profile(write_profile(tmp_path, minimal + "\n"))
    assert profile.selection.target_count == 15
    assert profile.hrp.linkage == "single" and profile.hrp.leaf_order is True
    assert profile.gates.sign_test and profile.gates.stable_sum
    assert profile.cost_bps == 0.0
