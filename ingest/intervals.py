"""Binance kline intervals and their lengths."""

from __future__ import annotations

MICROS_PER_SECOND = 1_000_000
MICROS_PER_MINUTE = 60 * MICROS_PER_SECOND
MICROS_PER_HOUR = 60 * MICROS_PER_MINUTE
MICROS_PER_DAY = 24 * MICROS_PER_HOUR

INTERVAL_MICROS: dict[str, int] = {
    "1s": MICROS_PER_SECOND,
    "1m": MICROS_PER_MINUTE,
    "3m": 3 * MICROS_PER_MINUTE,
    "5m": 5 * MICROS_PER_MINUTE,
    "15m": 15 * MICROS_PER_MINUTE,
    "30m": 30 * MICROS_PER_MINUTE,
    "1h": MICROS_PER_HOUR,
    "2h": 2 * MICROS_PER_HOUR,
    "4h": 4 * MICROS_PER_HOUR,
    "6h": 6 * MICROS_PER_HOUR,
    "8h": 8 * MICROS_PER_HOUR,
    "12h": 12 * MICROS_PER_HOUR,
    "1d": MICROS_PER_DAY,
    "3d": 3 * MICROS_PER_DAY,
    "1w": 7 * MICROS_PER_DAY,
}
# A month has no fixed length; its close time comes from the source or the calendar.
INTERVALS: tuple[str, ...] = (*INTERVAL_MICROS, "1mo")


def check_interval(interval: str, *, where: str = "--interval") -> str:
    if interval not in INTERVALS:
        raise ValueError(
            f"{where}: unknown interval {interval!r}; expected one of {', '.join(INTERVALS)}"
        )
    return interval
