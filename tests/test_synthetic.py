"""The synthetic source: determinism, realism, every injected fault as the warehouse sees it."""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ingest.loader import LoadSummary, SourcePart, WorkItem, run_load
from ingest.options import IngestOptions
from ingest.raw_store import SYMBOL_SCHEMA, RawStore
from ingest.records import CANDIDATE_SCHEMA
from ingest.synthetic import (
    FaultRates,
    Preset,
    SyntheticSource,
    build,
    generate_symbol,
    load_presets,
    market_panel,
    preset_interval,
    preset_symbols,
    resolve_preset,
    symbol_metadata,
)
from ingest.synthetic.faults import plan_faults
from ingest.synthetic.generate import clear_panel_cache, symbol_history, trades_between
from ingest.synthetic.market import MEAN_REVERTING, TRENDING_DOWN, TRENDING_UP, ar1_filter
from ingest.synthetic.universe import metadata_table
from tests.conftest import raw_rows, run_cli

TINY_START, TINY_END = date(2024, 5, 1), date(2025, 6, 24)
DAY_US = 86_400_000_000
VALUE_COLUMNS = [
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_count",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
]
DUPLICATE_REASON = "duplicate (symbol, interval, open_time) within the file"


def load(con: duckdb.DuckDBPyConnection, **options: object) -> LoadSummary:
    return run_load(build(IngestOptions(preset="tiny", **options)), RawStore(con), workers=2)


def epoch_us(day: date) -> int:
    return (day - date(1970, 1, 1)).days * DAY_US


def generated(preset: object = "tiny", **kwargs: object) -> pd.DataFrame:
    """All symbols' generated rows, with the open time in microseconds whatever its unit."""
    tables = [generate_symbol(preset, symbol, **kwargs) for symbol in preset_symbols(preset)]
    frame = pa.concat_tables(tables).to_pandas()
    frame["open_us"] = np.where(
        frame.open_time >= 10**14, frame.open_time, frame.open_time * 1000
    ).astype(np.int64)
    return frame


def by_key(frame: pd.DataFrame) -> pd.DataFrame:
    """The first row of each (symbol, open time), as the loader keeps it."""
    return frame.drop_duplicates(["symbol", "open_us"]).set_index(["symbol", "open_us"])


def isolated_spikes(frame: pd.DataFrame) -> pd.DataFrame:
    """Bars whose close is 6x away from the geometric mean of its neighbours' closes."""
    rows = by_key(frame).sort_index().reset_index()
    closes = rows.groupby("symbol")["close"]
    before, after = closes.shift(1), closes.shift(-1)
    ratio = rows.close / np.sqrt(before * after.fillna(before))
    return rows[(ratio >= 6) | (ratio <= 1 / 6)]


def stored_keys(con: duckdb.DuckDBPyConnection, where: str = "true") -> set[tuple[str, int]]:
    rows = con.sql(f"select symbol, epoch_us(open_time) from raw.klines where {where}").fetchall()
    return set(rows)


@pytest.fixture(scope="module")
def tiny_rows() -> pd.DataFrame:
    return generated()


@pytest.fixture(scope="module")
def demo_returns() -> pd.DataFrame:
    """Daily log returns of the demo preset without faults (a column per symbol)."""
    clean = dataclasses.replace(resolve_preset("demo"), faults=FaultRates.none())
    return daily_log_returns(clean)


def daily_log_returns(preset: object) -> pd.DataFrame:
    frame = generated(preset)
    closes = frame.pivot(index="open_us", columns="symbol", values="close")
    return np.log(closes).diff()


# -- presets and determinism -------------------------------------------------------------------


def test_shipped_presets_have_fixed_calendars_and_the_sizes_asked_for():
    presets = load_presets().presets
    sizes = {name: (p.symbols, p.interval, p.days * p.bars_per_day) for name, p in presets.items()}
    assert sizes == {
        "tiny": (8, "1d", 420),
        "demo": (60, "1d", 1096),
        "bench": (500, "1d", 2922),
        "minute": (50, "1m", 90 * 1440),
    }
    assert all(p.end <= date(2026, 6, 30) for p in presets.values())
    names = [set(preset_symbols(name)) for name in presets]
    assert sum(map(len, names)) == len(set().union(*names)), "presets share a symbol name"
    assert preset_interval("minute") == "1m"


def test_same_seed_gives_identical_rows_and_another_seed_does_not():
    symbol = preset_symbols("tiny")[2]
    first = generate_symbol("tiny", symbol)
    clear_panel_cache()
    again = generate_symbol("tiny", symbol, seed=7)
    other = generate_symbol("tiny", symbol, seed=8)
    assert first.schema == CANDIDATE_SCHEMA
    assert first.equals(again)
    assert other.num_rows > 0 and not first.column("close").equals(other.column("close"))


def test_cli_loads_the_same_rows_in_any_process_and_a_reload_inserts_nothing(tmp_path: Path):
    def ingest(folder: Path) -> str:
        env = {"QWH_DATA_DIR": str(folder)}
        result = run_cli("ingest", "--source", "synthetic", "--preset", "tiny", env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout + result.stderr

    def klines(folder: Path) -> pd.DataFrame:
        with duckdb.connect(str(folder / "warehouse.duckdb"), read_only=True) as con:
            return con.sql(
                f"select symbol, open_time, {', '.join(VALUE_COLUMNS)} from raw.klines "
                "order by symbol, open_time"
            ).df()

    first, second = tmp_path / "a", tmp_path / "b"
    assert "inserted 0," not in ingest(first)
    ingest(second)
    pd.testing.assert_frame_equal(klines(first), klines(second))
    assert "inserted 0, revised 0" in ingest(first)


def test_timestamps_are_epoch_ms_before_2025_and_microseconds_from_then(tiny_rows):
    last_2024 = tiny_rows[tiny_rows.open_us == epoch_us(date(2024, 12, 31))]
    first_2025 = tiny_rows[tiny_rows.open_us == epoch_us(date(2025, 1, 1))]
    assert len(last_2024) and len(first_2025)
    assert set(last_2024.open_time) == {1_735_603_200_000}
    assert set(last_2024.close_time) == {1_735_689_599_999}
    assert set(first_2025.open_time) == {1_735_689_600_000_000}
    assert set(first_2025.close_time) == {1_735_775_999_999_000}


# -- what a bar looks like -----------------------------------------------------------------------


def test_clean_bars_are_consistent_and_on_the_exchange_grid():
    clean = dataclasses.replace(resolve_preset("tiny"), faults=FaultRates.none())
    rows = generated(clean).sort_values(["symbol", "open_us"])
    meta = symbol_metadata(clean).to_pandas().set_index("symbol")
    assert (rows.high >= rows[["open", "close"]].max(axis=1)).all()
    assert (rows.low <= rows[["open", "close"]].min(axis=1)).all()
    previous_close = rows.groupby("symbol").close.shift(1)
    gap = (rows.open / previous_close - 1).dropna().abs()
    assert (gap == 0).mean() > 0.9 and gap.max() < 0.005
    typical = (rows.high + rows.low + rows.close) / 3
    assert np.allclose(rows.quote_volume, rows.volume * typical, rtol=0.01)
    assert (rows.taker_buy_base_volume <= rows.volume).all()
    assert (rows.taker_buy_quote_volume <= rows.quote_volume * 1.0001).all()
    assert (rows.trade_count >= 1).all()
    tick = rows.symbol.map(meta.tick_size)
    step = rows.symbol.map(meta.step_size)
    for prices, grid in [(rows.close, tick), (rows.low, tick), (rows.volume, step)]:
        units = prices / grid
        assert np.allclose(units, np.round(units), atol=1e-6)


def test_symbol_metadata_looks_like_the_exchange():
    meta = symbol_metadata("demo").to_pandas()
    assert symbol_metadata("demo").schema == SYMBOL_SCHEMA
    assert (meta.exchange == "binance").all()
    assert (meta.symbol == meta.base_asset + meta.quote_asset).all()
    quotes = meta.quote_asset.value_counts()
    assert set(quotes.index) == {"USDT", "BTC"} and quotes["USDT"] > 3 * quotes["BTC"]
    assert (meta.min_qty == meta.step_size).all() and (meta.tick_size > 0).all()
    demo = resolve_preset("demo")
    delisted = meta[meta.status == "BREAK"]
    assert len(delisted) == demo.delisted and delisted.delisted_at.notna().all()
    assert meta[meta.status == "TRADING"].delisted_at.isna().all()
    assert (meta.listed_at > pd.Timestamp(demo.start)).sum() == demo.listed_late


# -- stylised facts ------------------------------------------------------------------------------


def test_returns_have_fat_tails_volatility_clustering_and_common_moves(demo_returns):
    kurtosis = demo_returns.apply(lambda r: r.dropna().kurt() + 3)  # pandas gives the excess
    squared_acf = (demo_returns**2).apply(lambda r: r.dropna().autocorr(1))
    correlations = demo_returns.corr().to_numpy()
    mean_correlation = correlations[np.triu_indices_from(correlations, 1)].mean()
    assert kurtosis.median() > 4
    assert (kurtosis > 3).mean() > 0.9
    assert squared_acf.median() > 0.05
    assert mean_correlation > 0.15


def test_without_tails_clustering_and_factors_the_facts_vanish():
    """The control: the same checks fail on a Gaussian random walk of independent symbols."""
    demo = resolve_preset("demo")
    model = dataclasses.replace(
        demo.model,
        tail_dof=1000.0,
        vol_shock=0.0,
        leverage=0.0,
        market_loading=(0.0, 0.0),
        sector_loading=(0.0, 0.0),
    )
    returns = daily_log_returns(
        dataclasses.replace(demo, faults=FaultRates.none(), model=model, symbols=20)
    )
    kurtosis = returns.apply(lambda r: r.dropna().kurt() + 3)
    squared_acf = (returns**2).apply(lambda r: r.dropna().autocorr(1))
    correlations = returns.corr().to_numpy()
    assert abs(kurtosis.median() - 3) < 0.3
    assert abs(squared_acf.median()) < 0.03
    assert abs(correlations[np.triu_indices_from(correlations, 1)].mean()) < 0.05


def variance_ratio(returns: np.ndarray, horizon: int = 10) -> float:
    """Variance of `horizon`-day sums over `horizon` times the daily variance (1: random walk)."""
    centred = returns - returns.mean()
    sums = np.convolve(centred, np.ones(horizon), "valid")
    return sums.var() / (horizon * centred.var())


def test_trending_and_mean_reverting_regimes_show_in_the_bars(demo_returns):
    clean = dataclasses.replace(resolve_preset("demo"), faults=FaultRates.none())
    panel = market_panel(clean)
    day_us = epoch_us(clean.start) + np.arange(clean.days) * DAY_US
    drift_t = {TRENDING_UP: [], TRENDING_DOWN: [], MEAN_REVERTING: []}
    ratios = {TRENDING_UP: [], TRENDING_DOWN: [], MEAN_REVERTING: []}
    for index, symbol in enumerate(panel.universe.symbols):
        regimes = pd.Series(panel.regime[:, index], index=day_us)
        returns = demo_returns[symbol].dropna()
        labels = regimes.reindex(returns.index)
        runs = (labels != labels.shift()).cumsum()
        for _, segment in returns.groupby(runs):
            if len(segment) >= 40:
                kind = labels[segment.index[0]]
                values = segment.to_numpy()
                drift_t[kind].append(values.mean() / values.std() * np.sqrt(len(values)))
                ratios[kind].append(variance_ratio(values))
    assert all(len(found) >= 10 for found in drift_t.values())
    assert np.mean(np.array(drift_t[TRENDING_UP]) > 0) > 0.75
    assert np.mean(np.array(drift_t[TRENDING_DOWN]) < 0) > 0.75
    trending = ratios[TRENDING_UP] + ratios[TRENDING_DOWN]
    assert np.median(ratios[MEAN_REVERTING]) < 0.8 < np.median(trending)


def test_ar1_filter_matches_the_recursion_step_by_step():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 2))
    for beta in (0.97, 0.5, -0.4, 0.0):
        expected = np.zeros_like(x)
        state = np.zeros(2)
        for t in range(len(x)):
            state = beta * state + x[t]
            expected[t] = state
        assert np.allclose(ar1_filter(x, beta), expected, rtol=1e-10, atol=1e-12)


# -- faults as the warehouse sees them -----------------------------------------------------------


def test_duplicates_and_toxic_spikes_end_as_rejects_with_their_reason(con, tiny_rows):
    summary = load(con)
    spikes = isolated_spikes(tiny_rows)
    duplicates = tiny_rows.duplicated(["symbol", "open_us"]).sum()
    assert len(spikes) > 0 and duplicates > 0
    reasons = dict(con.sql("select reason, count(*) from raw.rejects group by reason").fetchall())
    toxic = [reason for reason in reasons if reason.startswith("toxic print")]
    assert len(toxic) == 1 and set(reasons) == {DUPLICATE_REASON, toxic[0]}
    assert reasons[DUPLICATE_REASON] == duplicates
    assert reasons[toxic[0]] == len(spikes)
    spike_keys = set(zip(spikes.symbol, spikes.open_us, strict=True))
    rejected = con.sql("select raw_row from raw.rejects where reason like 'toxic%'").fetchall()
    closes = sorted((row["symbol"], row["close"]) for row in (json.loads(r) for (r,) in rejected))
    assert closes == sorted(zip(spikes.symbol, spikes.close, strict=True))
    assert not spike_keys & stored_keys(con)
    assert summary.stats.rows.inserted == len(by_key(tiny_rows)) - len(spikes)


def test_toxic_spikes_jump_tenfold_and_come_back(tiny_rows):
    rows = by_key(tiny_rows).sort_index().reset_index()
    closes = rows.groupby("symbol").close
    jump = rows.close / closes.shift(1)
    back = closes.shift(-1) / closes.shift(1)
    spikes = isolated_spikes(tiny_rows).index
    assert len(spikes) > 0
    assert ((jump[spikes] >= 10) | (jump[spikes] <= 0.1)).all()
    assert back[spikes].dropna().between(0.7, 1.4).all()


def test_ohlc_inconsistent_bars_are_kept_raw(con, tiny_rows):
    load(con)
    rows = by_key(tiny_rows)
    spikes = isolated_spikes(tiny_rows).set_index(["symbol", "open_us"]).index
    rows = rows.drop(index=spikes)
    broken = (rows.high < rows[["open", "close"]].max(axis=1)) | (
        rows.low > rows[["open", "close"]].min(axis=1)
    )
    stored = con.sql(
        "select count(*) from raw.klines "
        "where high < greatest(open, close) or low > least(open, close)"
    ).fetchone()[0]
    assert broken.sum() > 0 and stored == broken.sum()
    assert con.sql("select count(*) from raw.klines where high < low").fetchone()[0] == 0


def test_missing_bars_are_permanent_gaps(con):
    load(con)
    gaps = con.sql(
        """
        select count(*) from (
            select symbol, open_time - lag(open_time) over (
                partition by symbol order by open_time nulls last) as step
            from raw.klines
        ) where step > interval 1 day
        """
    ).fetchone()[0]
    assert gaps > 0


def test_revisions_of_old_bars_arrive_with_a_later_until(con):
    early = date(2025, 1, 31)
    load(con, until=early)
    second = load(con)
    before, after = by_key(generated(until=early)), by_key(generated())
    common = before.index.intersection(after.index)
    differs = (before.loc[common, VALUE_COLUMNS] != after.loc[common, VALUE_COLUMNS]).any(axis=1)
    changed = common[differs.to_numpy()]
    assert len(changed) > 0 and second.stats.rows.revised == len(changed)
    revised = con.sql(
        "select symbol, epoch_us(open_time), close from raw.klines where revision = 2"
    ).fetchall()
    assert {(s, t) for s, t, _ in revised} == set(changed)
    assert all(close == after.loc[(s, t), "close"] for s, t, close in revised)
    assert all(t <= epoch_us(early) for _, t in changed)
    assert set(before.index) <= set(after.index)


def first_late_bar(min_lag_days: int) -> tuple[str, date, date]:
    """A bar published `min_lag_days` or more after its day, from the fault schedule."""
    panel = market_panel("tiny")
    for index, symbol in enumerate(panel.universe.symbols):
        history = symbol_history(panel, index, seed=7)
        bar_day = history.bars.open_us // DAY_US
        lag = history.faults.published_day - bar_day
        late = np.flatnonzero((lag >= min_lag_days) & ~history.faults.missing)
        for position in late:
            published = date(1970, 1, 1) + timedelta(
                days=int(history.faults.published_day[position])
            )
            if published <= TINY_END:
                day = date(1970, 1, 1) + timedelta(days=int(bar_day[position]))
                return symbol, day, published
    raise AssertionError("no late bar in the tiny preset")


def test_a_late_bar_is_a_gap_that_fills_in_a_later_load(con):
    symbol, day, published = first_late_bar(min_lag_days=2)
    key = (symbol, epoch_us(day))
    load(con, until=published - timedelta(days=1))
    assert key not in stored_keys(con)
    assert (symbol, epoch_us(day + timedelta(days=1))) in stored_keys(con), "not a gap"
    second = load(con, until=published)
    assert key in stored_keys(con, f"batch_id = {second.batch_id}")
    expected = by_key(generated(until=published)).loc[key, "close"]
    stored = con.sql(
        "select close from raw.klines where symbol = ? and epoch_us(open_time) = ?", params=key
    ).fetchone()[0]
    assert stored == expected


def test_delisted_symbols_stop_and_change_status(con):
    final = symbol_metadata("tiny").to_pandas()
    gone = final[final.status == "BREAK"]
    assert len(gone) == 1
    symbol, delisted_at = gone.symbol.iloc[0], gone.delisted_at.iloc[0].to_pydatetime()
    assert delisted_at.date() < TINY_END - timedelta(days=10)
    load(con, until=delisted_at.date() - timedelta(days=1))
    load(con)
    history = con.sql(
        "select status, delisted_at from raw.symbols where symbol = ? order by revision",
        params=[symbol],
    ).fetchall()
    assert history == [("TRADING", None), ("BREAK", delisted_at)]
    last_bar = con.sql(
        "select max(open_time) from raw.klines where symbol = ?", params=[symbol]
    ).fetchone()[0]
    assert delisted_at - timedelta(days=7) <= last_bar < delisted_at
    others_end = con.sql(
        "select count(*) from raw.klines where symbol != ? and open_time >= ?",
        params=[symbol, datetime(2025, 6, 1)],
    ).fetchone()[0]
    assert others_end > 0


def test_symbols_listed_later_appear_from_their_listing_day(con):
    final = symbol_metadata("tiny").to_pandas()
    late = final[final.listed_at > pd.Timestamp(TINY_START)]
    assert len(late) == resolve_preset("tiny").listed_late
    first_listing = late.listed_at.min().date()
    summary = load(con, until=first_listing - timedelta(days=1))
    skipped = dict(summary.skipped)
    assert sum("not on the exchange yet" in why for why in skipped.values()) == len(late)
    assert not set(late.symbol) & {s for s, _ in stored_keys(con)}
    load(con)
    for symbol, listed_at in zip(late.symbol, late.listed_at, strict=True):
        first_bar = con.sql(
            "select min(open_time) from raw.klines where symbol = ?", params=[symbol]
        ).fetchone()[0]
        assert listed_at <= first_bar < listed_at + timedelta(days=5)


# -- loads over time -----------------------------------------------------------------------------


def test_loading_the_same_data_twice_inserts_nothing(con):
    first = load(con)
    tables = ("raw.klines", "raw.rejects", "raw.symbols")
    counts = [con.sql(f"select count(*) from {table}").fetchone()[0] for table in tables]
    second = load(con)
    rows = second.stats.rows
    assert (rows.inserted, rows.revised, rows.unchanged) == (0, 0, first.stats.rows.inserted)
    assert counts == [con.sql(f"select count(*) from {t}").fetchone()[0] for t in tables]


def test_a_later_until_only_adds_days_late_bars_and_revisions():
    until = date(2025, 3, 15)
    earlier, later = by_key(generated(until=until)), by_key(generated())
    assert max(t for _, t in earlier.index) == epoch_us(until)
    assert set(earlier.index) <= set(later.index)
    new_old_days = [
        key for key in later.index.difference(earlier.index) if key[1] <= epoch_us(until)
    ]
    common = earlier.index
    changed = (earlier.loc[common, VALUE_COLUMNS] != later.loc[common, VALUE_COLUMNS]).any(axis=1)
    bars = len(common)
    assert 0 < changed.sum() < 0.02 * bars and len(new_old_days) < 0.02 * bars


def test_start_restricts_the_days_and_a_later_run_backfills(con):
    start = date(2025, 3, 1)
    first = load(con, start=start)
    assert con.sql("select min(open_time) from raw.klines").fetchone()[0] == datetime(2025, 3, 1)
    second = load(con)
    assert second.stats.rows.revised == 0
    assert second.stats.rows.unchanged == first.stats.rows.inserted
    earliest = con.sql("select min(open_time) from raw.klines").fetchone()[0]
    assert earliest == datetime(2024, 5, 1)


def test_end_and_symbols_restrict_what_is_generated(con):
    meta = symbol_metadata("tiny").to_pandas()
    wanted = list(meta[meta.listed_at == pd.Timestamp(TINY_START)].symbol[:2])
    load(con, symbols=tuple(wanted), end=date(2024, 6, 30))
    symbols, latest = con.sql(
        "select list(distinct symbol), max(open_time) from raw.klines"
    ).fetchone()
    assert sorted(symbols) == sorted(wanted) and latest <= datetime(2024, 6, 30)


def test_freshness_skips_recent_symbols_unless_forced(con):
    load(con)
    fresh = load(con, freshness_hours=1.0)
    assert fresh.stats.symbols_skipped_fresh == 8 and fresh.stats.rows_read == 0
    forced = load(con, freshness_hours=1.0, force=True)
    assert forced.stats.symbols_skipped_fresh == 0 and forced.stats.rows.unchanged > 0


def test_tiny_generates_and_loads_in_well_under_two_seconds(con):
    clear_panel_cache()
    started = time.process_time()
    load(con)
    assert time.process_time() - started < 2.0


def test_minute_bars_are_made_one_symbol_at_a_time_and_bridge_the_daily_closes():
    symbol = preset_symbols("minute")[0]
    started = time.process_time()
    rows = by_key(
        generate_symbol("minute", symbol).to_pandas().assign(open_us=lambda f: f.open_time)
    )
    assert time.process_time() - started < 3.0
    assert 0.99 * 90 * 1440 < len(rows) <= 90 * 1440
    open_us = rows.index.get_level_values("open_us")
    assert (open_us % 60_000_000 == 0).all() and open_us.min() >= 10**15
    assert (rows.close_time == open_us + 59_999_000).all()
    panel = market_panel("minute")
    day_close = np.exp(panel.log_close[:, 0])
    last_minutes = rows[(open_us % DAY_US) == DAY_US - 60_000_000]
    days = (last_minutes.index.get_level_values("open_us") // DAY_US) - (
        epoch_us(panel.preset.start) // DAY_US
    )
    matches = np.isclose(last_minutes.close, day_close[days], rtol=1e-4)
    assert matches.mean() > 0.95


# -- bad input -----------------------------------------------------------------------------------


def test_bad_preset_names_symbols_and_intervals_are_clear_errors():
    with pytest.raises(ValueError, match="unknown preset 'huge'; expected one of tiny, demo"):
        build(IngestOptions(preset="huge"))
    with pytest.raises(
        ValueError,
        match=r"unknown symbols NOPEUSDT for preset tiny; it has 8, e\.g\. BUDOBUSDT, FEREUSDT",
    ):
        build(IngestOptions(preset="tiny", symbols=("NOPEUSDT",)))
    with pytest.raises(ValueError, match="unknown symbols BTCUSDT for preset demo"):
        generate_symbol("demo", "BTCUSDT")
    with pytest.raises(ValueError, match="preset tiny generates 1d bars, not 1h"):
        build(IngestOptions(preset="tiny", interval="1h"))


def test_cli_names_the_presets_when_one_is_unknown():
    result = run_cli("ingest", "--source", "synthetic", "--preset", "huge")
    assert result.returncode == 2
    assert (
        "unknown preset 'huge'; expected one of tiny, demo, bench, minute"
        in (result.stderr.strip().splitlines()[-1])
    )


VALID_PRESET = """
default: a
presets:
  a: {description: x, interval: 1d, symbols: 3, start: 2024-01-01, end: 2024-03-01}
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            VALID_PRESET.replace("symbols: 3,", "symbols: 3, faults: {missng: 0.1},"),
            "presets.a.faults.missng: unknown key; allowed keys: missing, late, duplicate",
        ),
        (
            VALID_PRESET.replace("symbols: 3", "symbols: eight"),
            "presets.a.symbols: expected an integer, got a string ('eight')",
        ),
        (
            VALID_PRESET.replace("interval: 1d", "interval: 1w"),
            "presets.a.interval: expected one of 1s, 1m, 3m",
        ),
        (
            VALID_PRESET.replace("end: 2024-03-01", "end: 2023-03-01"),
            "presets.a.end: expected a date after start (2024-01-01)",
        ),
        (
            VALID_PRESET.replace("start: 2024-01-01", "start: soon"),
            "presets.a.start: expected a date YYYY-MM-DD, got a string ('soon')",
        ),
        (
            VALID_PRESET.replace("symbols: 3,", "symbols: 3, faults: {toxic_spike: 0.5},"),
            "presets.a.faults.toxic_spike: expected a share of bars from 0 to 0.2",
        ),
        (
            VALID_PRESET.replace("symbols: 3,", "symbols: 3, model: {daily_vol: [0.1]},"),
            "presets.a.model.daily_vol: expected [low, high] with low <= high, got [0.1]",
        ),
        (
            VALID_PRESET + "  b: {description: y, interval: 1d, symbols: 2, start: 2024-01-01, "
            "end: 2024-02-01, name_offset: 2}\n",
            "presets.b.name_offset: names 2..3 overlap preset a's 0..2",
        ),
        (
            VALID_PRESET.replace("default: a", "default: z"),
            "default: unknown value 'z'; allowed: a",
        ),
        (VALID_PRESET + "extra: 1\n", "extra: unknown key; allowed keys: default, presets"),
        (
            VALID_PRESET.replace("symbols: 3,", "symbols: 3, delisted: 3,"),
            "presets.a.delisted: expected listed_late + delisted <= symbols - 1",
        ),
    ],
)
def test_bad_preset_files_name_the_file_the_key_and_what_is_allowed(tmp_path, text, message):
    path = tmp_path / "synthetic.yml"
    path.write_text(text)
    with pytest.raises(ValueError) as error:
        load_presets(path)
    assert str(error.value).startswith(f"{path}: {message}")


def test_a_valid_custom_preset_file_loads_with_defaults(tmp_path):
    path = tmp_path / "synthetic.yml"
    path.write_text(VALID_PRESET)
    preset = load_presets(path).get(None)
    assert (preset.name, preset.days, preset.faults, preset.delisted) == ("a", 61, FaultRates(), 0)


def test_a_symbols_first_and_last_bars_never_get_a_fault():
    """The toxic guard needs a previous close; and the last day of a fixed calendar could never
    bring a late bar or a revision, so a fault there would leave the latest bar missing for good."""
    rates = dataclasses.replace(FaultRates(), missing=0.15, late=0.15, toxic_spike=0.15)
    bar_day = np.arange(20_000, 20_040)
    with_faults = 0
    for seed in range(200):
        plan = plan_faults(bar_day, rates, np.random.default_rng(seed))
        faulted = (
            plan.missing
            | (plan.published_day != bar_day)
            | plan.duplicate
            | (plan.spike != 1.0)
            | plan.high_below_range
            | plan.low_above_range
        )
        assert not faulted[0] and not faulted[-1], seed
        with_faults += int(faulted[1:-1].any())
    assert with_faults == 200  # the other bars still get their faults


# -- the bounded path: a window's bars only, several symbols per work item -----------------------

DENSE_FAULTS = dataclasses.replace(
    FaultRates(),
    missing=0.03,
    late=0.03,
    duplicate=0.03,
    revision=0.05,
    ohlc_inconsistent=0.03,
    toxic_spike=0.02,
    revision_after_days=(3, 60),
)


def dense(interval: str = "1d") -> Preset:
    """tiny, with many more faults (and revisions that arrive sooner)."""
    return dataclasses.replace(resolve_preset("tiny"), faults=DENSE_FAULTS, interval=interval)


WINDOWS = [  # until, start, end
    (TINY_END, None, None),
    (TINY_END, TINY_END - timedelta(days=200), None),
    (date(2025, 1, 31), date(2024, 12, 1), date(2025, 1, 10)),
    (date(2025, 1, 31), TINY_START - timedelta(days=9), date(2026, 1, 1)),
    (TINY_START + timedelta(days=2), None, None),
    (TINY_END, TINY_END, TINY_END),
    (date(2025, 2, 1), date(2025, 3, 1), None),
]


@pytest.mark.parametrize("interval", ["1d", "4h"])
@pytest.mark.parametrize(("until", "start", "end"), WINDOWS)
def test_a_windows_bars_are_those_of_the_whole_history(interval, until, start, end):
    """The bounded path generates the bars of the days asked for only: the same values, faults,
    late bars and revisions as the whole history shows there."""
    panel = market_panel(dense(interval))
    last = min(end, until) if end else until
    for index in range(panel.preset.symbols):
        whole = symbol_history(panel, index, seed=7).published(until, start, end)
        window = symbol_history(panel, index, seed=7, days=(start, last))
        assert window.published(until, start, end).equals(whole)


@dataclasses.dataclass(frozen=True)
class WholeHistoryPerSymbol:
    """The synthetic source as it was: one work item per symbol, each symbol generated over its
    whole life; the reference the bounded, grouped source must load exactly."""

    source: SyntheticSource
    name: ClassVar[str] = "synthetic"

    def parameters(self) -> dict[str, object]:
        return self.source.parameters()

    def plan(self, store: RawStore) -> tuple[list[WorkItem], list[tuple[WorkItem, str]]]:
        return dataclasses.replace(self.source, symbols_per_item=1).plan(store)

    def read(self, item: WorkItem) -> SourcePart:
        (index,) = item.payload
        source = self.source
        panel = market_panel(source.preset, source.seed)
        history = symbol_history(panel, index, source.seed)
        return SourcePart(
            item,
            candidates=history.published(source.until, source.start, source.end),
            symbols=metadata_table(source.preset, panel.universe, [index], source.until),
            symbol_loads=[(history.symbol, source.preset.interval)],
        )


def test_the_bounded_source_loads_what_whole_histories_one_symbol_each_load(con, tmp_path):
    """Day by day and over windows (some before a listing or after a delisting), with
    revisions, late bars and rejects: the same rows in every raw table."""
    reference = duckdb.connect(str(tmp_path / "reference.duckdb"))
    loads = [
        {"until": date(2024, 9, 30)},
        {"until": date(2024, 10, 1), "start": date(2024, 8, 1)},
        {"until": date(2024, 10, 2), "start": date(2024, 8, 1)},
        {"until": date(2025, 2, 1), "start": date(2024, 12, 1), "end": date(2025, 1, 15)},
        {"until": date(2025, 2, 1), "start": TINY_START, "end": date(2024, 6, 30)},
        {"until": date(2025, 6, 1), "start": date(2025, 1, 1)},
        {"until": TINY_END, "start": date(2025, 4, 1)},
        {"until": TINY_END},
    ]
    for options in loads:
        source = dataclasses.replace(build(IngestOptions(preset="tiny", **options)), preset=dense())
        assert source.symbols_per_item > 1
        bounded = run_load(source, RawStore(con), workers=2)
        whole = run_load(WholeHistoryPerSymbol(source), RawStore(reference), workers=2)
        assert bounded.stats == whole.stats and bounded.skipped == whole.skipped
    assert raw_rows(con) == raw_rows(reference)
    kinds = con.sql("select count(*) filter (where revision > 1) from raw.klines").fetchone()
    assert kinds[0] > 0
    assert con.sql("select count(distinct reason) from raw.rejects").fetchone()[0] == 2


def test_a_symbol_trades_in_a_window_exactly_when_its_history_has_a_bar_there():
    panel = market_panel("tiny")
    for index in range(panel.preset.symbols):
        bar_days = symbol_history(panel, index, seed=7).bars.open_us // DAY_US
        for offset, length in itertools.product(range(-3, 425), (0, 2)):
            first = TINY_START + timedelta(days=offset)
            last = first + timedelta(days=length)
            between = (bar_days >= epoch_us(first) // DAY_US) & (
                bar_days <= epoch_us(last) // DAY_US
            )
            assert trades_between(panel, index, first, last) == between.any(), (index, first)
