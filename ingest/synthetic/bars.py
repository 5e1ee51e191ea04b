"""Bars from a symbol's path: OHLC on the symbol's tick size, volumes, trades and taker flow.

Normal bars are consistent: open is the previous close (a small gap now and then), high and low
reach beyond open and close by a multiple of the bar's volatility, base volume follows activity
(more when volatile), quote volume is about volume * typical price, and taker buys lean with the
bar's direction.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import pyarrow as pa

from ingest.intervals import INTERVAL_MICROS
from ingest.records import CANDIDATE_SCHEMA
from ingest.synthetic.market import SymbolPath, ar1_filter
from ingest.synthetic.universe import Universe

GAP_SHARE = 0.05  # bars whose open is not exactly the previous close
GAP_SIZE = 0.0005
RANGE_SCALE = 0.6  # how far high and low reach beyond open/close, in bar volatilities
VOLUME_PERSISTENCE = 0.9  # AR(1) of the log activity that volume shares across bars
VOLUME_NOISE = 0.15
VOLUME_VOL_ELASTICITY = 0.6  # log volume per log volatility
VOLUME_SHOCK_WEIGHT = 0.25  # extra log volume per unit of |shock|
VWAP_NOISE = 0.001  # quote volume / (volume * typical price) - 1
TAKER_LEAN = 0.12  # taker buy share = 0.5 + TAKER_LEAN * tanh(shock) + noise
QUOTE_DECIMALS = 8


def to_grid(values: np.ndarray, decimals: int) -> np.ndarray:
    """Round to a multiple of 10^-decimals (a tick or a lot step), never below one of them."""
    return np.maximum(np.round(values, decimals), 10.0**-decimals)


@dataclass(frozen=True)
class Bars:
    """Clean bars of one symbol, in time order; prices and sizes already on the exchange grid."""

    open_us: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    quote_volume: np.ndarray
    trade_count: np.ndarray
    taker_buy_base_volume: np.ndarray
    taker_buy_quote_volume: np.ndarray
    price_decimals: int
    qty_decimals: int

    def take(self, rows: np.ndarray) -> Bars:
        """The bars at `rows` (positions, in the order given; repeats allowed)."""
        return replace(self, **{name: getattr(self, name)[rows] for name in BAR_COLUMNS})


BAR_COLUMNS = tuple(
    f.name for f in fields(Bars) if f.name not in ("price_decimals", "qty_decimals")
)
# Binance's archive switched its timestamps from milliseconds to microseconds on this day.
MICROSECONDS_FROM_US = 1_735_689_600 * 1_000_000  # 2025-01-01T00:00:00Z


def _binance_time(micros: np.ndarray) -> np.ndarray:
    return np.where(micros >= MICROSECONDS_FROM_US, micros, micros // 1000)


def to_candidates(bars: Bars, symbol: str, interval: str) -> pa.Table:
    """Candidate rows (`records.CANDIDATE_SCHEMA`) with Binance's epoch ms / us timestamps."""
    return symbols_candidates([(symbol, bars)], interval)


def symbols_candidates(shown: list[tuple[str, Bars]], interval: str) -> pa.Table:
    """The candidate rows of several symbols' bars, one symbol after another, each symbol's rows
    numbered from 1 as in a file of its own: `to_candidates` of each, concatenated."""
    if not shown:
        return CANDIDATE_SCHEMA.empty_table()
    sizes = np.array([bars.open_us.size for _, bars in shown], dtype=np.int64)
    columns = {
        name: np.concatenate([getattr(bars, name) for _, bars in shown]) for name in BAR_COLUMNS
    }
    open_us = columns.pop("open_us")
    first_rows = np.repeat(np.cumsum(sizes) - sizes, sizes)
    names = pa.DictionaryArray.from_arrays(
        pa.array(np.repeat(np.arange(len(shown), dtype=np.int32), sizes)),
        pa.array([symbol for symbol, _ in shown], pa.string()),
    )
    return pa.table(
        {
            "symbol": names.cast(pa.string()),
            "interval": pa.repeat(interval, open_us.size),
            "open_time": _binance_time(open_us),
            "close_time": _binance_time(open_us + INTERVAL_MICROS[interval] - 1000),
            **columns,
            "source_row": np.arange(1, open_us.size + 1, dtype=np.int64) - first_rows,
        },
        schema=CANDIDATE_SCHEMA,
    )


def _prices(path: SymbolPath, rng: np.random.Generator, rows: slice) -> tuple[np.ndarray, ...]:
    size, window = path.log_close.size, path.between(rows.start, rows.stop)
    gaps = np.where(rng.random(size) < GAP_SHARE, rng.normal(0.0, GAP_SIZE, size), 0.0)[rows]
    open_ = np.exp(window.log_open + gaps)
    close = np.exp(window.log_close)
    reach = RANGE_SCALE * window.sigma
    high_reach = np.abs(rng.normal(0.0, 1.0, size))[rows]
    high = np.maximum(open_, close) * np.exp(high_reach * reach)
    low_reach = np.abs(rng.normal(0.0, 1.0, size))[rows]
    low = np.minimum(open_, close) * np.exp(-low_reach * reach)
    return open_, high, low, close


def _traded_value(path: SymbolPath, rng: np.random.Generator, rows: slice) -> np.ndarray:
    noise = rng.normal(0.0, VOLUME_NOISE, path.z.size)
    persistent = ar1_filter(noise, VOLUME_PERSISTENCE)[rows]
    window = path.between(rows.start, rows.stop)
    activity = (
        VOLUME_VOL_ELASTICITY * np.log(window.sigma / np.median(path.sigma))
        + VOLUME_SHOCK_WEIGHT * (np.abs(window.z) - np.mean(np.abs(path.z)))
        + persistent
    )
    return window.notional * np.exp(activity)


def build_bars(
    path: SymbolPath,
    universe: Universe,
    index: int,
    rng: np.random.Generator,
    rows: slice = slice(None),
) -> Bars:
    """The bars at `rows` of the path (all by default). The random draws and the statistics are
    those of the whole path whatever `rows` is, so a bar's values never depend on `rows`: the
    bars of a window cost the draws of the whole path but the arithmetic of the window only."""
    price_decimals = int(universe.price_decimals[index])
    qty_decimals = int(universe.qty_decimals[index])
    open_, high, low, close = (
        to_grid(values, price_decimals) for values in _prices(path, rng, rows)
    )
    typical = (high + low + close) / 3.0
    volume = to_grid(_traded_value(path, rng, rows) / typical, qty_decimals)
    size = path.z.size
    quote_volume = np.round(
        volume * typical * np.exp(rng.normal(0.0, VWAP_NOISE, size)[rows]), QUOTE_DECIMALS
    )
    trades = (
        quote_volume / universe.trade_notional[index] * np.exp(rng.normal(0.0, 0.1, size)[rows])
    )
    taker_share = np.clip(
        0.5 + TAKER_LEAN * np.tanh(path.z[rows]) + rng.normal(0.0, 0.03, size)[rows],
        0.05,
        0.95,
    )
    taker_base = np.minimum(np.round(volume * taker_share, qty_decimals), volume)
    return Bars(
        open_us=path.open_us[rows],
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=volume,
        quote_volume=quote_volume,
        trade_count=np.maximum(np.rint(trades), 1).astype(np.int64),
        taker_buy_base_volume=taker_base,
        taker_buy_quote_volume=np.round(taker_base * quote_volume / volume, QUOTE_DECIMALS),
        price_decimals=price_decimals,
        qty_decimals=qty_decimals,
    )
