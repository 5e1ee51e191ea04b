"""TradingView's vote rules on small hand-built series (buy, sell and neutral for every indicator,
and NaN while an input warms up), the ratings built from the votes and the band boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from quantwarehouse import ratings as rt
from quantwarehouse.indicators import Ichimoku

NAN = np.nan
BUY, SELL, NEUTRAL = 1.0, -1.0, 0.0


def a(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def assert_votes(actual: np.ndarray, *expected: float) -> None:
    np.testing.assert_array_equal(actual, a(*expected))


def test_moving_average_votes_on_which_side_of_the_close_it_lies():
    close = a(10, 10, 10, 10)
    assert_votes(rt.ma_vote(a(9, 11, 10, NAN), close), BUY, SELL, NEUTRAL, NAN)


def cloud(conversion, base, span_a, span_b) -> Ichimoku:
    return Ichimoku(a(*conversion), a(*base), a(*span_a), a(*span_b))


def test_ichimoku_buy_needs_every_condition():
    # Bar 2: base 9 < close 10, conversion crosses above the close (8 < 9, then 11 > 10), span A
    # 12 above the close and above span B 11.
    close = a(9, 10)
    lines = {"conversion": (8, 11), "base": (9, 9), "span_a": (12, 12), "span_b": (11, 11)}
    assert_votes(rt.ichimoku_vote(cloud(**lines), close), NAN, BUY)
    broken = {
        "base": (11, 11),  # base line above the close
        "conversion": (9.5, 11),  # already above the close on the previous bar: no cross
        "span_a": (9.5, 9.5),  # span A below the close
        "span_b": (13, 13),  # span A below span B
    }
    for line, values in broken.items():
        assert_votes(rt.ichimoku_vote(cloud(**{**lines, line: values}), close), NAN, NEUTRAL)


def test_ichimoku_sell_is_the_mirror():
    close = a(11, 10)
    lines = {"conversion": (12, 9), "base": (11, 11), "span_a": (8, 8), "span_b": (9, 9)}
    assert_votes(rt.ichimoku_vote(cloud(**lines), close), NAN, SELL)
    assert_votes(rt.ichimoku_vote(cloud(**{**lines, "span_b": (7, 7)}), close), NAN, NEUTRAL)


def test_ichimoku_waits_for_span_b():
    lines = cloud((8, 11), (9, 9), (12, 12), (NAN, NAN))
    assert_votes(rt.ichimoku_vote(lines, a(9, 10)), NAN, NAN)


@pytest.mark.parametrize(
    ("vote", "lower", "upper"),
    [(rt.rsi_vote, 30, 70), (rt.cci_vote, -100, 100), (rt.williams_r_vote, -80, -20)],
)
def test_band_oscillators_buy_oversold_and_rising_sell_overbought_and_falling(vote, lower, upper):
    below, above, inside = lower - 5, upper + 5, (lower + upper) / 2
    assert_votes(vote(a(below - 2, below)), NAN, BUY)  # oversold and rising
    assert_votes(vote(a(below + 2, below)), NAN, NEUTRAL)  # oversold but falling
    assert_votes(vote(a(above + 2, above)), NAN, SELL)  # overbought and falling
    assert_votes(vote(a(above - 2, above)), NAN, NEUTRAL)  # overbought but rising
    assert_votes(vote(a(inside - 2, inside)), NAN, NEUTRAL)
    assert_votes(vote(a(lower - 1, lower)), NAN, NEUTRAL)  # on the line is not below it
    assert_votes(vote(a(NAN, below)), NAN, NAN)  # the previous value is still warming up


def test_stochastic_crosses_in_the_extreme_zones():
    assert_votes(rt.stochastic_vote(a(10, 15), a(12, 14)), NAN, BUY)  # %K crosses above %D < 20
    assert_votes(rt.stochastic_vote(a(90, 85), a(88, 86)), NAN, SELL)  # crosses below, > 80
    assert_votes(rt.stochastic_vote(a(40, 55), a(50, 50)), NAN, NEUTRAL)  # a cross mid-range
    assert_votes(rt.stochastic_vote(a(10, 21), a(12, 20.5)), NAN, NEUTRAL)  # %K not below 20
    assert_votes(rt.stochastic_vote(a(13, 15), a(12, 14)), NAN, NEUTRAL)  # above, no cross
    assert_votes(rt.stochastic_vote(a(10, 15), a(NAN, 14)), NAN, NAN)


def test_stoch_rsi_buys_only_in_a_downtrend_and_sells_only_in_an_uptrend():
    k_up, d_up = a(10, 15), a(12, 14)  # an oversold cross up
    k_down, d_down = a(90, 85), a(88, 86)  # an overbought cross down
    trend = a(100, 100)
    downtrend, uptrend = a(95, 95), a(105, 105)
    assert_votes(rt.stoch_rsi_vote(k_up, d_up, downtrend, trend), NAN, BUY)
    assert_votes(rt.stoch_rsi_vote(k_up, d_up, uptrend, trend), NAN, NEUTRAL)
    assert_votes(rt.stoch_rsi_vote(k_down, d_down, uptrend, trend), NAN, SELL)
    assert_votes(rt.stoch_rsi_vote(k_down, d_down, downtrend, trend), NAN, NEUTRAL)
    assert_votes(rt.stoch_rsi_vote(k_up, d_up, downtrend, a(NAN, NAN)), NAN, NAN)


def test_adx_votes_on_a_di_cross_when_trending():
    plus, minus = a(10, 20), a(15, 15)  # +DI crosses above -DI
    assert_votes(rt.adx_vote(a(25, 25), plus, minus), NAN, BUY)
    assert_votes(rt.adx_vote(a(25, 25), minus, plus), NAN, SELL)
    assert_votes(rt.adx_vote(a(25, 15), plus, minus), NAN, NEUTRAL)  # ADX 15: no trend
    assert_votes(rt.adx_vote(a(25, 25), a(16, 20), minus), NAN, NEUTRAL)  # no cross
    assert_votes(rt.adx_vote(a(25, NAN), plus, minus), NAN, NAN)


def test_awesome_oscillator_saucers_and_zero_crosses():
    assert_votes(rt.awesome_oscillator_vote(a(-1, -0.5, 1)), NAN, NAN, BUY)  # crosses up
    assert_votes(rt.awesome_oscillator_vote(a(3, 2, 2.5)), NAN, NAN, BUY)  # saucer above 0
    assert_votes(rt.awesome_oscillator_vote(a(1, 2, 3)), NAN, NAN, NEUTRAL)  # rising, no dip
    assert_votes(rt.awesome_oscillator_vote(a(-1, 0.5, -1)), NAN, NAN, SELL)  # crosses down
    assert_votes(rt.awesome_oscillator_vote(a(-3, -2, -2.5)), NAN, NAN, SELL)  # saucer below 0
    assert_votes(rt.awesome_oscillator_vote(a(3, 2, 1.5)), NAN, NAN, NEUTRAL)  # falling above 0
    assert_votes(rt.awesome_oscillator_vote(a(-1, 1, 0.5)), NAN, NAN, NEUTRAL)  # falling after


def test_momentum_votes_with_its_direction():
    assert_votes(rt.momentum_vote(a(NAN, 1, 2, 1, 1)), NAN, NAN, BUY, SELL, NEUTRAL)


def test_macd_votes_on_its_side_of_the_signal():
    assert_votes(rt.macd_vote(a(2, 1, 1, 1), a(1, 2, 1, NAN)), BUY, SELL, NEUTRAL, NAN)


def test_bull_bear_power_buys_a_dip_in_an_uptrend_and_sells_a_rally_in_a_downtrend():
    trend = a(100, 100)
    uptrend, downtrend = a(105, 105), a(95, 95)
    bull, bear = a(3, 2), a(-2, -1)  # bull power falling above 0, bear power rising below 0
    assert_votes(rt.bull_bear_power_vote(bull, bear, uptrend, trend), NAN, BUY)
    assert_votes(rt.bull_bear_power_vote(bull, bear, downtrend, trend), NAN, SELL)
    rising_bull, falling_bear = a(2, 3), a(-1, -2)
    assert_votes(rt.bull_bear_power_vote(bull, falling_bear, uptrend, trend), NAN, NEUTRAL)
    assert_votes(rt.bull_bear_power_vote(rising_bull, bear, downtrend, trend), NAN, NEUTRAL)
    assert_votes(rt.bull_bear_power_vote(bull, bear, a(100, 100), trend), NAN, NEUTRAL)
    assert_votes(rt.bull_bear_power_vote(bull, bear, uptrend, a(NAN, NAN)), NAN, NAN)


def test_ultimate_oscillator_votes_on_its_bands():
    assert_votes(
        rt.ultimate_oscillator_vote(a(75, 70, 50, 30, 25, NAN)),
        BUY,
        NEUTRAL,
        NEUTRAL,
        NEUTRAL,
        SELL,
        NAN,
    )


# -- ratings --------------------------------------------------------------------------------------


def test_votes_still_warming_up_are_left_out_not_counted_as_neutral():
    votes = [a(1, NAN, NAN), a(1, -1, NAN), a(NAN, 0, NAN), a(-1, NAN, NAN)]
    counts = rt.tally(votes)
    np.testing.assert_array_equal(counts.buy, [2, 0, 0])
    np.testing.assert_array_equal(counts.sell, [1, 1, 0])
    np.testing.assert_array_equal(counts.neutral, [0, 1, 0])
    np.testing.assert_array_equal(counts.used, [3, 2, 0])
    np.testing.assert_array_equal(counts.rating, [1 / 3, -0.5, NAN])


def tally_of(buy: int, sell: int, neutral: int) -> rt.Tally:
    return rt.Tally(np.array([buy]), np.array([sell]), np.array([neutral]))


NO_VOTES = (0, 0, 0)


def test_rating_all_is_the_mean_of_the_group_ratings_that_exist():
    assert rt.rating_all(tally_of(9, 3, 3), tally_of(2, 6, 3))[0] == pytest.approx(
        (6 / 15 - 4 / 11) / 2
    )
    assert rt.rating_all(tally_of(2, 0, 0), tally_of(*NO_VOTES))[0] == 1.0  # MA only
    assert rt.rating_all(tally_of(*NO_VOTES), tally_of(0, 1, 3))[0] == -0.25  # oscillators only
    assert np.isnan(rt.rating_all(tally_of(*NO_VOTES), tally_of(*NO_VOTES))[0])
    assert rt.rating_all_label(tally_of(*NO_VOTES), tally_of(*NO_VOTES))[0] is None


@pytest.mark.parametrize(
    ("ma", "osc", "rating", "label"),
    [
        ((0, 15, 0), (0, 11, 0), -1.0, "strong_sell"),
        ((0, 12, 3), (0, 3, 8), -(0.8 + 3 / 11) / 2, "strong_sell"),  # just below -0.5
        ((0, 12, 3), (0, 2, 9), -(0.8 + 2 / 11) / 2, "sell"),  # just above -0.5
        ((0, 15, 0), NO_VOTES, -1.0, "strong_sell"),
        ((0, 5, 5), NO_VOTES, -0.5, "sell"),  # -0.5 itself
        ((0, 2, 13), NO_VOTES, -2 / 15, "sell"),
        ((0, 3, 12), (0, 0, 11), -0.1, "neutral"),  # -0.1 itself
        ((0, 0, 15), (0, 0, 11), 0.0, "neutral"),
        ((3, 0, 12), (0, 0, 11), 0.1, "neutral"),  # 0.1 itself
        # 0.1 exactly, although (0.8 + -0.6) / 2 is 0.10000000000000003 in floating point
        ((12, 0, 3), (2, 8, 0), 0.1, "neutral"),
        ((2, 0, 13), NO_VOTES, 2 / 15, "buy"),
        ((5, 0, 5), NO_VOTES, 0.5, "buy"),  # 0.5 itself
        ((15, 0, 0), (0, 0, 11), 0.5, "buy"),
        ((15, 0, 0), (1, 0, 10), (1 + 1 / 11) / 2, "strong_buy"),
        ((15, 0, 0), (11, 0, 0), 1.0, "strong_buy"),
    ],
)
def test_bands_and_their_boundaries(ma, osc, rating, label):
    ma_tally, osc_tally = tally_of(*ma), tally_of(*osc)
    assert rt.rating_all(ma_tally, osc_tally)[0] == pytest.approx(rating, rel=1e-15)
    assert rt.rating_all_label(ma_tally, osc_tally)[0] == label


def test_a_rating_of_exactly_one_tenth_is_stored_as_the_float_one_tenth():
    # 0.8 and -0.6 as in the boundary case above: the stored value must compare equal to 0.1 so
    # that filtering `rating_all > 0.1` agrees with the label.
    assert rt.rating_all(tally_of(12, 0, 3), tally_of(2, 8, 0))[0] == 0.1


# -- blocks of symbols: 2-D arrays (symbols, bars), each symbol's bars from column 0 --------------

VOTES = {
    "ma": lambda x: rt.ma_vote(x[0], x[1]),
    "ichimoku": lambda x: rt.ichimoku_vote(Ichimoku(x[0], x[1], x[2], x[3]), x[4]),
    "rsi": lambda x: rt.rsi_vote(x[0]),
    "cci": lambda x: rt.cci_vote(3 * x[1] - 180),
    "williams_r": lambda x: rt.williams_r_vote(-x[2]),
    "stochastic": lambda x: rt.stochastic_vote(x[0], x[1]),
    "stoch_rsi": lambda x: rt.stoch_rsi_vote(x[0], x[1], x[2], x[3]),
    "adx": lambda x: rt.adx_vote(x[0], x[1], x[2]),
    "awesome_oscillator": lambda x: rt.awesome_oscillator_vote(x[3] - 60),
    "momentum": lambda x: rt.momentum_vote(x[4]),
    "macd": lambda x: rt.macd_vote(x[0], x[4]),
    "bull_bear_power": lambda x: rt.bull_bear_power_vote(x[0] - 60, x[1] - 60, x[2], x[3]),
    "ultimate_oscillator": lambda x: rt.ultimate_oscillator_vote(x[2]),
}


def test_votes_tallies_and_ratings_of_a_block_are_those_of_each_symbol_alone():
    # Series on a coarse grid of 0..120 (ties, crosses and every band), warming up for a random
    # number of bars, of lengths from 1 bar to the whole block.
    rng = np.random.default_rng(11)
    lengths = [400, 1, 2, 5, 33, 400, 17]

    def warming_up(length: int) -> np.ndarray:
        warm_up = rng.integers(0, min(length, 4))
        return np.r_[np.full(warm_up, NAN), rng.integers(0, 13, length - warm_up) * 10.0]

    series = [[warming_up(length) for length in lengths] for _ in range(5)]
    block = [np.full((len(lengths), max(lengths)), NAN) for _ in series]
    for rows, inputs in zip(block, series, strict=True):
        for row, values in zip(rows, inputs, strict=True):
            row[: len(values)] = values

    def outputs(x: list[np.ndarray]) -> dict[str, np.ndarray]:
        votes = {name: vote(x) for name, vote in VOTES.items()}
        first, second = rt.tally(list(votes.values())[:6]), rt.tally(list(votes.values())[6:])
        return {
            **votes,
            **{f"first {kind}": getattr(first, kind) for kind in ("buy", "sell", "neutral")},
            **{f"second {kind}": getattr(second, kind) for kind in ("buy", "sell", "neutral")},
            "rating": first.rating,
            "rating_all": rt.rating_all(first, second),
            "rating_all_band": rt.rating_all_band(first, second),
            "rating_all_label": rt.rating_all_label(first, second),
        }

    together = outputs(block)
    for name in VOTES:  # the series exercise every vote, not only its warm-up
        assert {BUY, SELL, NEUTRAL} <= set(together[name][~np.isnan(together[name])]), name
    for row, length in enumerate(lengths):
        for name, alone in outputs([inputs[row] for inputs in series]).items():
            assert together[name].shape == block[0].shape, name
            np.testing.assert_array_equal(together[name][row, :length], alone, err_msg=name)
