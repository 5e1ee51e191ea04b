"""Candidate kline rows: the one shape every source produces, and the checks every row passes.

A source turns what it read into a *candidate table* (`CANDIDATE_SCHEMA`): raw epoch timestamps
(milliseconds or microseconds, decided per value) and numbers already parsed. `validate_candidates`
splits it into rows fit to be bars and rejects, each with its reason. OHLC inconsistencies are
not a reason: such rows are kept as received and repaired in staging.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.intervals import INTERVAL_MICROS

PRICE_COLUMNS = ("open", "high", "low", "close")
OPTIONAL_FLOAT_COLUMNS = ("quote_volume", "taker_buy_base_volume", "taker_buy_quote_volume")

CANDIDATE_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("interval", pa.string()),
        ("open_time", pa.int64()),
        ("close_time", pa.int64()),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
        ("quote_volume", pa.float64()),
        ("trade_count", pa.int64()),
        ("taker_buy_base_volume", pa.float64()),
        ("taker_buy_quote_volume", pa.float64()),
        ("source_row", pa.int64()),
    ]
)

KLINE_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("interval", pa.string()),
        ("open_time", pa.timestamp("us")),
        ("close_time", pa.timestamp("us")),
        *[(name, pa.float64()) for name in (*PRICE_COLUMNS, "volume", "quote_volume")],
        ("trade_count", pa.int64()),
        ("taker_buy_base_volume", pa.float64()),
        ("taker_buy_quote_volume", pa.float64()),
        ("source_row", pa.int64()),
    ]
)

REJECT_SCHEMA = pa.schema(
    [
        ("source_row", pa.int64()),
        ("symbol", pa.string()),
        ("interval", pa.string()),
        ("raw_row", pa.string()),
        ("reason", pa.string()),
    ]
)

# Epoch milliseconds cover 1973..5138; microseconds start at 1e14 (Binance uses them from 2025).
MILLIS_LOWER_BOUND = 10**11
MICROS_LOWER_BOUND = 10**14
MICROS_UPPER_BOUND = 10**17


def to_micros(raw: np.ndarray) -> np.ndarray:
    """Epoch ms or us per value to us; -1 where the unit is unknown (or the value is missing)."""
    out = np.full(raw.shape, -1, dtype=np.int64)
    is_millis = (raw >= MILLIS_LOWER_BOUND) & (raw < MICROS_LOWER_BOUND)
    is_micros = (raw >= MICROS_LOWER_BOUND) & (raw < MICROS_UPPER_BOUND)
    out[is_millis] = raw[is_millis] * 1000
    out[is_micros] = raw[is_micros]
    return out


def empty_rejects() -> pa.Table:
    return REJECT_SCHEMA.empty_table()


def make_rejects(
    source_rows: list[int | None],
    symbols: list[str | None],
    intervals: list[str | None],
    raw_rows: list[str],
    reasons: list[str],
) -> pa.Table:
    return pa.table(
        {
            "source_row": source_rows,
            "symbol": symbols,
            "interval": intervals,
            "raw_row": raw_rows,
            "reason": reasons,
        },
        schema=REJECT_SCHEMA,
    )


@dataclass(frozen=True)
class ValidatedKlines:
    valid: pa.Table
    rejects: pa.Table


def _column(table: pa.Table, name: str, dtype: type, fill: float | int) -> np.ndarray:
    filled = pc.fill_null(table.column(name), pa.scalar(fill, table.schema.field(name).type))
    return filled.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def _derived_close_times(open_us: np.ndarray, intervals: pa.ChunkedArray) -> np.ndarray:
    """Binance convention: a bar closes 1 ms before the next one opens."""
    close_us = np.full(open_us.shape, -1, dtype=np.int64)
    names = intervals.to_numpy(zero_copy_only=False)
    for interval in set(names):
        length = INTERVAL_MICROS.get(interval)
        if length is None:
            continue
        rows = names == interval
        close_us[rows] = np.where(open_us[rows] >= 0, open_us[rows] + length - 1000, -1)
    return close_us


def _reject_reasons(
    table: pa.Table, open_us: np.ndarray, close_us: np.ndarray, now_us: int
) -> np.ndarray:
    """The first reason each row cannot be a bar, or "" when it can."""
    reasons = np.full(table.num_rows, "", dtype=object)

    def flag(mask: np.ndarray, reason: str) -> None:
        reasons[(reasons == "") & mask] = reason

    flag(open_us < 0, "open_time missing or in an unknown unit (expected epoch ms or us)")
    flag(close_us < 0, "close_time missing or in an unknown unit (expected epoch ms or us)")
    flag(open_us > now_us, "open_time is in the future")
    flag(close_us <= open_us, "open_time is not before close_time")
    for name in PRICE_COLUMNS:
        values = _column(table, name, np.float64, np.nan)
        flag(~np.isfinite(values), f"{name} is missing or not a number")
        flag(values <= 0, f"{name} is zero or negative")
    volume = _column(table, "volume", np.float64, np.nan)
    flag(~np.isfinite(volume), "volume is missing or not a number")
    flag(volume < 0, "volume is negative")
    quote_volume = _column(table, "quote_volume", np.float64, 0.0)
    flag(quote_volume < 0, "quote_volume is negative")
    return reasons


def _duplicate_keys(table: pa.Table, open_us: np.ndarray) -> np.ndarray:
    """True for every repeat of a (symbol, interval, open_time) already seen earlier in the file."""
    symbol_codes = table.column("symbol").dictionary_encode().combine_chunks().indices
    interval_codes = table.column("interval").dictionary_encode().combine_chunks().indices
    order = np.lexsort((open_us, interval_codes.to_numpy(), symbol_codes.to_numpy()))
    keys = np.stack(
        [symbol_codes.to_numpy()[order], interval_codes.to_numpy()[order], open_us[order]]
    )
    repeats = np.r_[False, (keys[:, 1:] == keys[:, :-1]).all(axis=0)]
    duplicate = np.zeros(table.num_rows, dtype=bool)
    duplicate[order[repeats]] = True
    return duplicate


def _describe_rows(table: pa.Table) -> list[str]:
    return [json.dumps(row, default=str) for row in table.drop_columns(["source_row"]).to_pylist()]


def validate_candidates(table: pa.Table, now_us: int) -> ValidatedKlines:
    """Split candidate rows into bars fit to store (`KLINE_SCHEMA`) and rejects with reasons."""
    table = table.select(CANDIDATE_SCHEMA.names).cast(CANDIDATE_SCHEMA)
    open_us = to_micros(_column(table, "open_time", np.int64, -1))
    close_raw = _column(table, "close_time", np.int64, -1)
    close_us = np.where(
        close_raw == -1,
        _derived_close_times(open_us, table.column("interval")),
        to_micros(close_raw),
    )
    reasons = _reject_reasons(table, open_us, close_us, now_us)
    ok = reasons == ""
    duplicate = np.zeros(table.num_rows, dtype=bool)
    if ok.any():
        duplicate[ok] = _duplicate_keys(table.filter(pa.array(ok)), open_us[ok])
    reasons[duplicate] = "duplicate (symbol, interval, open_time) within the file"
    ok &= ~duplicate

    bad = ~ok
    rejected = table.filter(pa.array(bad))
    rejects = make_rejects(
        rejected.column("source_row").to_pylist(),
        rejected.column("symbol").to_pylist(),
        rejected.column("interval").to_pylist(),
        _describe_rows(rejected),
        [str(reason) for reason in reasons[bad]],
    )
    keep = pa.array(ok)
    valid = (
        table.filter(keep)
        .set_column(2, "open_time", pa.array(open_us[ok]).cast(pa.timestamp("us")))
        .set_column(3, "close_time", pa.array(close_us[ok]).cast(pa.timestamp("us")))
    )
    return ValidatedKlines(valid=valid.cast(KLINE_SCHEMA), rejects=rejects)
