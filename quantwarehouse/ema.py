"""Exponential moving averages over many series at once, resumable from a stored state.

Definitions (DOMAIN.md "EMAs"): for a span n, alpha = 2 / (n + 1); the EMA is null for the first
n - 1 values, equals the SMA of the first n values at the n-th, then follows
`ema = alpha * x + (1 - alpha) * previous_ema`.

`segmented_ema` computes that for a flat array holding many series back to back (one per symbol and
timeframe), vectorized across series: blocks of series become the rows of small padded matrices
(cache-sized) filtered with `scipy.signal.lfilter` (one C loop per matrix). Each series may resume
from an `EmaCarry` (values consumed so far, their sum while still in warm-up, and the last EMA),
which gives bit-for-bit the same values as a computation from the series' first value.

`bar_emas` builds the bar-family EMAs on snapshot rows (one row per day, a bar complete on its row
with is_partial_end = false): the bar-space EMA of completed bar closes, the preview value on days
inside a forming bar, and the time-space daily EMA "v2".
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray
from scipy.signal import lfilter

from quantwarehouse.incremental import dirty_symbols, state_table
from quantwarehouse.refresh.filters import EmaFilter

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


def ema_alpha(span: int) -> float:
    """Smoothing factor of an EMA over `span` values: 2 / (span + 1)."""
    if span < 1:
        raise ValueError(f"EMA span must be a positive integer, got {span}")
    return 2.0 / (span + 1)


@dataclass(frozen=True)
class EmaCarry:
    """Where each series' recursion stands before its first value in the current window.

    count  values the series consumed before the window
    total  their sum (read only while count < span, to finish the SMA seed)
    last   the EMA after them (NaN while count < span)
    """

    count: IntArray
    total: FloatArray
    last: FloatArray

    @classmethod
    def fresh(cls, series: int) -> EmaCarry:
        """Series that start at their first value."""
        return cls(np.zeros(series, np.int64), np.zeros(series), np.full(series, np.nan))

    def take(self, index: IntArray) -> EmaCarry:
        return EmaCarry(self.count[index], self.total[index], self.last[index])


def _check_offsets(offsets: IntArray, size: int) -> None:
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != size:
        raise ValueError(
            f"offsets must start at 0 and end at the number of values ({size}); "
            f"got {len(offsets)} offsets from {offsets[:1]} to {offsets[-1:]}"
        )
    if np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must be non-decreasing (one [start, end) range per series)")


def _check_inputs(values: FloatArray, offsets: IntArray, spans: IntArray, carry: EmaCarry) -> None:
    _check_offsets(offsets, len(values))
    series = len(offsets) - 1
    # One pass without a temporary; a non-finite sum of finite values (overflow) is then let pass.
    if not np.isfinite(values.sum()) and not np.all(np.isfinite(values)):
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ValueError(f"EMA input must be finite; value {bad} is {values[bad]}")
    for name, array in (("spans", spans), *vars(carry).items()):
        if len(array) != series:
            raise ValueError(f"{name} has {len(array)} entries for {series} series")
    if np.any(spans < 1):
        raise ValueError(f"EMA spans must be positive, got {int(spans.min())}")
    if np.any(carry.count < 0):
        raise ValueError("carry.count must be >= 0")
    seeded = carry.count >= spans
    if np.any(np.isnan(carry.last[seeded])):
        bad = int(np.flatnonzero(seeded & np.isnan(carry.last))[0])
        raise ValueError(
            f"series {bad} consumed {carry.count[bad]} values (span {spans[bad]}) "
            "but its carried EMA is missing"
        )


# Series are filtered in padded blocks of at most this many cells (512 KiB of float64): small
# enough to stay in cache and be recycled by the allocator, large enough to amortize numpy calls.
BLOCK_CELLS = 1 << 16


def _blocks(members: IntArray, lengths: IntArray) -> Iterator[IntArray]:
    """Split series into blocks of at most BLOCK_CELLS padded cells, longest series first.

    A block holds series of one length class [2^k, 2^(k+1)), so padding wastes at most half of it;
    equal lengths keep their order, so neighbours in `values` stay neighbours (a view, no copy).
    """
    if len(members) == 0:
        return
    order = members[np.argsort(-lengths[members], kind="stable")]
    classes = np.frexp(np.maximum(lengths[order], 1))[1]
    bounds = np.flatnonzero(np.diff(classes)) + 1
    for same_class in np.split(order, bounds):
        room = max(1, BLOCK_CELLS // max(int(lengths[same_class[0]]), 1))
        yield from np.split(same_class, np.arange(room, len(same_class), room))


# Below this many series a block is copied series by series (slices); above, with index arrays.
_SLICED_SERIES = 32


@dataclass(frozen=True)
class _Block:
    """Series laid out as the rows of a zero-padded matrix (series i: row i, from column 0)."""

    starts: IntArray
    lengths: IntArray
    depth: int
    contiguous: bool  # equal lengths, back to back in `values`: the matrix is a view

    @classmethod
    def of(cls, starts: IntArray, lengths: IntArray) -> _Block:
        depth = int(lengths.max())
        contiguous = bool(np.all(lengths == depth) and np.all(np.diff(starts) == depth))
        return cls(starts, lengths, depth, contiguous)

    def _positions(self, first_column: int) -> tuple[BoolArray, IntArray]:
        columns = np.arange(first_column, self.depth)
        valid = columns[None, :] < self.lengths[:, None]
        return valid, (self.starts[:, None] + columns[None, :])[valid]

    def _slices(self, first_column: int) -> Iterator[tuple[int, slice, slice]]:
        """Per series: its row, its columns first_column.. and where they are in the flat layout."""
        for row, (start, length) in enumerate(zip(self.starts, self.lengths, strict=True)):
            if length > first_column:
                yield (
                    row,
                    slice(0, length - first_column),
                    slice(start + first_column, start + length),
                )

    def matrix(self, values: NDArray[Any]) -> NDArray[Any]:
        if self.contiguous:
            first = int(self.starts[0])
            return values[first : first + len(self.starts) * self.depth].reshape(-1, self.depth)
        matrix = np.zeros((len(self.starts), self.depth), values.dtype)
        if len(self.starts) <= _SLICED_SERIES:
            for row, columns, flat in self._slices(0):
                matrix[row, columns] = values[flat]
        else:
            valid, flat_index = self._positions(0)
            matrix[valid] = values[flat_index]
        return matrix

    def store(self, out: NDArray[Any], first_column: int, columns: NDArray[Any]) -> None:
        """Write `columns` (the matrix's columns first_column..) back to the flat layout."""
        if self.contiguous:
            self.matrix(out)[:, first_column:] = columns
        elif len(self.starts) <= _SLICED_SERIES:
            for row, part, flat in self._slices(first_column):
                out[flat] = columns[row, part]
        else:
            valid, flat_index = self._positions(first_column)
            out[flat_index] = columns[valid]


def _filter_block(
    values: FloatArray, block: _Block, seed_row: int, carry: EmaCarry, span: int, out: FloatArray
) -> None:
    """EMAs of a block of series that all seed at window row `seed_row` (-1: resumed)."""
    if block.depth == 0:
        return
    matrix = block.matrix(values)
    if seed_row >= 0:
        initial = (carry.total + matrix[:, : seed_row + 1].sum(axis=1)) / span
        out[block.starts + seed_row] = initial
    else:
        initial = carry.last
    alpha = ema_alpha(span)
    # lfilter's transposed direct form computes alpha * x + (1 - alpha) * previous exactly as the
    # scalar recursion does, so a resumed series matches a from-scratch one bit for bit.
    filtered, _ = lfilter(
        [alpha],
        [1.0, alpha - 1.0],
        matrix[:, seed_row + 1 :],
        axis=1,
        zi=((1.0 - alpha) * initial)[:, None],
    )
    block.store(out, seed_row + 1, filtered)


def _ema_one_span(
    values: FloatArray,
    starts: IntArray,
    lengths: IntArray,
    span: int,
    carry: EmaCarry,
    out: FloatArray,
) -> None:
    """EMAs of series sharing one span; `out` keeps NaN where no EMA exists yet."""
    # Window row at which each series' SMA seed completes (-1: seeded before the window).
    seed_row = np.maximum(span - 1 - carry.count, -1)
    live = np.flatnonzero(seed_row < lengths)
    for row in np.unique(seed_row[live]):
        for block in _blocks(live[seed_row[live] == row], lengths):
            _filter_block(
                values,
                _Block.of(starts[block], lengths[block]),
                int(row),
                carry.take(block),
                span,
                out,
            )


def segmented_ema(
    values: FloatArray,
    offsets: IntArray,
    spans: int | IntArray,
    carry: EmaCarry | None = None,
) -> FloatArray:
    """SMA-seeded EMAs of many series laid back to back.

    values   float64, series after series, each in time order
    offsets  int64, len(series) + 1: series i is values[offsets[i]:offsets[i + 1]]
    spans    the EMA span of every series, or one per series
    carry    per series, the state before its first value here (default: fresh series)

    Returns float64 like `values`, NaN where a series has consumed fewer than `span` values.
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.int64)
    series = len(offsets) - 1
    span_of = np.asarray(spans, dtype=np.int64)
    if span_of.ndim == 0:
        span_of = np.full(max(series, 0), span_of)
    carry = carry if carry is not None else EmaCarry.fresh(series)
    _check_inputs(values, offsets, span_of, carry)
    out = np.full(len(values), np.nan)
    starts, lengths = offsets[:-1], np.diff(offsets)
    for span in np.unique(span_of):
        members = np.flatnonzero(span_of == span)
        _ema_one_span(
            values, starts[members], lengths[members], int(span), carry.take(members), out
        )
    return out


# --- bar families -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BarRows:
    """Snapshot rows of many (symbol, timeframe) series, each contiguous and in bar_date order.

    close          the row's close (the close of its day; of its bar on the completing row)
    completes_bar  true on the row that completes its bar (is_partial_end = false)
    offsets        series i is rows offsets[i]:offsets[i + 1]
    tf_days        per series, the nominal length of its timeframe in days (sets the v2 span)

    The layout properties below do not depend on the period: computed once, used for each one.
    """

    close: FloatArray
    completes_bar: BoolArray
    offsets: IntArray
    tf_days: IntArray

    def __post_init__(self) -> None:
        _check_offsets(self.offsets, len(self.close))
        if len(self.completes_bar) != len(self.close):
            raise ValueError("completes_bar must have one flag per row")
        if len(self.tf_days) != len(self.offsets) - 1:
            raise ValueError("tf_days must have one entry per series")
        if np.any(self.tf_days < 1):
            raise ValueError("tf_days must be positive")

    @property
    def series(self) -> int:
        return len(self.offsets) - 1

    @cached_property
    def completed_rows(self) -> IntArray:
        return np.flatnonzero(self.completes_bar)

    @cached_property
    def completed_offsets(self) -> IntArray:
        """Offsets of each series' completed bars within the array of completed closes."""
        return np.searchsorted(self.completed_rows, self.offsets).astype(np.int64)

    @cached_property
    def completed_close(self) -> FloatArray:
        return self.close[self.completed_rows]

    # ema_bar of every row is read from one array holding, per series, its carried ema_bar and
    # then the EMAs of its completed bars: series i's part starts at completed_offsets[i] + i.
    @cached_property
    def _carry_slots(self) -> IntArray:
        return self.completed_offsets[:-1] + np.arange(self.series)

    @cached_property
    def _completed_slots(self) -> IntArray:
        completed_series = np.searchsorted(self.offsets, self.completed_rows, side="right") - 1
        return np.arange(len(self.completed_rows)) + completed_series + 1

    @cached_property
    def _row_slots(self) -> IntArray:
        """Per row, the slot of the last completed bar at or before it (else the carry)."""
        series_of_row = np.repeat(np.arange(self.series), np.diff(self.offsets))
        return np.cumsum(self.completes_bar, dtype=np.int64) + series_of_row

    def ema_bar_of_rows(self, completed_ema: FloatArray, carried: FloatArray) -> FloatArray:
        slots = np.empty(len(completed_ema) + self.series)
        slots[self._carry_slots] = carried
        slots[self._completed_slots] = completed_ema
        return slots[self._row_slots]


@dataclass(frozen=True)
class BarCarry:
    """Per series, the state before the window: completed bars (bar-space) and rows (v2)."""

    bars: EmaCarry
    days: EmaCarry

    @classmethod
    def fresh(cls, series: int) -> BarCarry:
        return cls(EmaCarry.fresh(series), EmaCarry.fresh(series))


class BarEmas(NamedTuple):
    """Per row: the reported EMA (preview inside a forming bar), the bar-space EMA as of the last
    completed bar, and the time-space daily EMA (v2)."""

    ema: FloatArray
    ema_bar: FloatArray
    ema_v2: FloatArray


def _with_previews(
    ema_bar: FloatArray, close: FloatArray, completes_bar: BoolArray, alpha: float
) -> FloatArray:
    """ema_bar on completing rows, alpha * close + (1 - alpha) * ema_bar elsewhere.

    Computed a cache-sized slice at a time, so no temporary as large as the rows is made.
    """
    ema = np.empty_like(ema_bar)
    scaled = np.empty(min(BLOCK_CELLS, len(ema_bar)))
    for start in range(0, len(ema_bar), BLOCK_CELLS):
        part = slice(start, start + BLOCK_CELLS)
        out, close_part = ema[part], close[part]
        np.multiply(ema_bar[part], 1.0 - alpha, out=out)
        np.multiply(close_part, alpha, out=scaled[: len(close_part)])
        out += scaled[: len(close_part)]
        np.copyto(out, ema_bar[part], where=completes_bar[part])
    return ema


def bar_emas(rows: BarRows, period: int, carry: BarCarry | None = None) -> BarEmas:
    """EMAs of one period over snapshot rows.

    ema_bar  SMA-seeded EMA (span `period`) of the completed bar closes, carried on every row from
             its bar's completing row until the next one
    ema      ema_bar on a completing row; inside a forming bar the preview
             alpha * close + (1 - alpha) * last completed ema_bar (not compounded)
    ema_v2   SMA-seeded EMA over the rows' daily closes with span tf_days * period
    """
    carry = carry if carry is not None else BarCarry.fresh(rows.series)
    completed_ema = segmented_ema(rows.completed_close, rows.completed_offsets, period, carry.bars)
    ema_bar = rows.ema_bar_of_rows(completed_ema, carry.bars.last)
    ema = _with_previews(ema_bar, rows.close, rows.completes_bar, ema_alpha(period))
    ema_v2 = segmented_ema(rows.close, rows.offsets, rows.tf_days * period, carry.days)
    return BarEmas(ema, ema_bar, ema_v2)


def segmented_cummax(
    values: IntArray, offsets: IntArray, initial: IntArray | None = None
) -> IntArray:
    """Running maximum within each series (optionally starting from `initial` per series)."""
    values = np.asarray(values, dtype=np.int64)
    _check_offsets(offsets, len(values))
    out = np.empty_like(values)
    starts, lengths = offsets[:-1], np.diff(offsets)
    live = np.flatnonzero(lengths > 0)
    for members in _blocks(live, lengths):
        block = _Block.of(starts[members], lengths[members])
        matrix = block.matrix(values).copy()
        if initial is not None:
            np.maximum(matrix[:, 0], initial[members], out=matrix[:, 0])
        block.store(out, 0, np.maximum.accumulate(matrix, axis=1))
    return out


# --- timeframes ---------------------------------------------------------------------------------

_TIMEFRAME = re.compile(r"^(?P<count>[1-9]\d*)(?P<unit>[dwMQY])(?:_anchor)?$")
_UNIT_DAYS = {"d": 1.0, "w": 7.0, "M": 365.25 / 12, "Q": 365.25 / 4, "Y": 365.25}


def nominal_tf_days(tf: str) -> int:
    """Nominal length in days of a bar family timeframe, which sets the v2 span.

    '<N>d' (rolling, and '1d'): N; '<N>w': 7N; months, quarters and years ('<N>M', '<N>Q', '<N>Y',
    any with the anchored families' '_anchor' suffix): N times the mean calendar length (365.25 / 12
    days a month) rounded to whole days, so 1M = 30, 1Q = 91, 6M = 183, 1Y = 365.
    """
    match = _TIMEFRAME.match(tf)
    if match is None:
        raise ValueError(
            f"timeframe {tf!r} is not '<N><unit>' with unit d, w, M, Q or Y (optionally '_anchor')"
        )
    return round(int(match["count"]) * _UNIT_DAYS[match["unit"]])


# --- dbt models (python_models/emas) ------------------------------------------------------------

OUTPUT_COLUMNS = (
    "symbol",
    "tf",
    "period",
    "bar_date",
    "ema",
    "ema_bar",
    "ema_v2",
    "is_partial_end",
    "closes_bar",
    "source_batch_id",
    "invocation_id",
)
_PERIODS_WHERE = "var ema_periods (dbt_project/dbt_project.yml)"

# The columns EMAs need, from bars_1d (every row is a whole one-day bar) or from a bar family.
# A bar closes on its row with is_partial_end = false, or on its last row once the symbol has moved
# to a later bar with the bar's last days missing (count_missing_end > 0): its last close is final.
_DAILY_ROWS = """
    select symbol, '1d' as tf, bar_date, bar_date as bar_start_date, close,
        false as is_partial_end, true as closes_bar, source_batch_id
    from bars_source
"""
_FAMILY_ROWS = """
    select symbol, tf, bar_date, bar_start_date, close, is_partial_end,
        not is_partial_end or count_missing_end > 0 as closes_bar, source_batch_id
    from bars_source
"""


def validated_periods(value: object) -> tuple[int, ...]:
    """The configured EMA periods: a non-empty list of distinct positive integers."""
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"{_PERIODS_WHERE}: expected a non-empty list of periods, got {value!r}")
    for period in value:
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise ValueError(
                f"{_PERIODS_WHERE}: expected positive integers, got {period!r} in {value!r}"
            )
    if len(set(value)) != len(value):
        raise ValueError(f"{_PERIODS_WHERE}: each period must be listed once, got {value!r}")
    return tuple(sorted(value))


@dataclass(frozen=True)
class RunCarry:
    """Per series of a run, what lies before its recompute start (read from the warehouse).

    days_before / days_total    upstream rows before the start and the sum of their closes
    bars_before / bars_total    the same for the rows that closed a bar
    batch_before                the latest source batch among those rows
    stored                      per period, the stored ema_bar and ema_v2 of the row just before
    """

    days_before: IntArray
    days_total: FloatArray
    bars_before: IntArray
    bars_total: FloatArray
    batch_before: IntArray
    stored: dict[int, tuple[FloatArray, FloatArray]]

    def for_period(self, period: int) -> BarCarry:
        ema_bar, ema_v2 = self.stored[period]
        return BarCarry(
            EmaCarry(self.bars_before, self.bars_total, ema_bar),
            EmaCarry(self.days_before, self.days_total, ema_v2),
        )


def series_offsets(series: IntArray, count: int) -> IntArray:
    """Boundaries of series 0..count-1 in rows sorted by series id."""
    sizes = np.bincount(series, minlength=count) if len(series) else np.zeros(count, np.int64)
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _nullable(values: FloatArray) -> pa.Array:
    """Float values with NaN (no EMA yet) as SQL nulls."""
    return pa.array(values, type=pa.float64(), from_pandas=True)


def _numpy(rows: pa.Table, name: str) -> NDArray[Any]:
    return rows.column(name).to_numpy()


def ema_table(
    rows: pa.Table,
    periods: Sequence[int],
    invocation_id: str,
    carry: RunCarry | None = None,
) -> pa.Table:
    """The model's rows (OUTPUT_COLUMNS), one block per period, for `rows`: columns series (ids
    0, 1, ... in the order of `carry`'s arrays), symbol, tf, bar_date, close, is_partial_end,
    closes_bar, source_batch_id, sorted by series and bar_date.

    source_batch_id is the latest batch of the series' upstream rows up to each row (an EMA depends
    on all of them).
    """
    series = _numpy(rows, "series").astype(np.int64)
    count = len(carry.batch_before) if carry is not None else int(series.max(initial=-1)) + 1
    offsets = series_offsets(series, count)
    filled = np.flatnonzero(np.diff(offsets) > 0)
    tf_days = np.ones(count, np.int64)
    first_tfs = rows.column("tf").take(offsets[filled]).to_pylist()
    tf_days[filled] = [nominal_tf_days(tf) for tf in first_tfs]
    bars = BarRows(
        close=np.asarray(_numpy(rows, "close"), dtype=np.float64),
        completes_bar=np.asarray(_numpy(rows, "closes_bar"), dtype=bool),
        offsets=offsets,
        tf_days=tf_days,
    )
    batch = segmented_cummax(
        _numpy(rows, "source_batch_id"),
        offsets,
        carry.batch_before if carry is not None else None,
    )
    size = rows.num_rows
    repeated = {
        name: pa.chunked_array(rows.column(name).chunks * len(periods), rows.column(name).type)
        for name in ("symbol", "tf", "bar_date", "is_partial_end", "closes_bar")
    }
    values: dict[str, list[pa.Array]] = {"period": [], "ema": [], "ema_bar": [], "ema_v2": []}
    for period in periods:
        emas = bar_emas(bars, period, carry.for_period(period) if carry is not None else None)
        values["period"].append(pa.array(np.full(size, period, np.int32)))
        for name, column in zip(("ema", "ema_bar", "ema_v2"), emas, strict=True):
            values[name].append(_nullable(column))
    invocation = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(size, np.int8)), pa.array([invocation_id])
    )
    kinds = {
        "period": pa.int32(),
        "ema": pa.float64(),
        "ema_bar": pa.float64(),
        "ema_v2": pa.float64(),
    }
    columns = {
        **repeated,
        **{name: pa.chunked_array(chunks, kinds[name]) for name, chunks in values.items()},
        "source_batch_id": pa.chunked_array([pa.array(batch)] * len(periods), pa.int64()),
        "invocation_id": pa.chunked_array([invocation] * len(periods), invocation.type),
    }
    return pa.table({name: columns[name] for name in OUTPUT_COLUMNS})


_ROW_COLUMNS = (
    "b.symbol, b.tf, b.bar_date, b.close, b.is_partial_end, b.closes_bar, b.source_batch_id"
)

# Every row, numbered by series (symbol, tf) in key order: sorting on a small integer is cheaper
# than on the strings, and the ids give the series boundaries at once.
_ALL_ROWS = f"""
    with series as (
        select symbol, tf, cast(row_number() over (order by symbol, tf) - 1 as integer) as series
        from (select distinct symbol, tf from bars) as pairs
    )

    select s.series, {_ROW_COLUMNS}
    from bars as b
    inner join series as s on b.symbol = s.symbol and b.tf = s.tf
    order by s.series, b.bar_date
"""

# The rows of the series of a plan (registered as ema_plan) from their recompute start on.
_PLANNED_ROWS = f"""
    select p.series, {_ROW_COLUMNS}
    from bars as b
    inner join ema_plan as p
        on b.symbol = p.symbol and b.tf = p.tf and b.bar_date >= p.recompute_from
    order by p.series, b.bar_date
"""

# Per dirty (symbol, tf): where to recompute from and what lies before. The recompute starts at the
# bar holding the symbol's earliest touched row, or at the bar of the row before it when that row
# had not completed its bar (a later row may now close it: the last days of a calendar bar
# missing). Rows before the start are unchanged upstream; their counts and sums finish an SMA seed
# still in warm-up. Only the rows from emit_from on are written: the row before the earliest
# touched one (which a later row may close) and what follows; the forming bar's earlier rows are
# computed again but equal the stored ones. Series ids follow the (symbol, tf) order.
_PLAN = """
    with dirty_rows as (
        select b.*, d.dirty_from
        from bars as b
        inner join ema_dirty as d on b.symbol = d.symbol
    ),

    edges as (
        select
            symbol,
            tf,
            max_by(bar_start_date, bar_date) filter (where bar_date < dirty_from)
                as prev_bar_start,
            max_by(is_partial_end, bar_date) filter (where bar_date < dirty_from)
                as prev_is_partial,
            min_by(bar_start_date, bar_date) filter (where bar_date >= dirty_from)
                as dirty_bar_start,
            coalesce(max(bar_date) filter (where bar_date < dirty_from), min(dirty_from))
                as emit_from
        from dirty_rows
        group by symbol, tf
    ),

    starts as (
        select
            symbol,
            tf,
            emit_from,
            case when prev_is_partial then prev_bar_start else dirty_bar_start end as recompute_from
        from edges
        where dirty_bar_start is not null
    )

    select
        cast(row_number() over (order by s.symbol, s.tf) - 1 as integer) as series,
        s.symbol,
        s.tf,
        s.recompute_from,
        s.emit_from,
        max(b.bar_date) as prev_date,
        count(b.bar_date) as days_before,
        coalesce(sum(b.close), 0) as days_total,
        count(b.bar_date) filter (where b.closes_bar) as bars_before,
        coalesce(sum(b.close) filter (where b.closes_bar), 0) as bars_total,
        coalesce(max(b.source_batch_id), -1) as batch_before
    from starts as s
    left join bars as b
        on b.symbol = s.symbol and b.tf = s.tf and b.bar_date < s.recompute_from
    group by s.symbol, s.tf, s.recompute_from, s.emit_from
    order by series
"""


def _stored_periods(session: duckdb.DuckDBPyConnection, state: str) -> tuple[int, ...]:
    found = session.sql(f"select distinct period from {state} order by period").fetchall()
    return tuple(int(period) for (period,) in found)


def _check_same_periods(model: str, stored: tuple[int, ...], periods: tuple[int, ...]) -> None:
    if stored and stored != periods:
        raise ValueError(
            f"{model}: {_PERIODS_WHERE} is {list(periods)} but the model was built with "
            f"{list(stored)}; rebuild it with `dbt build --full-refresh --select {model}`"
        )


def _stored_emas(
    session: duckdb.DuckDBPyConnection, this: str, plan: pa.Table, periods: tuple[int, ...]
) -> dict[int, tuple[FloatArray, FloatArray]]:
    """Per period, the stored ema_bar and ema_v2 on each series' row before its recompute start."""
    session.register("ema_plan", plan)
    try:
        stored = session.sql(
            f"""
            select p.series, e.period, e.ema_bar, e.ema_v2
            from ema_plan as p
            inner join {this} as e
                on e.symbol = p.symbol and e.tf = p.tf and e.bar_date = p.prev_date
            """
        ).to_arrow_table()
    finally:
        session.unregister("ema_plan")
    series = stored.column("series").to_numpy()
    period_of = stored.column("period").to_numpy()
    result = {}
    had_rows = plan.column("days_before").to_numpy() > 0
    for period in periods:
        mine = period_of == period
        ema_bar = np.full(plan.num_rows, np.nan)
        ema_v2 = np.full(plan.num_rows, np.nan)
        for target, name in ((ema_bar, "ema_bar"), (ema_v2, "ema_v2")):
            target[series[mine]] = stored.column(name).to_numpy(zero_copy_only=False)[mine]
        missing = had_rows.copy()
        missing[series[mine]] = False
        if missing.any():
            index = int(np.flatnonzero(missing)[0])
            raise ValueError(
                f"{this}: no stored row for symbol {plan['symbol'][index]}, tf "
                f"{plan['tf'][index]}, period {period} on {plan['prev_date'][index]} (the row "
                "before its recompute start); the table lost rows its state still counts: "
                "rebuild it with --full-refresh"
            )
        result[period] = (ema_bar, ema_v2)
    return result


def partition_filter(variables: Mapping[str, Any]) -> EmaFilter:
    """The (tf, period) partitions an incremental run recomputes: dbt vars `tfs`, `periods` and
    `tf_periods` ([tf, period] pairs) as `daily-refresh` sets them, every one given applying."""
    return EmaFilter(
        tfs=tuple(str(tf) for tf in variables.get("tfs") or ()),
        periods=tuple(int(period) for period in variables.get("periods") or ()),
        combos=tuple((str(tf), int(period)) for tf, period in variables.get("tf_periods") or ()),
    )


@dataclass(frozen=True)
class ModelInputs:
    """What one run computes from (see `model_inputs`)."""

    rows: pa.Table
    periods: tuple[int, ...]
    carry: RunCarry | None = None
    partitions: frozenset[tuple[str, int]] | None = None  # None: every (tf, period) of the rows
    emit_from: pa.Table | None = None  # (symbol, tf, emit_from); None: every row

    def kept(self, table: pa.Table) -> pa.Table:
        """The rows of `table` (ema_table output) this run writes: in the partitions it
        recomputes, from each series' emit_from on."""
        if self.emit_from is not None and table.num_rows:
            table = _emitted(table, self.emit_from)
        if self.partitions is None:
            return table
        if not self.partitions or table.num_rows == 0:
            return table.slice(0, 0)
        pairs = pa.table(
            {
                "tf": pa.array([tf for tf, _ in self.partitions], pa.string()),
                "period": pa.array([period for _, period in self.partitions], pa.int32()),
            }
        )
        return table.join(pairs, ["tf", "period"], join_type="left semi")


def _emitted(table: pa.Table, emit_from: pa.Table) -> pa.Table:
    """The rows of `table` on or after their series' emit_from."""
    joined = table.join(emit_from, ["symbol", "tf"], join_type="inner")
    kept = joined.filter(pc.greater_equal(joined["bar_date"], joined["emit_from"]))
    return kept.select(table.column_names)


def _narrowed(plan: pa.Table, periods: tuple[int, ...], keep: EmaFilter) -> ModelInputs:
    """The plan restricted to the series of the kept timeframes (renumbered), and the partitions."""
    tfs = plan.column("tf").to_pylist()
    partitions = {(tf, period) for tf in set(tfs) for period in periods if keep.keeps(tf, period)}
    kept_tfs = {tf for tf, _ in partitions}
    plan = plan.filter(pa.array([tf in kept_tfs for tf in tfs], pa.bool_()))
    plan = plan.set_column(0, "series", pa.array(np.arange(plan.num_rows, dtype=np.int32)))
    kept_periods = tuple(p for p in periods if any(period == p for _, period in partitions))
    return ModelInputs(plan, kept_periods, partitions=frozenset(partitions))


def _incremental_inputs(
    dbt: Any,
    session: duckdb.DuckDBPyConnection,
    bars: duckdb.DuckDBPyRelation,
    periods: tuple[int, ...],
) -> ModelInputs:
    """The rows to recompute (every dirty series from its recompute start) and their carry."""
    state = state_table(session, dbt.this.database, dbt.this.identifier)
    if state is not None:
        _check_same_periods(dbt.this.identifier, _stored_periods(session, state), periods)
    dirty = dirty_symbols(
        session,
        bars,
        dbt.this,
        "bar_date",
        only_symbols=dbt.vars.get("symbols") or (),
        exclude_symbols=dbt.vars.get("exclude_symbols") or (),
    ).to_arrow_table()
    session.register("ema_dirty", dirty)
    try:
        plan = bars.query("bars", _PLAN).to_arrow_table()
    finally:
        session.unregister("ema_dirty")
    keep = partition_filter(dbt.vars)
    narrowed = _narrowed(plan, periods, keep) if keep else ModelInputs(plan, periods)
    plan = narrowed.rows
    session.register("ema_plan", plan)
    try:
        rows = bars.query("bars", _PLANNED_ROWS).to_arrow_table()
    finally:
        session.unregister("ema_plan")
    carry = RunCarry(
        days_before=plan.column("days_before").to_numpy().astype(np.int64),
        days_total=plan.column("days_total").to_numpy().astype(np.float64),
        bars_before=plan.column("bars_before").to_numpy().astype(np.int64),
        bars_total=plan.column("bars_total").to_numpy().astype(np.float64),
        batch_before=plan.column("batch_before").to_numpy().astype(np.int64),
        stored=_stored_emas(session, str(dbt.this), plan, narrowed.periods),
    )
    emit_from = plan.select(["symbol", "tf", "emit_from"])
    return ModelInputs(rows, narrowed.periods, carry, narrowed.partitions, emit_from)


def model_inputs(
    dbt: Any,
    session: duckdb.DuckDBPyConnection,
    upstream: duckdb.DuckDBPyRelation,
    periods: tuple[int, ...],
    *,
    daily: bool,
) -> ModelInputs:
    """What a model run computes from: every row on a full build; on an incremental run the rows
    of the dirty series from their recompute start and what lies before them, in the (tf, period)
    partitions the vars `tfs`, `periods` and `tf_periods` keep (a full build makes them all).

    `dbt` needs `this`, `is_incremental` and `vars` (symbols, exclude_symbols and the partition
    filters), as a dbt Python model's object has them (macros/python/py_script_comment.sql).
    """
    bars = upstream.query("bars_source", _DAILY_ROWS if daily else _FAMILY_ROWS)
    if dbt.is_incremental:
        return _incremental_inputs(dbt, session, bars, periods)
    return ModelInputs(bars.query("bars", _ALL_ROWS).to_arrow_table(), periods)


def ema_model(
    dbt: Any,
    session: duckdb.DuckDBPyConnection,
    upstream: duckdb.DuckDBPyRelation,
    ema_periods: object,
    *,
    daily: bool,
) -> pa.Table:
    """A dbt Python model's rows: EMAs over the bars of `upstream` (bars_1d when `daily`, else a bar
    family), all of them on a full build, the dirty series from their recompute start otherwise.
    `dbt` also brings the run's `invocation_id` (macros/python/py_script_comment.sql)."""
    periods = validated_periods(ema_periods)
    inputs = model_inputs(dbt, session, upstream, periods, daily=daily)
    table = ema_table(inputs.rows, inputs.periods, dbt.invocation_id, inputs.carry)
    return inputs.kept(table)
