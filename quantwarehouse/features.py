"""The features matrix: per (bar_date, symbol), technical ratings and the indicators behind them.

All per-symbol work is `feature_columns`, a function of one symbol's bars, so it maps onto grouped
pandas UDFs on a distributed engine (`symbol_features` is that UDF's shape: frame in, frame out);
`features_table` runs it symbol by symbol and returns the Arrow table the dbt model
`features_matrix` writes.

Point in time: every indicator is causal, so the row of day d depends only on bars up to d.
Incremental runs recompute a dirty symbol's indicators over its whole history (EMA-type
indicators have infinite memory) and keep only the rows from its dirty date on: the rows are then
bit-for-bit those of a full rebuild.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from quantwarehouse import indicators as ind
from quantwarehouse import ratings as rt
from quantwarehouse.indicators import FloatArray

MA_LENGTHS = (10, 20, 30, 50, 100, 200)
# TradingView's trend for the Stoch RSI and Bull Bear Power votes: close above / below EMA 50.
TREND_COLUMN = "ema_50"

BAR_COLUMNS = ("symbol", "bar_date", "high", "low", "close", "volume", "source_batch_id")
# How many rows before a row its votes compare with (the awesome oscillator's, two bars back).
VOTE_LOOKBACK = 2

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
    """Every indicator column of the matrix, by name, in INDICATOR_COLUMNS order."""
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
    values["stoch_rsi_k"], values["stoch_rsi_d"] = ind.stoch_rsi(close, 14, 14, 3, 3)
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
    values = indicator_values(
        *(
            np.asarray(bars[column], dtype=np.float64)
            for column in ("high", "low", "close", "volume")
        )
    )
    lookback = min(first_row, VOTE_LOOKBACK)
    voted = {name: series[first_row - lookback :] for name, series in values.items()}
    ma = rt.tally([vote[lookback:] for vote in ma_votes(voted)])
    osc = rt.tally([vote[lookback:] for vote in oscillator_votes(voted)])
    columns = {
        "bar_date": bars["bar_date"][first_row:],
        "symbol": bars["symbol"][first_row:],
        **{name: series[first_row:] for name, series in values.items()},
        "ma_buy_votes": ma.buy,
        "ma_sell_votes": ma.sell,
        "ma_neutral_votes": ma.neutral,
        "osc_buy_votes": osc.buy,
        "osc_sell_votes": osc.sell,
        "osc_neutral_votes": osc.neutral,
        "rating_ma": ma.rating,
        "rating_osc": osc.rating,
        "rating_all": rt.rating_all(ma, osc),
        "rating_all_label": rt.rating_all_label(ma, osc),
        "source_batch_id": np.maximum.accumulate(bars["source_batch_id"])[first_row:],
    }
    return {name: columns[name] for name in FEATURES_SCHEMA.names}


def checked_bars(bars: pd.DataFrame) -> pd.DataFrame:
    """Bars ordered by symbol and date, or a ValueError naming the first offending row."""
    missing = [column for column in BAR_COLUMNS if column not in bars.columns]
    if missing:
        raise ValueError(f"bars lack column(s) {missing}; expected {list(BAR_COLUMNS)}")
    ordered = bars.assign(bar_date=pd.to_datetime(bars["bar_date"])).sort_values(
        ["symbol", "bar_date"], kind="stable", ignore_index=True
    )
    for column in BAR_COLUMNS:
        _refuse_rows(ordered, ordered[column].isna(), f"{column} is null; every bar needs one")
    repeated = ordered.duplicated(["symbol", "bar_date"])
    _refuse_rows(ordered, repeated, "a second bar on that day; one bar per symbol and day")
    return ordered


def _refuse_rows(bars: pd.DataFrame, bad: pd.Series, reason: str) -> None:
    if bad.any():
        row = bars[bad.to_numpy()].iloc[0]
        raise ValueError(f"bar {row['symbol']} {row['bar_date']:%Y-%m-%d}: {reason}")


def _bar_arrays(bars: pd.DataFrame) -> dict[str, npt.NDArray[Any]]:
    arrays = {column: bars[column].to_numpy() for column in BAR_COLUMNS}
    arrays["bar_date"] = arrays["bar_date"].astype("datetime64[D]")
    arrays["source_batch_id"] = arrays["source_batch_id"].astype(np.int64)
    return arrays


def symbol_features(bars: pd.DataFrame) -> pd.DataFrame:
    """One symbol's feature rows from its daily bars (the shape of a grouped pandas UDF); the
    columns and types of FEATURES_SCHEMA, nulls as NaN / None."""
    bars = checked_bars(bars)
    if bars["symbol"].nunique() > 1:
        raise ValueError(f"bars of one symbol expected, got {sorted(bars['symbol'].unique())}")
    return _assemble(_symbol_slices(_bar_arrays(bars))).to_pandas()


def _symbol_slices(
    arrays: Mapping[str, npt.NDArray[Any]],
) -> Iterator[tuple[str, dict[str, npt.NDArray[Any]]]]:
    """(symbol, its bar arrays) of bar arrays ordered by symbol."""
    symbols = arrays["symbol"]
    if symbols.size == 0:
        return
    starts = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]])
    for start, end in zip(starts, np.r_[starts[1:], symbols.size], strict=True):
        yield str(symbols[start]), {name: values[start:end] for name, values in arrays.items()}


def _arrow_column(pieces: list[npt.NDArray[Any]], kind: pa.DataType) -> pa.Array:
    """One column from its per-symbol pieces; NaN (warming up, undefined) becomes null."""
    if not pieces:
        return pa.array([], kind)
    values = np.concatenate(pieces)
    if kind == pa.date32():  # via days since the epoch: far faster than from datetime64[D]
        return pa.array(values.astype("datetime64[D]").astype(np.int32)).cast(kind)
    return pa.array(values, kind, from_pandas=True)


def _repeated(names: list[str], counts: list[int]) -> pa.Array:
    """names[i] repeated counts[i] times, as strings (built through a dictionary: fast)."""
    codes = pa.array(np.repeat(np.arange(len(names), dtype=np.int32), counts))
    return pa.DictionaryArray.from_arrays(codes, pa.array(names, pa.string())).cast(pa.string())


def _assemble(
    symbol_bars: Iterable[tuple[str, Mapping[str, npt.NDArray[Any]]]],
    emit_from: Mapping[str, dt.date] | None = None,
) -> pa.Table:
    """The FEATURES_SCHEMA table of each (symbol, bar arrays), from emit_from[symbol] on."""
    pieces: dict[str, list[npt.NDArray[Any]]] = {name: [] for name in FEATURES_SCHEMA.names}
    symbols: list[str] = []
    counts: list[int] = []
    for symbol, bars in symbol_bars:
        first_row = 0
        if emit_from is not None:
            dates = bars["bar_date"]
            first_row = int(np.searchsorted(dates, np.datetime64(emit_from[symbol], "D")))
        columns = feature_columns(bars, first_row)
        symbols.append(symbol)
        counts.append(columns["bar_date"].size)
        for name, values in columns.items():
            pieces[name].append(values)
    return pa.table(
        [
            _repeated(symbols, counts)
            if field.name == "symbol"
            else _arrow_column(pieces[field.name], field.type)
            for field in FEATURES_SCHEMA
        ],
        schema=FEATURES_SCHEMA,
    )


def features_table(
    bars: pd.DataFrame, invocation_id: str, emit_from: Mapping[str, dt.date] | None = None
) -> pa.Table:
    """Feature rows of every symbol in `bars` (FEATURES_SCHEMA plus invocation_id), symbol by
    symbol through `feature_columns`.

    emit_from: per symbol, the first bar_date to return (an incremental run's dirty dates); the
    indicators are still computed over the symbol's whole history, so the rows returned are
    exactly those of a full computation. None returns every row.
    """
    table = _assemble(_symbol_slices(_bar_arrays(checked_bars(bars))), emit_from)
    return table.append_column("invocation_id", pa.repeat(invocation_id, table.num_rows))
