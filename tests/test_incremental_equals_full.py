"""ARCHITECTURE invariant 3: after any sequence of loads, incremental runs leave exactly the rows
(and state) a full rebuild leaves, for every incremental model of the project; and an incremental
run recomputes only what it must.

Symbols are independent in every model, so one load sequence plays all the explicit scenarios at
once, one symbol each, named after its scenario: a difference names the scenario that broke.
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from ingest.options import IngestOptions
from tests.incremental_harness import (
    Batch,
    DbtProject,
    IncrementalModel,
    assert_incremental_equals_full,
    assert_same_warehouses,
    concat,
    except_days,
    except_symbol,
    leftover_relations,
    load_source,
    on_days,
    parsed_project,
    random_walk,
    revised,
    rows_written,
    values_equal,
    warehouse_differences,
)

START = date(2023, 1, 1)
WALK_DAYS = 820


def day(n: int) -> date:
    return START + timedelta(days=n)


def bars(
    symbol: str, first: int, last: int, interval: str = "1d", price: float = 100.0
) -> pa.Table:
    """Klines of one fixed random walk per (symbol, interval), on days first..last (inclusive)."""
    walk = random_walk(symbol, START, WALK_DAYS, interval=interval, price=price)
    return on_days(walk, day(first), day(last))


def revised_bars(symbol: str, at: int, factor: float, interval: str = "1d") -> pa.Table:
    return revised(bars(symbol, at, at, interval), factor)


# symbol -> what each load batch brings for it (scenario by scenario)
LATE = "LATEREVUSDT"  # revisions of bars months old, one of them revised twice
GAP = "GAPFILLUSDT"  # days missing in batch 1 arrive in batch 3, after newer days
LISTED = "NEWLISTUSDT"  # first appears in batch 2, with history older than others' new days
BACKFILL = "BACKFILLUSDT"  # history older than its first stored bar, loaded later
TINY = "TINYUSDT"  # price far below 1, listed and delisted early, revised once much later
INTRADAY = "INTRADAYUSDT"  # days from 4h klines (one incomplete) until their 1d kline arrives
YOUNG = "YOUNGUSDT"  # listed in batch 2 with five bars, fewer than most indicator windows

LATE_HISTORY = bars(LATE, 0, 199)
TINY_HISTORY = bars(TINY, 20, 80, price=0.000123)
INTRADAY_HOURS = bars(INTRADAY, 30, 31, "4h")


def story() -> list[pa.Table]:
    """Five load batches: batch 4 reloads what 1-3 stored (a no-op), batch 5 only revises."""
    first_three = [
        concat(
            LATE_HISTORY,
            except_days(bars(GAP, 0, 99), day(40), day(42)),
            bars(BACKFILL, 50, 99),
            TINY_HISTORY,
            except_days(bars(INTRADAY, 0, 59), day(30), day(31)),
            on_days(INTRADAY_HOURS, day(30), day(30)),
            on_days(INTRADAY_HOURS, day(31), day(31)).slice(0, 3),
        ),
        concat(
            bars(LATE, 200, 200),
            revised_bars(LATE, 30, 1.05),
            bars(GAP, 100, 110),
            bars(LISTED, 80, 100),
            bars(YOUNG, 100, 104),
            bars(BACKFILL, 0, 49),
            on_days(INTRADAY_HOURS, day(31), day(31)).slice(3),
            bars(INTRADAY, 60, 60),
        ),
        concat(
            bars(LATE, 201, 201),
            revised_bars(LATE, 30, 0.97),
            bars(GAP, 40, 42),
            bars(LISTED, 101, 101),
            bars(YOUNG, 105, 105),
            bars(BACKFILL, 100, 100),
            bars(INTRADAY, 30, 31),
            bars(INTRADAY, 45, 45, "1h"),
        ),
    ]
    # Every row as last loaded (LATE's day 30 only in its batch-3 revision): changes nothing.
    reload = concat(*(except_symbol(batch, LATE) for batch in first_three[:2]), first_three[2])
    late_only = concat(
        revised_bars(LATE, 5, 1.02), revised(on_days(TINY_HISTORY, day(60), day(60)), 1.1)
    )
    return [*first_three, reload, late_only]


@pytest.fixture(scope="module")
def project() -> DbtProject:
    return parsed_project()


def test_the_harness_finds_every_incremental_model_and_its_key(project: DbtProject):
    bars_1d = project.model("bars_1d")
    assert (bars_1d.key, bars_1d.partition_keys, bars_1d.range_column) == (
        ("symbol", "bar_date"),
        ("symbol",),
        "bar_date",
    )
    assert project.has_model("returns_daily")
    assert all(
        model.key and set(model.partition_keys) <= set(model.key) for model in project.models
    )


@pytest.mark.slow
def test_incremental_equals_full_across_scenarios(project: DbtProject, tmp_path):
    result = assert_incremental_equals_full(project, tmp_path, story(), every_batch=True)
    reload_run = result.invocation_ids[3]
    for model in project.models:
        assert rows_written(result.incremental, model, reload_run) == {}, (
            f"{model.name}: an unchanged reload rewrote rows"
        )


@pytest.mark.slow
def test_incremental_equals_full_over_the_synthetic_source(project: DbtProject, tmp_path):
    synthetic = pytest.importorskip(
        "ingest.synthetic", reason="ingest/synthetic (the synthetic source) is not written yet"
    )
    first_day = synthetic.resolve_preset("tiny").start
    batches: list[Batch] = [
        load_source(
            synthetic.build(IngestOptions(preset="tiny", until=first_day + timedelta(days=n)))
        )
        for n in (300, 301, 419)
    ]
    assert_incremental_equals_full(project, tmp_path, batches, run_tests=False)


# The longest bar of any family is a calendar year: an appended day never reaches further back.
LONGEST_BAR_DAYS = 366
HISTORY_DAYS = 800
APPENDED = ("AAAUSDT", "BBBUSDT")


def as_date(value: object) -> date:
    return value.date() if hasattr(value, "date") else value  # type: ignore[return-value]


@pytest.mark.slow
def test_one_day_append_rewrites_only_the_new_day_and_its_predecessor(
    project: DbtProject, tmp_path
):
    history = concat(*(bars(s, 0, HISTORY_DAYS - 1) for s in (*APPENDED, "CCCUSDT")))
    appended = concat(*(bars(s, HISTORY_DAYS, HISTORY_DAYS) for s in APPENDED))
    result = assert_incremental_equals_full(project, tmp_path, [history, appended], run_tests=False)
    append_run = result.invocation_ids[1]

    for name in ("bars_1d", "returns_daily"):
        written = rows_written(result.incremental, project.model(name), append_run)
        assert {key: (w.rows, as_date(w.first)) for key, w in written.items()} == {
            (symbol,): (1, day(HISTORY_DAYS)) for symbol in APPENDED
        }, f"{name}: a one-day append must write exactly the new day's rows"
    for model in project.models:
        assert_bounded_by_the_new_day(result.incremental, model, append_run)
    assert leftover_relations(result.incremental) == [], "dbt left intermediate tables behind"


def assert_bounded_by_the_new_day(warehouse, model: IncrementalModel, invocation_id: str) -> None:
    """Per partition at most the new day's row and the one before it (whose bar the new day may
    close): the forming bars are recomputed, not written again."""
    written = rows_written(warehouse, model, invocation_id)
    symbol_at = model.partition_keys.index("symbol")
    touched = {key[symbol_at] for key in written}
    assert touched == set(APPENDED), f"{model.name}: rewrote partitions of {sorted(touched)}"
    earliest_allowed = day(HISTORY_DAYS - 1)
    for key, rows in written.items():
        assert as_date(rows.first) >= earliest_allowed and rows.rows <= 2, (
            f"{model.name} {key}: a one-day append rewrote {rows.rows} rows from {rows.first}, "
            f"more than the new day and the one before (from {earliest_allowed})"
        )


# -- the harness itself can fail -------------------------------------------------------------------

NAN = math.nan
TOY = IncrementalModel("toy", "main", "toy", ("symbol", "bar_date"), ("symbol",), "bar_date")
TOY_ROWS = [
    ("AAA", date(2024, 1, 1), 1.0, 1, "run-1"),
    ("AAA", date(2024, 1, 2), NAN, 2, "run-1"),
    ("BBB", date(2024, 1, 1), None, 3, "run-2"),
]
TOY_STATE = [("AAA", 5, "2024-01-03 00:00:00"), ("BBB", 6, "2024-01-03 00:00:00")]


def toy_warehouse(folder: Path, rows: list[tuple], state: list[tuple]) -> Path:
    folder.mkdir()
    path = folder / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create schema state")
        con.execute(
            "create table main.toy (symbol varchar, bar_date date, close double, n integer, "
            "invocation_id varchar)"
        )
        con.execute(
            "create table state.toy (symbol varchar, last_batch_id bigint, updated_at timestamp)"
        )
        con.executemany("insert into main.toy values (?, ?, ?, ?, ?)", rows)
        con.executemany("insert into state.toy values (?, ?, ?)", state)
    return path


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [
        (1.0, 1.0 + 1e-12, True),
        (1.0, 1.0 + 1e-8, False),
        (1.23e-4, 1.23e-4 * (1 + 1e-10), True),
        (1.23e-4, 1.23e-4 * (1 + 1e-7), False),
        (0.0, 1e-20, False),
        (NAN, NAN, True),
        (None, NAN, False),
        (None, None, True),
        (math.inf, math.inf, True),
        (math.inf, -math.inf, False),
        ([1.0, NAN], [1.0 + 1e-12, NAN], True),
        ([1.0], [1.0, 2.0], False),
        (1, 1.0, False),
        (date(2024, 1, 1), date(2024, 1, 2), False),
    ],
)
def test_values_are_equal_exactly_or_floats_to_1e9_relative(left, right, equal):
    assert values_equal(left, right) is equal


def test_float_noise_and_audit_columns_are_not_differences(tmp_path):
    noisy = [
        (s, d, c * (1 + 1e-12) if c is not None else c, n, "other-run")
        for s, d, c, n, _ in TOY_ROWS
    ]
    later_state = [(s, batch, "2025-01-01 00:00:00") for s, batch, _ in TOY_STATE]
    left = toy_warehouse(tmp_path / "left", TOY_ROWS, TOY_STATE)
    right = toy_warehouse(tmp_path / "right", noisy, later_state)
    assert_same_warehouses([TOY], left, right)


def test_every_kind_of_difference_is_reported_with_its_key(tmp_path):
    right_rows = [
        ("AAA", date(2024, 1, 1), 1.000001, 1, "run-1"),  # a value 1e-6 off
        ("BBB", date(2024, 1, 1), NAN, 3, "run-2"),  # NaN where the other has NULL
        ("BBB", date(2024, 1, 1), NAN, 3, "run-2"),  # a duplicate key
        ("CCC", date(2024, 1, 1), 2.0, 4, "run-2"),  # an extra row; AAA 2024-01-02 is missing
    ]
    left = toy_warehouse(tmp_path / "left", TOY_ROWS, TOY_STATE)
    right = toy_warehouse(
        tmp_path / "right", right_rows, [("AAA", 5, "2024-01-03"), ("BBB", 7, "2024-01-03")]
    )
    report = "\n".join(warehouse_differences([TOY], left, right, ("incremental", "full")))
    assert (
        "main.toy (key symbol, bar_date): duplicate keys in full: ('BBB', '2024-01-01')" in report
    )
    assert "1 rows only in incremental: ('AAA', '2024-01-02')" in report
    assert "1 rows only in full: ('CCC', '2024-01-01')" in report
    assert "key ('AAA', '2024-01-01'): close incremental=1.0 full=1.000001" in report
    assert "key ('BBB', '2024-01-01'): close incremental=None full=nan" in report
    assert "state.toy (key symbol): 1 rows with differing values" in report
    assert "key ('BBB',): last_batch_id incremental=6 full=7" in report
    with pytest.raises(AssertionError, match="incremental != full after batch 2"):
        assert_same_warehouses([TOY], left, right, when="after batch 2")


def test_a_missing_table_or_changed_column_type_is_a_difference(tmp_path):
    left = toy_warehouse(tmp_path / "left", TOY_ROWS, TOY_STATE)
    right = toy_warehouse(tmp_path / "right", TOY_ROWS, TOY_STATE)
    with duckdb.connect(str(right)) as con:
        con.execute("drop table state.toy")
        con.execute("alter table main.toy alter n type bigint")
    report = "\n".join(warehouse_differences([TOY], left, right, ("incremental", "full")))
    assert "state.toy: table missing in full" in report
    assert (
        "columns differ: incremental symbol VARCHAR, bar_date DATE, close DOUBLE, n INTEGER"
        in report
    )
