"""The `binance-vision` source: spot kline archive files, from a local folder or over HTTP.

Planning picks, per symbol and month of the range, the monthly file, or the daily files of that
month when there is no monthly one, and reads each file's `.CHECKSUM`: a file already loaded with
the same checksum is skipped. Reading verifies the zip against its checksum and parses the CSV
with pyarrow at full speed; only a file with an unparsable number takes the slower path that
rejects just the bad rows. A file that cannot be read at all is a rejected file, and the rest of
the load goes on.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from ingest.archive import (
    DAILY,
    KLINE_FIELDS,
    MONTHLY,
    ArchiveFile,
    daily_file,
    kline_folder,
    monthly_file,
    parse_checksum,
    parse_file_name,
    sha256_hex,
)
from ingest.http import HttpClient, RequestFailed, RetryPolicy
from ingest.loader import SourcePart, WorkItem
from ingest.options import IngestOptions
from ingest.raw_store import RawStore
from ingest.records import CANDIDATE_SCHEMA, make_rejects

SOURCE_NAME = "binance-vision"
DEFAULT_BASE_URL = "https://data.binance.vision"
DEFAULT_INTERVAL = "1d"
SAME_CHECKSUM = "already loaded, same checksum"

VALUE_FIELDS = KLINE_FIELDS[:-1]  # the last column ("ignore") carries nothing
INTEGER_FIELDS = frozenset({"open_time", "close_time", "trade_count"})
_TYPED_COLUMNS = {
    name: pa.int64() if name in INTEGER_FIELDS else pa.float64() for name in VALUE_FIELDS
}
_TEXT_COLUMNS = dict.fromkeys(KLINE_FIELDS, pa.string())


class RejectedFileError(Exception):
    """A file that cannot be loaded at all; the message says why."""


# -- parsing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BadLine:
    number: int
    found: int
    text: str


def _read_csv(
    data: bytes, header_lines: int, column_types: dict[str, pa.DataType]
) -> tuple[pa.Table, list[_BadLine]]:
    """Parse the CSV; lines with a wrong column count are set aside, numbered from 1."""
    bad_lines: list[_BadLine] = []

    def set_aside(row: pa_csv.InvalidRow) -> str:
        bad_lines.append(_BadLine(row.number, row.actual_columns, row.text))
        return "skip"

    table = pa_csv.read_csv(
        io.BytesIO(data),
        # Serial reading keeps line numbers known; the loader reads files in parallel instead.
        read_options=pa_csv.ReadOptions(
            column_names=list(KLINE_FIELDS), skip_rows=header_lines, use_threads=False
        ),
        parse_options=pa_csv.ParseOptions(invalid_row_handler=set_aside),
        convert_options=pa_csv.ConvertOptions(
            column_types=column_types,
            include_columns=list(column_types),
            strings_can_be_null=True,
        ),
    )
    return table, bad_lines


def _header_lines(data: bytes) -> int:
    """1 when the first line is a header (12 names; Binance adds one to some files), else 0."""
    fields = data[:1024].split(b"\n", 1)[0].split(b",")
    return 1 if len(fields) == len(KLINE_FIELDS) and fields[0].strip()[:1].isalpha() else 0


def _line_numbers(header_lines: int, parsed: int, bad_lines: list[_BadLine]) -> np.ndarray:
    """Line numbers of the parsed rows (blank lines are not counted); no row at all is an error."""
    if parsed == 0 and bad_lines:
        raise RejectedFileError(
            f"unreadable CSV: no line has {len(KLINE_FIELDS)} comma-separated columns "
            f"(line {bad_lines[0].number}: {bad_lines[0].text[:80]!r})"
        )
    if parsed == 0:
        raise RejectedFileError("unreadable CSV: no rows")
    first = header_lines + 1
    numbers = np.arange(first, first + parsed + len(bad_lines), dtype=np.int64)
    if bad_lines:
        numbers = numbers[~np.isin(numbers, [line.number for line in bad_lines])]
    return numbers


def _with_keys(values: pa.Table, symbol: str, interval: str, rows: np.ndarray) -> pa.Table:
    """Candidate rows (`CANDIDATE_SCHEMA`) from typed value columns."""
    count = values.num_rows
    keyed = values.append_column("symbol", pa.repeat(symbol, count))
    keyed = keyed.append_column("interval", pa.repeat(interval, count))
    keyed = keyed.append_column("source_row", pa.array(rows))
    return keyed.select(CANDIDATE_SCHEMA.names).cast(CANDIDATE_SCHEMA)


def _column_count_rejects(bad_lines: list[_BadLine], symbol: str, interval: str) -> pa.Table:
    return make_rejects(
        [line.number for line in bad_lines],
        [symbol] * len(bad_lines),
        [interval] * len(bad_lines),
        [line.text for line in bad_lines],
        [
            f"wrong column count: expected {len(KLINE_FIELDS)}, found {line.found} "
            f"(line {line.number})"
            for line in bad_lines
        ],
    )


def _parse_numbers(text: pa.ChunkedArray, name: str) -> tuple[pa.Array, np.ndarray]:
    """A text column as numbers (null where empty) and the mask of values that do not parse."""
    raw = pd.Series(text.to_numpy(zero_copy_only=False), dtype=object)
    present = raw.notna() & (raw.astype(str).str.strip() != "")
    numbers = pd.to_numeric(raw.where(present), errors="coerce").to_numpy(dtype=np.float64)
    if name in INTEGER_FIELDS:
        unparsable = present.to_numpy() & ~(np.isfinite(numbers) & (numbers == np.round(numbers)))
    else:
        unparsable = present.to_numpy() & np.isnan(numbers)
    empty = np.isnan(numbers) | unparsable
    target = pa.int64() if name in INTEGER_FIELDS else pa.float64()
    return pa.array(np.where(empty, 0, numbers), mask=empty).cast(target), unparsable


def candidates_from_text(
    text: pa.Table, symbol: str, interval: str, source_rows: np.ndarray
) -> tuple[pa.Table, pa.Table]:
    """Candidates from kline fields as text; a value present that is not a number is a reject.

    `text` has string columns named as `KLINE_FIELDS`; the rejected rows keep their fields
    joined by commas (the line as the file had it).
    """
    reasons = np.full(text.num_rows, "", dtype=object)
    columns: dict[str, pa.Array] = {}
    for name in VALUE_FIELDS:
        columns[name], unparsable = _parse_numbers(text.column(name), name)
        expected = "a whole number" if name in INTEGER_FIELDS else "a number"
        reasons[(reasons == "") & unparsable] = f"unparsable number in column {name} ({expected})"
    bad = reasons != ""
    candidates = _with_keys(pa.table(columns), symbol, interval, source_rows)
    if not bad.any():
        return candidates, make_rejects([], [], [], [], [])
    lines = pc.binary_join_element_wise(
        *[text.column(name) for name in KLINE_FIELDS], ",", null_handling="replace"
    )
    bad_rows = np.flatnonzero(bad)
    rejects = make_rejects(
        source_rows[bad_rows].tolist(),
        [symbol] * len(bad_rows),
        [interval] * len(bad_rows),
        lines.take(bad_rows).to_pylist(),
        [
            f"{reason} (line {row})"
            for reason, row in zip(reasons[bad], source_rows[bad_rows], strict=True)
        ],
    )
    return candidates.filter(pa.array(~bad)), rejects


def parse_kline_csv(data: bytes, symbol: str, interval: str) -> tuple[pa.Table, pa.Table]:
    """A kline CSV's candidate rows and its rejected rows; RejectedFileError if no row fits."""
    header_lines = _header_lines(data)
    try:
        values, bad_lines = _read_csv(data, header_lines, _TYPED_COLUMNS)
    except pa.ArrowInvalid:  # a value that is not a number
        return _parse_slowly(data, header_lines, symbol, interval)
    rows = _line_numbers(header_lines, values.num_rows, bad_lines)
    return (
        _with_keys(values, symbol, interval, rows),
        _column_count_rejects(bad_lines, symbol, interval),
    )


def _parse_slowly(
    data: bytes, header_lines: int, symbol: str, interval: str
) -> tuple[pa.Table, pa.Table]:
    """Parse every value as text first, so that only the rows with a bad number are rejected."""
    try:
        text, bad_lines = _read_csv(data, header_lines, _TEXT_COLUMNS)
    except pa.ArrowInvalid as exc:
        raise RejectedFileError(f"unreadable CSV: {str(exc).splitlines()[0]}") from None
    rows = _line_numbers(header_lines, text.num_rows, bad_lines)
    candidates, value_rejects = candidates_from_text(text, symbol, interval, rows)
    return candidates, pa.concat_tables(
        [_column_count_rejects(bad_lines, symbol, interval), value_rejects]
    )


def _single_csv(zip_bytes: bytes) -> bytes:
    """The one CSV inside an archive zip."""
    try:
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
            names = archive.namelist()
            if len(names) != 1 or not names[0].lower().endswith(".csv"):
                raise RejectedFileError(f"expected one .csv in the zip, found {names[:5]}")
            return archive.read(names[0])
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise RejectedFileError(f"corrupt zip: {exc}") from None


# -- where the files come from -----------------------------------------------------------------


@dataclass(frozen=True)
class PlannedFile:
    """An archive file found in planning, with its published checksum or why it cannot load."""

    file: ArchiveFile
    checksum: str | None = None
    problem: str | None = None


def _planned(file: ArchiveFile, checksum_text: str | None) -> PlannedFile:
    if checksum_text is None:
        return PlannedFile(file, problem=f"{file.name}: its .CHECKSUM file is missing")
    try:
        return PlannedFile(file, checksum=parse_checksum(checksum_text))
    except ValueError as exc:
        return PlannedFile(file, problem=f"{file.name}: {exc}")


class Archive(Protocol):
    """Where archive files come from: a local folder or a base URL."""

    location: str

    def symbols(self, interval: str) -> list[str]:
        """Every symbol with files of this interval (empty when the archive cannot be listed)."""
        ...

    def span(
        self, symbol: str, interval: str, start: date | None, end: date | None
    ) -> tuple[date, date] | None:
        """The days to look for files of a symbol, or None when it has none."""
        ...

    def probe(self, file: ArchiveFile) -> PlannedFile | None:
        """The file with its checksum, or None when the archive has no such file."""
        ...

    def fetch(self, file: ArchiveFile) -> bytes: ...


class LocalArchive:
    """A folder in the archive's layout (`<root>/data/spot/...`)."""

    def __init__(self, root: Path) -> None:
        if not (root / "data" / "spot").is_dir():
            raise ValueError(
                f"--path {root}: not a Binance Vision archive folder (expected "
                f"{root}/data/spot/monthly/klines/<SYMBOL>/<interval>/... or .../daily/...)"
            )
        self.root = root
        self.location = str(root)

    def symbols(self, interval: str) -> list[str]:
        found = {
            folder.parent.name
            for cadence in (MONTHLY, DAILY)
            for folder in kline_folder(self.root, cadence).glob(f"*/{interval}")
            if folder.is_dir()
        }
        return sorted(found)

    def span(
        self, symbol: str, interval: str, start: date | None, end: date | None
    ) -> tuple[date, date] | None:
        """The requested days, by default from the first to the last day the files cover."""
        files = [
            file
            for cadence in (MONTHLY, DAILY)
            for path in (kline_folder(self.root, cadence, symbol) / interval).glob("*.zip")
            if (file := parse_file_name(path.name, symbol, interval))
        ]
        if not files:
            return None
        return start or min(f.first_day for f in files), end or max(f.last_day for f in files)

    def probe(self, file: ArchiveFile) -> PlannedFile | None:
        if not (self.root / file.relpath).is_file():
            return None
        checksum = self.root / file.checksum_relpath
        return _planned(file, checksum.read_text() if checksum.is_file() else None)

    def fetch(self, file: ArchiveFile) -> bytes:
        return (self.root / file.relpath).read_bytes()


class RemoteArchive:
    """The archive over HTTP (the public one, or a mirror); it cannot be listed."""

    def __init__(self, base_url: str, client: HttpClient) -> None:
        self.location = base_url.rstrip("/")
        self.client = client

    def url(self, relpath: str) -> str:
        return f"{self.location}/{relpath}"

    def symbols(self, interval: str) -> list[str]:
        return []

    def span(
        self, symbol: str, interval: str, start: date | None, end: date | None
    ) -> tuple[date, date] | None:
        """From `start` to `end`, by default yesterday (daily files appear the next day)."""
        if start is None:
            return None
        return start, end or datetime.now(UTC).date() - timedelta(days=1)

    def probe(self, file: ArchiveFile) -> PlannedFile | None:
        try:
            text = self.client.get_text(self.url(file.checksum_relpath))
            if text is None and not self.client.exists(self.url(file.relpath)):
                return None
        except RequestFailed as exc:
            return PlannedFile(file, problem=f"{file.name}: cannot fetch its .CHECKSUM: {exc}")
        return _planned(file, text)

    def fetch(self, file: ArchiveFile) -> bytes:
        data = self.client.get_bytes(self.url(file.relpath))
        if data is None:
            raise FileNotFoundError(f"{self.url(file.relpath)} is gone (HTTP 404)")
        return data


# -- the source --------------------------------------------------------------------------------


def _months(first: date, last: date) -> Iterator[tuple[int, int]]:
    year, month = first.year, first.month
    while (year, month) <= (last.year, last.month):
        yield year, month
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def _days(first: date, last: date) -> Iterator[date]:
    for offset in range((last - first).days + 1):
        yield first + timedelta(days=offset)


def _archive(options: IngestOptions, policy: RetryPolicy | None) -> Archive:
    if options.path is not None:
        if options.base_url:
            raise ValueError("binance-vision: give --path or --base-url, not both")
        return LocalArchive(options.path)
    if not options.symbols or options.start is None:
        raise ValueError(
            "binance-vision over HTTP needs --symbols and --start (a remote archive cannot be "
            "listed); or give --path to a local copy of the archive"
        )
    return RemoteArchive(options.base_url or DEFAULT_BASE_URL, HttpClient(policy))


class BinanceVisionSource:
    """Archive files of one interval for some symbols and days."""

    name = SOURCE_NAME

    def __init__(self, options: IngestOptions, *, policy: RetryPolicy | None = None) -> None:
        self.options = options
        self.interval = options.interval or DEFAULT_INTERVAL
        self.archive = _archive(options, policy)

    def parameters(self) -> dict[str, object]:
        return {
            "archive": self.archive.location,
            "symbols": list(self.options.symbols),
            "interval": self.interval,
            "start": self.options.start,
            "end": self.options.end,
            "force": self.options.force,
        }

    def _spans(self) -> tuple[dict[str, tuple[date, date]], list[tuple[WorkItem, str]]]:
        """The days to look for files per symbol, and the symbols without any file."""
        spans, missing = {}, []
        for symbol in self.options.symbols or self.archive.symbols(self.interval):
            days = self.archive.span(symbol, self.interval, self.options.start, self.options.end)
            if days is None:
                item = WorkItem(f"{symbol}/{self.interval}", symbol)
                missing.append((item, f"no archive files in {self.archive.location}"))
            else:
                spans[symbol] = days
        return spans, missing

    def _find_files(self, spans: dict[str, tuple[date, date]]) -> list[PlannedFile]:
        """Monthly files where they exist, else the daily files of the month in the range."""
        monthly = [
            monthly_file(symbol, self.interval, year, month)
            for symbol, (first, last) in spans.items()
            for year, month in _months(first, last)
        ]
        with ThreadPoolExecutor(self.options.workers, thread_name_prefix="probe") as pool:
            found_monthly = list(pool.map(self.archive.probe, monthly))
            daily = [
                daily_file(month.symbol, self.interval, day)
                for month, found in zip(monthly, found_monthly, strict=True)
                if found is None
                for day in _days(
                    max(month.first_day, spans[month.symbol][0]),
                    min(month.last_day, spans[month.symbol][1]),
                )
            ]
            found_daily = list(pool.map(self.archive.probe, daily))
        return [planned for planned in found_monthly + found_daily if planned is not None]

    def plan(self, store: RawStore) -> tuple[list[WorkItem], list[tuple[WorkItem, str]]]:
        spans, skipped = self._spans()
        items = []
        for planned in self._find_files(spans):
            item = WorkItem(planned.file.relpath, planned.file.name, planned)
            loaded = store.loaded_checksum(SOURCE_NAME, item.key)
            if not self.options.force and planned.checksum and loaded == planned.checksum:
                skipped.append((item, SAME_CHECKSUM))
            else:
                items.append(item)
        return items, skipped

    def read(self, item: WorkItem) -> SourcePart:
        planned: PlannedFile = item.payload  # type: ignore[assignment]
        if planned.problem:
            return SourcePart(item, file_error=planned.problem)
        file = planned.file
        try:
            data = self.archive.fetch(file)
        except (OSError, RequestFailed) as exc:
            return SourcePart(item, file_error=f"{file.name}: cannot read: {exc}")
        checksum = sha256_hex(data)
        try:
            if checksum != planned.checksum:
                raise RejectedFileError(
                    f"checksum mismatch: .CHECKSUM says {planned.checksum}, the zip hashes to "
                    f"{checksum}"
                )
            candidates, rejects = parse_kline_csv(_single_csv(data), file.symbol, file.interval)
        except RejectedFileError as exc:
            return SourcePart(item, checksum=checksum, file_error=f"{file.name}: {exc}")
        return SourcePart(
            item,
            candidates=candidates,
            parse_rejects=rejects,
            checksum=checksum,
            track_file=True,
            symbol_loads=[(file.symbol, file.interval)],
        )


def build(options: IngestOptions) -> BinanceVisionSource:
    return BinanceVisionSource(options)
