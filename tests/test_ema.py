"""quantwarehouse.ema against independent references: TA-Lib's EMA (SMA-seeded, as DOMAIN.md asks),
pandas' ewm(adjust=False) after an SMA seed, plain Python loops, and values worked out by hand; and
the models' computation (quantwarehouse.ema_models.ema_table): its rows, what it writes, and its
carry, from which a run resumed equals one computation over all the rows."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from quantwarehouse.ema import (
    BarCarry,
    BarRows,
    EmaCarry,
    bar_emas,
    ema_alpha,
    nominal_tf_days,
    segmented_cummax,
    segmented_ema,
)
from quantwarehouse.ema_models import (
    CARRY_SCHEMA,
    NO_ROW,
    OUTPUT_COLUMNS,
    ModelInputs,
    SeriesStart,
    ema_table,
    fill_carry,
    partition_filter,
    validated_periods,
)

RTOL = 1e-12


def walk(length: int, seed: int, price: float = 100.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return price * np.exp(np.cumsum(rng.normal(0.0, 0.03, length)))


def offsets_of(series: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum([len(s) for s in series])]).astype(np.int64)


def pieces(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def loop_ema(values: np.ndarray, span: int) -> np.ndarray:
    """The definition, one value at a time."""
    alpha = 2.0 / (span + 1)
    out = np.full(len(values), np.nan)
    for i in range(span - 1, len(values)):
        if i == span - 1:
            out[i] = sum(values[:span]) / span
        else:
            out[i] = alpha * values[i] + (1 - alpha) * out[i - 1]
    return out


# -- segmented_ema ----------------------------------------------------------------------------


def test_hand_computed_values():
    # span 3: alpha 1/2, seed = mean(1, 2, 3) = 2, then 4 -> 3, 5 -> 4, 6 -> 5
    got = segmented_ema(np.array([1.0, 2, 3, 4, 5, 6]), np.array([0, 6]), 3)
    np.testing.assert_array_equal(got, [np.nan, np.nan, 2.0, 3.0, 4.0, 5.0])
    # span 2: alpha 2/3, seed 15, then 2/3*30 + 1/3*15 = 25, 2/3*40 + 1/3*25 = 35
    got = segmented_ema(np.array([10.0, 20, 30, 40]), np.array([0, 4]), 2)
    np.testing.assert_allclose(got, [np.nan, 15.0, 25.0, 35.0], rtol=RTOL)
    assert ema_alpha(9) == 0.2


def test_span_one_is_the_values_themselves():
    values = walk(20, 1)
    np.testing.assert_array_equal(segmented_ema(values, np.array([0, 20]), 1), values)


@pytest.mark.parametrize("span", [2, 3, 10, 20, 50])
def test_matches_talib_on_many_series_at_once(span):
    series = [walk(n, seed) for seed, n in enumerate([0, 1, span - 1, span, span + 1, 97, 400])]
    offsets = offsets_of(series)
    got = segmented_ema(np.concatenate(series), offsets, span)
    for values, result in zip(series, pieces(got, offsets), strict=True):
        expected = talib.EMA(values, timeperiod=span) if len(values) else values
        np.testing.assert_allclose(result, expected, rtol=RTOL, equal_nan=True)


def test_matches_pandas_ewm_after_an_sma_seed():
    values, span = walk(300, 7), 20
    seeded = pd.Series(np.r_[values[:span].mean(), values[span:]])
    expected = seeded.ewm(alpha=2 / (span + 1), adjust=False).mean().to_numpy()
    got = segmented_ema(values, np.array([0, len(values)]), span)
    assert np.isnan(got[: span - 1]).all()
    np.testing.assert_allclose(got[span - 1 :], expected, rtol=RTOL)


def test_one_span_per_series():
    series = [walk(200, 1), walk(150, 2), walk(180, 3)]
    spans = np.array([5, 30, 5])
    got = pieces(
        segmented_ema(np.concatenate(series), offsets_of(series), spans), offsets_of(series)
    )
    for values, span, result in zip(series, spans, got, strict=True):
        np.testing.assert_allclose(result, talib.EMA(values, int(span)), rtol=RTOL, equal_nan=True)


def test_long_and_short_series_in_one_call_match_a_loop():
    # Many lengths, so the padded blocks mix ragged rows and views of equal-length neighbours.
    rng = np.random.default_rng(3)
    lengths = np.r_[rng.integers(0, 40, 300), [5000, 5000, 5000], rng.integers(0, 3000, 20)]
    series = [walk(int(n), i) for i, n in enumerate(lengths)]
    offsets = offsets_of(series)
    got = pieces(segmented_ema(np.concatenate(series), offsets, 7), offsets)
    for values, result in zip(series, got, strict=True):
        np.testing.assert_allclose(result, loop_ema(values, 7), rtol=1e-11, equal_nan=True)


def carry_after(values: np.ndarray, split: int, span: int, full: np.ndarray) -> EmaCarry:
    """The carry of a series that consumed values[:split] (what the models read back)."""
    return EmaCarry(
        np.array([split]),
        np.array([values[:split].sum()]),
        np.array([full[split - 1] if split >= span else np.nan]),
    )


def joined(carries: list[EmaCarry]) -> EmaCarry:
    return EmaCarry(*(np.concatenate([getattr(c, k) for c in carries]) for k in vars(carries[0])))


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    span=st.integers(1, 40),
    lengths=st.lists(st.integers(1, 120), min_size=1, max_size=6),
)
def test_resuming_from_a_carry_equals_computing_from_scratch(data, span, lengths):
    series = [walk(n, 11 * n + i) for i, n in enumerate(lengths)]
    splits = [data.draw(st.integers(0, n - 1), label="split") for n in lengths]
    full = pieces(
        segmented_ema(np.concatenate(series), offsets_of(series), span), offsets_of(series)
    )
    carries = [carry_after(v, s, span, f) for v, s, f in zip(series, splits, full, strict=True)]
    tails = [v[s:] for v, s in zip(series, splits, strict=True)]
    carry = joined(carries)
    resumed = pieces(
        segmented_ema(np.concatenate(tails), offsets_of(tails), span, carry), offsets_of(tails)
    )
    for whole, split, tail in zip(full, splits, resumed, strict=True):
        if split >= span:  # resumed from the stored EMA: the same operations, bit for bit
            np.testing.assert_array_equal(tail, whole[split:])
        else:  # the seed's sum was split in two: equal up to rounding
            np.testing.assert_allclose(tail, whole[split:], rtol=RTOL, equal_nan=True)


def test_bad_input_is_refused_with_the_reason():
    values = np.array([1.0, 2.0, np.nan, 4.0])
    with pytest.raises(ValueError, match="value 2 is nan"):
        segmented_ema(values, np.array([0, 4]), 2)
    with pytest.raises(ValueError, match="offsets must start at 0"):
        segmented_ema(np.ones(4), np.array([0, 3]), 2)
    with pytest.raises(ValueError, match="non-decreasing"):
        segmented_ema(np.ones(4), np.array([0, 3, 2, 4]), 2)
    with pytest.raises(ValueError, match="spans must be positive"):
        segmented_ema(np.ones(4), np.array([0, 4]), 0)
    with pytest.raises(ValueError, match="spans has 2 entries for 1 series"):
        segmented_ema(np.ones(4), np.array([0, 4]), np.array([2, 3]))
    stale = EmaCarry(np.array([5]), np.array([5.0]), np.array([np.nan]))
    with pytest.raises(ValueError, match=r"consumed 5 values .* carried EMA is missing"):
        segmented_ema(np.ones(4), np.array([0, 4]), 3, stale)


# -- bar families -----------------------------------------------------------------------------


def reference_bar_emas(close, closes_bar, period, tf_days):
    """bar_emas by the definitions, row by row, with TA-Lib for the EMAs themselves."""
    completed = close[closes_bar]
    bar_ema = talib.EMA(completed, period) if len(completed) >= period else completed * np.nan
    alpha = 2 / (period + 1)
    ema, ema_bar = np.full(len(close), np.nan), np.full(len(close), np.nan)
    done = -1
    for i in range(len(close)):
        if closes_bar[i]:
            done += 1
            ema_bar[i] = ema[i] = bar_ema[done]
        else:
            ema_bar[i] = bar_ema[done] if done >= 0 else np.nan
            ema[i] = alpha * close[i] + (1 - alpha) * ema_bar[i]
    span = tf_days * period
    v2 = talib.EMA(close, span) if len(close) >= span else np.full(len(close), np.nan)
    return ema, ema_bar, v2


def rolling_flags(count: int, tf_days: int) -> np.ndarray:
    """closes_bar of rolling tf_days-day bars: every tf_days-th row."""
    return (np.arange(count) + 1) % tf_days == 0


def test_a_short_series_by_hand():
    # 2-day bars, period 2 (alpha 2/3): completed closes 11, 13, 15 -> ema_bar nan, 12, 14
    close = np.array([10.0, 11, 12, 13, 14, 15, 16])
    rows = BarRows(close, rolling_flags(7, 2), np.array([0, 7]), np.array([2]))
    ema, ema_bar, _ = bar_emas(rows, 2)
    np.testing.assert_allclose(ema_bar, [np.nan, np.nan, np.nan, 12, 12, 14, 14], rtol=RTOL)
    # preview on day 5 (close 14): 2/3 * 14 + 1/3 * 12 = 40/3; day 7: 2/3 * 16 + 1/3 * 14 = 46/3
    np.testing.assert_allclose(ema, [np.nan, np.nan, np.nan, 12, 40 / 3, 14, 46 / 3], rtol=RTOL)


@pytest.mark.parametrize("tf_days,period", [(1, 3), (3, 2), (7, 5), (30, 2)])
def test_bar_emas_follow_the_definitions(tf_days, period):
    series = [walk(n, n) for n in (400, 90, 5, 1)]
    offsets = offsets_of(series)
    flags = np.concatenate([rolling_flags(len(s), tf_days) for s in series])
    rows = BarRows(np.concatenate(series), flags, offsets, np.full(len(series), tf_days))
    got = bar_emas(rows, period)
    for i, close in enumerate(series):
        expected = reference_bar_emas(close, rolling_flags(len(close), tf_days), period, tf_days)
        for name, result, want in zip(got._fields, got, expected, strict=True):
            piece = result[offsets[i] : offsets[i + 1]]
            np.testing.assert_allclose(piece, want, rtol=RTOL, equal_nan=True, err_msg=name)


def test_a_bar_closed_early_counts_as_a_close():
    # A calendar bar whose last days are missing closes on its last row (flag set upstream).
    close = np.array([1.0, 2, 3, 4, 5, 6, 7, 8])
    flags = np.array([False, True, False, True, False, False, True, False])
    rows = BarRows(close, flags, np.array([0, 8]), np.array([3]))
    _, ema_bar, _ = bar_emas(rows, 1)
    np.testing.assert_array_equal(ema_bar, [np.nan, 2, 2, 4, 4, 4, 7, 7])


def rolling_rows(series: list[np.ndarray], tf_days: int) -> BarRows:
    flags = [rolling_flags(len(close), tf_days) for close in series]
    return BarRows(
        np.concatenate(series),
        np.concatenate(flags),
        offsets_of(series),
        np.full(len(series), tf_days),
    )


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    period=st.integers(1, 6),
    tf_days=st.integers(1, 9),
    lengths=st.lists(st.integers(1, 150), min_size=1, max_size=4),
)
def test_bar_emas_resumed_at_any_row_equal_a_full_computation(data, period, tf_days, lengths):
    """What the models do: read the counts and sums before a split and the stored EMAs of the row
    just before it, then compute the rest."""
    series = [walk(n, 3 * n + i) for i, n in enumerate(lengths)]
    offsets = offsets_of(series)
    full = bar_emas(rolling_rows(series, tf_days), period)
    splits = [data.draw(st.integers(0, n - 1), label="split") for n in lengths]
    bars, days = [], []
    for close, start, split in zip(series, offsets[:-1], splits, strict=True):
        closed = close[:split][rolling_flags(split, tf_days)]
        stored = slice(start + split - 1, start + split) if split else slice(0, 0)
        last_bar = full.ema_bar[stored] if split else np.array([np.nan])
        last_v2 = full.ema_v2[stored] if split else np.array([np.nan])
        bars.append(EmaCarry(np.array([len(closed)]), np.array([closed.sum()]), last_bar))
        days.append(EmaCarry(np.array([split]), np.array([close[:split].sum()]), last_v2))
    # Each row keeps its flag: the tail of a bar split in the middle still closes on its day.
    tails = [close[split:] for close, split in zip(series, splits, strict=True)]
    tail_flags = [
        rolling_flags(len(close), tf_days)[split:]
        for close, split in zip(series, splits, strict=True)
    ]
    tail_rows = BarRows(
        np.concatenate(tails),
        np.concatenate(tail_flags),
        offsets_of(tails),
        np.full(len(tails), tf_days),
    )
    resumed = bar_emas(tail_rows, period, BarCarry(joined(bars), joined(days)))
    for i, split in enumerate(splits):
        for name, whole, part in zip(full._fields, full, resumed, strict=True):
            expected = whole[offsets[i] + split : offsets[i + 1]]
            got = part[tail_rows.offsets[i] : tail_rows.offsets[i + 1]]
            np.testing.assert_allclose(got, expected, rtol=RTOL, equal_nan=True, err_msg=name)


# -- helpers of the models --------------------------------------------------------------------


@pytest.mark.parametrize(
    "tf,days",
    [
        ("1d", 1),
        ("90d", 90),
        ("1w", 7),
        ("4w_anchor", 28),
        ("1M", 30),
        ("2M_anchor", 61),
        ("3M", 91),
        ("1Q", 91),
        ("6M_anchor", 183),
        ("1Y", 365),
    ],
)
def test_nominal_timeframe_lengths(tf, days):
    assert nominal_tf_days(tf) == days


@pytest.mark.parametrize("tf", ["", "d", "0d", "1x", "1M_other", "1.5w"])
def test_unknown_timeframes_are_refused(tf):
    with pytest.raises(ValueError, match="is not '<N><unit>'"):
        nominal_tf_days(tf)


def test_periods_are_validated_with_the_var_named():
    assert validated_periods([50, 10, 20]) == (10, 20, 50)
    for bad, reason in (
        (None, "non-empty list"),
        ([], "non-empty list"),
        ("10,20", "non-empty list"),
        ([10, 0], "positive integers"),
        ([10, 2.5], "positive integers"),
        ([True], "positive integers"),
        ([10, 10], "listed once"),
    ):
        with pytest.raises(ValueError, match=f"var ema_periods .*{reason}"):
            validated_periods(bad)


def test_segmented_cummax_matches_pandas():
    rng = np.random.default_rng(5)
    lengths = rng.integers(0, 30, 40)
    values = rng.integers(1, 1000, int(lengths.sum()))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    initial = rng.integers(0, 1000, 40)
    groups = np.repeat(np.arange(40), lengths)
    with_initial = values.copy()
    starts = offsets[:-1][lengths > 0]
    with_initial[starts] = np.maximum(values[starts], initial[lengths > 0])
    expected = pd.Series(with_initial).groupby(groups).cummax().to_numpy()
    np.testing.assert_array_equal(segmented_cummax(values, offsets, initial), expected)
    plain = pd.Series(values).groupby(groups).cummax().to_numpy()
    np.testing.assert_array_equal(segmented_cummax(values, offsets), plain)


DAY_ONE = dt.date(2024, 1, 1)


def rows_table(symbols, tfs, closes, flags, batches, days=None):
    """Model input rows on days DAY_ONE + `days` (default one row a day); series ids numbered in
    (symbol, tf) order as the models' SQL does; each row its own bar start."""
    keys = sorted(set(zip(symbols, tfs, strict=True)))
    dates = [
        DAY_ONE + dt.timedelta(days=int(d)) for d in (range(len(closes)) if days is None else days)
    ]
    return pa.table(
        {
            "series": pa.array(
                [keys.index(key) for key in zip(symbols, tfs, strict=True)], pa.int32()
            ),
            "symbol": pa.array(symbols, pa.string()),
            "tf": pa.array(tfs, pa.string()),
            "bar_date": pa.array(dates, pa.date32()),
            "bar_start_date": pa.array(dates, pa.date32()),
            "close": pa.array(closes, pa.float64()),
            "is_partial_end": pa.array([not f for f in flags], pa.bool_()),
            "closes_bar": pa.array(flags, pa.bool_()),
            "source_batch_id": pa.array(batches, pa.int64()),
        }
    )


def fresh_inputs(rows: pa.Table, periods: tuple[int, ...]) -> ModelInputs:
    series = len(set(rows.column("series").to_pylist()))
    return ModelInputs(rows, periods, SeriesStart.fresh(series, periods))


def test_ema_table_rows_per_period_with_nulls_batches_and_invocation():
    rows = rows_table(
        ["A"] * 4 + ["B"] * 3,
        ["2d"] * 4 + ["1d"] * 3,
        [10.0, 11, 12, 13, 5, 6, 7],
        [False, True, False, True, True, True, True],
        [1, 3, 2, 2, 4, 1, 1],
    )
    table = ema_table(fresh_inputs(rows, (1, 2)), "run-1").rows
    assert table.column_names == list(OUTPUT_COLUMNS)
    assert table.num_rows == 14
    frame = table.to_pandas()
    assert (frame.invocation_id == "run-1").all()
    a2 = frame[(frame.symbol == "A") & (frame.period == 2)]
    # completed 2-day closes 11, 13: seeded (mean 12) on the second; nothing before: nulls
    assert a2.ema_bar.isna().tolist() == [True, True, True, False]
    assert a2.ema_bar.iloc[3] == 12.0
    # v2 span 2 * 2 = 4 over the daily closes: the mean of the 4 closes on the fourth row
    assert a2.ema_v2.iloc[3] == pytest.approx(11.5, rel=RTOL)
    assert a2.source_batch_id.tolist() == [1, 3, 3, 3]
    b1 = frame[(frame.symbol == "B") & (frame.period == 1)]
    assert b1.ema.tolist() == [5.0, 6.0, 7.0]
    assert b1.source_batch_id.tolist() == [4, 4, 4]


def test_the_carry_of_each_partition_is_its_state_after_its_last_row():
    rows = rows_table(
        ["A"] * 4, ["2d"] * 4, [10.0, 11, 12, 13], [False, True, False, False], [1, 3, 2, 2]
    )
    carry = ema_table(fresh_inputs(rows, (1, 2)), "run-1").carry
    assert carry.schema == CARRY_SCHEMA
    last_day = DAY_ONE + dt.timedelta(days=3)
    assert carry.to_pylist() == [
        {
            "symbol": "A",
            "tf": "2d",
            "period": period,
            "as_of": last_day,
            "row_count": 4,
            "last_batch_id": 3,
            "bar_start_date": last_day,
            "closes_bar": False,
            "days_total": 46.0,
            "bars_count": 1,
            "bars_total": 11.0,
            "ema_bar": ema_bar,
            "ema_v2": ema_v2,
        }
        # one bar closed (11): its close for period 1, still warming up for period 2; v2 over 2
        # days (alpha 2/3, seeded with 10.5 on day 2: 11.5, 12.5) and over 4 (the mean of all 4)
        for period, ema_bar, ema_v2 in ((1, 11.0, pytest.approx(12.5)), (2, None, 11.5))
    ]


def test_ema_table_continues_from_a_carry():
    rows = rows_table(["A"] * 2, ["1d"] * 2, [13.0, 14.0], [True, True], [5, 5])
    # before: 3 closes 10, 11, 12 (sum 33), EMA(3) = 11 stored; batch 7
    start = SeriesStart.fresh(1, (3,))
    before = {"row_count": [3], "days_total": [33.0], "bars_count": [3], "bars_total": [33.0]}
    stored = {"ema_bar": [11.0], "ema_v2": [11.0], "last_batch_id": [7], "series": [0]}
    fill_carry(start, 3, pa.table({**before, **stored}))
    output = ema_table(ModelInputs(rows, (3,), start), "run-2")
    frame = output.rows.to_pandas()
    # alpha 1/2: 0.5 * 13 + 0.5 * 11 = 12, then 13
    assert frame.ema.tolist() == [12.0, 13.0]
    assert frame.ema_v2.tolist() == [12.0, 13.0]
    assert frame.source_batch_id.tolist() == [7, 7]
    carry = output.carry.to_pylist()[0]
    assert (carry["row_count"], carry["days_total"], carry["bars_count"]) == (5, 60.0, 5)
    assert (carry["ema_bar"], carry["ema_v2"], carry["last_batch_id"]) == (13.0, 13.0, 7)


def split_rows(series: list[tuple[str, str, np.ndarray, np.ndarray]], part) -> pa.Table:
    """rows_table of (symbol, tf, closes, batches) series, rolling bars; `part(n)` is the slice
    of each series' rows taken, on its days since DAY_ONE."""
    columns: dict[str, list] = {"symbols": [], "tfs": [], "closes": [], "flags": [], "batches": []}
    days: list[int] = []
    for symbol, tf, close, batch in series:
        taken = part(len(close))
        positions = np.arange(len(close))[taken]
        columns["symbols"] += [symbol] * len(positions)
        columns["tfs"] += [tf] * len(positions)
        columns["closes"] += close[taken].tolist()
        columns["flags"] += rolling_flags(len(close), nominal_tf_days(tf))[taken].tolist()
        columns["batches"] += batch[taken].tolist()
        days += positions.tolist()
    return rows_table(*columns.values(), days=days)


def resumed_start(carry: pa.Table, periods: tuple[int, ...]) -> SeriesStart:
    """Series resumed from `carry`, numbered in (symbol, tf) order."""
    keys = sorted({(row["symbol"], row["tf"]) for row in carry.to_pylist()})
    ids = [keys.index((row["symbol"], row["tf"])) for row in carry.to_pylist()]
    carry = carry.append_column("series", pa.array(ids, pa.int64()))
    start = SeriesStart.fresh(len(keys), periods)
    for period in periods:
        fill_carry(start, period, carry.filter(pc.equal(carry.column("period"), period)))
    return start


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    periods=st.lists(st.integers(1, 6), min_size=1, max_size=3, unique=True),
    lengths=st.lists(st.integers(2, 120), min_size=1, max_size=4),
)
def test_a_run_resumed_from_its_carry_equals_one_computation(data, periods, lengths):
    """What a normal day does: compute up to a day and keep the carry, then resume from it over
    the rest; rows and the final carry equal one computation over all rows. Rolling bars of
    several lengths, the split anywhere in a bar, still in warm-up or not."""
    periods = tuple(sorted(periods))
    series = [
        (
            f"S{i}",
            f"{data.draw(st.integers(1, 9), label='tf days')}d",
            walk(n, 7 * n + i),
            np.sort(np.random.default_rng(i).integers(1, 9, n)),
        )
        for i, n in enumerate(lengths)
    ]
    split = data.draw(st.integers(1, min(lengths) - 1), label="split")
    whole = ema_table(fresh_inputs(split_rows(series, lambda n: slice(0, n)), periods), "w")
    before = ema_table(fresh_inputs(split_rows(series, lambda n: slice(0, split)), periods), "b")
    after_rows = split_rows(series, lambda n: slice(split, n))
    after = ema_table(ModelInputs(after_rows, periods, resumed_start(before.carry, periods)), "a")

    keys = ["symbol", "tf", "period", "bar_date"]
    expected = whole.rows.to_pandas().set_index(keys)
    got = after.rows.to_pandas().set_index(keys)
    assert len(got) == len(expected) - len(split_rows(series, lambda n: slice(0, split))) * len(
        periods
    )
    expected = expected.loc[got.index]
    for column in ("ema", "ema_bar", "ema_v2"):
        np.testing.assert_allclose(
            got[column].to_numpy(float),
            expected[column].to_numpy(float),
            rtol=1e-9,
            equal_nan=True,
            err_msg=column,
        )
    assert got.source_batch_id.tolist() == expected.source_batch_id.tolist()
    order = ["symbol", "tf", "period"]
    pd.testing.assert_frame_equal(
        after.carry.to_pandas().sort_values(order).reset_index(drop=True),
        whole.carry.to_pandas().sort_values(order).reset_index(drop=True),
        rtol=1e-9,
    )


def test_an_incremental_run_with_nothing_to_do_writes_no_rows():
    rows = rows_table([], [], [], [], [])
    output = ema_table(ModelInputs(rows, (10,), SeriesStart.fresh(0, (10,))), "run-3")
    assert output.rows.num_rows == 0
    assert output.rows.column_names == list(OUTPUT_COLUMNS)
    assert output.carry.num_rows == 0


def test_only_rows_from_each_partitions_written_from_are_returned_with_their_carry():
    rows = rows_table(["A"] * 4, ["1M", "1M", "1w", "1w"], [1.0, 2, 3, 4], [True] * 4, [1] * 4)
    start = SeriesStart.fresh(2, (1, 2))  # series 0: (A, 1M), series 1: (A, 1w)
    third_day = (DAY_ONE - dt.date(1970, 1, 1)).days + 2
    start.written_from[1][:] = [NO_ROW, third_day]
    start.written_from[2][:] = [third_day + 5, NO_ROW]
    output = ema_table(ModelInputs(rows, (1, 2), start), "run-4")
    written = output.rows.select(["tf", "period", "bar_date"]).to_pylist()
    assert [(r["tf"], r["period"], r["bar_date"].day) for r in written] == [
        ("1w", 1, 3),
        ("1w", 1, 4),
    ]
    assert [(r["tf"], r["period"]) for r in output.carry.to_pylist()] == [("1w", 1)]


def test_partition_filter_reads_the_refresh_vars():
    keep = partition_filter({"tfs": ["1w", "1M"], "periods": [20], "tf_periods": []})
    assert keep.keeps("1w", 20) and keep.keeps("1M", 20)
    assert not keep.keeps("1w", 10) and not keep.keeps("1Q", 20)
    pairs = partition_filter({"tf_periods": [["7d", 10], ["7d", 20]]})
    assert pairs.keeps("7d", 10) and not pairs.keeps("7d", 50) and not pairs.keeps("2d", 10)
    assert not partition_filter({"symbols": ["A"]})
