"""The bar families (bars_multi_tf, bars_cal_us/_iso, bars_cal_anchor_us/_iso) built by dbt on
small warehouses and checked against an independent plain-Python reading of DOMAIN.md "Bars".

The reference below is written from the definitions, not from the SQL: bars are assigned with date
arithmetic (weekday offsets for calendar weeks, a fixed epoch for anchored groups), every snapshot
row is computed by walking its bar's rows so far, and missing days are listed day by day.

Data: the real daily sample (../shared/data) loaded through the `files` source. Its daily series
have no missing day, so three real BTCUSDT days are cut out to give real prices real gaps; a small
hand-made series crosses the 2024 leap day with gaps. The incremental test loads the real sample in
batches (a backfill, a gap filled later, a new listing, a revision of an old close, a one-day
refresh) and compares every family with a full rebuild.
"""

from __future__ import annotations

import csv
import math
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import groupby
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from ingest.loader import run_load
from ingest.options import IngestOptions
from ingest.raw_store import RawStore
from ingest.sources import build_source
from quantwarehouse.dbt import DbtRunError, run_dbt
from quantwarehouse.paths import DBT_PROJECT_DIR, REAL_SAMPLE_DIR

FAMILIES = (
    "bars_multi_tf",
    "bars_cal_us",
    "bars_cal_iso",
    "bars_cal_anchor_us",
    "bars_cal_anchor_iso",
)
SELECTION = ["--select", "+tag:bars"]
KEY = ("symbol", "tf", "bar_date")
RELATIVE_TOLERANCE = 1e-9
EPOCH = date(1970, 1, 1)
# Real BTCUSDT days cut out of the sample: a Tuesday and Wednesday, and the first day of 2018.
CUT_DAYS = {"BTCUSDT": (date(2017, 9, 5), date(2017, 9, 6), date(2018, 1, 1))}
US_FIRST_WEEK = date(1970, 1, 4)  # a Sunday
ISO_FIRST_WEEK = date(1970, 1, 5)  # a Monday
MONTHS_PER_UNIT = {"M": 1, "Q": 3, "Y": 12}


@dataclass(frozen=True)
class Day:
    """One bars_1d row."""

    symbol: str
    bar_date: date
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float | None
    time_high: datetime
    time_low: datetime
    source_batch_id: int


Period = tuple[date, date]  # first and last day


def month_number(day: date) -> int:
    return (day.year - 1970) * 12 + day.month - 1


def first_of_month(number: int) -> date:
    return date(1970 + number // 12, number % 12 + 1, 1)


def week_start(day: date, week_system: str) -> date:
    """The Sunday (US) or Monday (ISO) on or before the day."""
    days_back = (day.weekday() + 1) % 7 if week_system == "us" else day.weekday()
    return day - timedelta(days=days_back)


def calendar_period(day: date, timeframe: str, week_system: str) -> Period:
    """The period of `timeframe` ('1w', '2w', '1M', '3M', '1Q', '1Y', ...) holding the day."""
    count, unit = int(timeframe[:-1]), timeframe[-1]
    if unit == "w" and count == 1:
        start = week_start(day, week_system)
        return start, start + timedelta(days=6)
    if unit == "w":
        first_week = US_FIRST_WEEK if week_system == "us" else ISO_FIRST_WEEK
        length = 7 * count
        start = first_week + timedelta(days=(day - first_week).days // length * length)
        return start, start + timedelta(days=length - 1)
    months = count * MONTHS_PER_UNIT[unit]
    first = month_number(day) // months * months
    return first_of_month(first), first_of_month(first + months) - timedelta(days=1)


def days_between(first: date, last: date) -> list[date]:
    """Every day from first to last, both included."""
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def snapshot_rows(
    symbol_days: list[Day],
    tf: str,
    bars: list[tuple[int, Period | None, list[Day]]],
    *,
    partial_start_of: Callable[[Period], bool],
) -> list[dict[str, object]]:
    """Snapshot rows of one symbol's bars: (bar_seq, nominal period or None for rolling bars,
    the bar's rows in order)."""
    last_date = symbol_days[-1].bar_date
    rows = []
    for bar_seq, period, bar_days in bars:
        for position, day in enumerate(bar_days, start=1):
            so_far = bar_days[:position]
            if period is None:  # rolling: starts at its first row, expected to end with row N
                n = int(tf[:-1])
                start, end = so_far[0].bar_date, day.bar_date + timedelta(days=n - position)
                tf_days, pos_in_bar, partial_start = n, position, False
            else:
                start, end = period
                tf_days = (end - start).days + 1
                pos_in_bar = (day.bar_date - start).days + 1
                partial_start = partial_start_of(period)
            present = {d.bar_date for d in so_far}
            missing_start = (
                []
                if partial_start
                else [d for d in days_between(start, so_far[0].bar_date) if d not in present]
            )
            missing_interior = [
                d for d in days_between(so_far[0].bar_date, day.bar_date) if d not in present
            ]
            closes_bar = position == len(bar_days) and day.bar_date < last_date
            missing_end = (
                days_between(day.bar_date + timedelta(days=1), end)
                if closes_bar and period is not None
                else []
            )
            missing = missing_start + missing_interior + missing_end
            high = max(d.high for d in so_far)
            low = min(d.low for d in so_far)
            quote_volumes = [d.quote_volume for d in so_far if d.quote_volume is not None]
            rows.append(
                {
                    "symbol": day.symbol,
                    "tf": tf,
                    "bar_date": day.bar_date,
                    "bar_seq": bar_seq,
                    "bar_start_date": start,
                    "bar_end_date": end,
                    "tf_days": tf_days,
                    "pos_in_bar": pos_in_bar,
                    "count_days": position,
                    "open": so_far[0].open,
                    "high": high,
                    "low": low,
                    "close": day.close,
                    "volume": sum(d.volume for d in so_far),
                    "quote_volume": sum(quote_volumes) if quote_volumes else None,
                    "time_high": min(d.time_high for d in so_far if d.high == high),
                    "time_low": min(d.time_low for d in so_far if d.low == low),
                    "is_partial_start": partial_start,
                    "is_partial_end": pos_in_bar < tf_days,
                    "is_missing_days": bool(missing),
                    "count_missing_days": len(missing),
                    "count_missing_start": len(missing_start),
                    "count_missing_interior": len(missing_interior),
                    "count_missing_end": len(missing_end),
                    "first_missing_day": min(missing) if missing else None,
                    "last_missing_day": max(missing) if missing else None,
                    "source_batch_id": max(d.source_batch_id for d in so_far),
                }
            )
    return rows


def multi_tf_rows(symbol_days: list[Day], n: int) -> list[dict[str, object]]:
    """Rolling n-day bars: the k-th row (k from 1) is in bar (k-1)//n + 1."""
    bars = [
        (bar_index + 1, None, [day for _, day in members])
        for bar_index, members in groupby(enumerate(symbol_days), key=lambda item: item[0] // n)
    ]
    return snapshot_rows(symbol_days, f"{n}d", bars, partial_start_of=lambda _: False)


def period_ordinal(period: Period, timeframe: str) -> int:
    """Consecutive numbers for consecutive periods of one timeframe."""
    count, unit = int(timeframe[:-1]), timeframe[-1]
    if unit == "w":
        return (period[0] - date(1970, 1, 1)).days // (7 * count)
    return month_number(period[0]) // (count * MONTHS_PER_UNIT[unit])


def calendar_rows(
    symbol_days: list[Day], timeframe: str, week_system: str, *, anchored: bool
) -> list[dict[str, object]]:
    """Calendar bars (anchored: partial first bar kept and flagged; else left out)."""
    first_day = symbol_days[0].bar_date
    by_period: dict[Period, list[Day]] = {}
    for day in symbol_days:
        by_period.setdefault(calendar_period(day.bar_date, timeframe, week_system), []).append(day)
    periods = sorted(by_period)
    if not anchored and periods[0][0] != first_day:
        periods = periods[1:]
    if not periods:
        return []
    first_ordinal = period_ordinal(periods[0], timeframe)
    bars = [
        (period_ordinal(period, timeframe) - first_ordinal + 1, period, by_period[period])
        for period in periods
    ]
    tf = f"{timeframe}_anchor" if anchored else timeframe
    return snapshot_rows(
        symbol_days, tf, bars, partial_start_of=lambda period: period[0] < first_day
    )


def family_rows(
    days: Iterable[Day], rows_of_symbol: Callable[[list[Day]], list[dict[str, object]]]
) -> list[dict[str, object]]:
    """Rows of every symbol (days in any order)."""
    ordered = sorted(days, key=lambda day: (day.symbol, day.bar_date))
    rows: list[dict[str, object]] = []
    for _, symbol_days in groupby(ordered, key=lambda day: day.symbol):
        rows += rows_of_symbol(list(symbol_days))
    return rows


# -- the warehouse under test --------------------------------------------------------------------


def configured_timeframes() -> dict[str, list[Any]]:
    """The timeframe vars of dbt_project.yml, which the models build by default."""
    variables = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())["vars"]
    return {
        name: variables[name]
        for name in ("multi_tf_days", "cal_timeframes", "cal_anchor_timeframes")
    }


def reference_rows(family: str, days: list[Day]) -> list[dict[str, object]]:
    """The reference rows of a family for its configured timeframes."""
    timeframes = configured_timeframes()
    if family == "bars_multi_tf":
        return family_rows(
            days,
            lambda ds: [row for n in timeframes["multi_tf_days"] for row in multi_tf_rows(ds, n)],
        )
    week_system = "iso" if family.endswith("_iso") else "us"
    anchored = "_anchor_" in family
    names = timeframes["cal_anchor_timeframes" if anchored else "cal_timeframes"]
    return family_rows(
        days,
        lambda ds: [
            row for name in names for row in calendar_rows(ds, name, week_system, anchored=anchored)
        ],
    )


def real_csv_rows(symbol: str) -> list[dict[str, str]]:
    (path,) = REAL_SAMPLE_DIR.glob(f"{symbol}_1d_*.csv")
    with path.open() as handle:
        return list(csv.DictReader(handle))


def row_day(row: dict[str, str]) -> date:
    return EPOCH + timedelta(milliseconds=int(row["open_time_ms"]))


def write_daily_csvs(
    folder: Path, rows_by_symbol: dict[str, list[dict[str, str]]], tag: int
) -> Path:
    """Files in the real sample's layout (<SYMBOL>_1d_<tag>.csv), for the `files` source."""
    folder.mkdir(parents=True, exist_ok=True)
    for symbol, rows in rows_by_symbol.items():
        with (folder / f"{symbol}_1d_{tag}.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=["open_time_ms", "open", "high", "low", "close", "volume"]
            )
            writer.writeheader()
            writer.writerows(rows)
    return folder


def load_daily_files(warehouse: Path, folder: Path) -> None:
    """One load batch of the daily files in `folder`, through the `files` source."""
    with duckdb.connect(str(warehouse)) as connection:
        source = build_source("files", IngestOptions(path=folder, interval="1d"))
        summary = run_load(source, RawStore(connection), workers=1)
    assert summary.status == "success", "\n".join(summary.lines())


def hand_made_rows() -> dict[str, list[dict[str, str]]]:
    """LEAPUSDT: 2024-02-20 to 03-10 without the leap day 02-29 and 03-02..03, with a tied high."""
    rows = []
    for offset in range(20):
        day = date(2024, 2, 20) + timedelta(days=offset)
        if day in (date(2024, 2, 29), date(2024, 3, 2), date(2024, 3, 3)):
            continue
        price = 10.0 + offset % 7
        millis = (day - EPOCH).days * 86_400_000
        rows.append(
            {
                "open_time_ms": str(millis),
                "open": str(price),
                "high": str(20.0 if offset in (3, 5) else price + 1.5),
                "low": str(price - 1.0),
                "close": str(price + 0.5),
                "volume": str(100.0 + offset),
            }
        )
    return {"LEAPUSDT": rows}


def sample_rows(cut: dict[str, tuple[date, ...]]) -> dict[str, list[dict[str, str]]]:
    rows = {}
    for path in sorted(REAL_SAMPLE_DIR.glob("*_1d_*.csv")):
        symbol = path.name.split("_")[0]
        rows[symbol] = [
            row for row in real_csv_rows(symbol) if row_day(row) not in cut.get(symbol, ())
        ]
    return rows


def build(
    warehouse: Path, manifest: object, *args: str, variables: dict[str, object] | None = None
) -> dict[str, int]:
    """Run dbt on the warehouse; return the rows each model wrote."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QWH_WAREHOUSE", str(warehouse))
        result = run_dbt([*args, *SELECTION], manifest=manifest, variables=variables)
    return {node.name: node.rows_written or 0 for node in result.models}


def read_daily(warehouse: Path) -> list[Day]:
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        rows = connection.execute(
            "select symbol, bar_date, open, high, low, close, volume, quote_volume, time_high, "
            "time_low, source_batch_id from bars_1d"
        ).fetchall()
    return [Day(*row) for row in rows]


def read_family(
    warehouse: Path, family: str, where: str = "true"
) -> dict[tuple[Any, ...], dict[str, Any]]:
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        cursor = connection.execute(f"select * exclude (invocation_id) from {family} where {where}")
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
    return {tuple(row[name] for name in KEY): row for row in rows}


def same_value(left: object, right: object) -> bool:
    if isinstance(left, float) and isinstance(right, float):
        return math.isclose(left, right, rel_tol=RELATIVE_TOLERANCE, abs_tol=0.0)
    return left == right


def differences(
    actual: dict[tuple[Any, ...], dict[str, Any]], expected: Iterable[dict[str, object]]
) -> list[str]:
    """Rows missing or extra, and values that differ, by key (at most a few of each)."""
    wanted = {tuple(row[name] for name in KEY): row for row in expected}
    found = [f"missing {key}" for key in sorted(wanted.keys() - actual.keys())][:5]
    found += [f"unexpected {key}" for key in sorted(actual.keys() - wanted.keys())][:5]
    for key in sorted(wanted.keys() & actual.keys()):
        for column, value in wanted[key].items():
            if not same_value(actual[key][column], value):
                found.append(f"{key} {column}: model {actual[key][column]!r}, reference {value!r}")
        if len(found) > 10:
            break
    return found


@pytest.fixture(scope="module")
def sample_warehouse(module_warehouse: Path, dbt_workdir: Path, dbt_manifest: object) -> Path:
    """The real daily sample (three BTCUSDT days cut) and LEAPUSDT, built with every data and
    unit test of the bar models."""
    if not REAL_SAMPLE_DIR.is_dir():
        pytest.skip(f"real sample not found at {REAL_SAMPLE_DIR}")
    files = write_daily_csvs(
        dbt_workdir / "sample", {**sample_rows(CUT_DAYS), **hand_made_rows()}, 1
    )
    load_daily_files(module_warehouse, files)
    build(module_warehouse, dbt_manifest, "build")
    return module_warehouse


# -- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_family_matches_the_reference(sample_warehouse, family):
    expected = reference_rows(family, read_daily(sample_warehouse))
    actual = read_family(sample_warehouse, family)
    assert len(actual) == len(expected)
    assert not differences(actual, expected)


def test_btcusdt_iso_week_equals_the_raw_csv(sample_warehouse):
    """The ISO week 2017-08-21..27 of BTCUSDT, aggregated straight from the real CSV file."""
    week = [
        row
        for row in real_csv_rows("BTCUSDT")
        if date(2017, 8, 21) <= row_day(row) <= date(2017, 8, 27)
    ]
    assert len(week) == 7
    last = read_family(sample_warehouse, "bars_cal_iso", "symbol = 'BTCUSDT' and tf = '1w'")[
        ("BTCUSDT", "1w", date(2017, 8, 27))
    ]
    assert (last["bar_start_date"], last["bar_end_date"], last["pos_in_bar"]) == (
        date(2017, 8, 21),
        date(2017, 8, 27),
        7,
    )
    assert not last["is_partial_end"] and not last["is_missing_days"]
    assert last["open"] == float(week[0]["open"])
    assert last["high"] == max(float(row["high"]) for row in week)
    assert last["low"] == min(float(row["low"]) for row in week)
    assert last["close"] == float(week[-1]["close"])
    assert math.isclose(last["volume"], sum(float(row["volume"]) for row in week), rel_tol=1e-12)


def test_btcusdt_cut_days_show_in_the_flags(sample_warehouse):
    rows = read_family(sample_warehouse, "bars_cal_us", "symbol = 'BTCUSDT'")
    # Tue 09-05 and Wed 09-06 are missing from the US week of Sunday 2017-09-03.
    thursday = rows[("BTCUSDT", "1w", date(2017, 9, 7))]
    assert (
        thursday["count_missing_interior"],
        thursday["first_missing_day"],
        thursday["last_missing_day"],
    ) == (
        2,
        date(2017, 9, 5),
        date(2017, 9, 6),
    )
    assert not rows[("BTCUSDT", "1w", date(2017, 9, 4))]["is_missing_days"]
    # 2018-01-01 is missing from the start of January, Q1 and 2018.
    for tf in ("1M", "1Q", "1Y"):
        first = rows[("BTCUSDT", tf, date(2018, 1, 2))]
        assert (
            first["count_missing_start"],
            first["first_missing_day"],
            first["count_days"],
            first["pos_in_bar"],
        ) == (
            1,
            date(2018, 1, 1),
            1,
            2,
        )
    # The 2017 calendar year is left out: BTCUSDT starts on 2017-08-17.
    assert not [key for key in rows if key[1] == "1Y" and key[2].year == 2017]
    # No other BTCUSDT bar misses a day (Q3 2017 is left out: BTCUSDT starts on 2017-08-17).
    flagged = {
        (row["tf"], row["bar_start_date"]) for row in rows.values() if row["is_missing_days"]
    }
    assert flagged == {
        ("1w", date(2017, 9, 3)),
        ("1M", date(2017, 9, 1)),
        ("1w", date(2017, 12, 31)),
        ("1M", date(2018, 1, 1)),
        ("1Q", date(2018, 1, 1)),
        ("1Y", date(2018, 1, 1)),
    }


# -- incremental runs equal a full rebuild ---------------------------------------------------------


def rebuilt_in_full(warehouse: Path, folder: Path, manifest: object) -> Path:
    copy = folder / "warehouse.duckdb"
    folder.mkdir(parents=True)
    shutil.copy(warehouse, copy)
    build(copy, manifest, "run", "--full-refresh")
    return copy


def assert_same_as_full_rebuild(incremental: Path, full: Path) -> None:
    for family in FAMILIES:
        rebuilt = read_family(full, family)
        assert not differences(read_family(incremental, family), rebuilt.values()), family
    for model in (*FAMILIES, "int_bars_1d_sequenced"):
        query = f"select * exclude (updated_at) from state.{model} order by all"
        with (
            duckdb.connect(str(incremental), read_only=True) as left,
            duckdb.connect(str(full), read_only=True) as right,
        ):
            assert left.execute(query).fetchall() == right.execute(query).fetchall(), (
                f"state.{model}"
            )


def test_incremental_runs_equal_a_full_rebuild(tmp_path, dbt_workdir, dbt_manifest):
    if not REAL_SAMPLE_DIR.is_dir():
        pytest.skip(f"real sample not found at {REAL_SAMPLE_DIR}")
    # POWRBTC never gets 2018-02-24..28: its last row before the split, Friday 02-23, closes its
    # week and February only once batch 2 brings 03-01, which must recompute those bars too.
    everything = sample_rows(
        {"POWRBTC": tuple(date(2018, 2, 24) + timedelta(days=n) for n in range(5))}
    )
    split = date(2018, 3, 1)
    held_back = {"ETHUSDT": date(2017, 10, 1)}  # ETHUSDT's first weeks arrive later: a backfill
    gap = (date(2018, 1, 10), date(2018, 1, 11), date(2018, 1, 12))  # BTCUSDT, filled later
    last_days = {symbol: row_day(rows[-1]) for symbol, rows in everything.items()}
    one_day_symbols = ("NEOBTC", "ADABTC")  # their last day arrives alone, in the last batch

    def first_batch(symbol: str, day: date) -> bool:
        return (
            symbol != "XRBBTC"
            and day < split
            and day >= held_back.get(symbol, day)
            and not (symbol == "BTCUSDT" and day in gap)
        )

    def last_batch(symbol: str, day: date) -> bool:
        return symbol in one_day_symbols and day == last_days[symbol]

    batches = [
        {s: [r for r in rows if first_batch(s, row_day(r))] for s, rows in everything.items()},
        {
            s: [r for r in rows if not first_batch(s, row_day(r)) and not last_batch(s, row_day(r))]
            for s, rows in everything.items()
        },
        {
            s: [r for r in rows if last_batch(s, row_day(r))]
            for s, rows in everything.items()
            if s in one_day_symbols
        },
    ]
    # A revision in batch 2: BTCUSDT's close of 2017-09-15 changed, long before the recompute start.
    revised = dict(next(r for r in everything["BTCUSDT"] if row_day(r) == date(2017, 9, 15)))
    revised["close"] = str(float(revised["close"]) * 1.01)
    batches[1]["BTCUSDT"] = [*batches[1]["BTCUSDT"], revised]

    warehouse = tmp_path / "incremental" / "warehouse.duckdb"
    warehouse.parent.mkdir()
    for number, batch in enumerate(batches, start=1):
        load_daily_files(
            warehouse,
            write_daily_csvs(
                tmp_path / f"batch-{number}", {s: r for s, r in batch.items() if r}, number
            ),
        )
        written = build(warehouse, dbt_manifest, "run")
        if number > 1:
            assert_same_as_full_rebuild(
                warehouse, rebuilt_in_full(warehouse, tmp_path / f"full-{number}", dbt_manifest)
            )
    # The one-day refresh wrote only the new day's snapshot rows: not the whole forming bars, nor
    # those of the day before (the new day follows it: it closes none of its bars past missing
    # days, so they are as stored).
    for family in FAMILIES:
        rows = read_family(warehouse, family, f"symbol in {one_day_symbols}").values()
        last_day = {row["symbol"]: last_days[row["symbol"]] for row in rows}
        new_day = sum(1 for row in rows if row["bar_date"] == last_day[row["symbol"]])
        assert written[family] == new_day, family


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"multi_tf_days": [2, 0]},
            "var multi_tf_days (dbt_project/dbt_project.yml): expected positive integers, got 0",
        ),
        (
            {"cal_timeframes": ["1w", "1m"]},
            "var cal_timeframes (dbt_project/dbt_project.yml): 1m is not a timeframe",
        ),
        (
            {"cal_anchor_timeframes": ["14d"]},
            "var cal_anchor_timeframes (dbt_project/dbt_project.yml): 14d is not a timeframe",
        ),
        ({"cal_timeframes": ["1Q", "3M"]}, "3M repeats a timeframe already listed"),
    ],
)
def test_bad_timeframe_vars_are_named(warehouse, dbt_workdir, dbt_manifest, variables, message):
    with pytest.raises(DbtRunError) as failure:
        build(warehouse, dbt_manifest, "compile", variables=variables)
    assert message in str(failure.value)
