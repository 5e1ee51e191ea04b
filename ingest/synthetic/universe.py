"""The symbols of a preset: names, listing and delisting days, prices, sizes, exchange filters.

Names depend only on the preset (never on the seed); everything else is drawn from the seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pyarrow as pa

from ingest.raw_store import SYMBOL_SCHEMA
from ingest.synthetic.names import base_asset, quote_asset, symbol_name
from ingest.synthetic.presets import Preset
from ingest.synthetic.rng import Stream, stream_rng

USD_PER_BTC = 30_000.0  # converts USD sizes to BTC for BTC-quoted symbols
PRICE_DIGITS = 6  # significant digits of a price at listing (sets the tick size)
EXCHANGE = "binance"


def symbol_names(preset: Preset) -> list[str]:
    """The preset's symbols in generation order, e.g. ["KOLUUSDT", ...]."""
    return [symbol_name(i) for i in preset.name_range]


@dataclass(frozen=True)
class Universe:
    """Per-symbol constants of one (preset, seed); arrays are indexed like `symbols`."""

    symbols: list[str]
    base_assets: list[str]
    quote_assets: list[str]
    listed_day: np.ndarray  # calendar index of the first bar
    delisted_day: np.ndarray  # calendar index of the delisting (no bar from then on); len = never
    sector: np.ndarray
    daily_vol: np.ndarray
    market_loading: np.ndarray
    sector_loading: np.ndarray
    log_price0: np.ndarray  # log price the day before the calendar starts
    price_decimals: np.ndarray  # tick size = 10 ** -price_decimals
    qty_decimals: np.ndarray  # step size = min qty = 10 ** -qty_decimals
    daily_notional: np.ndarray  # typical traded value per day, in the quote asset
    trade_notional: np.ndarray  # typical value of one trade, in the quote asset


def symbol_indices(preset: Preset, requested: Sequence[str]) -> list[int]:
    """Positions of the requested symbols in the preset (all of them when none is requested)."""
    names = symbol_names(preset)
    if not requested:
        return list(range(len(names)))
    unknown = [symbol for symbol in requested if symbol not in names]
    if unknown:
        raise ValueError(
            f"--symbols: unknown symbols {', '.join(unknown)} for preset {preset.name}; it has "
            f"{len(names)}, e.g. {', '.join(names[:5])}"
        )
    return sorted({names.index(symbol) for symbol in requested})


def _log_uniform(rng: np.random.Generator, low: float, high: float, size: int) -> np.ndarray:
    return np.exp(rng.uniform(math.log(low), math.log(high), size))


def _listing_days(preset: Preset, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Some symbols list after the start, others delist before the end; the first lives on."""
    n, days = preset.symbols, preset.days
    listed = np.zeros(n, dtype=np.int64)
    delisted = np.full(n, days, dtype=np.int64)
    chosen = rng.permutation(np.arange(1, n))
    late = chosen[: preset.listed_late]
    gone = chosen[preset.listed_late : preset.listed_late + preset.delisted]
    listed[late] = rng.integers(int(0.1 * days), int(0.6 * days) + 1, late.size)
    delisted[gone] = rng.integers(int(0.5 * days), int(0.95 * days) + 1, gone.size)
    return listed, delisted


def draw_universe(preset: Preset, seed: int) -> Universe:
    rng = stream_rng(seed, Stream.UNIVERSE)
    n, model = preset.symbols, preset.model
    names = list(preset.name_range)
    quotes = [quote_asset(i) for i in names]
    in_quote = np.array([1.0 / USD_PER_BTC if q == "BTC" else 1.0 for q in quotes])
    listed, delisted = _listing_days(preset, rng)
    price0 = (
        np.where(
            in_quote < 1.0, _log_uniform(rng, 0.3, 3_000.0, n), _log_uniform(rng, 0.01, 50_000.0, n)
        )
        * in_quote
    )
    magnitude = np.floor(np.log10(price0)).astype(np.int64)
    return Universe(
        symbols=symbol_names(preset),
        base_assets=[base_asset(i) for i in names],
        quote_assets=quotes,
        listed_day=listed,
        delisted_day=delisted,
        sector=rng.integers(0, model.sectors, n),
        daily_vol=rng.uniform(*model.daily_vol, n),
        market_loading=rng.uniform(*model.market_loading, n),
        sector_loading=rng.uniform(*model.sector_loading, n),
        log_price0=np.log(price0),
        price_decimals=np.clip(PRICE_DIGITS - 1 - magnitude, 0, 8),
        qty_decimals=np.clip(magnitude + 1, 0, 8),
        daily_notional=_log_uniform(rng, 2e5, 5e8, n) * in_quote,
        trade_notional=_log_uniform(rng, 50.0, 1_500.0, n) * in_quote,
    )


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


def metadata_table(preset: Preset, universe: Universe, indices: list[int], as_of: date) -> pa.Table:
    """Exchange metadata (`SYMBOL_SCHEMA`) as the exchange shows it on `as_of`."""
    rows = []
    for i in indices:
        delisted_on = preset.day(int(universe.delisted_day[i]))
        is_delisted = int(universe.delisted_day[i]) < preset.days and delisted_on <= as_of
        step = 10.0 ** -int(universe.qty_decimals[i])
        rows.append(
            {
                "symbol": universe.symbols[i],
                "exchange": EXCHANGE,
                "status": "BREAK" if is_delisted else "TRADING",
                "base_asset": universe.base_assets[i],
                "quote_asset": universe.quote_assets[i],
                "tick_size": 10.0 ** -int(universe.price_decimals[i]),
                "step_size": step,
                "min_qty": step,
                "listed_at": _midnight(preset.day(int(universe.listed_day[i]))),
                "delisted_at": _midnight(delisted_on) if is_delisted else None,
            }
        )
    return pa.Table.from_pylist(rows, schema=SYMBOL_SCHEMA)
