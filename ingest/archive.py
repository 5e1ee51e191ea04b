"""The Binance Vision kline archive: its path layout, its checksums, and a writer of its files.

An archive file is a zip holding one headerless 12-column CSV, with a sibling `.zip.CHECKSUM` in
`sha256sum` format. The reader (`ingest.binance_vision`) and the writer here share the layout; the
writer serves the tests and the ingest benchmark, which need archives they can build on the spot.
"""

from __future__ import annotations

import calendar
import hashlib
import io
import re
import zipfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from ingest.intervals import INTERVAL_MICROS, MICROS_PER_DAY
from ingest.records import to_micros

# The 12 columns of a kline CSV, in file order.
KLINE_FIELDS: tuple[str, ...] = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trade_count",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
    "ignore",
)
CHECKSUM_SUFFIX = ".CHECKSUM"
# Binance switched its archive timestamps from milliseconds to microseconds on this day.
MICROSECONDS_FROM = date(2025, 1, 1)
MONTHLY, DAILY = "monthly", "daily"
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_PERIOD = re.compile(r"^\d{4}-\d{2}(-\d{2})?$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True, order=True)
class ArchiveFile:
    """One archive file: a month (`period` "YYYY-MM") or a day ("YYYY-MM-DD") of one symbol."""

    symbol: str
    interval: str
    period: str

    @property
    def cadence(self) -> str:
        return MONTHLY if len(self.period) == len("YYYY-MM") else DAILY

    @property
    def name(self) -> str:
        return f"{self.symbol}-{self.interval}-{self.period}.zip"

    @property
    def relpath(self) -> str:
        """Path from the archive root; also the file's key in `raw.loaded_files`."""
        return f"data/spot/{self.cadence}/klines/{self.symbol}/{self.interval}/{self.name}"

    @property
    def checksum_relpath(self) -> str:
        return self.relpath + CHECKSUM_SUFFIX

    @property
    def first_day(self) -> date:
        return date.fromisoformat(self.period if self.cadence == DAILY else f"{self.period}-01")

    @property
    def last_day(self) -> date:
        if self.cadence == DAILY:
            return self.first_day
        first = self.first_day
        return first.replace(day=calendar.monthrange(first.year, first.month)[1])


def monthly_file(symbol: str, interval: str, year: int, month: int) -> ArchiveFile:
    return ArchiveFile(symbol, interval, f"{year:04d}-{month:02d}")


def daily_file(symbol: str, interval: str, day: date) -> ArchiveFile:
    return ArchiveFile(symbol, interval, day.isoformat())


def parse_file_name(name: str, symbol: str, interval: str) -> ArchiveFile | None:
    """The archive file a zip's name denotes in a symbol's interval folder, or None if foreign."""
    prefix = f"{symbol}-{interval}-"
    period = name.removeprefix(prefix).removesuffix(".zip")
    if not name.startswith(prefix) or not name.endswith(".zip") or not _PERIOD.match(period):
        return None
    try:
        date.fromisoformat(period if len(period) == len("YYYY-MM-DD") else f"{period}-01")
    except ValueError:  # not a calendar day, e.g. 2024-13
        return None
    return ArchiveFile(symbol, interval, period)


def kline_folder(root: Path, cadence: str, symbol: str | None = None) -> Path:
    folder = root / "data" / "spot" / cadence / "klines"
    return folder / symbol if symbol else folder


# -- checksums ---------------------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checksum_text(data: bytes, file_name: str) -> str:
    """A `.CHECKSUM` file's content, as `sha256sum` writes it."""
    return f"{sha256_hex(data)}  {file_name}\n"


def parse_checksum(text: str) -> str:
    """The sha256 digest in a `.CHECKSUM` file's text (lower case); ValueError if malformed."""
    fields = text.split()
    if not fields or not _SHA256.match(fields[0]):
        raise ValueError(f"malformed .CHECKSUM (expected '<64 hex digits>  <name>'): {text[:80]!r}")
    return fields[0].lower()


# -- writing -----------------------------------------------------------------------------------


def zip_csv(csv_bytes: bytes, csv_name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(csv_name, csv_bytes)
    return buffer.getvalue()


def write_archive_file(root: Path, file: ArchiveFile, csv_bytes: bytes) -> Path:
    """Write `file` under `root` in the archive layout, with its `.CHECKSUM`; return its path."""
    path = root / file.relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    data = zip_csv(csv_bytes, file.name.removesuffix(".zip") + ".csv")
    path.write_bytes(data)
    (root / file.checksum_relpath).write_text(checksum_text(data, file.name))
    return path


def klines_csv(table: pa.Table) -> bytes:
    """A table with the 12 `KLINE_FIELDS` as a headerless CSV, as the archive stores it."""
    buffer = io.BytesIO()
    options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
    pa_csv.write_csv(table.select(list(KLINE_FIELDS)), buffer, options)
    return buffer.getvalue()


def sample_klines(file: ArchiveFile, *, seed: int = 0, unit: str | None = None) -> pa.Table:
    """Plausible bars (a random walk) for every interval of `file`'s period, in `KLINE_FIELDS`.

    Timestamps are epoch milliseconds, or microseconds for periods from 2025 on, as Binance
    writes them; `unit` ("ms" or "us") overrides that.
    """
    step_us = INTERVAL_MICROS.get(file.interval, MICROS_PER_DAY + 1)
    if step_us > MICROS_PER_DAY:
        raise ValueError(f"sample_klines: interval {file.interval!r} is longer than a day")
    start_us = int(datetime.combine(file.first_day, datetime.min.time(), UTC).timestamp()) * 10**6
    days = (file.last_day - file.first_day).days + 1
    count = days * MICROS_PER_DAY // step_us
    unit = unit or ("us" if file.first_day >= MICROSECONDS_FROM else "ms")
    scale = 1 if unit == "us" else 1000
    rng = np.random.default_rng(seed)
    open_us = start_us + np.arange(count, dtype=np.int64) * step_us
    closes = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, count)))
    opens = np.r_[100.0, closes[:-1]]
    spread = np.abs(rng.normal(0.0, 0.001, count)) * closes
    volume = rng.uniform(1.0, 50.0, count).round(6)
    taker_share = rng.uniform(0.3, 0.7, count)
    return pa.table(
        {
            "open_time": open_us // scale,
            "open": opens.round(6),
            "high": (np.maximum(opens, closes) + spread).round(6),
            "low": (np.minimum(opens, closes) - spread).round(6),
            "close": closes.round(6),
            "volume": volume,
            "close_time": (open_us + step_us) // scale - 1,
            "quote_volume": (volume * closes).round(6),
            "trade_count": rng.integers(1, 500, count),
            "taker_buy_base_volume": (volume * taker_share).round(6),
            "taker_buy_quote_volume": (volume * taker_share * closes).round(6),
            "ignore": pa.repeat("0", count),
        }
    )


def write_series(root: Path, symbol: str, interval: str, table: pa.Table) -> list[Path]:
    """Write one symbol's candidate rows as the archive would hold them.

    Whole calendar months become monthly files; the days of a month the series does not cover
    whole become daily files. Returns the zips written.
    """
    days = pa.array(to_micros(table.column("open_time").to_numpy()) // MICROS_PER_DAY)
    table = table.append_column("day", days).append_column(
        "ignore", pa.array(np.zeros(table.num_rows, dtype=np.int64))
    )
    first, last = (
        date.fromordinal(EPOCH_ORDINAL + min(days.to_pylist())),
        date.fromordinal(EPOCH_ORDINAL + max(days.to_pylist())),
    )
    written = []
    for month_start in _month_starts(first, last):
        month_end = _next_month(month_start) - timedelta(days=1)
        whole = month_start >= first and month_end <= last
        if whole:
            periods = [
                (
                    monthly_file(symbol, interval, month_start.year, month_start.month),
                    month_start,
                    month_end,
                )
            ]
        else:
            periods = [
                (daily_file(symbol, interval, day), day, day)
                for day in _days(max(month_start, first), min(month_end, last))
            ]
        for file, start, end in periods:
            lo, hi = start.toordinal() - EPOCH_ORDINAL, end.toordinal() - EPOCH_ORDINAL
            rows = table.filter(pc.and_(pc.greater_equal(days, lo), pc.less_equal(days, hi)))
            if rows.num_rows:
                written.append(write_archive_file(root, file, klines_csv(rows)))
    return written


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _month_starts(first: date, last: date) -> list[date]:
    months, current = [], date(first.year, first.month, 1)
    while current <= last:
        months.append(current)
        current = _next_month(current)
    return months


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]
