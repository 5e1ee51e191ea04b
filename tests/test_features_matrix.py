"""The features matrix: one symbol's feature rows (point in time, warm-up, vote counts), the
table of many symbols, the dbt model `features_matrix` (run in-process on small warehouses) and
its Parquet publication."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml
from dbt_common.invocation import get_invocation_id

from ingest.options import IngestOptions
from ingest.sources import build_source
from quantwarehouse import features
from quantwarehouse.features import (
    BAR_COLUMNS,
    FEATURES_SCHEMA,
    feature_columns,
    features_table,
    symbol_features,
)
from quantwarehouse.paths import REPO_ROOT
from tests.incremental_harness import (
    DbtProject,
    compare_table,
    concat,
    copy_warehouse,
    load_batch,
    load_source,
    new_warehouse,
    on_days,
    parsed_project,
    random_walk,
    revised,
    rows_written,
)

talib = pytest.importorskip("talib")

MODEL = "features_matrix"
SELECTION = ("--select", f"+{MODEL}")


def csv_bars(path: Path) -> pd.DataFrame:
    """One symbol's daily bars from a real-sample CSV, as the model reads them from bars_1d."""
    frame = pd.read_csv(path)
    return pd.DataFrame(
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


@pytest.fixture
def btc(real_sample: Path) -> pd.DataFrame:
    return csv_bars(next(real_sample.glob("BTCUSDT_1d_*.csv")))


@pytest.fixture
def neo(real_sample: Path) -> pd.DataFrame:
    return csv_bars(next(real_sample.glob("NEOBTC_1d_*.csv")))  # the longest: 367 bars


# -- one symbol ---------------------------------------------------------------------------------


def test_a_row_depends_only_on_bars_up_to_its_day(btc: pd.DataFrame):
    full = symbol_features(btc)
    for last in (0, 13, 60, 199, len(btc) - 2):
        truncated = symbol_features(btc.iloc[: last + 1])
        pd.testing.assert_frame_equal(truncated, full.iloc[: last + 1], check_exact=True)


def test_changing_later_bars_leaves_earlier_rows_unchanged(btc: pd.DataFrame):
    day = 120
    changed = btc.copy()
    changed.loc[day + 1 :, ["high", "low", "close"]] *= 1.3
    before, after = symbol_features(btc), symbol_features(changed)
    pd.testing.assert_frame_equal(after.iloc[: day + 1], before.iloc[: day + 1], check_exact=True)
    assert (after["close"].iloc[day + 1 :] != before["close"].iloc[day + 1 :]).all()
    assert (after["ema_200"].iloc[199:] != before["ema_200"].iloc[199:]).any()


def used(rows: pd.DataFrame, group: str) -> np.ndarray:
    return (
        rows[f"{group}_buy_votes"] + rows[f"{group}_sell_votes"] + rows[f"{group}_neutral_votes"]
    ).to_numpy()


def test_votes_join_as_their_inputs_warm_up(neo: pd.DataFrame):
    rows = symbol_features(neo)
    ma, osc = used(rows, "ma"), used(rows, "osc")
    assert (ma[:9] == 0).all() and ma[9] == 2  # SMA 10 and EMA 10 from the 10th bar
    assert (ma[:199] < 15).all() and (ma[199:] == 15).all()  # EMA/SMA 200 from the 200th bar
    assert (osc[:10] == 0).all() and osc[11] >= 1  # Momentum (and its previous value) first
    assert (osc[:49] < 11).all() and (osc[49:] == 11).all()  # the EMA 50 trend from bar 50
    assert np.isnan(rows["rating_all"].iloc[:9]).all()
    assert rows["rating_all_label"].iloc[:9].isna().all()
    assert rows["rating_all_label"].iloc[9:].notna().all()


def test_ratings_are_the_mean_votes_of_the_counts(neo: pd.DataFrame):
    rows = symbol_features(neo).iloc[199:]  # every vote valid from here on
    ma_net = rows["ma_buy_votes"] - rows["ma_sell_votes"]
    osc_net = rows["osc_buy_votes"] - rows["osc_sell_votes"]
    np.testing.assert_allclose(rows["rating_ma"], ma_net / 15, rtol=1e-15)
    np.testing.assert_allclose(rows["rating_osc"], osc_net / 11, rtol=1e-15)
    np.testing.assert_allclose(
        rows["rating_all"], (ma_net / 15 + osc_net / 11) / 2, rtol=1e-15, atol=1e-16
    )
    assert set(rows["rating_all_label"]) <= {"strong_sell", "sell", "neutral", "buy", "strong_buy"}
    assert rows["rating_all_label"].nunique() >= 3  # a real market is not always on one side


def test_feature_rows_keep_the_indicator_inputs(neo: pd.DataFrame):
    rows = symbol_features(neo)
    close = neo["close"].to_numpy()
    np.testing.assert_array_equal(rows["close"], close)
    np.testing.assert_allclose(rows["rsi_14"], talib.RSI(close, 14), rtol=1e-9)
    np.testing.assert_allclose(rows["sma_200"], talib.SMA(close, 200), rtol=1e-9)


def test_source_batch_is_the_latest_batch_among_the_bars_used(btc: pd.DataFrame):
    bars = btc.iloc[:10].assign(source_batch_id=[1, 1, 7, 1, 1, 3, 1, 9, 1, 1])
    assert symbol_features(bars)["source_batch_id"].tolist() == [1, 1, 7, 7, 7, 7, 7, 9, 9, 9]


# -- many symbols -------------------------------------------------------------------------------


def test_table_of_many_symbols_and_emitting_from_a_dirty_date(btc: pd.DataFrame, neo: pd.DataFrame):
    bars = pd.concat([neo, btc], ignore_index=True)
    full = features_table(bars, "run-1")
    assert full.schema.names == [*FEATURES_SCHEMA.names, "invocation_id"]
    assert full.num_rows == len(bars)
    assert set(full.column("invocation_id").to_pylist()) == {"run-1"}
    # warm-up values are SQL nulls, not NaN
    rsi = full.column("rsi_14")
    assert rsi.null_count == 2 * 14 and pa.compute.sum(pa.compute.is_nan(rsi)).as_py() == 0

    dirty = {"BTCUSDT": date(2018, 3, 1), "NEOBTC": date(2017, 7, 14)}
    partial = features_table(bars, "run-2", dirty).to_pandas()
    everything = full.to_pandas()
    expected = everything[everything["bar_date"] >= everything["symbol"].map(dirty)]
    assert partial["bar_date"][partial["symbol"] == "BTCUSDT"].min() == date(2018, 3, 1)
    pd.testing.assert_frame_equal(
        partial.drop(columns="invocation_id"),
        expected.drop(columns="invocation_id").reset_index(drop=True),
        check_exact=True,
    )


def test_rows_from_a_first_row_equal_those_of_the_whole_history(btc: pd.DataFrame):
    # The votes of the rows returned look back VOTE_LOOKBACK rows, not further.
    bars = {column: btc[column].to_numpy() for column in BAR_COLUMNS}
    whole = feature_columns(bars)
    size = len(btc)
    for first_row in (0, 1, 2, 3, 4, 35, 60, size - 1, size):
        tail = feature_columns(bars, first_row)
        for name, values in whole.items():
            np.testing.assert_array_equal(tail[name], values[first_row:], err_msg=name)


def bars_of_many_lengths(real_sample: Path) -> pd.DataFrame:
    """The real daily bars (136 to 367 per symbol) and symbols cut shorter than every warm-up
    (1 and 5 bars) or than some (30), out of symbol order."""
    frames = [csv_bars(path) for path in sorted(real_sample.glob("*_1d_*.csv"))]
    cuts = [
        frames[i].iloc[:size].assign(symbol=f"CUT{size}USDT") for i, size in enumerate((1, 5, 30))
    ]
    return pd.concat([*cuts[::-1], *frames[::-1]], ignore_index=True)


def emit_day(dates: list[date], day: int | None) -> date:
    """dates[day] (the last date if there are fewer), or the day after the last for None."""
    if day is None:
        return dates[-1] + timedelta(days=1)
    return dates[min(day, len(dates) - 1)]


@pytest.mark.parametrize("block_symbols", [1, 4, 64])
def test_each_symbol_of_a_block_gets_the_rows_it_gets_alone(
    real_sample: Path, monkeypatch: pytest.MonkeyPatch, block_symbols: int
):
    """Symbols of different lengths computed together (all in one block, or in blocks of 4, or
    alone) have the rows `feature_columns` gives each one alone, to the bit, NaN included."""
    monkeypatch.setattr(features, "BLOCK_SYMBOLS", block_symbols)
    bars = bars_of_many_lengths(real_sample)
    by_symbol = {symbol: rows for symbol, rows in bars.groupby("symbol")}
    # Emitting from a symbol's first day, from within its vote look-back, from a later day, from
    # its last day and from the day after it.
    days = [0, 1, 2, 3, 40, -1, None]
    dirty = {
        symbol: emit_day(rows["bar_date"].dt.date.to_list(), days[i % len(days)])
        for i, (symbol, rows) in enumerate(by_symbol.items())
    }
    for emit_from in (None, dirty):
        table = features_table(bars, "run", emit_from)
        assert table.column("symbol").to_pylist() == sorted(table.column("symbol").to_pylist())
        for symbol, rows in by_symbol.items():
            arrays = {column: rows[column].to_numpy() for column in BAR_COLUMNS}
            first_row = 0
            if emit_from is not None:
                first_row = int((rows["bar_date"].dt.date < emit_from[symbol]).sum())
            alone = feature_columns(arrays, first_row)
            got = table.filter(pa.compute.equal(table.column("symbol"), symbol))
            assert got.num_rows == len(rows) - first_row
            for name, values in alone.items():
                if name == "bar_date":
                    values = values.astype("datetime64[D]").tolist()
                column = got.column(name)
                ours = column.to_pylist() if column.type != pa.float64() else column.to_numpy()
                np.testing.assert_array_equal(ours, values, err_msg=f"{symbol} {name}")


def test_no_dirty_symbol_read_from_the_warehouse_makes_an_empty_table():
    # What the model reads when no symbol is dirty: a frame without rows, its symbol column
    # untyped object.
    with duckdb.connect() as con:
        con.execute(
            "create table bars_1d (symbol varchar, bar_date date, high double, low double, "
            "close double, volume double, source_batch_id bigint)"
        )
        frame = con.sql(f"select {', '.join(BAR_COLUMNS)} from bars_1d").df()
    assert features_table(frame, "run", {}).num_rows == 0


def test_no_bars_make_an_empty_table_with_the_schema():
    empty = pd.DataFrame({column: [] for column in BAR_COLUMNS})
    table = features_table(empty, "run", {})
    assert table.num_rows == 0
    assert table.schema.names == [*FEATURES_SCHEMA.names, "invocation_id"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.drop(columns="volume"), r"lack column\(s\) \['volume'\]"),
        (
            lambda b: b.assign(close=b["close"].where(b.index != 5)),
            "bar BTCUSDT 2017-08-22: close is null",
        ),
        (
            lambda b: pd.concat([b, b.iloc[[3]]]),
            "bar BTCUSDT 2017-08-20: a second bar on that day",
        ),
    ],
)
def test_bad_bars_are_refused_naming_the_row(btc: pd.DataFrame, change, message: str):
    with pytest.raises(ValueError, match=message):
        features_table(change(btc), "run")


def test_symbol_features_takes_one_symbol(btc: pd.DataFrame, neo: pd.DataFrame):
    with pytest.raises(ValueError, match="one symbol expected"):
        symbol_features(pd.concat([btc, neo]))


# -- the dbt model ------------------------------------------------------------------------------


def test_every_column_of_the_model_is_documented():
    models = yaml.safe_load(
        (REPO_ROOT / "python_models/features/_features__models.yml").read_text()
    )
    (model,) = models["models"]
    documented = [column["name"] for column in model["columns"] if column.get("description")]
    assert documented == [*FEATURES_SCHEMA.names, "invocation_id"]


@pytest.fixture(scope="module")
def project() -> DbtProject:
    return parsed_project()


def build(project: DbtProject, workdir: Path, warehouse: Path, *args: str) -> str:
    """Run features_matrix (and its parents) on the warehouse; the dbt invocation id."""
    project.session(workdir).invoke(warehouse, "run", *SELECTION, *args)
    return get_invocation_id()


def read_model(warehouse: Path, where: str = "true") -> pd.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        query = f"select * from main.{MODEL} where {where} order by symbol, bar_date"
        return con.sql(query).arrow().read_all().to_pandas()  # types from the table, not the rows


def test_model_on_the_real_sample_matches_talib_on_the_csv_files(project, tmp_path, real_sample):
    warehouse = new_warehouse(tmp_path / "warehouse")
    load_batch(
        warehouse,
        load_source(build_source("files", IngestOptions(path=real_sample, interval="1d"))),
    )
    invocation = build(project, tmp_path, warehouse)

    rows = read_model(warehouse)
    assert set(rows["invocation_id"]) == {invocation}
    for path in sorted(real_sample.glob("*_1d_*.csv")):
        expected = csv_bars(path)
        got = rows[rows["symbol"] == expected["symbol"].iloc[0]]
        assert got["bar_date"].tolist() == expected["bar_date"].dt.date.tolist()
        close = expected["close"].to_numpy()
        np.testing.assert_array_equal(got["close"], close)
        np.testing.assert_allclose(got["rsi_14"], talib.RSI(close, 14), rtol=1e-9)
        np.testing.assert_allclose(got["ema_50"], talib.EMA(close, 50), rtol=1e-9)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        state = con.sql(
            f"select symbol, row_count, earliest_ts from state.{MODEL} order by symbol"
        ).fetchall()
    assert [(s, n) for s, n, _ in state] == sorted(rows.groupby("symbol").size().items())


START = date(2023, 1, 1)


def day(n: int) -> date:
    return START + timedelta(days=n)


def walk(symbol: str, first: int, last: int) -> pa.Table:
    return on_days(random_walk(symbol, START, 400, price=50.0), day(first), day(last))


def test_late_revision_rewrites_from_its_day_and_equals_a_full_rebuild(project, tmp_path):
    """A revision 250 days back (older than any fixed look-back) is recomputed exactly from its
    day; rows before it are neither rewritten nor changed; and the result, incrementally and
    after a second revision, equals a full rebuild of the same raw data."""
    warehouse = new_warehouse(tmp_path / "incremental")
    load_batch(warehouse, concat(walk("AAAUSDT", 0, 269), walk("BBBUSDT", 0, 269)))
    first_run = build(project, tmp_path, warehouse)
    before = read_model(warehouse)

    revised_day = 20
    load_batch(
        warehouse,
        concat(revised(walk("AAAUSDT", revised_day, revised_day), 1.2), walk("BBBUSDT", 270, 270)),
    )
    revision_run = build(project, tmp_path, warehouse)

    model = project.model(MODEL)
    written = rows_written(warehouse, model, revision_run)
    assert {key: (w.rows, w.first) for key, w in written.items()} == {
        ("AAAUSDT",): (270 - revised_day, day(revised_day)),
        ("BBBUSDT",): (1, day(270)),
    }
    after = read_model(warehouse)
    untouched = after["bar_date"] < day(revised_day)
    untouched |= (after["symbol"] == "BBBUSDT") & (after["bar_date"] < day(270))
    assert set(after.loc[untouched, "invocation_id"]) == {first_run}
    aaa_after = after[after["symbol"] == "AAAUSDT"].set_index("bar_date")
    aaa_before = before[before["symbol"] == "AAAUSDT"].set_index("bar_date")
    changed = aaa_after["ema_200"] != aaa_before["ema_200"]
    assert changed.loc[day(199) :].all()  # the revision reaches every later EMA

    load_batch(
        warehouse,
        concat(revised(walk("BBBUSDT", 5, 5), 0.9), revised(walk("AAAUSDT", 20, 20), 0.8)),
    )
    build(project, tmp_path, warehouse)

    full = copy_warehouse(warehouse, tmp_path / "full")
    build(project, tmp_path, full, "--full-refresh")
    rebuilt = read_model(full, f"bar_date < '{day(5)}'")
    pd.testing.assert_frame_equal(
        rebuilt.drop(columns="invocation_id"),
        before[before["bar_date"] < day(5)].drop(columns="invocation_id").reset_index(drop=True),
        check_exact=True,
    )  # point in time in a full rebuild too: later changes do not reach earlier rows
    with (
        duckdb.connect(str(warehouse), read_only=True) as incremental_con,
        duckdb.connect(str(full), read_only=True) as full_con,
    ):
        labels = ("incremental", "full")
        problems = compare_table(
            incremental_con, full_con, model.relation, model.key, "invocation_id", labels
        )
        problems += compare_table(
            incremental_con, full_con, model.state_relation, ("symbol",), "updated_at", labels
        )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "variables", ["{symbols: [AAAUSDT]}", "{exclude_symbols: [BBBUSDT]}"], ids=["only", "exclude"]
)
def test_symbols_vars_limit_the_run_and_the_rest_follows_later(project, tmp_path, variables):
    """`symbols` (daily-refresh --symbols) and `exclude_symbols` (symbols failed or stale
    upstream) both leave BBB's new day for a later run."""
    warehouse = new_warehouse(tmp_path / "warehouse")
    load_batch(warehouse, concat(walk("AAAUSDT", 0, 59), walk("BBBUSDT", 0, 59)))
    build(project, tmp_path, warehouse)
    load_batch(warehouse, concat(walk("AAAUSDT", 60, 60), walk("BBBUSDT", 60, 60)))
    model = project.model(MODEL)

    only_a = build(project, tmp_path, warehouse, "--vars", variables)
    assert set(rows_written(warehouse, model, only_a)) == {("AAAUSDT",)}
    rest = build(project, tmp_path, warehouse)
    assert {key: w.first for key, w in rows_written(warehouse, model, rest).items()} == {
        ("BBBUSDT",): day(60)
    }
