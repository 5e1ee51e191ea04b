"""Technical indicators of one symbol's daily bars: numpy arrays in, arrays of the same length out.

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


def _sliding(values: FloatArray, length: int, combine: np.ufunc) -> FloatArray:
    """`combine` (np.add, np.maximum or np.minimum) over each trailing window of `length` values,
    NaN for the first length - 1 bars and for any window holding a NaN.

    O(n) whatever the length (van Herk / Gil-Werman): within blocks of `length` values, a window
    is the suffix of one block combined with the prefix of the next, and each partial result
    combines at most `length` values, so sums stay as accurate as a direct sum of the window.
    """
    out = np.full(values.shape, np.nan)
    count = values.size
    if length > count:
        return out
    blocks = -(-count // length)
    padded = np.full(blocks * length, np.nan)
    padded[:count] = values
    grid = padded.reshape(blocks, length)
    prefix = combine.accumulate(grid, axis=1).ravel()
    suffix = combine.accumulate(grid[:, ::-1], axis=1)[:, ::-1].ravel()
    # The window starting at position s ends at s + length - 1, in the next block unless s
    # starts a block, where the window is that block alone (its suffix from s).
    windows = count - length + 1
    result = combine(suffix[:windows], prefix[length - 1 : count])
    result[::length] = suffix[:windows:length]
    out[length - 1 :] = result
    return out


def rolling_sum(values: FloatArray, length: int) -> FloatArray:
    return _sliding(values, length, np.add)


def _ratio(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    """numerator / denominator, NaN where the denominator is 0 (undefined, not infinite)."""
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def previous(values: FloatArray, periods: int = 1) -> FloatArray:
    """The value `periods` bars earlier (NaN for the first bars)."""
    out = np.full(values.shape, np.nan)
    out[periods:] = values[: max(values.size - periods, 0)]
    return out


def _exponential(values: FloatArray, length: int, alpha: float) -> FloatArray:
    """y[i] = alpha * x[i] + (1 - alpha) * y[i-1], seeded with the mean of the first `length` x.

    Leading NaN (an input still warming up) is skipped; NaN after the first value is an error,
    because the recurrence would carry it to every later bar.
    """
    out = np.full(values.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(values))
    if valid.size == 0:
        return out
    start = valid[0]
    if valid.size != values.size - start:
        gap = start + int(np.flatnonzero(np.isnan(values[start:]))[0])
        raise ValueError(f"exponential average input has NaN at position {gap} after its start")
    seed_at = start + length - 1
    if seed_at >= values.size:
        return out
    out[seed_at] = values[start : seed_at + 1].mean()
    tail = values[seed_at + 1 :]
    if tail.size:
        initial_state = [(1.0 - alpha) * out[seed_at]]
        out[seed_at + 1 :] = lfilter([alpha], [1.0, alpha - 1.0], tail, zi=initial_state)[0]
    return out


def sma(values: FloatArray, length: int) -> FloatArray:
    return rolling_sum(values, length) / length


def ema(values: FloatArray, length: int) -> FloatArray:
    return _exponential(values, length, 2.0 / (length + 1))


def rma(values: FloatArray, length: int) -> FloatArray:
    """Wilder's smoothing."""
    return _exponential(values, length, 1.0 / length)


def wma(values: FloatArray, length: int) -> FloatArray:
    """Linearly weighted: the newest value has weight `length`, the oldest weight 1."""
    out = np.full(values.shape, np.nan)
    if length <= values.size:
        weights = np.arange(1, length + 1, dtype=np.float64)
        out[length - 1 :] = sliding_window_view(values, length) @ weights / weights.sum()
    return out


def highest(values: FloatArray, length: int) -> FloatArray:
    return _sliding(values, length, np.maximum)


def lowest(values: FloatArray, length: int) -> FloatArray:
    return _sliding(values, length, np.minimum)


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
    mean_deviation = np.full(typical.shape, np.nan)
    if length <= typical.size:
        windows = sliding_window_view(typical, length)
        deviations = np.abs(windows - average[length - 1 :, None])
        mean_deviation[length - 1 :] = deviations.mean(axis=1)
    return _ratio(typical - average, 0.015 * mean_deviation)


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
    plus_dm[0] = minus_dm[0] = np.nan  # no previous bar to move from
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
    rsi_values = rsi(close, rsi_length)
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
