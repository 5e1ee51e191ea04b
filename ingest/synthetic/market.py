"""The market model: a daily panel of log closes for all symbols, and intraday paths under it.

Daily log return of symbol i on day t:

    r = regime term + vol_i * (b_i * m_t + c_i * s_{sector(i), t} + d_i * e_{i, t})

where m (market), s (sectors) and e (the symbol's own risk) are unit-variance EGARCH(1,1) series
driven by Student-t innovations (fat tails, volatility clustering, a leverage effect) and
d_i = sqrt(1 - b_i^2 - c_i^2). Each symbol moves through regimes (a Markov chain with mean length
`regime_days`): trending up or down (a drift plus momentum), or mean-reverting (an
Ornstein-Uhlenbeck pull back to the level where the regime began). A weak pull towards the first
price keeps long histories within a few orders of magnitude.

Sub-daily bars bridge each day's move: intraday EGARCH noise with a time-of-day profile, centred
so that a day's bars add up exactly to the daily return.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from ingest.intervals import INTERVAL_MICROS, MICROS_PER_DAY
from ingest.synthetic.presets import ModelParams, Preset
from ingest.synthetic.rng import Stream, mean_abs_standardized_t, standardized_t, stream_rng
from ingest.synthetic.universe import Universe, draw_universe

MEAN_REVERTING, TRENDING_UP, TRENDING_DOWN = 0, 1, 2
LONG_RUN_PULL = 0.002  # per day towards the first price: a half-life of about a year
MAX_LOG_VARIANCE = 2.0  # volatility stays within e^-1 .. e^1 of its usual level
INTRADAY_PEAK_HOUR = 15.0  # UTC hour of the busiest trading (US and Europe both open)
INTRADAY_SWING = 0.35
# ar1_filter's blocks keep beta ** -block below e^30: finite, and exact to rounding.
AR1_BLOCK_LOG_RANGE = 30.0
AR1_MAX_BLOCK = 1024


@dataclass(frozen=True)
class Panel:
    """Daily closes of every symbol of a preset over its whole calendar, with their drivers."""

    preset: Preset
    universe: Universe
    log_close: np.ndarray  # (days, symbols)
    log_previous_close: np.ndarray  # the day before's close (for the first day, log_price0)
    sigma: np.ndarray  # conditional daily volatility
    shock_z: np.ndarray  # standardized daily shock
    regime: np.ndarray  # MEAN_REVERTING, TRENDING_UP or TRENDING_DOWN


def ar1_filter(x: np.ndarray, beta: float) -> np.ndarray:
    """y_t = beta * y_{t-1} + x_t along axis 0, from y_{-1} = 0.

    Vectorized in closed form over blocks: within a block that starts after `carry`,
    y_j = beta^j * (beta * carry + sum_{s <= j} x_s * beta^-s).
    """
    if beta == 0.0:
        return np.array(x, dtype=np.float64)
    block = int(min(AR1_MAX_BLOCK, max(1.0, AR1_BLOCK_LOG_RANGE / -math.log(abs(beta)))))
    powers = (beta ** np.arange(block, dtype=np.float64)).reshape(-1, *[1] * (x.ndim - 1))
    out = np.empty(x.shape, dtype=np.float64)
    carry = np.zeros(x.shape[1:])
    for first in range(0, x.shape[0], block):
        chunk = x[first : first + block]
        weights = powers[: chunk.shape[0]]
        out[first : first + block] = weights * (beta * carry + np.cumsum(chunk / weights, axis=0))
        carry = out[first + chunk.shape[0] - 1]
    return out


def egarch_volatility(z: np.ndarray, model: ModelParams) -> np.ndarray:
    """EGARCH(1,1) volatility driven by innovations z (time on axis 0), about 1 on average.

    log s2_t = beta * log s2_{t-1} + alpha * (|z_{t-1}| - E|z|) + gamma * z_{t-1}: a linear filter
    of the (independent) innovations, so it runs vectorized instead of step by step.
    """
    mean_abs = mean_abs_standardized_t(model.tail_dof)
    news = model.vol_shock * (np.abs(z) - mean_abs) + model.leverage * z
    beta = model.vol_persistence
    # news moves the next bar's variance, not its own
    log_variance = np.concatenate([np.zeros((1, *z.shape[1:])), ar1_filter(news, beta)[:-1]])
    spread = (model.vol_shock**2 * (1.0 - mean_abs**2) + model.leverage**2) / (1.0 - beta**2)
    clipped = np.clip(log_variance, -MAX_LOG_VARIANCE, MAX_LOG_VARIANCE)
    return np.exp(0.5 * (clipped - 0.5 * spread))


def _unit_series(
    rng: np.random.Generator, model: ModelParams, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Shocks of unit average variance, and their conditional volatility."""
    z = standardized_t(rng, model.tail_dof, shape)
    volatility = egarch_volatility(z, model)
    return volatility * z, volatility


def _regimes_entered(draws: np.ndarray, trend_share: float) -> np.ndarray:
    return np.where(
        draws < trend_share / 2,
        TRENDING_UP,
        np.where(draws < trend_share, TRENDING_DOWN, MEAN_REVERTING),
    ).astype(np.int8)


def _regime_paths(switching: np.ndarray, entered: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Each day's regime of every symbol: the one entered at its last switch, else `first`
    (regimes do not depend on the prices, so they need no loop over days)."""
    days = np.arange(switching.shape[0])[:, None]
    last_switch = np.maximum.accumulate(np.where(switching, days, -1), axis=0)
    columns = np.arange(switching.shape[1])
    regimes = np.where(last_switch >= 0, entered[np.maximum(last_switch, 0), columns], first)
    return regimes.astype(np.int8)


def _walk_regimes(
    shock: np.ndarray, universe: Universe, model: ModelParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Log closes and regimes: a loop over days, vectorized across symbols."""
    days, symbols = shock.shape
    switch_draws = rng.random((days, symbols))
    kind_draws = rng.random((days, symbols))
    switching = switch_draws < 1.0 / model.regime_days
    regimes = _regime_paths(
        switching,
        _regimes_entered(kind_draws, model.trend_share),
        _regimes_entered(rng.random(symbols), model.trend_share),
    )
    direction = (regimes == TRENDING_UP).astype(np.float64) - (regimes == TRENDING_DOWN)
    trend_base = direction * (model.trend_drift * universe.daily_vol)
    reverting = regimes == MEAN_REVERTING
    home = universe.log_price0
    level, anchor, previous = home.copy(), home.copy(), np.zeros(symbols)
    log_close = np.empty_like(shock)
    for day in range(days):
        anchor = np.where(switching[day], level, anchor)
        trend = trend_base[day] + model.momentum * previous
        reversion = -model.reversion * (level - anchor)
        drift = np.where(reverting[day], reversion, trend)
        previous = drift - LONG_RUN_PULL * (level - home) + shock[day]
        level = level + previous
        log_close[day] = level
    return log_close, regimes


def simulate_panel(preset: Preset, seed: int) -> Panel:
    """The daily panel of a preset: every symbol over the whole calendar, listed or not."""
    universe = draw_universe(preset, seed)
    model, shape = preset.model, (preset.days, preset.symbols)
    market, market_vol = _unit_series(stream_rng(seed, Stream.MARKET), model, (preset.days,))
    sectors, sector_vol = _unit_series(
        stream_rng(seed, Stream.SECTORS), model, (preset.days, model.sectors)
    )
    own, own_vol = _unit_series(stream_rng(seed, Stream.IDIOSYNCRATIC), model, shape)
    b, c = universe.market_loading, universe.sector_loading
    d = np.sqrt(1.0 - b**2 - c**2)
    unit_shock = b * market[:, None] + c * sectors[:, universe.sector] + d * own
    unit_vol = np.sqrt(
        (b * market_vol[:, None]) ** 2
        + (c * sector_vol[:, universe.sector]) ** 2
        + (d * own_vol) ** 2
    )
    log_close, regime = _walk_regimes(
        universe.daily_vol * unit_shock, universe, model, stream_rng(seed, Stream.REGIMES)
    )
    return Panel(
        preset=preset,
        universe=universe,
        log_close=log_close,
        log_previous_close=np.vstack([universe.log_price0, log_close[:-1]]),
        sigma=universe.daily_vol * unit_vol,
        shock_z=unit_shock / unit_vol,
        regime=regime,
    )


@dataclass(frozen=True)
class SymbolPath:
    """One symbol's bars, before prices are rounded and faults injected."""

    open_us: np.ndarray  # bar open times, epoch microseconds
    log_open: np.ndarray  # the previous bar's log close
    log_close: np.ndarray
    sigma: np.ndarray  # conditional volatility of the bar's return
    z: np.ndarray  # the bar's standardized shock
    notional: np.ndarray  # expected traded value of the bar, in the quote asset

    def between(self, first: int, stop: int) -> SymbolPath:
        return SymbolPath(*(getattr(self, f.name)[first:stop] for f in fields(self)))


def _open_times(preset: Preset) -> np.ndarray:
    first_day = np.datetime64(preset.start, "D").astype(np.int64)
    bars = np.arange(preset.days * preset.bars_per_day, dtype=np.int64)
    return first_day * MICROS_PER_DAY + bars * INTERVAL_MICROS[preset.interval]


def _time_of_day_profile(bars_per_day: int) -> np.ndarray:
    """Relative volatility by time of day (busiest mid-afternoon UTC), mean square 1."""
    hours = (np.arange(bars_per_day) + 0.5) * 24.0 / bars_per_day
    profile = 1.0 + INTRADAY_SWING * np.cos(2.0 * math.pi * (hours - INTRADAY_PEAK_HOUR) / 24.0)
    return profile / np.sqrt(np.mean(profile**2))


def _daily(panel: Panel, index: int) -> SymbolPath:
    return SymbolPath(
        open_us=_open_times(panel.preset),
        log_open=panel.log_previous_close[:, index],
        log_close=panel.log_close[:, index],
        sigma=panel.sigma[:, index],
        z=panel.shock_z[:, index],
        notional=np.full(panel.preset.days, panel.universe.daily_notional[index]),
    )


def _intraday(panel: Panel, index: int, seed: int) -> SymbolPath:
    """Bars of every day of the calendar whose returns add up to the daily returns."""
    preset = panel.preset
    days, per_day = preset.days, preset.bars_per_day
    z = standardized_t(
        stream_rng(seed, Stream.INTRADAY, index), preset.model.tail_dof, days * per_day
    )
    profile = _time_of_day_profile(per_day)
    sigma = (
        panel.sigma[:, index, None]
        / math.sqrt(per_day)
        * profile
        * egarch_volatility(z, preset.model).reshape(days, per_day)
    )
    noise = sigma * z.reshape(days, per_day)
    day_open = panel.log_previous_close[:, index]
    day_return = panel.log_close[:, index] - day_open
    steps = noise - noise.mean(axis=1, keepdims=True) + (day_return / per_day)[:, None]
    log_close = (day_open[:, None] + np.cumsum(steps, axis=1)).ravel()
    return SymbolPath(
        open_us=_open_times(preset),
        log_open=np.r_[day_open[0], log_close[:-1]],
        log_close=log_close,
        sigma=sigma.ravel(),
        z=z,
        notional=np.tile(profile / profile.mean(), days)
        * (panel.universe.daily_notional[index] / per_day),
    )


def symbol_path(panel: Panel, index: int, seed: int) -> SymbolPath:
    """The symbol's bars over its listed life."""
    per_day = panel.preset.bars_per_day
    path = _daily(panel, index) if per_day == 1 else _intraday(panel, index, seed)
    listed, delisted = panel.universe.listed_day[index], panel.universe.delisted_day[index]
    return path.between(int(listed) * per_day, int(delisted) * per_day)
