"""The published features matrix: one Parquet file per month, rewritten only where rows changed."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from quantwarehouse.features import FEATURES_SCHEMA, features_table
from quantwarehouse.lakehouse import copy_parquet_atomic
from quantwarehouse.lakehouse_features import (
    FINGERPRINT_KEY,
    SINGLE_FILE,
    features_matrix_path,
    publish_features_matrix,
)

FIRST_DAY = date(2024, 1, 20)
DAYS = 100  # 2024-01-20 .. 2024-04-28: four months


def bars(symbol: str, seed: int, batch: int = 1, days: int = DAYS) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, days)))
    return pd.DataFrame(
        {
            "symbol": symbol,
            "bar_date": pd.date_range(FIRST_DAY, periods=days, freq="D"),
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": rng.uniform(10, 20, days),
            "source_batch_id": batch,
        }
    )


def warehouse_with(path: Path, *frames: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    table = features_table(pd.concat(frames, ignore_index=True), "first run")
    con.register("rows", table)
    con.execute("create table main.features_matrix as select * from rows")
    return con


def recompute(con: duckdb.DuckDBPyConnection, frame: pd.DataFrame, since: date, run: str) -> None:
    """What a symbol_range run does to one symbol: replace its rows from `since` on."""
    symbol = frame["symbol"].iloc[0]
    con.execute(
        "delete from main.features_matrix where symbol = ? and bar_date >= ?", [symbol, since]
    )
    con.register("rows", features_table(frame, run, {symbol: since}))
    con.execute("insert into main.features_matrix select * from rows")


def files(folder: Path) -> dict[str, int]:
    """Every file of `folder` (temporaries included), with its modification time."""
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


def test_publish_writes_a_file_per_month_with_its_data_version(tmp_path: Path):
    con = warehouse_with(tmp_path / "warehouse.duckdb", bars("AAAUSDT", 1), bars("BBBUSDT", 2, 4))
    published = publish_features_matrix(con, tmp_path / "lakehouse")

    folder = tmp_path / "lakehouse" / "features_matrix"
    assert published.path == folder == features_matrix_path(tmp_path / "lakehouse")
    assert list(files(folder)) == [f"2024-0{m}.parquet" for m in (1, 2, 3, 4)]  # no temporary
    assert (published.rows, published.columns) == (2 * DAYS, len(FEATURES_SCHEMA))
    assert (
        published.detail == "4 of 4 monthly files rewritten (2024-01, 2024-02, 2024-03 and 1 more)"
    )
    expected = con.sql(
        "select * exclude (invocation_id) from features_matrix order by bar_date, symbol"
    ).to_arrow_table()
    written = pq.read_table(folder)  # the folder reads as one table, in date order
    assert written.schema.names == FEATURES_SCHEMA.names  # no audit column
    assert written.replace_schema_metadata(None).equals(expected)
    january = pq.read_table(folder / "2024-01.parquet")
    assert {d.month for d in january.column("bar_date").to_pylist()} == {1}
    assert january.schema.metadata[b"quantwarehouse.source_batch_id"] == b"4"
    assert january.schema.metadata[b"quantwarehouse.source_model"] == b"features_matrix"


def test_a_publish_rewrites_only_the_months_whose_rows_changed_and_equals_a_full_one(
    tmp_path: Path,
):
    first, second = bars("AAAUSDT", 1), bars("BBBUSDT", 2)
    con = warehouse_with(tmp_path / "warehouse.duckdb", first, second)
    lakehouse = tmp_path / "lakehouse"
    publish_features_matrix(con, lakehouse)
    folder = features_matrix_path(lakehouse)
    before = files(folder)

    assert publish_features_matrix(con, lakehouse).detail == "0 of 4 monthly files rewritten"
    assert files(folder) == before

    # A late revision of one bar in March: its symbol is recomputed from there on.
    revised = first.assign(close=np.where(first["bar_date"] == "2024-03-10", 120.0, first["close"]))
    recompute(con, revised.assign(source_batch_id=2), date(2024, 3, 10), "second run")
    assert publish_features_matrix(con, lakehouse).detail == (
        "2 of 4 monthly files rewritten (2024-03, 2024-04)"
    )
    after = files(folder)
    assert [name for name in before if after[name] != before[name]] == [
        "2024-03.parquet",
        "2024-04.parquet",
    ]
    full = tmp_path / "full"
    publish_features_matrix(con, full)
    assert pq.read_table(folder).equals(pq.read_table(features_matrix_path(full)))


def test_a_month_gone_loses_its_file_a_stale_file_is_rewritten_and_temporaries_go(
    tmp_path: Path,
):
    con = warehouse_with(tmp_path / "warehouse.duckdb", bars("AAAUSDT", 1))
    lakehouse = tmp_path / "lakehouse"
    folder = features_matrix_path(lakehouse)
    publish_features_matrix(con, lakehouse)
    (lakehouse / SINGLE_FILE).write_bytes(b"the whole matrix, as published before monthly files")
    # As left by a publish stopped part way: February's file still holds January's rows.
    shutil.copyfile(folder / "2024-01.parquet", folder / "2024-02.parquet")
    (folder / ".2024-03.parquet.x1y2.tmp").write_bytes(b"left by a publish killed while writing")
    con.execute("delete from main.features_matrix where bar_date < '2024-02-01'")

    published = publish_features_matrix(con, lakehouse)
    assert published.detail == "1 of 3 monthly files rewritten (2024-02), 1 removed (2024-01)"
    assert sorted(files(folder)) == ["2024-02.parquet", "2024-03.parquet", "2024-04.parquet"]
    assert not (lakehouse / SINGLE_FILE).exists()
    february = pq.read_table(folder / "2024-02.parquet")
    assert {d.month for d in february.column("bar_date").to_pylist()} == {2}
    assert FINGERPRINT_KEY.encode() in february.schema.metadata


def test_a_publish_from_a_read_only_connection(tmp_path: Path):
    warehouse = tmp_path / "warehouse.duckdb"
    warehouse_with(warehouse, bars("AAAUSDT", 1)).close()
    with duckdb.connect(str(warehouse), read_only=True) as con:
        published = publish_features_matrix(con, tmp_path / "lakehouse")
    assert pq.read_table(published.path).num_rows == DAYS


@pytest.mark.parametrize("month", ["2024-13", "24-01", "2024-1"])
def test_files_not_named_by_a_month_are_left_alone(tmp_path: Path, month: str):
    con = warehouse_with(tmp_path / "warehouse.duckdb", bars("AAAUSDT", 1))
    folder = features_matrix_path(tmp_path)
    folder.mkdir(parents=True)
    (folder / f"{month}.parquet").write_bytes(b"not ours")
    publish_features_matrix(con, tmp_path)
    assert (folder / f"{month}.parquet").read_bytes() == b"not ours"


def test_copy_parquet_atomic_from_a_read_only_connection_quotes_paths_and_metadata(
    tmp_path: Path,
):
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create table t as select * from range(5) as r(a)")
    path = tmp_path / "it's here" / "out.parquet"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        copy_parquet_atomic(con, "select a from t order by a desc", path, {"note": "it's 'quoted'"})

    written = pq.read_table(path)
    assert written.column("a").to_pylist() == [4, 3, 2, 1, 0]
    assert written.schema.metadata[b"note"] == b"it's 'quoted'"
    assert [p.name for p in path.parent.iterdir()] == ["out.parquet"]
