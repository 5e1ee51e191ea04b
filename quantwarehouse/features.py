"""The features matrix: per (bar_date, symbol), technical ratings and the indicators behind them.

Every row of a symbol is a function of that symbol's bars only. `feature_columns` computes one
symbol's columns, so the work maps onto grouped pandas UDFs on a distributed engine
(`symbol_features` is that UDF's shape: frame in, frame out). `features_table`, which returns the
Arrow table the dbt model `features_matrix` writes, runs the same computation on blocks of up to
BLOCK_SYMBOLS symbols of similar lengths at once (a few hundred numpy calls per block instead of
per symbol): 2-D arrays (symbols, bars), each symbol's bars left-aligned in its row and NaN after
them (see `indicators`); a symbol's rows are the same bits as `feature_columns` gives it alone.

Point in time: every indicator is causal, so the row of day d depends only on bars up to d.
Incremental runs recompute a dirty symbol's indicators over its whole history (EMA-type
indicators have infinite memory) and keep only the rows from its dirty date on: the rows are then
bit-for-bit those of a full rebuild.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from quantwarehouse import indicators as ind
from quantwarehouse import ratings as rt
from quantwarehouse.indicators import FloatArray
from quantwarehouse.ratings import RATING_LABELS

MA_LENGTHS = (10, 20, 30, 50, 100, 200)
# TradingView's trend for the Stoch RSI and Bull Bear Power votes: close above / below EMA 50.
TREND_COLUMN = "ema_50"

BAR_COLUMNS = ("symbol", "bar_date", "high", "low", "close", "volume", "source_batch_id")
# How many rows before a row its votes compare with (the awesome oscillator's, two bars back).
VOTE_LOOKBACK = 2
# Symbols computed together by `features_table`: bounds the memory of a block's ~100 arrays.
BLOCK_SYMBOLS = 32
# The bar arrays the feature columns are computed from (the symbol is known from the block).
PRICE_COLUMNS = ("high", "low", "close", "volume")

INDICATOR_COLUMNS = (
    "close",
    *(f"sma_{n}" for n in MA_LENGTHS),
    *(f"ema_{n}" for n in MA_LENGTHS),
    "hull_ma_9",
    "vwma_20",
    "ichimoku_conversion",
    "ichimoku_base",
    "ichimoku_span_a",
    "ichimoku_span_b",
    "rsi_14",
    "stoch_k",
    "stoch_d",
    "cci_20",
    "adx_14",
    "plus_di_14",
    "minus_di_14",
    "awesome_oscillator",
    "momentum_10",
    "macd",
    "macd_signal",
    "stoch_rsi_k",
    "stoch_rsi_d",
    "williams_r_14",
    "bull_power_13",
    "bear_power_13",
    "ultimate_oscillator",
)
VOTE_COUNT_COLUMNS = (
    "ma_buy_votes",
    "ma_sell_votes",
    "ma_neutral_votes",
    "osc_buy_votes",
    "osc_sell_votes",
    "osc_neutral_votes",
)

FEATURES_SCHEMA = pa.schema(
    [
        pa.field("bar_date", pa.date32(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        *(pa.field(name, pa.float64()) for name in INDICATOR_COLUMNS),
        *(pa.field(name, pa.int32(), nullable=False) for name in VOTE_COUNT_COLUMNS),
        pa.field("rating_ma", pa.float64()),
        pa.field("rating_osc", pa.float64()),
        pa.field("rating_all", pa.float64()),
        pa.field("rating_all_label", pa.string()),
        pa.field("source_batch_id", pa.int64(), nullable=False),
    ]
)


def indicator_values(
    high: FloatArray, low: FloatArray, close: FloatArray, volume: FloatArray
) -> dict[str, FloatArray]:
    """Every indicator column of the matrix, by name, in INDICATOR_COLUMNS order, of one symbol's
    bars (1-D) or a block of symbols (2-D, see `indicators`)."""
    values: dict[str, FloatArray] = {"close": close}
    for length in MA_LENGTHS:
        values[f"sma_{length}"] = ind.sma(close, length)
    for length in MA_LENGTHS:
        values[f"ema_{length}"] = ind.ema(close, length)
    values["hull_ma_9"] = ind.hull_ma(close, 9)
    values["vwma_20"] = ind.vwma(close, volume, 20)
    cloud = ind.ichimoku(high, low, 9, 26, 52)
    values |= {
        "ichimoku_conversion": cloud.conversion,
        "ichimoku_base": cloud.base,
        "ichimoku_span_a": cloud.span_a,
        "ichimoku_span_b": cloud.span_b,
        "rsi_14": ind.rsi(close, 14),
    }
    values["stoch_k"], values["stoch_d"] = ind.stochastic(high, low, close, 14, 3, 3)
    values["cci_20"] = ind.cci(high, low, close, 20)
    directional = ind.directional_index(high, low, close, 14, 14)
    values |= {
        "adx_14": directional.adx,
        "plus_di_14": directional.plus_di,
        "minus_di_14": directional.minus_di,
        "awesome_oscillator": ind.awesome_oscillator(high, low, 5, 34),
        "momentum_10": ind.momentum(close, 10),
    }
    values["macd"], values["macd_signal"] = ind.macd(close, 12, 26, 9)
    rsi = values["rsi_14"]
    values["stoch_rsi_k"], values["stoch_rsi_d"] = ind.stochastic_of_rsi(rsi, 14, 3, 3)
    values["williams_r_14"] = ind.williams_r(high, low, close, 14)
    values["bull_power_13"], values["bear_power_13"] = ind.bull_bear_power(high, low, close, 13)
    values["ultimate_oscillator"] = ind.ultimate_oscillator(high, low, close, 7, 14, 28)
    return values


def ma_votes(values: Mapping[str, FloatArray]) -> list[FloatArray]:
    """The 15 moving-average votes."""
    close = values["close"]
    averages = [values[f"{kind}_{n}"] for kind in ("sma", "ema") for n in MA_LENGTHS]
    averages += [values["hull_ma_9"], values["vwma_20"]]
    cloud = ind.Ichimoku(
        conversion=values["ichimoku_conversion"],
        base=values["ichimoku_base"],
        span_a=values["ichimoku_span_a"],
        span_b=values["ichimoku_span_b"],
    )
    return [*(rt.ma_vote(average, close) for average in averages), rt.ichimoku_vote(cloud, close)]


def oscillator_votes(values: Mapping[str, FloatArray]) -> list[FloatArray]:
    """The 11 oscillator votes."""
    close = values["close"]
    trend = values[TREND_COLUMN]
    return [
        rt.rsi_vote(values["rsi_14"]),
        rt.stochastic_vote(values["stoch_k"], values["stoch_d"]),
        rt.cci_vote(values["cci_20"]),
        rt.adx_vote(values["adx_14"], values["plus_di_14"], values["minus_di_14"]),
        rt.awesome_oscillator_vote(values["awesome_oscillator"]),
        rt.momentum_vote(values["momentum_10"]),
        rt.macd_vote(values["macd"], values["macd_signal"]),
        rt.stoch_rsi_vote(values["stoch_rsi_k"], values["stoch_rsi_d"], close, trend),
        rt.williams_r_vote(values["williams_r_14"]),
        rt.bull_bear_power_vote(values["bull_power_13"], values["bear_power_13"], close, trend),
        rt.ultimate_oscillator_vote(values["ultimate_oscillator"]),
    ]


def feature_columns(
    bars: Mapping[str, npt.NDArray[Any]], first_row: int = 0
) -> dict[str, npt.NDArray[Any]]:
    """One symbol's feature columns (FEATURES_SCHEMA order) from its bars as arrays (BAR_COLUMNS,
    one symbol, in date order, no nulls), for its rows from `first_row` on. Row d uses bars up to
    d only; its source_batch_id is the latest load batch among them.

    The indicators run over the whole history (EMA-type ones have infinite memory); the votes,
    a third of the work, only over the rows returned and the VOTE_LOOKBACK rows before them."""
    block = {
        **{name: np.asarray(bars[name], dtype=np.float64)[np.newaxis] for name in PRICE_COLUMNS},
        "bar_date": np.asarray(bars["bar_date"])[np.newaxis],
        "source_batch_id": np.asarray(bars["source_batch_id"])[np.newaxis],
    }
    bar_count = block["close"].shape[-1]
    columns, emitted = _block_columns(block, np.array([bar_count]), np.array([first_row]))
    rows = {name: column[emitted] for name, column in columns.items()}
    rows["symbol"] = bars["symbol"][first_row:]
    rows["rating_all_label"] = rt.band_labels(rows.pop("rating_all_band"))
    return {name: rows[name] for name in FEATURES_SCHEMA.names}


@dataclass(frozen=True)
class _Window:
    """Per row of a block, `width` columns from column offsets[row] on, left-aligned; past the
    end of the block, its last column (values never emitted)."""

    offsets: npt.NDArray[np.intp]
    width: int

    @cached_property
    def _columns(self) -> slice | npt.NDArray[np.intp]:
        if (self.offsets == self.offsets[0]).all():  # one slice for every row: a view
            return slice(self.offsets[0], self.offsets[0] + self.width)
        return self.offsets[:, np.newaxis] + np.arange(self.width)

    def of(self, block: npt.NDArray[Any]) -> npt.NDArray[Any]:
        columns = self._columns
        if isinstance(columns, slice):
            return block[:, columns]
        return np.take_along_axis(block, np.minimum(columns, block.shape[-1] - 1), axis=-1)


def _block_columns(
    bars: Mapping[str, npt.NDArray[Any]],
    bar_counts: npt.NDArray[np.intp],
    first_rows: npt.NDArray[np.intp],
) -> tuple[dict[str, npt.NDArray[Any]], npt.NDArray[np.bool_]]:
    """The feature columns but `symbol` of a block of symbols, with rating_all_band in place of
    rating_all_label, and where they hold the rows to emit.

    `bars` holds PRICE_COLUMNS, bar_date and source_batch_id as 2-D arrays, symbol i's
    bar_counts[i] bars left-aligned in row i (NaN after them in the price arrays). The columns are
    2-D arrays too, row i from symbol i's row first_rows[i] - VOTE_LOOKBACK on (or its first), and
    column[emitted] holds symbol after symbol its rows from first_rows[i] on."""
    values = indicator_values(*(bars[name] for name in PRICE_COLUMNS))
    lookbacks = np.minimum(first_rows, VOTE_LOOKBACK)
    offsets = first_rows - lookbacks
    window = _Window(offsets, int((bar_counts - offsets).max()))
    voted = {name: window.of(series) for name, series in values.items()}
    ma = rt.tally(ma_votes(voted))
    osc = rt.tally(oscillator_votes(voted))
    columns = {
        "bar_date": window.of(bars["bar_date"]),
        **voted,
        "ma_buy_votes": ma.buy,
        "ma_sell_votes": ma.sell,
        "ma_neutral_votes": ma.neutral,
        "osc_buy_votes": osc.buy,
        "osc_sell_votes": osc.sell,
        "osc_neutral_votes": osc.neutral,
        "rating_ma": ma.rating,
        "rating_osc": osc.rating,
        "rating_all": rt.rating_all(ma, osc),
        "rating_all_band": rt.rating_all_band(ma, osc),
        "source_batch_id": window.of(np.maximum.accumulate(bars["source_batch_id"], axis=-1)),
    }
    position = np.arange(window.width)
    emitted = (position >= lookbacks[:, np.newaxis]) & (
        position < (bar_counts - offsets)[:, np.newaxis]
    )
    return columns, emitted


def checked_bars(bars: pd.DataFrame) -> pd.DataFrame:
    """Bars ordered by symbol and date, or a ValueError naming the first offending row."""
    missing = [column for column in BAR_COLUMNS if column not in bars.columns]
    if missing:
        raise ValueError(f"bars lack column(s) {missing}; expected {list(BAR_COLUMNS)}")
    ordered = bars.assign(bar_date=pd.to_datetime(bars["bar_date"])).reset_index(drop=True)
    if not _is_ordered(ordered):  # usually they are, and need no sort
        ordered = ordered.sort_values(["symbol", "bar_date"], kind="stable", ignore_index=True)
    for column in BAR_COLUMNS:
        null = ordered[column].isna().to_numpy()
        _refuse_rows(ordered, null, f"{column} is null; every bar needs one")
    symbols, dates = _order_keys(ordered)
    repeated = np.zeros(len(ordered), dtype=bool)  # in this order, a repeat follows the first
    repeated[1:] = _same_as_previous(symbols) & (dates[1:] == dates[:-1])
    _refuse_rows(ordered, repeated, "a second bar on that day; one bar per symbol and day")
    return ordered


def _order_keys(bars: pd.DataFrame) -> tuple[pa.Array, npt.NDArray[np.datetime64]]:
    """The symbols (in Arrow: fast comparisons of strings) and the dates of bars."""
    # typed: a frame without rows (no dirty symbol) has an untyped symbol column
    return pa.array(bars["symbol"], type=pa.string()), bars["bar_date"].to_numpy()


def _same_as_previous(symbols: pa.Array) -> npt.NDArray[np.bool_]:
    """Per symbol but the first, whether it equals the one before it."""
    return pc.equal(symbols[1:], symbols[:-1]).to_numpy(zero_copy_only=False)


def _is_ordered(bars: pd.DataFrame) -> bool:
    """Whether bars are ordered by symbol, then date, with neither null."""
    symbols, dates = _order_keys(bars)
    if symbols.null_count or np.isnat(dates).any():
        return False
    rising = pc.greater(symbols[1:], symbols[:-1]).to_numpy(zero_copy_only=False)
    return bool((rising | (_same_as_previous(symbols) & (dates[1:] >= dates[:-1]))).all())


def _refuse_rows(bars: pd.DataFrame, bad: npt.NDArray[np.bool_], reason: str) -> None:
    if bad.any():
        row = bars[bad].iloc[0]
        raise ValueError(f"bar {row['symbol']} {row['bar_date']:%Y-%m-%d}: {reason}")


def _bar_arrays(bars: pd.DataFrame) -> dict[str, npt.NDArray[Any]]:
    """The columns the features are computed from (PRICE_COLUMNS, bar_date, source_batch_id)."""
    return {
        **{column: bars[column].to_numpy(np.float64) for column in PRICE_COLUMNS},
        "bar_date": bars["bar_date"].to_numpy().astype("datetime64[D]"),
        "source_batch_id": bars["source_batch_id"].to_numpy(np.int64),
    }


def symbol_features(bars: pd.DataFrame) -> pd.DataFrame:
    """One symbol's feature rows from its daily bars (the shape of a grouped pandas UDF); the
    columns and types of FEATURES_SCHEMA, nulls as NaN / None."""
    bars = checked_bars(bars)
    if bars["symbol"].nunique() > 1:
        raise ValueError(f"bars of one symbol expected, got {sorted(bars['symbol'].unique())}")
    return _assemble(bars).to_pandas()


def _symbol_runs(symbols: pd.Series) -> tuple[list[str], npt.NDArray[np.intp]]:
    """The symbols of bars ordered by symbol (none null), and the number of bars of each."""
    if symbols.empty:
        return [], np.zeros(0, np.intp)
    names = pa.array(symbols)
    changes = pc.not_equal(names[1:], names[:-1]).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, changes])
    return names.take(starts).to_pylist(), np.diff(np.r_[starts, len(names)])


def _first_rows(
    dates: npt.NDArray[np.datetime64],
    symbols: list[str],
    first_bars: npt.NDArray[np.intp],
    bar_counts: npt.NDArray[np.intp],
    emit_from: Mapping[str, dt.date] | None,
) -> npt.NDArray[np.intp]:
    """Per symbol (bars first_bars[i] .. + bar_counts[i] of `dates`), its first row on or after
    emit_from[symbol]: its number of bars before that day."""
    if emit_from is None:
        return np.zeros_like(bar_counts)
    first_dates = np.array([emit_from[symbol] for symbol in symbols], "datetime64[D]")
    before = dates < np.repeat(first_dates, bar_counts)
    return np.add.reduceat(before, first_bars, dtype=np.intp)


def _left_aligned(
    values: npt.NDArray[Any], starts: npt.NDArray[np.intp], lengths: npt.NDArray[np.intp]
) -> npt.NDArray[Any]:
    """values[starts[i] : starts[i] + lengths[i]] as row i of a 2-D array, from column 0; after
    them NaN for floats (what the indicators take as no value), else 0."""
    fill = np.nan if values.dtype.kind == "f" else 0
    block = np.full((lengths.size, int(lengths.max())), fill, values.dtype)
    for row, start, length in zip(block, starts, lengths, strict=True):
        row[:length] = values[start : start + length]
    return block


def _arrow_arrays(
    columns: Mapping[str, npt.NDArray[Any]], emitted: npt.NDArray[np.bool_]
) -> dict[str, pa.Array]:
    """The rows to emit of a block's columns (`_block_columns`) as Arrow arrays of
    FEATURES_SCHEMA's types; NaN (warming up, undefined) becomes null. Integers and dates are
    narrowed by numpy before the rows are taken: far faster than by Arrow, on fewer bytes."""
    arrays = {}
    for field in FEATURES_SCHEMA:
        if field.name == "symbol":
            continue
        if field.name == "rating_all_label":
            band = columns["rating_all_band"].astype(np.int8)[emitted]
            labels = pa.DictionaryArray.from_arrays(pa.array(band, mask=band < 0), RATING_LABELS)
            arrays[field.name] = labels.cast(field.type)
        elif field.type == pa.date32():  # via days since the epoch
            days = columns[field.name].astype(np.int32)[emitted]
            arrays[field.name] = pa.array(days).cast(field.type)
        elif field.type == pa.float64():
            arrays[field.name] = _float_array(columns[field.name][emitted])
        else:
            integers = columns[field.name].astype(field.type.to_pandas_dtype(), copy=False)
            arrays[field.name] = pa.array(integers[emitted], field.type)
    return arrays


def _float_array(values: FloatArray) -> pa.Array:
    """Contiguous values as an Arrow array sharing their buffer, NaN as null (a bitmap packed by
    numpy: several times faster than pa.array(..., from_pandas=True))."""
    valid = ~np.isnan(values)
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    null_count = values.size - np.count_nonzero(valid)
    return pa.Array.from_buffers(
        pa.float64(), values.size, [bitmap, pa.py_buffer(values)], null_count=null_count
    )


def _repeated(names: list[str], counts: npt.NDArray[np.intp]) -> pa.Array:
    """names[i] repeated counts[i] times, as strings (built through a dictionary: fast)."""
    codes = pa.array(np.repeat(np.arange(len(names), dtype=np.int32), counts))
    return pa.DictionaryArray.from_arrays(codes, pa.array(names, pa.string())).cast(pa.string())


def _assemble(bars: pd.DataFrame, emit_from: Mapping[str, dt.date] | None = None) -> pa.Table:
    """The FEATURES_SCHEMA table of bars from `checked_bars`, each symbol's rows from
    emit_from[symbol] on, computed BLOCK_SYMBOLS symbols at a time.

    A block holds symbols of similar lengths, so that little of it is padding; each symbol's rows
    are then a zero-copy slice of its block's, put back in symbol order (a chunk per symbol)."""
    symbols, bar_counts = _symbol_runs(bars["symbol"])
    arrays = _bar_arrays(bars)
    first_bars = np.cumsum(bar_counts) - bar_counts  # each symbol's first position in `arrays`
    first_rows = _first_rows(arrays["bar_date"], symbols, first_bars, bar_counts, emit_from)
    row_counts = bar_counts - first_rows
    symbol_rows: dict[int, pa.RecordBatch] = {}
    by_length = np.argsort(bar_counts, kind="stable")
    for first in range(0, len(symbols), BLOCK_SYMBOLS):
        block = by_length[first : first + BLOCK_SYMBOLS]
        block_bars = {
            name: _left_aligned(values, first_bars[block], bar_counts[block])
            for name, values in arrays.items()
        }
        columns, emitted = _block_columns(block_bars, bar_counts[block], first_rows[block])
        block_symbols = [symbols[symbol] for symbol in block]
        rows = pa.RecordBatch.from_pydict(
            {
                "symbol": _repeated(block_symbols, row_counts[block]),
                **_arrow_arrays(columns, emitted),
            },
            FEATURES_SCHEMA,
        )
        ends = np.cumsum(row_counts[block])
        for symbol, start, end in zip(block, ends - row_counts[block], ends, strict=True):
            symbol_rows[int(symbol)] = rows.slice(start, end - start)
    return pa.Table.from_batches(
        [symbol_rows[symbol] for symbol in range(len(symbols))], FEATURES_SCHEMA
    )


def features_table(
    bars: pd.DataFrame, invocation_id: str, emit_from: Mapping[str, dt.date] | None = None
) -> pa.Table:
    """Feature rows of every symbol in `bars` (FEATURES_SCHEMA plus invocation_id), computed in
    blocks of symbols; each symbol's rows equal `feature_columns` of its bars alone.

    emit_from: per symbol, the first bar_date to return (an incremental run's dirty dates); the
    indicators are still computed over the symbol's whole history, so the rows returned are
    exactly those of a full computation. None returns every row.
    """
    table = _assemble(checked_bars(bars), emit_from)
    return table.append_column("invocation_id", pa.repeat(invocation_id, table.num_rows))
