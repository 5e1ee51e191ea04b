"""The EMA models (python_models/emas) built by dbt on small warehouses: values against TA-Lib over
the bar marts, incremental runs equal to a full rebuild after appends, a month closed early by a
gap, the gap filled later and a late revision of an old bar, what a run rewrites, the refresh
filters (vars tfs, periods, tf_periods) and a changed var ema_periods."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import date, timedelta
from pathlib import Path
from unittest import mock

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import talib
from dbt.cli.main import dbtRunner
from dbt_common.invocation import get_invocation_id

from quantwarehouse.dbt import dbt_args
from quantwarehouse.ema import nominal_tf_days
from quantwarehouse.paths import WAREHOUSE_ENV
from tests.incremental_harness import (
    WAREHOUSE_FILE,
    DbtFailure,
    DbtProject,
    assert_same_warehouses,
    concat,
    copy_warehouse,
    incremental_models,
    load_batch,
    new_warehouse,
    on_days,
    random_walk,
    revised,
    rows_written,
)

pytestmark = pytest.mark.slow

EMA_MODELS = (
    "emas_1d",
    "emas_multi_tf",
    "emas_cal_us",
    "emas_cal_iso",
    "emas_cal_anchor_us",
    "emas_cal_anchor_iso",
)
PERIODS = [2, 3, 5]
START = date(2023, 1, 1)  # a Sunday: US weeks, months and the year start on the first day
RTOL = 1e-9


def day(n: int) -> date:
    return START + timedelta(days=n)


def daily(symbol: str, first: int, last: int, price: float) -> pa.Table:
    return on_days(random_walk(symbol, START, 400, price=price), day(first), day(last))


def a(first: int, last: int) -> pa.Table:
    return daily("AAAUSDT", first, last, 30_000.0)


def b(first: int, last: int) -> pa.Table:
    return daily("BBBUSDT", first, last, 0.000123)


FEB_27, FEB_28, MAR_1 = 57, 58, 59


def project_with_periods(periods: list[int]) -> DbtProject:
    """The project parsed with var ema_periods set, keeping only the EMA models to build."""
    workdir = Path(tempfile.mkdtemp(prefix="qwh-ema-parse-"))
    args = dbt_args(
        ["parse"],
        variables={"ema_periods": periods},
        target_path=workdir / "dbt-target",
        log_path=workdir / "dbt-logs",
    )
    try:
        with mock.patch.dict(os.environ, {WAREHOUSE_ENV: str(workdir / WAREHOUSE_FILE)}):
            result = dbtRunner().invoke(args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not result.success or result.result is None:
        raise AssertionError(f"dbt parse failed: {result.exception}")
    models = tuple(m for m in incremental_models(result.result) if m.name in EMA_MODELS)
    return DbtProject(result.result, models)


@pytest.fixture(scope="module")
def project() -> DbtProject:
    return project_with_periods(PERIODS)


def read(warehouse: Path, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.sql(sql).df()


def talib_ema(values: np.ndarray, span: int) -> np.ndarray:
    return talib.EMA(values, span) if len(values) >= span else np.full(len(values), np.nan)


def assert_close(got: pd.Series, expected: np.ndarray, what: str) -> None:
    np.testing.assert_allclose(
        got.to_numpy(float), expected, rtol=RTOL, equal_nan=True, err_msg=what
    )


def assert_daily_emas_match_talib(warehouse: Path) -> None:
    closes = read(
        warehouse, "select symbol, bar_date, close from bars_1d order by symbol, bar_date"
    )
    emas = read(warehouse, "select * from emas_1d order by symbol, period, bar_date")
    for (symbol, period), rows in emas.groupby(["symbol", "period"]):
        expected = talib_ema(closes[closes.symbol == symbol].close.to_numpy(), int(period))
        for column in ("ema", "ema_bar", "ema_v2"):
            assert_close(rows[column], expected, f"emas_1d {symbol} {period} {column}")


def assert_family_emas_follow_the_definitions(warehouse: Path, family: str) -> None:
    """ema_bar, ema and ema_v2 of a family rebuilt from its bar mart with TA-Lib.

    A bar's close is its last row when the bar is whole (its last row is its end date) or when
    the symbol has a later bar (a bar whose last days are missing is over).
    """
    bars = read(
        warehouse,
        f"select symbol, tf, bar_seq, bar_date, bar_end_date, close from bars_{family}"
        " order by symbol, tf, bar_date",
    )
    emas = read(warehouse, f"select * from emas_{family} order by symbol, tf, period, bar_date")
    for (symbol, tf), rows in bars.groupby(["symbol", "tf"]):
        last_rows = rows.groupby("bar_seq").tail(1)
        is_close = (last_rows.bar_date == last_rows.bar_end_date) | (
            last_rows.bar_seq < rows.bar_seq.max()
        )
        closed = last_rows[is_close]
        closes_bar = rows.index.isin(closed.index)
        for period in PERIODS:
            mine = emas[(emas.symbol == symbol) & (emas.tf == tf) & (emas.period == period)]
            what = f"emas_{family} {symbol} {tf} {period}"
            assert mine.closes_bar.tolist() == closes_bar.tolist(), what
            bar_ema = pd.Series(talib_ema(closed.close.to_numpy(), period), index=closed.index)
            ema_bar = bar_ema.reindex(rows.index).ffill().to_numpy()
            alpha = 2 / (period + 1)
            preview = alpha * rows.close.to_numpy() + (1 - alpha) * ema_bar
            ema = np.where(closes_bar, ema_bar, preview)
            span = nominal_tf_days(tf) * period
            assert_close(mine.ema_bar, ema_bar, f"{what} ema_bar")
            assert_close(mine.ema, ema, f"{what} ema")
            assert_close(mine.ema_v2, talib_ema(rows.close.to_numpy(), span), f"{what} ema_v2")


def closes_of_february(warehouse: Path) -> list[tuple[date, bool]]:
    found = read(
        warehouse,
        "select bar_date, closes_bar from emas_cal_us where symbol = 'AAAUSDT' and tf = '1M'"
        f" and period = 2 and bar_date between '{day(FEB_27 - 1)}' and '{day(MAR_1)}'"
        " order by bar_date",
    )
    return [(row.bar_date.date(), row.closes_bar) for row in found.itertuples()]


def test_emas_incremental_equal_full_and_follow_the_definitions(project: DbtProject, tmp_path):
    session = project.session(tmp_path)
    warehouse = new_warehouse(tmp_path / "incremental")

    # February is still forming: its rows are previews.
    load_batch(warehouse, concat(a(0, FEB_27), b(0, 150)))
    session.run(warehouse)
    assert [closed for _, closed in closes_of_february(warehouse)] == [False, False]

    # March begins while Feb 28 is missing: February is over and closes on Feb 27.
    load_batch(warehouse, concat(a(MAR_1, 150), b(151, 151)))
    session.run(warehouse)
    assert closes_of_february(warehouse) == [
        (day(FEB_27 - 1), False),
        (day(FEB_27), True),
        (day(MAR_1), False),
    ]

    # Feb 28 arrives late, B's bar of 40 days ago and A's of day 10 are revised, one day appended.
    late = concat(
        a(FEB_28, FEB_28),
        a(151, 151),
        revised(a(10, 10), 1.05),
        revised(b(111, 111), 0.9),
        b(152, 152),
    )
    load_batch(warehouse, late)
    last_run = session.run(warehouse)
    assert closes_of_february(warehouse) == [
        (day(FEB_27 - 1), False),
        (day(FEB_27), False),
        (day(FEB_28), True),
        (day(MAR_1), False),
    ]
    session.test(warehouse)

    full = copy_warehouse(warehouse, tmp_path / "full")
    session.run(full, full_refresh=True)
    assert_same_warehouses(project.models, warehouse, full)

    assert_daily_emas_match_talib(full)
    for family in ("multi_tf", "cal_us", "cal_iso", "cal_anchor_us", "cal_anchor_iso"):
        assert_family_emas_follow_the_definitions(full, family)

    # The last run recomputed A from the bar holding day 10 (its revision) and B from its revised
    # bar (the month of day 111, 2023-04-22, not earlier), but rewrote them only from the day
    # before the revised one: the earlier rows of those bars are unchanged.
    written = rows_written(warehouse, project.model("emas_cal_us"), last_run)
    assert written[("AAAUSDT", "1M", 2)].first == day(9)
    assert written[("BBBUSDT", "1M", 2)].first == day(110)
    assert written[("BBBUSDT", "1w", 5)].first == day(110)
    assert written[("BBBUSDT", "1w", 5)].rows == 152 - 110 + 1


def test_a_one_day_append_resumes_from_the_stored_emas(project: DbtProject, tmp_path):
    session = project.session(tmp_path)
    warehouse = new_warehouse(tmp_path / "incremental")
    load_batch(warehouse, concat(a(0, 120), b(0, 120)))
    session.run(warehouse)
    load_batch(warehouse, a(121, 121))  # 2023-05-02: the second day of May
    append = session.run(warehouse)

    written = rows_written(warehouse, project.model("emas_cal_us"), append)
    assert {key[0] for key in written} == {"AAAUSDT"}
    for (_, tf, _period), rows in written.items():
        # The new day alone: its bars (the week, May, Q2, the year) continue from the day before,
        # whose row stays as it was; nothing of the forming bars is read or written again.
        assert (rows.rows, rows.first, rows.last) == (1, day(121), day(121)), tf
    written_1d = rows_written(warehouse, project.model("emas_1d"), append)
    assert {key: (w.rows, w.first) for key, w in written_1d.items()} == {
        ("AAAUSDT", "1d", period): (1, day(121)) for period in PERIODS
    }
    full = copy_warehouse(warehouse, tmp_path / "full")
    session.run(full, full_refresh=True)
    assert_same_warehouses(project.models, warehouse, full)


def test_refresh_filters_recompute_only_the_chosen_partitions(project: DbtProject, tmp_path):
    """daily-refresh --tfs/--periods/--tf-period-combos reach the models as vars; the partitions
    left out keep their rows and watermark, and the next unfiltered run catches them up."""
    session = project.session(tmp_path)
    warehouse = new_warehouse(tmp_path / "incremental")
    load_batch(warehouse, concat(a(0, 120), b(0, 120)))
    session.run(warehouse)
    load_batch(warehouse, concat(a(121, 121), b(121, 121)))
    chosen = {"tfs": ["1M", "1w"], "periods": [2, 5], "tf_periods": [["1M", 2], ["1w", 5]]}
    session.invoke(
        warehouse, "run", "--select", *project.build_selection, "--vars", json.dumps(chosen)
    )
    filtered = get_invocation_id()
    written = rows_written(warehouse, project.model("emas_cal_us"), filtered)
    assert {(tf, period) for _, tf, period in written} == {("1M", 2), ("1w", 5)}
    assert {symbol for symbol, _, _ in written} == {"AAAUSDT", "BBBUSDT"}
    assert rows_written(warehouse, project.model("emas_1d"), filtered) == {}

    caught_up = session.run(warehouse)
    written = rows_written(warehouse, project.model("emas_cal_us"), caught_up)
    assert ("AAAUSDT", "1Q", 3) in written and ("AAAUSDT", "1M", 3) in written
    full = copy_warehouse(warehouse, tmp_path / "full")
    session.run(full, full_refresh=True)
    assert_same_warehouses(project.models, warehouse, full)


def test_changed_periods_need_a_full_refresh(project: DbtProject, tmp_path):
    warehouse = new_warehouse(tmp_path / "warehouse")
    load_batch(warehouse, a(0, 30))
    project.session(tmp_path).run(warehouse)
    load_batch(warehouse, a(31, 31))
    other = project_with_periods([2, 4])
    with pytest.raises(DbtFailure, match=r"built with \[2, 3, 5\]; rebuild it with"):
        other.session(tmp_path).run(warehouse)
    other.session(tmp_path).run(warehouse, full_refresh=True)
    periods = read(warehouse, "select distinct period from emas_1d order by period").period
    assert periods.tolist() == [2, 4]
    assert read(warehouse, "select max(bar_date) as last from emas_1d").last[0].date() == day(31)
