"""returns_daily against independent computations: pandas over the real daily CSV files, a
hand-built series with a gap (flagged, value kept; empty in the wide matrix), a late revision of an
old close, and the `symbols` var that restricts a run to some symbols."""

from __future__ import annotations

import math
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from quantwarehouse.dbt import run_dbt
from quantwarehouse.lakehouse import returns_matrix
from tests.conftest import load_real_sample
from tests.incremental_harness import (
    bar_days,
    except_days,
    load_batch,
    on_days,
    random_walk,
    revised,
)

START = date(2024, 1, 1)
RETURN_COLUMNS = "symbol, bar_date, prev_bar_date, close, prev_close, simple_return, log_return, "
RETURN_COLUMNS += "days_spanned, spans_missing_days, is_first_bar"


def day(n: int) -> date:
    return START + timedelta(days=n - 1)


def build_returns(manifest: object, variables: dict[str, object] | None = None) -> int:
    """Build returns_daily and its parents; return the rows it wrote."""
    args = ["build", "--select", "+returns_daily"]
    result = run_dbt(args, variables=variables, manifest=manifest)
    return next(m.rows_written for m in result.models if m.name == "returns_daily")


def stored_returns(warehouse: Path) -> pd.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        frame = con.execute(
            f"select {RETURN_COLUMNS} from main.returns_daily order by symbol, bar_date"
        ).fetch_df()
    frame["bar_date"] = pd.to_datetime(frame["bar_date"])
    frame["prev_bar_date"] = pd.to_datetime(frame["prev_bar_date"])
    return frame


def expected_returns(closes: pd.DataFrame) -> pd.DataFrame:
    """The returns of (symbol, bar_date, close) rows, computed with pandas."""
    frame = closes.sort_values(["symbol", "bar_date"]).reset_index(drop=True)
    by_symbol = frame.groupby("symbol")
    frame["prev_bar_date"] = by_symbol["bar_date"].shift(1)
    frame["prev_close"] = by_symbol["close"].shift(1)
    frame["simple_return"] = frame["close"] / frame["prev_close"] - 1
    frame["log_return"] = np.log(frame["close"] / frame["prev_close"])
    frame["days_spanned"] = (frame["bar_date"] - frame["prev_bar_date"]).dt.days
    frame["spans_missing_days"] = frame["days_spanned"].fillna(0) > 1
    frame["is_first_bar"] = frame["prev_bar_date"].isna()
    return frame


def assert_same_returns(stored: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert len(stored) == len(expected)
    keys = ["symbol", "bar_date"]
    merged = stored.merge(expected, on=keys, suffixes=("", "_expected"), validate="1:1")
    assert len(merged) == len(expected), "returns_daily has other (symbol, bar_date) keys"
    for column in ("close", "prev_close", "simple_return", "log_return"):
        np.testing.assert_allclose(
            merged[column].astype(float),
            merged[f"{column}_expected"].astype(float),
            rtol=1e-12,
            equal_nan=True,
            err_msg=column,
        )
    for column in ("prev_bar_date", "days_spanned", "spans_missing_days", "is_first_bar"):
        pd.testing.assert_series_equal(
            merged[column].astype(merged[f"{column}_expected"].dtype),
            merged[f"{column}_expected"],
            check_names=False,
            obj=column,
        )


def candidate_closes(table: pa.Table) -> pd.DataFrame:
    """(symbol, bar_date, close) of daily candidate rows, the last row of a day winning."""
    frame = pd.DataFrame(
        {
            "symbol": table.column("symbol").to_pylist(),
            "bar_date": pd.to_datetime(bar_days(table)),
            "close": table.column("close").to_numpy(),
        }
    )
    return frame.drop_duplicates(["symbol", "bar_date"], keep="last")


# -- the real sample ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_warehouse(module_warehouse: Path, dbt_workdir: Path, dbt_manifest: object) -> Path:
    """The real daily sample loaded through the files source, with returns_daily built."""
    load_real_sample(module_warehouse, "1d")
    build_returns(dbt_manifest)
    return module_warehouse


def real_daily_closes(folder: Path) -> pd.DataFrame:
    frames = []
    for path in sorted(folder.glob("*_1d_*.csv")):
        frame = pd.read_csv(path)
        frames.append(
            pd.DataFrame(
                {
                    "symbol": path.name.split("_")[0],
                    "bar_date": pd.to_datetime(frame["open_time_ms"], unit="ms").dt.normalize(),
                    "close": frame["close"].astype(float),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_real_sample_returns_match_pandas(real_warehouse, real_sample):
    expected = expected_returns(real_daily_closes(real_sample))
    assert expected["symbol"].nunique() == 10
    assert_same_returns(stored_returns(real_warehouse), expected)


def test_real_sample_matrix_holds_the_one_day_returns(real_warehouse, real_sample):
    expected = expected_returns(real_daily_closes(real_sample))
    with duckdb.connect(str(real_warehouse), read_only=True) as con:
        matrix = returns_matrix(con).to_pandas()
    assert list(matrix.columns) == ["bar_date", *sorted(expected["symbol"].unique())]
    assert matrix["bar_date"].is_monotonic_increasing
    one_day = expected[~expected["is_first_bar"] & ~expected["spans_missing_days"]]
    wide = one_day.pivot(index="bar_date", columns="symbol", values="simple_return")
    wide = wide.reindex(pd.to_datetime(matrix["bar_date"]))
    np.testing.assert_allclose(
        matrix.drop(columns="bar_date").to_numpy(dtype=float),
        wide[matrix.columns[1:]].to_numpy(dtype=float),
        rtol=1e-12,
        equal_nan=True,
    )


# -- hand-built series ----------------------------------------------------------------------------


def test_gap_is_flagged_and_its_return_kept(warehouse, dbt_workdir, dbt_manifest):
    series = except_days(random_walk("GAPUSDT", day(1), 8), day(3), day(4))
    load_batch(warehouse, series)
    build_returns(dbt_manifest)

    stored = stored_returns(warehouse).set_index("bar_date")
    closes = candidate_closes(series).set_index("bar_date")["close"]
    after_gap = stored.loc[pd.Timestamp(day(5))]
    assert after_gap["prev_bar_date"] == pd.Timestamp(day(2))
    assert after_gap["days_spanned"] == 3
    assert bool(after_gap["spans_missing_days"])
    expected = closes[pd.Timestamp(day(5))] / closes[pd.Timestamp(day(2))] - 1
    assert math.isclose(after_gap["simple_return"], expected, rel_tol=1e-12)
    assert not stored.drop(index=pd.Timestamp(day(5)))["spans_missing_days"].any()
    assert_same_returns(stored.reset_index(), expected_returns(candidate_closes(series)))

    with duckdb.connect(str(warehouse), read_only=True) as con:
        matrix = returns_matrix(con).to_pandas().set_index("bar_date")["GAPUSDT"]
    assert math.isnan(matrix[day(1)])  # first bar
    assert math.isnan(matrix[day(5)])  # a three-day move is not a one-day return
    assert day(3) not in matrix.index
    day_6 = closes[pd.Timestamp(day(6))] / closes[pd.Timestamp(day(5))] - 1
    assert math.isclose(matrix[day(6)], day_6, rel_tol=1e-12)


def test_late_revision_recomputes_from_its_day(warehouse, dbt_workdir, dbt_manifest):
    series = random_walk("REVUSDT", day(1), 10)
    load_batch(warehouse, series)
    assert build_returns(dbt_manifest) == 10

    late = revised(on_days(series, day(4), day(4)), 1.05)
    newer = random_walk("REVUSDT", day(1), 12)
    load_batch(warehouse, pa.concat_tables([late, on_days(newer, day(11), day(12))]))
    # Day 4 changed: its return and every later one are emitted again (day 4 .. day 12).
    assert build_returns(dbt_manifest) == 9

    latest = pa.concat_tables([series, late, on_days(newer, day(11), day(12))])
    assert_same_returns(stored_returns(warehouse), expected_returns(candidate_closes(latest)))


def test_symbols_var_restricts_the_run(warehouse, dbt_workdir, dbt_manifest):
    first = [random_walk(symbol, day(1), 5) for symbol in ("AAAUSDT", "BBBUSDT")]
    load_batch(warehouse, pa.concat_tables(first))
    build_returns(dbt_manifest)
    more = [on_days(random_walk(s, day(1), 7), day(6), day(7)) for s in ("AAAUSDT", "BBBUSDT")]
    load_batch(warehouse, pa.concat_tables(more))

    assert build_returns(dbt_manifest, {"symbols": ["AAAUSDT"]}) == 2
    last_dates = stored_returns(warehouse).groupby("symbol")["bar_date"].max()
    assert last_dates.to_dict() == {
        "AAAUSDT": pd.Timestamp(day(7)),
        "BBBUSDT": pd.Timestamp(day(5)),
    }

    assert build_returns(dbt_manifest) == 2  # BBBUSDT kept its watermark and is picked up now
    everything = pa.concat_tables([*first, *more])
    assert_same_returns(stored_returns(warehouse), expected_returns(candidate_closes(everything)))
