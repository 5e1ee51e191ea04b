"""configs/refresh.yml and the EMA filters of daily-refresh: defaults, and every bad value an error
naming the file or flag, the key and the valid values."""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from quantwarehouse.config import ConfigError
from quantwarehouse.paths import DBT_PROJECT_DIR, REPO_ROOT
from quantwarehouse.refresh.config import DEFAULT_CONFIG, load_refresh_config, today_utc
from quantwarehouse.refresh.filters import (
    EmaFilter,
    family_timeframes,
    parse_combos,
    parse_periods,
    parse_tfs,
    selected_models,
    valid_periods,
    valid_timeframes,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "refresh.yml"
    path.write_text(text)
    return path


def test_the_shipped_config_is_the_synthetic_demo_up_to_today():
    config = load_refresh_config()
    assert config.path == DEFAULT_CONFIG
    assert config.source_name == "synthetic"
    assert config.source_options.preset == "demo"
    assert config.source_options.until == today_utc()
    assert config.max_days_behind == 1
    assert config.gates.max_days_behind == 2
    source = config.build_source()
    # The preset's calendar caps `until` (demo ends 2026-06-30).
    assert source.parameters()["until"] == min(today_utc(), date(2026, 6, 30)).isoformat()


def test_options_are_read_with_their_types(tmp_path):
    path = write(
        tmp_path,
        "source:\n  name: synthetic\n  options:\n    preset: tiny\n    until: 2025-01-31\n"
        "    symbols: [budobusdt]\n    workers: 1\n    seed: 3\n"
        "freshness:\n  max_days_behind: 3\ngates:\n  chunk_rows: 500\n",
    )
    config = load_refresh_config(path)
    options = config.source_options
    assert (options.preset, options.until, options.symbols) == (
        "tiny",
        date(2025, 1, 31),
        ("BUDOBUSDT",),
    )
    assert (options.workers, options.seed, config.max_days_behind) == (1, 3, 3)
    assert (config.gates.chunk_rows, config.gates.max_days_behind) == (500, 2)
    assert "preset=tiny" in config.describe_source()


@pytest.mark.parametrize(
    ("until", "start", "days"),
    [("2026-06-30", "-200d", 200), ("2026-06-30", "-0d", 0), (None, "-7d", 7)],
)
def test_a_relative_start_is_days_before_until(tmp_path, until, start, days):
    """`start: -200d` bounds each daily download to the last 200 days, whatever the date (until
    defaults to today)."""
    until_line = f"    until: {until}\n" if until else ""
    text = f"source:\n  name: synthetic\n  options:\n    preset: tiny\n{until_line}"
    config = load_refresh_config(write(tmp_path, f"{text}    start: {start}\n"))
    options = config.source_options
    last = date.fromisoformat(until) if until else today_utc()
    assert (options.until, options.start) == (last, last - timedelta(days=days))
    assert f"start={options.start.isoformat()}" in config.describe_source()


def test_a_relative_path_is_read_from_the_repository(tmp_path, real_sample):
    relative = os.path.relpath(real_sample, REPO_ROOT)
    path = write(tmp_path, f"source:\n  name: files\n  options:\n    path: {relative}\n")
    config = load_refresh_config(path)
    assert config.source_options.path.resolve() == real_sample.resolve()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("source:\n  name: ftp\n", "source.name: unknown value 'ftp'; allowed: synthetic"),
        ("source:\n  name: synthetic\n  colour: red\n", "source.colour: unknown key"),
        (
            "source:\n  name: synthetic\n  options:\n    presett: demo\n",
            "options.presett: unknown key",
        ),
        (
            "source:\n  name: synthetic\n  options:\n    until: yesterday\n",
            "source.options.until: expected a date (YYYY-MM-DD) or 'today', got a string",
        ),
        *(
            (
                f"source:\n  name: synthetic\n  options:\n    start: {start}\n",
                "source.options.start: expected a date (YYYY-MM-DD), 'today' or days before until "
                f"(-200d: 200 days before), got {shown}",
            )
            for start, shown in [
                ("-200", "an integer (-200)"),
                ("200d", "a string ('200d')"),
                ("-200days", "a string ('-200days')"),
                ("-d", "a string ('-d')"),
                ("-2.5d", "a string ('-2.5d')"),
            ]
        ),
        (
            "source:\n  name: synthetic\n  options:\n    end: -5d\n",
            "source.options.end: expected a date (YYYY-MM-DD) or 'today', got a string ('-5d')",
        ),
        (
            "source:\n  name: synthetic\n  options:\n    start: -99999999999d\n",
            "source.options.start: -99999999999d reaches before the year 1",
        ),
        (
            "source:\n  name: synthetic\n  options:\n    until: 2025-01-31\n    start: -10d\n"
            "    end: 2025-01-01\n",
            "source.options.start: 2025-01-21 is after end 2025-01-01",
        ),
        (
            "source:\n  name: synthetic\n  options:\n    workers: 0\n",
            "source.options.workers: expected a value >= 1, got 0",
        ),
        (
            "source:\n  name: synthetic\n  options:\n    interval: 7x\n",
            "source.options.interval:",
        ),
        (
            "source:\n  name: synthetic\n  options:\n    start: 2025-02-01\n    end: 2025-01-01\n",
            "source.options.start: 2025-02-01 is after end 2025-01-01",
        ),
        ("source:\n  name: synthetic\n  options:\n    preset: huge\n", "source: "),
        (
            "source:\n  name: synthetic\nfreshness:\n  max_days_behind: -1\n",
            "freshness.max_days_behind: expected a value >= 0, got -1",
        ),
        ("freshness: {}\n", "source: missing; expected a mapping"),
        ("- a list\n", "expected a mapping of keys at the top level"),
    ],
)
def test_bad_configs_name_the_file_and_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_refresh_config(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_an_unknown_preset_names_the_presets(tmp_path):
    path = write(tmp_path, "source:\n  name: synthetic\n  options:\n    preset: huge\n")
    with pytest.raises(ConfigError, match="huge") as error:
        load_refresh_config(path)
    assert "tiny" in str(error.value)


# -- filters --------------------------------------------------------------------------------------


def dbt_vars() -> dict:
    return yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())["vars"]


def test_valid_values_come_from_the_dbt_vars():
    variables = dbt_vars()
    expected = {"1d", *(f"{n}d" for n in variables["multi_tf_days"])}
    expected |= set(variables["cal_timeframes"])
    expected |= {f"{t}_anchor" for t in variables["cal_anchor_timeframes"]}
    assert set(valid_timeframes()) == expected
    assert valid_periods() == tuple(variables["ema_periods"])
    families = family_timeframes()
    assert families["bars_cal_us"] == families["bars_cal_iso"] == tuple(variables["cal_timeframes"])


def test_bad_filter_values_list_the_valid_ones():
    with pytest.raises(ValueError) as error:
        parse_tfs("1d,9x")
    assert str(error.value) == (
        f"--tfs: unknown timeframe 9x; valid: {', '.join(valid_timeframes())}"
    )
    with pytest.raises(ValueError, match=r"--periods: unknown period '11'; valid: 10, 20"):
        parse_periods("10,11")
    with pytest.raises(ValueError, match=r"--periods: unknown period 'ten'"):
        parse_periods("ten")
    with pytest.raises(ValueError, match=r"'7d-10' is not TF:PERIOD; expected e.g. 7d:10"):
        parse_combos("7d-10")
    with pytest.raises(ValueError, match=r"unknown timeframe '8d' in '8d:10'; valid: 1d"):
        parse_combos("8d:10")
    with pytest.raises(ValueError, match=r"--tf-period-combos: unknown period '7'"):
        parse_combos("7d:7")
    with pytest.raises(ValueError, match="empty item"):
        parse_tfs("1d,,7d")


def test_filters_keep_partitions_and_narrow_the_models():
    assert parse_tfs("7d,1d,7d") == ("7d", "1d")
    assert parse_combos("7d:10,7d:20") == (("7d", 10), ("7d", 20))
    ema_filter = EmaFilter(tfs=("1d", "7d"), periods=(10,))
    assert ema_filter.keeps("7d", 10) and not ema_filter.keeps("7d", 20)
    assert not ema_filter.keeps("1w", 10)
    assert ema_filter.families() == ("bars_1d", "bars_multi_tf")
    assert ema_filter.partitions("bars_multi_tf") == [("7d", 10)]
    assert ema_filter.dbt_vars == {"tfs": ["1d", "7d"], "periods": [10]}
    models = ["stg_klines", "bars_1d", "bars_multi_tf", "bars_cal_us", "emas_1d", "emas_cal_us"]
    assert selected_models(models, ema_filter) == [
        "stg_klines",
        "bars_1d",
        "bars_multi_tf",
        "emas_1d",
    ]
    only_weeks = EmaFilter(tfs=("1w",))
    assert selected_models(["bars_1d", "emas_1d", "emas_cal_iso"], only_weeks) == [
        "bars_1d",
        "emas_cal_iso",
    ]
    assert selected_models(models, EmaFilter()) == models


def test_filters_that_select_nothing_are_refused():
    EmaFilter(tfs=("7d",), combos=(("7d", 10),)).check_not_empty()
    with pytest.raises(ValueError, match="together select no"):
        EmaFilter(tfs=("1d",), combos=(("7d", 10),)).check_not_empty()
