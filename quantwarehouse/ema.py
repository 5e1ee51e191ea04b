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
inside a forming bar, and the time-space daily EMA "v2". The dbt models over the bar families
(what a run reads, resumes from and writes) are in quantwarehouse.ema_models.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray
from scipy.signal import lfilter

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
    def series_of_row(self) -> IntArray:
        return np.repeat(np.arange(self.series), np.diff(self.offsets))

    @cached_property
    def _row_slots(self) -> IntArray:
        """Per row, the slot of the last completed bar at or before it (else the carry)."""
        return np.cumsum(self.completes_bar, dtype=np.int64) + self.series_of_row

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
