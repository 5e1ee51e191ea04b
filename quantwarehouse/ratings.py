"""TradingView's technical-rating votes and the ratings built from them (DOMAIN.md).

A vote array holds +1 (buy), -1 (sell), 0 (neutral) or NaN where an input is still warming up
(or undefined) on that bar; a NaN vote is left out of the mean, not counted as 0. "Rising" and
"falling" compare with the previous bar; "A crosses above B" means A < B on the previous bar and
A > B on this one.

Shapes as in `indicators`: one symbol's bars (1-D) or a block of symbols (2-D, symbols x bars),
along the last axis; votes, tallies and ratings have the shape of their inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from quantwarehouse.indicators import FloatArray, Ichimoku, previous

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

RATING_LABELS = ("strong_sell", "sell", "neutral", "buy", "strong_buy")


def _vote(buy: BoolArray, sell: BoolArray, inputs: Sequence[FloatArray]) -> FloatArray:
    """+1 where `buy`, else -1 where `sell`, else 0; NaN where any of `inputs` is NaN."""
    # buy - (sell and not buy) on the booleans' bytes: far cheaper than on floats
    vote = (buy.view(np.int8) - (sell & ~buy).view(np.int8)).astype(np.float64)
    for values in inputs:
        np.copyto(vote, np.nan, where=np.isnan(values))
    return vote


def _crosses_above(a: FloatArray, b: FloatArray) -> BoolArray:
    return (previous(a) < previous(b)) & (a > b)


def _crosses_below(a: FloatArray, b: FloatArray) -> BoolArray:
    return _crosses_above(b, a)


def ma_vote(average: FloatArray, close: FloatArray) -> FloatArray:
    """Any moving average: buy when it is below the close, sell when above."""
    return _vote(average < close, average > close, [average, close])


def ichimoku_vote(lines: Ichimoku, close: FloatArray) -> FloatArray:
    """Buy: base line < close, conversion line crosses above the close, span A > close and span A
    > span B. Sell: the mirror (base > close, conversion crosses below, span A < close and < B)."""
    buy = (
        (lines.base < close)
        & _crosses_above(lines.conversion, close)
        & (lines.span_a > close)
        & (lines.span_a > lines.span_b)
    )
    sell = (
        (lines.base > close)
        & _crosses_below(lines.conversion, close)
        & (lines.span_a < close)
        & (lines.span_a < lines.span_b)
    )
    inputs = [lines.base, lines.conversion, lines.span_a, lines.span_b, close]
    return _vote(buy, sell, [*inputs, previous(lines.conversion), previous(close)])


def _band_turn_vote(values: FloatArray, lower: float, upper: float) -> FloatArray:
    """Buy below `lower` and rising, sell above `upper` and falling (RSI, CCI, Williams %R)."""
    prior = previous(values)
    return _vote(
        (values < lower) & (values > prior), (values > upper) & (values < prior), [values, prior]
    )


def rsi_vote(rsi: FloatArray) -> FloatArray:
    return _band_turn_vote(rsi, 30.0, 70.0)


def cci_vote(cci: FloatArray) -> FloatArray:
    return _band_turn_vote(cci, -100.0, 100.0)


def williams_r_vote(williams_r: FloatArray) -> FloatArray:
    return _band_turn_vote(williams_r, -80.0, -20.0)


def _stochastic_cross(
    k: FloatArray, d: FloatArray
) -> tuple[BoolArray, BoolArray, list[FloatArray]]:
    """(oversold cross up, overbought cross down, inputs) for a %K / %D pair."""
    buy = (k < 20) & (d < 20) & _crosses_above(k, d)
    sell = (k > 80) & (d > 80) & _crosses_below(k, d)
    return buy, sell, [k, d, previous(k), previous(d)]


def stochastic_vote(k: FloatArray, d: FloatArray) -> FloatArray:
    """Buy: %K and %D < 20 and %K crosses above %D. Sell: both > 80 and %K crosses below %D."""
    buy, sell, inputs = _stochastic_cross(k, d)
    return _vote(buy, sell, inputs)


def stoch_rsi_vote(
    k: FloatArray, d: FloatArray, close: FloatArray, trend_average: FloatArray
) -> FloatArray:
    """The stochastic rule on Stoch RSI, buying only in a downtrend (close < trend average) and
    selling only in an uptrend (close > trend average)."""
    buy, sell, inputs = _stochastic_cross(k, d)
    downtrend = close < trend_average
    uptrend = close > trend_average
    return _vote(buy & downtrend, sell & uptrend, [*inputs, close, trend_average])


def adx_vote(adx: FloatArray, plus_di: FloatArray, minus_di: FloatArray) -> FloatArray:
    """Buy: ADX > 20 and +DI crosses above -DI. Sell: ADX > 20 and +DI crosses below -DI."""
    trending = adx > 20
    buy = trending & _crosses_above(plus_di, minus_di)
    sell = trending & _crosses_below(plus_di, minus_di)
    return _vote(buy, sell, [adx, plus_di, minus_di, previous(plus_di), previous(minus_di)])


def awesome_oscillator_vote(ao: FloatArray) -> FloatArray:
    """Buy on a saucer above zero (two bars above 0, the middle one a dip) or a cross up through
    zero; sell on the mirror."""
    prior = previous(ao)
    before = previous(ao, 2)
    zero = np.zeros_like(ao)
    buy_saucer = (ao > 0) & (prior > 0) & (ao > prior) & (before > prior)
    sell_saucer = (ao < 0) & (prior < 0) & (ao < prior) & (before < prior)
    buy = buy_saucer | _crosses_above(ao, zero)
    sell = sell_saucer | _crosses_below(ao, zero)
    return _vote(buy, sell, [ao, prior, before])


def momentum_vote(momentum: FloatArray) -> FloatArray:
    """Buy when momentum rises, sell when it falls."""
    prior = previous(momentum)
    return _vote(momentum > prior, momentum < prior, [momentum, prior])


def macd_vote(macd: FloatArray, signal: FloatArray) -> FloatArray:
    """Buy when the MACD line is above its signal line, sell when below."""
    return _vote(macd > signal, macd < signal, [macd, signal])


def bull_bear_power_vote(
    bull_power: FloatArray, bear_power: FloatArray, close: FloatArray, trend_average: FloatArray
) -> FloatArray:
    """Buy: uptrend, bear power < 0 and rising. Sell: downtrend, bull power > 0 and falling."""
    prior_bear = previous(bear_power)
    prior_bull = previous(bull_power)
    buy = (close > trend_average) & (bear_power < 0) & (bear_power > prior_bear)
    sell = (close < trend_average) & (bull_power > 0) & (bull_power < prior_bull)
    inputs = [bull_power, bear_power, prior_bull, prior_bear, close, trend_average]
    return _vote(buy, sell, inputs)


def ultimate_oscillator_vote(uo: FloatArray) -> FloatArray:
    """Buy above 70, sell below 30."""
    return _vote(uo > 70, uo < 30, [uo])


@dataclass(frozen=True)
class Tally:
    """Per bar, how many of a group's votes were buy, sell and neutral (NaN votes not counted)."""

    buy: IntArray
    sell: IntArray
    neutral: IntArray

    @cached_property
    def used(self) -> IntArray:
        return self.buy + self.sell + self.neutral

    @cached_property
    def net(self) -> IntArray:
        return self.buy - self.sell

    @property
    def rating(self) -> FloatArray:
        """Mean vote in -1..1; NaN where no vote was valid."""
        return _quotient(self.net, self.used)


def tally(votes: Sequence[FloatArray]) -> Tally:
    """The counts of a group of votes of one shape, bar by bar."""
    # Vote after vote into counters of the smallest type that holds them: cheaper than stacking
    # the votes into one array.
    counter = np.min_scalar_type(len(votes))
    counts = {value: np.zeros(votes[0].shape, counter) for value in (1.0, -1.0, 0.0)}
    for vote in votes:
        for value, count in counts.items():
            np.add(count, vote == value, out=count)
    buy, sell, neutral = (count.astype(np.int64) for count in counts.values())
    return Tally(buy=buy, sell=sell, neutral=neutral)


def _quotient(numerator: IntArray, denominator: IntArray) -> FloatArray:
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _combined_fraction(ma: Tally, osc: Tally) -> tuple[IntArray, IntArray]:
    """rating_all as an exact fraction (numerator, denominator): the mean of the group ratings
    that have at least one valid vote (denominator 0 where neither has)."""
    both = (ma.used > 0) & (osc.used > 0)
    numerator = np.where(
        both, ma.net * osc.used + osc.net * ma.used, np.where(ma.used > 0, ma.net, osc.net)
    )
    denominator = np.where(both, 2 * ma.used * osc.used, ma.used + osc.used)
    return numerator, denominator


def rating_all(ma: Tally, osc: Tally) -> FloatArray:
    """(rating_ma + rating_osc) / 2; a group with no valid vote is left out; NaN if both are."""
    return _quotient(*_combined_fraction(ma, osc))


def rating_all_band(ma: Tally, osc: Tally) -> IntArray:
    """The band of rating_all as an index into RATING_LABELS: < -0.5 strong_sell, [-0.5, -0.1)
    sell, [-0.1, 0.1] neutral, (0.1, 0.5] buy, > 0.5 strong_buy; -1 where there is no rating.

    Compared on the exact fraction so that a rating of exactly 0.1 is neutral whatever the
    rounding of its float value.
    """
    numerator, denominator = _combined_fraction(ma, osc)
    band = np.select(
        [
            2 * numerator < -denominator,
            10 * numerator < -denominator,
            10 * numerator <= denominator,
            2 * numerator <= denominator,
        ],
        [0, 1, 2, 3],
        default=4,
    )
    return np.where(denominator > 0, band, -1)


def band_labels(band: IntArray) -> npt.NDArray[np.object_]:
    """The RATING_LABELS of bands (`rating_all_band`), None where there is no rating (-1)."""
    return np.array([*RATING_LABELS, None], dtype=object)[band]


def rating_all_label(ma: Tally, osc: Tally) -> npt.NDArray[np.object_]:
    """The label of rating_all's band (`rating_all_band`); None where there is no rating."""
    return band_labels(rating_all_band(ma, osc))
