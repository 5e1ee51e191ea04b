"""The marts against independent computations: kline_gaps on the real sample (its BTCUSDT 4h outage
and every gap pandas finds in the CSV files), dim_symbols, symbol_freshness and `dbt source
freshness` on hand-built histories."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from ingest.raw_store import SYMBOL_SCHEMA, RawStore
from quantwarehouse.dbt import DbtRunError, run_dbt
from tests.conftest import load_real_sample
from tests.incremental_harness import load_batch, random_walk

MARTS = ["+dim_symbols", "+kline_gaps", "+symbol_freshness"]
INTERVAL_HOURS = {"1h": 1, "4h": 4}


@pytest.fixture(scope="module")
def real_warehouse(module_warehouse: Path, dbt_workdir: Path, dbt_manifest: object) -> Path:
    """The real sample's 1d, 4h and 1h files, with the marts built."""
    load_real_sample(module_warehouse, "1d", *INTERVAL_HOURS)
    run_dbt(["build", "--select", *MARTS], manifest=dbt_manifest)
    return module_warehouse


def utc_today() -> date:
    return datetime.now(UTC).date()


def query(warehouse: Path, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql).fetch_df()


def csv_gaps(folder: Path, interval: str) -> set[tuple[str, str, pd.Timestamp, int]]:
    """Every gap of the sample's files at an interval: (symbol, interval, bar before, missing)."""
    step = pd.Timedelta(hours=INTERVAL_HOURS[interval])
    gaps = set()
    for path in folder.glob(f"*_{interval}_*.csv"):
        opens = pd.to_datetime(pd.read_csv(path)["open_time_ms"], unit="ms").sort_values()
        spacing = opens.diff().shift(-1)
        for before, gap in zip(opens, spacing, strict=True):
            if pd.notna(gap) and gap > step:
                gaps.add((path.name.split("_")[0], interval, before, int(gap // step) - 1))
    return gaps


def test_kline_gaps_finds_the_btcusdt_4h_outage(real_warehouse, real_sample, dbt_manifest):
    outage = query(
        real_warehouse,
        "select * from main.kline_gaps where symbol = 'BTCUSDT' and interval = '4h' "
        "and prev_open_time = timestamp '2018-02-08 00:00:00'",
    )
    assert len(outage) == 1
    row = outage.iloc[0]
    assert row["next_open_time"] == pd.Timestamp("2018-02-09 08:00:00")
    assert row["gap_start_at"] == pd.Timestamp("2018-02-08 04:00:00")
    assert row["gap_end_at"] == pd.Timestamp("2018-02-09 08:00:00")
    assert row["missing_bar_count"] == 7


def test_kline_gaps_equal_the_gaps_in_the_files(real_warehouse, real_sample, dbt_manifest):
    stored = query(
        real_warehouse,
        "select symbol, interval, prev_open_time, missing_bar_count from main.kline_gaps",
    )
    found = {
        (r.symbol, r.interval, pd.Timestamp(r.prev_open_time), int(r.missing_bar_count))
        for r in stored.itertuples()
    }
    expected = csv_gaps(real_sample, "4h") | csv_gaps(real_sample, "1h")
    assert len(expected) > 1
    assert found == expected  # the daily files of the sample have no gap


def bar_days_in_files(folder: Path, symbol: str) -> pd.Series:
    """The UTC days on which the loaded files (1d, 4h, 1h) of a symbol have a kline: the days of
    bars_1d, which aggregates a day without a daily kline from its intraday klines."""
    files = [p for i in ("1d", *INTERVAL_HOURS) for p in folder.glob(f"{symbol}_{i}_*.csv")]
    opens = pd.concat([pd.read_csv(path)["open_time_ms"] for path in files])
    return pd.Series(pd.to_datetime(opens, unit="ms").dt.normalize().unique())


def test_dim_symbols_bar_ranges_match_the_files(real_warehouse, real_sample, dbt_manifest):
    stored = query(real_warehouse, "select * from main.dim_symbols").set_index("symbol")
    assert len(stored) == 10
    for symbol, row in stored.iterrows():
        days = bar_days_in_files(real_sample, str(symbol))
        assert pd.Timestamp(row["first_bar_date"]) == days.min()
        assert pd.Timestamp(row["last_bar_date"]) == days.max()
        assert row["bar_count"] == days.nunique()
        assert row["missing_day_count"] == (days.max() - days.min()).days + 1 - days.nunique()
        assert not row["has_metadata"]


def test_source_freshness_reports_the_old_sample_as_stale(
    real_warehouse, real_sample, dbt_manifest
):
    with pytest.raises(DbtRunError, match=r"source bars_1d \[error\]"):
        run_dbt(["source", "freshness", "--select", "source:state.bars_1d"], manifest=dbt_manifest)


# -- hand-built histories ------------------------------------------------------------------------


def symbol_metadata(rows: list[tuple[str, str]]) -> pa.Table:
    """Metadata rows (symbol, status) for one exchange."""
    return pa.table(
        {
            "symbol": [symbol for symbol, _ in rows],
            "exchange": ["binance"] * len(rows),
            "status": [status for _, status in rows],
            "base_asset": [symbol[:3] for symbol, _ in rows],
            "quote_asset": ["USDT"] * len(rows),
            "tick_size": [0.01] * len(rows),
            "step_size": [0.001] * len(rows),
            "min_qty": [0.001] * len(rows),
            "listed_at": pa.nulls(len(rows), pa.timestamp("us")),
            "delisted_at": pa.nulls(len(rows), pa.timestamp("us")),
        },
        schema=SYMBOL_SCHEMA,
    )


def load_metadata(warehouse: Path, rows: list[tuple[str, str]]) -> None:
    with duckdb.connect(str(warehouse)) as con:
        store = RawStore(con)
        store.write_symbols(store.start_batch("test", {}), "test", symbol_metadata(rows))


def test_symbol_freshness_flags_the_stale_symbol(warehouse, dbt_workdir, dbt_manifest):
    today = utc_today()
    fresh = random_walk("FRESHUSDT", today - timedelta(days=30), 30)  # last bar: yesterday
    stale = random_walk("STALEUSDT", today - timedelta(days=40), 30)  # last bar: 11 days ago
    halted = random_walk("HALTUSDT", today - timedelta(days=40), 30)
    load_batch(warehouse, pa.concat_tables([fresh, stale, halted]))
    load_metadata(warehouse, [("FRESHUSDT", "TRADING"), ("HALTUSDT", "TRADING")])
    load_metadata(warehouse, [("HALTUSDT", "BREAK")])  # a later revision: no longer trading

    run_dbt(
        ["build", "--select", *MARTS],
        variables={"freshness_as_of": today.isoformat()},
        manifest=dbt_manifest,
    )
    rows = query(warehouse, "select * from main.symbol_freshness").set_index("symbol")

    assert rows.loc["FRESHUSDT", "days_behind"] == 1
    assert rows.loc["STALEUSDT", "days_behind"] == 11
    assert rows.loc["HALTUSDT", "status"] == "BREAK"
    assert rows["is_stale"].to_dict() == {
        "FRESHUSDT": False,
        "STALEUSDT": True,
        "HALTUSDT": False,
    }
    assert pd.Timestamp(rows.loc["STALEUSDT", "last_bar_date"]) == pd.Timestamp(
        today - timedelta(days=11)
    )
    assert rows["last_loaded_at"].notna().all()

    dim = query(warehouse, "select * from main.dim_symbols").set_index("symbol")
    assert dim.loc["HALTUSDT", "status"] == "BREAK"
    assert dim["has_metadata"].to_dict() == {
        "FRESHUSDT": True,
        "STALEUSDT": False,
        "HALTUSDT": True,
    }

    # The newest bar of any symbol is yesterday's: the source freshness check passes.
    result = run_dbt(
        ["source", "freshness", "--select", "source:state.bars_1d"], manifest=dbt_manifest
    )
    assert [(n.name, n.status) for n in result.nodes] == [("bars_1d", "pass")]


def test_symbol_freshness_threshold_is_a_var(warehouse, dbt_workdir, dbt_manifest):
    today = utc_today()
    load_batch(warehouse, random_walk("LATEUSDT", today - timedelta(days=33), 30))
    as_of = {"freshness_as_of": today.isoformat()}

    run_dbt(
        ["build", "--select", *MARTS],
        variables={**as_of, "stale_after_days": 3},
        manifest=dbt_manifest,
    )
    assert query(warehouse, "select is_stale from main.symbol_freshness")["is_stale"].tolist() == [
        True
    ]
    run_dbt(
        ["build", "--select", "symbol_freshness"],
        variables={**as_of, "stale_after_days": 4},
        manifest=dbt_manifest,
    )
    assert query(warehouse, "select is_stale from main.symbol_freshness")["is_stale"].tolist() == [
        False
    ]
