"""Technical indicators of daily bars: numpy arrays in, arrays of the same shape out.

Shapes: every function takes one symbol's bars as 1-D arrays (bars,) or a block of symbols as 2-D
arrays (symbols, bars) and works along the last axis, row by row, with the same arithmetic: a
symbol's values are the same bits whichever way it is computed. In a block each symbol's bars are
left-aligned (row i holds symbol i's bars in columns 0..len_i - 1) and NaN pads the row after
them; since every indicator is causal, the padding never reaches a symbol's own bars.

Conventions (TradingView's, on which the ratings in `ratings.py` are defined):
- NaN marks a bar whose window is not full yet (warm-up) or where the value is undefined (a zero
  high-low range, a zero volume sum); the ratings leave such votes out.
- Every value at bar i uses bars 0..i only (causal), so a row never depends on later bars.
- EMA: alpha = 2 / (length + 1), seeded with the SMA of the first `length` values. Wilder's
  smoothing (RMA, TradingView's `ta.rma`): alpha = 1 / length, seeded the same way, as Wilder did.
- True range, directional movement and price changes need the previous bar: they start at bar 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import lfilter

FloatArray = npt.NDArray[np.float64]


def rolling_sum(values: FloatArray, length: int) -> FloatArray:
    """The sum of each trailing window of `length` values, NaN for the first length - 1 bars and
    for any window holding a NaN.

    O(n) whatever the length (van Herk / Gil-Werman): within blocks of `length` values, a window
    is the suffix of one block plus the prefix of the next, and each partial sum adds at most
    `length` values, so sums stay as accurate as a direct sum of the window.
    """
    count = values.shape[-1]
    if length > count:
        return np.full(values.shape, np.nan)
    rows = values.shape[:-1]
    blocks = -(-count // length)
    whole = count // length
    # grid[k, ..., b]: position k of block b (NaN past the end). Positions first, so that each
    # step of the running sums below is one contiguous call over every block of every row (a
    # ufunc's accumulate would make one short call per block).
    grid = np.empty((length, *rows, blocks))
    by_block = grid.transpose(*range(1, grid.ndim), 0)
    by_block[..., :whole, :] = values[..., : whole * length].reshape(*rows, whole, length)
    if whole < blocks:
        by_block[..., whole, : count - whole * length] = values[..., whole * length :]
        by_block[..., whole, count - whole * length :] = np.nan
    positions = grid.reshape(length, -1)  # the blocks of all the rows, row after row
    prefix = np.empty_like(positions)
    prefix[0] = positions[0]
    for k in range(1, length):
        np.add(prefix[k - 1], positions[k], out=prefix[k])
    suffix = positions  # summed in place, from the last position down
    for k in range(length - 2, -1, -1):
        np.add(suffix[k + 1], suffix[k], out=suffix[k])
    # windows[n, k]: the window ending at position k of block n, back in bar order. For the last
    # position, the whole block (its suffix from 0); else it starts at position k + 1 of the block
    # before: that block's suffix from k + 1 plus this block's prefix up to k.
    windows = np.empty((positions.shape[1], length))
    windows[:, -1] = suffix[0]
    np.add(suffix[1:, :-1], prefix[:-1, 1:], out=windows.T[:-1, 1:])
    by_row = windows.reshape(*rows, blocks * length)
    by_row[..., : length - 1] = np.nan  # before a row's first full window (or across two rows)
    return by_row[..., :count]


def _warming_up(shape: tuple[int, ...], bars: int) -> FloatArray:
    """An array of `shape` to fill from bar `bars` on, NaN before it."""
    out = np.empty(shape)
    out[..., :bars] = np.nan
    return out


def _ratio(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    """numerator / denominator, NaN where the denominator is 0 (undefined, not infinite)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = numerator / denominator
    np.copyto(out, np.nan, where=denominator == 0)
    return out


def previous(values: FloatArray, periods: int = 1) -> FloatArray:
    """The value `periods` bars earlier (NaN for the first bars)."""
    out = _warming_up(values.shape, periods)
    out[..., periods:] = values[..., : max(values.shape[-1] - periods, 0)]
    return out


def _exponential(values: FloatArray, length: int, alpha: float) -> FloatArray:
    """y[i] = alpha * x[i] + (1 - alpha) * y[i-1], seeded with the mean of the first `length` x.

    Each series (a 1-D input, or each row of a 2-D one) on its own: leading NaN (an input still
    warming up) is skipped, the series starting at its first value; trailing NaN ends the series
    (the padding after a shorter symbol in a block) and stays NaN. NaN between a series' first
    and last values is an error, because the recurrence would carry it to every later bar.
    """
    series = np.atleast_2d(values)
    starts = _series_starts(series, values.ndim)
    out = np.empty(series.shape)
    # Series starting on the same bar share a seed window: one filter call per distinct start.
    for start in sorted(set(starts.tolist())):
        in_group = starts == start
        rows = slice(None) if in_group.all() else np.flatnonzero(in_group)
        seed_at = start + length - 1
        out[rows, :seed_at] = np.nan  # the whole row if too short to seed, or without a value
        if seed_at >= series.shape[-1]:
            continue
        seed = series[rows, start : seed_at + 1].mean(axis=-1)
        out[rows, seed_at] = seed
        if seed_at + 1 < series.shape[-1]:
            out[rows, seed_at + 1 :] = lfilter(
                [alpha],
                [1.0, alpha - 1.0],
                series[rows, seed_at + 1 :],
                zi=(1.0 - alpha) * seed[:, np.newaxis],
            )[0]
    return out.reshape(values.shape)


def _series_starts(series: FloatArray, ndim: int) -> npt.NDArray[np.intp]:
    """Per row, the position of its first value (the row's width if it has none); a ValueError
    if a NaN lies between a row's first and last values (`ndim`: the caller's, for the message).
    """
    missing = np.isnan(series)
    width = series.shape[-1]
    if width == 0:
        return np.zeros(series.shape[0], np.intp)
    starts = missing.argmin(axis=-1)
    starts[missing[np.arange(starts.size), starts]] = width  # no value at all
    ends = width - missing[:, ::-1].argmin(axis=-1)  # one past the last value; width if none
    gapped = np.flatnonzero(np.count_nonzero(missing, axis=-1) != width - (ends - starts))
    if gapped.size:
        row = gapped[0]
        position = starts[row] + int(np.flatnonzero(missing[row, starts[row] :])[0])
        where = f"position {position}" if ndim == 1 else f"row {row}, position {position}"
        raise ValueError(f"exponential average input has NaN at {where} after its start")
    return starts


def sma(values: FloatArray, length: int) -> FloatArray:
    average = rolling_sum(values, length)
    average /= length
    return average


def ema(values: FloatArray, length: int) -> FloatArray:
    return _exponential(values, length, 2.0 / (length + 1))


def rma(values: FloatArray, length: int) -> FloatArray:
    """Wilder's smoothing."""
    return _exponential(values, length, 1.0 / length)


def wma(values: FloatArray, length: int) -> FloatArray:
    """Linearly weighted: the newest value has weight `length`, the oldest weight 1."""
    out = _warming_up(values.shape, length - 1)
    windows = values.shape[-1] - length + 1
    if windows > 0:
        # Summed oldest first from 0, as a dot product of each window with the weights would.
        weighted = np.zeros((*values.shape[:-1], windows))
        for offset in range(length):
            weighted += (offset + 1.0) * values[..., offset : offset + windows]
        out[..., length - 1 :] = weighted / (length * (length + 1) / 2)
    return out


def _window_extreme(values: FloatArray, length: int, extreme: np.ufunc) -> FloatArray:
    """`extreme` (np.maximum or np.minimum) of each trailing window of `length` values, NaN for
    the first length - 1 bars and for any window holding a NaN.

    An extreme is one of the window's values whatever the order it is found in (up to the sign of
    a zero extreme), so by doubling: the extremes of the windows of 1, 2, 4 ... values up to the
    largest power of two within `length`, then of the two such windows that cover each window.
    """
    out = _warming_up(values.shape, length - 1)
    count = values.shape[-1]
    if length > count:
        return out
    span = 1
    spans = values  # spans[..., i]: the extreme of values[..., i : i + span]
    while 2 * span <= length:
        spans = extreme(spans[..., :-span], spans[..., span:])
        span *= 2
    windows = count - length + 1
    extreme(
        spans[..., :windows],
        spans[..., length - span : length - span + windows],
        out=out[..., length - 1 :],
    )
    return out


def highest(values: FloatArray, length: int) -> FloatArray:
    return _window_extreme(values, length, np.maximum)


def lowest(values: FloatArray, length: int) -> FloatArray:
    return _window_extreme(values, length, np.minimum)


def hull_ma(close: FloatArray, length: int = 9) -> FloatArray:
    """WMA(2 * WMA(close, length // 2) - WMA(close, length), floor(sqrt(length)))."""
    fast = wma(close, length // 2)
    slow = wma(close, length)
    return wma(2.0 * fast - slow, int(np.sqrt(length)))


def vwma(close: FloatArray, volume: FloatArray, length: int = 20) -> FloatArray:
    """Volume-weighted moving average; NaN where the window traded nothing."""
    return _ratio(rolling_sum(close * volume, length), rolling_sum(volume, length))


def donchian_mid(high: FloatArray, low: FloatArray, length: int) -> FloatArray:
    return (highest(high, length) + lowest(low, length)) / 2.0


@dataclass(frozen=True)
class Ichimoku:
    """Ichimoku lines as of each bar, not displaced: the leading spans are the values computed on
    that bar (TradingView's technical ratings compare them with the same bar's close)."""

    conversion: FloatArray
    base: FloatArray
    span_a: FloatArray
    span_b: FloatArray


def ichimoku(
    high: FloatArray,
    low: FloatArray,
    conversion_length: int = 9,
    base_length: int = 26,
    span_b_length: int = 52,
) -> Ichimoku:
    conversion = donchian_mid(high, low, conversion_length)
    base = donchian_mid(high, low, base_length)
    return Ichimoku(
        conversion=conversion,
        base=base,
        span_a=(conversion + base) / 2.0,
        span_b=donchian_mid(high, low, span_b_length),
    )


def rsi(close: FloatArray, length: int = 14) -> FloatArray:
    """Wilder's RSI: 100 * RMA(gains) / (RMA(gains) + RMA(losses)); NaN while both are 0."""
    change = close - previous(close)
    gains = rma(np.maximum(change, 0.0), length)
    losses = rma(np.maximum(-change, 0.0), length)
    return 100.0 * _ratio(gains, gains + losses)


def stochastic_fast_k(
    source: FloatArray, high: FloatArray, low: FloatArray, length: int
) -> FloatArray:
    """Where `source` sits in the range of the last `length` bars, 0..100 (NaN on a zero range)."""
    lowest_low = lowest(low, length)
    return 100.0 * _ratio(source - lowest_low, highest(high, length) - lowest_low)


def stochastic(
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    k_length: int = 14,
    k_smoothing: int = 3,
    d_smoothing: int = 3,
) -> tuple[FloatArray, FloatArray]:
    """Slow stochastic (%K, %D): %K = SMA(fast %K, k_smoothing), %D = SMA(%K, d_smoothing)."""
    k = sma(stochastic_fast_k(close, high, low, k_length), k_smoothing)
    return k, sma(k, d_smoothing)


def cci(high: FloatArray, low: FloatArray, close: FloatArray, length: int = 20) -> FloatArray:
    """Lambert's CCI on the typical price (high + low + close) / 3, with the 0.015 constant."""
    typical = (high + low + close) / 3.0
    average = sma(typical, length)
    return _ratio(typical - average, 0.015 * _mean_deviation(typical, average, length))


# Values per batch of rows in `_mean_deviation` (float64: 1 MB, a buffer that stays in cache): its
# windows are `length` times the size of their input.
WINDOW_BATCH_VALUES = 1 << 17


def _mean_deviation(values: FloatArray, average: FloatArray, length: int) -> FloatArray:
    """Mean absolute deviation of each trailing window of `length` values from `average` on the
    window's last bar; NaN for the first length - 1 bars."""
    out = _warming_up(values.shape, length - 1)
    if length > values.shape[-1]:
        return out
    rows, averages, result = (np.atleast_2d(array) for array in (values, average, out))
    windows = sliding_window_view(rows, length, axis=-1)
    batch = max(1, WINDOW_BATCH_VALUES // windows[0].size)
    # C order, so that each window's mean adds contiguous values, as in a 1-D computation
    buffer = np.empty((min(batch, rows.shape[0]), *windows.shape[1:]))
    for first in range(0, rows.shape[0], batch):
        part = slice(first, first + batch)
        deviations = buffer[: windows[part].shape[0]]
        np.subtract(windows[part], averages[part, length - 1 :, np.newaxis], out=deviations)
        np.abs(deviations, out=deviations)
        result[part, length - 1 :] = deviations.mean(axis=-1)
    return out


def true_range(high: FloatArray, low: FloatArray, close: FloatArray) -> FloatArray:
    prior_close = previous(close)
    return np.maximum(high - low, np.maximum(np.abs(high - prior_close), np.abs(low - prior_close)))


@dataclass(frozen=True)
class DirectionalIndex:
    adx: FloatArray
    plus_di: FloatArray
    minus_di: FloatArray


def directional_index(
    high: FloatArray, low: FloatArray, close: FloatArray, di_length: int = 14, adx_length: int = 14
) -> DirectionalIndex:
    """Wilder's +DI, -DI and ADX. A bar's +DM is the up move when it beats the down move (and is
    positive), else 0; mirror for -DM. DX is 0 when +DI + -DI is 0 (no movement, no trend)."""
    up_move = high - previous(high)
    down_move = previous(low) - low
    plus_dm = np.where((up_move > down_move) & (up_move > 0), up_move, 0.0)
    minus_dm = np.where((down_move > up_move) & (down_move > 0), down_move, 0.0)
    plus_dm[..., 0] = minus_dm[..., 0] = np.nan  # no previous bar to move from
    smoothed_range = rma(true_range(high, low, close), di_length)
    plus_di = 100.0 * _ratio(rma(plus_dm, di_length), smoothed_range)
    minus_di = 100.0 * _ratio(rma(minus_dm, di_length), smoothed_range)
    di_sum = plus_di + minus_di
    dx = np.where(di_sum == 0, 0.0, 100.0 * _ratio(np.abs(plus_di - minus_di), di_sum))
    return DirectionalIndex(adx=rma(dx, adx_length), plus_di=plus_di, minus_di=minus_di)


def awesome_oscillator(
    high: FloatArray, low: FloatArray, fast: int = 5, slow: int = 34
) -> FloatArray:
    median_price = (high + low) / 2.0
    return sma(median_price, fast) - sma(median_price, slow)


def momentum(close: FloatArray, length: int = 10) -> FloatArray:
    return close - previous(close, length)


def macd(
    close: FloatArray, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[FloatArray, FloatArray]:
    """(MACD line, signal line): EMA(fast) - EMA(slow), each seeded on its own first `length`
    closes, and the EMA(signal) of that line seeded on its first `signal` values."""
    line = ema(close, fast) - ema(close, slow)
    return line, ema(line, signal)


def stoch_rsi(
    close: FloatArray,
    rsi_length: int = 14,
    stoch_length: int = 14,
    k_smoothing: int = 3,
    d_smoothing: int = 3,
) -> tuple[FloatArray, FloatArray]:
    """TradingView's Stoch RSI (K, D): the slow stochastic of RSI itself (its own high and low)."""
    return stochastic_of_rsi(rsi(close, rsi_length), stoch_length, k_smoothing, d_smoothing)


def stochastic_of_rsi(
    rsi_values: FloatArray,
    stoch_length: int = 14,
    k_smoothing: int = 3,
    d_smoothing: int = 3,
) -> tuple[FloatArray, FloatArray]:
    """`stoch_rsi` from RSI values already computed."""
    return stochastic(rsi_values, rsi_values, rsi_values, stoch_length, k_smoothing, d_smoothing)


def williams_r(
    high: FloatArray, low: FloatArray, close: FloatArray, length: int = 14
) -> FloatArray:
    """-100 * (highest high - close) / (highest high - lowest low), -100..0."""
    highest_high = highest(high, length)
    return -100.0 * _ratio(highest_high - close, highest_high - lowest(low, length))


def bull_bear_power(
    high: FloatArray, low: FloatArray, close: FloatArray, length: int = 13
) -> tuple[FloatArray, FloatArray]:
    """Elder's (bull power, bear power): high - EMA(close), low - EMA(close)."""
    average = ema(close, length)
    return high - average, low - average


def ultimate_oscillator(
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    short: int = 7,
    medium: int = 14,
    long: int = 28,
) -> FloatArray:
    """Williams' Ultimate Oscillator, 0..100: buying pressure over true range on three windows,
    weighted 4:2:1."""
    prior_close = previous(close)
    true_low = np.minimum(low, prior_close)
    buying_pressure = close - true_low
    ranges = np.maximum(high, prior_close) - true_low

    def average(length: int) -> FloatArray:
        return _ratio(rolling_sum(buying_pressure, length), rolling_sum(ranges, length))

    return 100.0 * (4.0 * average(short) + 2.0 * average(medium) + average(long)) / 7.0
