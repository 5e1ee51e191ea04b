"""The `files` source: local CSV or Parquet klines, read through a declared column mapping.

A mapping (YAML, see configs/mappings/) says which source column is which kline field, the unit
of the timestamps, and how each row's symbol and interval are found: a fixed value, a column, or
a named group of `file_pattern` matched against the file name. Without `--mapping`, the shipped
mapping whose `file_pattern` matches the files under `--path` is used.

Each file is one work item with its sha256: a file already loaded with the same checksum is
skipped, a changed one is read again (changed rows become revisions). Rows that cannot be parsed
(a field that is not a number, a wrong number of fields) become rejects with their line number.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from ingest.intervals import INTERVALS
from ingest.loader import SourcePart, WorkItem
from ingest.options import IngestOptions
from ingest.raw_store import RawStore, utc_now
from ingest.records import (
    CANDIDATE_SCHEMA,
    MICROS_LOWER_BOUND,
    MICROS_UPPER_BOUND,
    empty_rejects,
    make_rejects,
)
from quantwarehouse.config import REQUIRED, ConfigNode, load_config
from quantwarehouse.paths import CONFIG_DIR

SOURCE_NAME = "files"
MAPPINGS_DIR = CONFIG_DIR / "mappings"

FORMATS = ("csv", "parquet")
FORMAT_SUFFIXES = {"csv": (".csv",), "parquet": (".parquet", ".pq")}
REQUIRED_FIELDS = ("open_time", "open", "high", "low", "close", "volume")
OPTIONAL_FIELDS = (
    "close_time",
    "quote_volume",
    "trade_count",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
)
TIMESTAMP_FIELDS = ("open_time", "close_time")
INTEGER_FIELDS = ("trade_count",)
# Epoch unit -> (numerator, denominator) turning a value into microseconds.
TIMESTAMP_UNITS: dict[str, tuple[int, int]] = {
    "s": (1_000_000, 1),
    "ms": (1_000, 1),
    "us": (1, 1),
    "ns": (1, 1_000),
}
AUTO_UNIT = "auto"
RULE_KINDS = ("value", "column", "filename_group")
MAPPING_KEYS = (
    "description",
    "format",
    "header",
    "column_names",
    "delimiter",
    "file_pattern",
    "timestamp_unit",
    "columns",
    "symbol",
    "interval",
)
CSV_ONLY_KEYS = ("header", "column_names", "delimiter")

FLOAT_PATTERN = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
INTEGER_PATTERN = r"^-?\d{1,18}$"
BLANK_LINES = (b"\n\n", b"\n\r\n")


class FileProblem(Exception):
    """A file that cannot be read as a whole; it is recorded as a rejected file."""


# -- the mapping ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValueRule:
    """Where a row's symbol (or interval) comes from: exactly one of the three is set."""

    value: str | None = None
    column: str | None = None
    filename_group: str | None = None


@dataclass(frozen=True)
class ColumnMapping:
    path: Path
    format: str
    header: bool
    column_names: tuple[str, ...]
    delimiter: str
    file_pattern: re.Pattern[str] | None
    timestamp_unit: str
    columns: dict[str, str]
    symbol: ValueRule
    interval: ValueRule

    @property
    def name(self) -> str:
        return self.path.name

    def source_columns(self) -> dict[str, str]:
        """Every source column the mapping reads -> the mapping key that names it."""
        used = {source: f"columns.{field}" for field, source in self.columns.items()}
        for key, rule in (("symbol", self.symbol), ("interval", self.interval)):
            if rule.column is not None:
                used.setdefault(rule.column, f"{key}.column")
        return used

    def accepts_name(self, name: str) -> bool:
        if self.file_pattern is not None:
            return self.file_pattern.fullmatch(name) is not None
        return name.lower().endswith(FORMAT_SUFFIXES[self.format])


def _check_declared_column(node: ConfigNode, key: str, source: str, names: tuple[str, ...]) -> None:
    if names and source not in names:
        raise node.error(key, f"column {source!r} is not in column_names ({', '.join(names)})")


def _parse_rule(
    node: ConfigNode, key: str, pattern: re.Pattern[str] | None, names: tuple[str, ...]
) -> ValueRule:
    rule_node = node.child(key)
    rule_node.only_keys(RULE_KINDS)
    given = [kind for kind in RULE_KINDS if rule_node.has(kind)]
    if len(given) != 1:
        raise node.error(key, f"expected exactly one of {', '.join(RULE_KINDS)}, got {len(given)}")
    kind = given[0]
    if kind == "value" and key == "interval":
        return ValueRule(value=rule_node.choice(kind, INTERVALS))
    text = rule_node.value(kind, str).strip()
    if kind == "value":
        if not text.isalnum():
            raise rule_node.error(kind, f"{text!r} is not a symbol; expected e.g. BTCUSDT")
        return ValueRule(value=text.upper())
    if kind == "column":
        _check_declared_column(rule_node, kind, text, names)
        return ValueRule(column=text)
    groups = sorted(pattern.groupindex) if pattern else []
    if text not in groups:
        raise rule_node.error(
            kind,
            f"group {text!r} is not a named group of file_pattern "
            f"(named groups: {', '.join(groups) or 'none'})",
        )
    return ValueRule(filename_group=text)


def _parse_columns(node: ConfigNode, names: tuple[str, ...]) -> dict[str, str]:
    columns = node.child("columns")
    columns.only_keys((*REQUIRED_FIELDS, *OPTIONAL_FIELDS))
    mapped = {}
    for field in (*REQUIRED_FIELDS, *OPTIONAL_FIELDS):
        default = None if field in OPTIONAL_FIELDS else REQUIRED
        source = columns.value(field, str, default=default)
        if source is not None:
            _check_declared_column(columns, field, source, names)
            mapped[field] = source
    return mapped


def _parse_pattern(node: ConfigNode) -> re.Pattern[str] | None:
    text = node.value("file_pattern", str, default=None)
    if text is None:
        return None
    try:
        return re.compile(text)
    except re.error as exc:
        raise node.error("file_pattern", f"not a valid regular expression: {exc}") from None


def _parse_csv_layout(node: ConfigNode, file_format: str) -> tuple[bool, tuple[str, ...], str]:
    """header, column_names and delimiter (csv only)."""
    if file_format != "csv":
        for key in CSV_ONLY_KEYS:
            if node.has(key):
                raise node.error(
                    key, f"applies to csv files only (this mapping reads {file_format})"
                )
        return False, (), ","
    header = node.value("header", bool, default=True)
    names = tuple(node.items("column_names", str, default=[]))
    if header and names:
        raise node.error("column_names", "only for files without a header (header: false)")
    if not header and not names:
        raise node.error("column_names", "missing; files without a header need the column names")
    if len(set(names)) != len(names):
        raise node.error("column_names", "names a column twice")
    delimiter = node.value("delimiter", str, default=",")
    if len(delimiter) != 1:
        raise node.error("delimiter", f"expected one character, got {delimiter!r}")
    return header, names, delimiter


def load_mapping(path: Path) -> ColumnMapping:
    """Read and validate a column mapping file."""
    node = load_config(path)
    node.only_keys(MAPPING_KEYS)
    node.value("description", str, default="")
    file_format = node.choice("format", FORMATS, default="csv")
    header, names, delimiter = _parse_csv_layout(node, file_format)
    pattern = _parse_pattern(node)
    return ColumnMapping(
        path=path,
        format=file_format,
        header=header,
        column_names=names,
        delimiter=delimiter,
        file_pattern=pattern,
        timestamp_unit=node.choice(
            "timestamp_unit", (*TIMESTAMP_UNITS, AUTO_UNIT), default=AUTO_UNIT
        ),
        columns=_parse_columns(node, names),
        symbol=_parse_rule(node, "symbol", pattern, names),
        interval=_parse_rule(node, "interval", pattern, names),
    )


def shipped_mappings() -> list[ColumnMapping]:
    return [load_mapping(path) for path in sorted(MAPPINGS_DIR.glob("*.yml"))]


def select_mapping(files: list[Path]) -> ColumnMapping:
    """The one shipped mapping whose `file_pattern` matches some of these files."""
    candidates = [m for m in shipped_mappings() if m.file_pattern is not None]
    matching = [m for m in candidates if any(m.accepts_name(f.name) for f in files)]
    if len(matching) == 1:
        return matching[0]
    shipped = "; ".join(f"{m.name} ({m.file_pattern.pattern})" for m in candidates)
    if not matching:
        raise ValueError(
            f"--mapping: no mapping in {MAPPINGS_DIR} has a file_pattern matching these files; "
            f"pass --mapping FILE.yml (shipped: {shipped})"
        )
    names = ", ".join(m.name for m in matching)
    raise ValueError(f"--mapping: several shipped mappings match these files ({names}); pass one")


@dataclass(frozen=True)
class FileTarget:
    """A file to read, with what its name (or the mapping) says about its rows."""

    path: Path
    match: re.Match[str] | None
    symbol: str | None
    interval: str | None
    problem: str | None = None


# -- reading a file into source columns ----------------------------------------------------------


@dataclass(frozen=True)
class RawRows:
    """The source columns a mapping reads (strings for CSV), their row numbers and bad rows."""

    columns: pa.Table
    source_rows: np.ndarray
    bad_rows: pa.Table


def _check_columns(names: list[str], mapping: ColumnMapping) -> None:
    """Every column the mapping reads is in the file, once."""
    for source, key in mapping.source_columns().items():
        if source not in names:
            raise FileProblem(
                f"column {source!r} ({key} in {mapping.name}) is not in the file; "
                f"its columns are: {', '.join(names)}"
            )
        if names.count(source) > 1:
            raise FileProblem(
                f"the file has {names.count(source)} columns named {source!r} ({key})"
            )


def _read_plain_csv(data: bytes, names: list[str], mapping: ColumnMapping) -> RawRows | None:
    """Arrow's fast reader for the usual file: no quotes, no blank lines, every row complete.

    Then line numbers follow from row positions. Anything else returns None, and the csv module
    reads the file with exact line numbers instead.
    """
    if b'"' in data or data.startswith((b"\n", b"\r\n")) or any(b in data for b in BLANK_LINES):
        return None
    invalid_rows = 0

    def count_invalid(_row: pa_csv.InvalidRow) -> str:
        nonlocal invalid_rows
        invalid_rows += 1
        return "skip"

    needed = list(mapping.source_columns())
    try:
        table = pa_csv.read_csv(
            pa.BufferReader(data),
            # one thread: the loader already reads several files at once
            read_options=pa_csv.ReadOptions(
                column_names=names, skip_rows=int(mapping.header), use_threads=False
            ),
            parse_options=pa_csv.ParseOptions(
                delimiter=mapping.delimiter, invalid_row_handler=count_invalid
            ),
            convert_options=pa_csv.ConvertOptions(
                include_columns=needed,
                column_types=dict.fromkeys(needed, pa.string()),
                strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid:
        return None
    if invalid_rows:
        return None
    first_line = 2 if mapping.header else 1
    return RawRows(
        columns=table,
        source_rows=np.arange(first_line, first_line + table.num_rows, dtype=np.int64),
        bad_rows=empty_rejects(),
    )


def _read_csv_rows(data: bytes, names: list[str], mapping: ColumnMapping) -> RawRows:
    """Row by row, with the line number of each row and each malformed row."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileProblem(f"not UTF-8 text ({exc})") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=mapping.delimiter)
    if mapping.header:
        next(reader, None)
    positions = {source: names.index(source) for source in mapping.source_columns()}
    values: dict[str, list[str]] = {source: [] for source in positions}
    rows: list[int] = []
    bad: list[tuple[int, str, str]] = []
    try:
        for fields in reader:
            if not fields:
                continue  # a blank line holds no row
            if len(fields) != len(names):
                reason = f"expected {len(names)} fields, found {len(fields)}"
                bad.append((reader.line_num, mapping.delimiter.join(fields), reason))
                continue
            rows.append(reader.line_num)
            for source, position in positions.items():
                values[source].append(fields[position])
    except csv.Error as exc:
        raise FileProblem(f"line {reader.line_num}: not readable as CSV ({exc})") from None
    source_rows, raw_texts, reasons = zip(*bad, strict=True) if bad else ((), (), ())
    return RawRows(
        columns=pa.table({source: pa.array(v, pa.string()) for source, v in values.items()}),
        source_rows=np.array(rows, dtype=np.int64),
        bad_rows=make_rejects(
            list(source_rows), [None] * len(bad), [None] * len(bad), list(raw_texts), list(reasons)
        ),
    )


def _header_names(data: bytes, mapping: ColumnMapping) -> list[str]:
    """The column names: the file's first line, or the mapping's column_names."""
    if not mapping.header:
        return list(mapping.column_names)
    first_line = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not first_line:
        raise FileProblem("the first line is empty; the mapping expects a header row")
    try:
        header = next(csv.reader([first_line.decode("utf-8")], delimiter=mapping.delimiter))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise FileProblem(f"line 1: not readable as a CSV header ({exc})") from None
    return [name.strip() for name in header]


def _read_csv(data: bytes, mapping: ColumnMapping) -> RawRows:
    data = data.removeprefix(codecs.BOM_UTF8)
    names = _header_names(data, mapping)
    _check_columns(names, mapping)
    return _read_plain_csv(data, names, mapping) or _read_csv_rows(data, names, mapping)


def _read_parquet(data: bytes, mapping: ColumnMapping) -> RawRows:
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        _check_columns(parquet.schema_arrow.names, mapping)
        table = parquet.read(columns=list(mapping.source_columns()))
    except (pa.ArrowException, OSError) as exc:
        raise FileProblem(f"not readable as Parquet ({exc})") from None
    return RawRows(
        columns=table,
        source_rows=np.arange(1, table.num_rows + 1, dtype=np.int64),
        bad_rows=empty_rejects(),
    )


READERS: dict[str, Callable[[bytes, ColumnMapping], RawRows]] = {
    "csv": _read_csv,
    "parquet": _read_parquet,
}


# -- converting source columns to candidate fields -----------------------------------------------


class RowReasons:
    """Why each row cannot be used ("" when it can); several reasons are joined."""

    def __init__(self, rows: int) -> None:
        self.reasons = np.full(rows, "", dtype=object)

    def add(self, mask: np.ndarray, describe: Callable[[int], str]) -> None:
        for row in np.flatnonzero(mask):
            text = describe(int(row))
            self.reasons[row] = f"{self.reasons[row]}; {text}" if self.reasons[row] else text

    @property
    def bad(self) -> np.ndarray:
        return self.reasons != ""


def _numbers_from_text(
    column: pa.ChunkedArray, pattern: str, target: pa.DataType
) -> tuple[pa.Array, np.ndarray]:
    """Parse text; empty text is null. Returns the values and the mask of unparsable ones."""
    text = column.combine_chunks()
    no_value = pa.scalar(None, pa.string())
    try:  # the usual case: every value parses, so no row needs a closer look
        values = pc.cast(pc.if_else(pc.equal(text, ""), no_value, text), target)
        return values, np.zeros(len(text), dtype=bool)
    except pa.ArrowInvalid:
        pass
    text = pc.utf8_trim_whitespace(text)
    empty = pc.fill_null(pc.equal(text, ""), True)
    parsable = pc.fill_null(pc.match_substring_regex(text, pattern), False)
    unparsable = pc.and_(pc.invert(empty), pc.invert(parsable)).to_numpy(zero_copy_only=False)
    return pc.cast(pc.if_else(parsable, text, no_value), target), unparsable


def _to_numbers(
    column: pa.ChunkedArray, target: pa.DataType, label: str
) -> tuple[pa.Array, np.ndarray]:
    """A source column as `target` numbers; the mask marks values that are not numbers."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        pattern = INTEGER_PATTERN if pa.types.is_integer(target) else FLOAT_PATTERN
        return _numbers_from_text(column, pattern, target)
    if pa.types.is_timestamp(kind) and pa.types.is_integer(target):
        micros = pc.cast(pc.cast(column, pa.timestamp("us", tz=kind.tz)), pa.int64())
        return micros.combine_chunks(), np.zeros(len(column), dtype=bool)
    if pa.types.is_floating(kind) and pa.types.is_integer(target):
        values = column.combine_chunks()
        whole = pc.fill_null(pc.equal(pc.floor(values), values), True)
        not_whole = pc.invert(whole).to_numpy(zero_copy_only=False)
        kept = pc.if_else(whole, values, pa.scalar(None, kind))
        return pc.cast(kept, target), not_whole
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return pc.cast(column, target).combine_chunks(), np.zeros(len(column), dtype=bool)
    raise FileProblem(f"column {label} has type {kind}; expected numbers")


def _epochs_to_micros(
    values: pa.Array, unit: str, field: str, reasons: RowReasons, raw: pa.Array
) -> pa.Array:
    """Declared units become microseconds (out-of-range values are rejected); auto passes on."""
    if unit == AUTO_UNIT:
        return values
    numerator, denominator = TIMESTAMP_UNITS[unit]
    epochs = pc.fill_null(values, 0).to_numpy(zero_copy_only=False)
    present = values.is_valid().to_numpy(zero_copy_only=False)
    low = -(-MICROS_LOWER_BOUND * denominator // numerator)
    high = min(MICROS_UPPER_BOUND * denominator // numerator, np.iinfo(np.int64).max)
    out_of_range = present & ((epochs < low) | (epochs >= high))
    reasons.add(
        out_of_range,
        lambda row: (
            f"{field} {raw[row].as_py()!r} is not an epoch timestamp in {unit} "
            "(expected 1973 to 5138)"
        ),
    )
    micros = np.where(out_of_range, 0, epochs) * numerator // denominator
    return pa.array(micros, pa.int64(), mask=~present | out_of_range)


def _field_values(
    raw: pa.Table, field: str, source: str, mapping: ColumnMapping, reasons: RowReasons
) -> pa.Array:
    target = CANDIDATE_SCHEMA.field(field).type
    label = f"{source!r} ({field})"
    values, unparsable = _to_numbers(raw.column(source), target, label)
    shown = raw.column(source)
    noun = "an integer" if pa.types.is_integer(target) else "a number"
    reasons.add(unparsable, lambda row: f"{label}: {shown[row].as_py()!r} is not {noun}")
    if field in TIMESTAMP_FIELDS and not pa.types.is_timestamp(shown.type):
        values = _epochs_to_micros(values, mapping.timestamp_unit, field, reasons, shown)
    return values


def _rule_values(
    rule: ValueRule, key: str, raw: pa.Table, known: str | None, reasons: RowReasons
) -> pa.Array:
    """The symbol or interval of every row: `known` (from the mapping or file name) or a column."""
    if rule.column is None:
        return pa.repeat(pa.scalar(known, pa.string()), raw.num_rows)
    text = pc.utf8_trim_whitespace(pc.cast(raw.column(rule.column), pa.string())).combine_chunks()
    if key == "symbol":
        text = pc.utf8_upper(text)
        bad = pc.fill_null(pc.invert(pc.utf8_is_alnum(text)), True)
        explain = "is not a symbol"
    else:
        bad = pc.fill_null(pc.invert(pc.is_in(text, pa.array(INTERVALS))), True)
        explain = f"is not an interval (expected one of {', '.join(INTERVALS)})"
    reasons.add(
        bad.to_numpy(zero_copy_only=False),
        lambda row: f"{key} {text[row].as_py()!r} (column {rule.column!r}) {explain}",
    )
    return text


def _describe_raw(raw: pa.Table) -> list[str]:
    return [json.dumps(row, default=str) for row in raw.to_pylist()]


@dataclass(frozen=True)
class Selection:
    """--symbols and --interval (empty: everything)."""

    symbols: tuple[str, ...] = ()
    interval: str | None = None

    def excludes(self, symbol: str | None, interval: str | None) -> bool:
        if self.symbols and symbol is not None and symbol not in self.symbols:
            return True
        return self.interval is not None and interval is not None and interval != self.interval

    def row_mask(self, symbols: pa.Array, intervals: pa.Array) -> np.ndarray:
        """True for rows to keep."""
        keep = pa.array(np.ones(len(symbols), dtype=bool))
        if self.symbols:
            keep = pc.and_(keep, pc.fill_null(pc.is_in(symbols, pa.array(self.symbols)), True))
        if self.interval is not None:
            keep = pc.and_(keep, pc.fill_null(pc.equal(intervals, self.interval), True))
        return keep.to_numpy(zero_copy_only=False)


def to_candidates(
    raw: RawRows, mapping: ColumnMapping, target: FileTarget, selection: Selection
) -> tuple[pa.Table, pa.Table]:
    """Candidate rows (`CANDIDATE_SCHEMA`) and parse rejects (`REJECT_SCHEMA`)."""
    reasons = RowReasons(raw.columns.num_rows)
    symbols = _rule_values(mapping.symbol, "symbol", raw.columns, target.symbol, reasons)
    intervals = _rule_values(mapping.interval, "interval", raw.columns, target.interval, reasons)
    fields = {
        field: _field_values(raw.columns, field, source, mapping, reasons)
        for field, source in mapping.columns.items()
    }
    rows = raw.columns.num_rows
    table = pa.table(
        {
            "symbol": symbols,
            "interval": intervals,
            **{
                name: fields.get(name, pa.nulls(rows, CANDIDATE_SCHEMA.field(name).type))
                for name in (*REQUIRED_FIELDS, *OPTIONAL_FIELDS)
            },
            "source_row": pa.array(raw.source_rows, pa.int64()),
        },
        schema=CANDIDATE_SCHEMA,
    )
    keep = selection.row_mask(symbols, intervals)
    bad = reasons.bad & keep
    rejected = table.filter(pa.array(bad))
    rejects = make_rejects(
        rejected.column("source_row").to_pylist(),
        rejected.column("symbol").to_pylist(),
        rejected.column("interval").to_pylist(),
        _describe_raw(raw.columns.filter(pa.array(bad))),
        [str(reason) for reason in reasons.reasons[bad]],
    )
    return table.filter(pa.array(keep & ~reasons.bad)), pa.concat_tables([raw.bad_rows, rejects])


# -- the source ----------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _known_value(rule: ValueRule, match: re.Match[str] | None) -> str | None:
    if rule.value is not None:
        return rule.value
    if rule.filename_group is not None and match is not None:
        return match.group(rule.filename_group)
    return None


def _target_for(path: Path, mapping: ColumnMapping) -> FileTarget:
    match = mapping.file_pattern.fullmatch(path.name) if mapping.file_pattern else None
    symbol = _known_value(mapping.symbol, match)
    interval = _known_value(mapping.interval, match)
    problem = None
    if symbol is not None and not symbol.isalnum():
        problem = f"symbol {symbol!r} from the file name is not a symbol"
    if interval is not None and interval not in INTERVALS:
        problem = (
            f"interval {interval!r} from the file name is not an interval "
            f"(expected one of {', '.join(INTERVALS)})"
        )
    upper = symbol.upper() if symbol else None
    return FileTarget(path, match, upper, interval, problem)


def list_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"--path {root}: no such file or folder")
    return sorted(path for path in root.rglob("*") if path.is_file())


class FilesSource:
    """Reads local CSV / Parquet files through a column mapping."""

    name = SOURCE_NAME

    def __init__(
        self,
        root: Path,
        mapping: ColumnMapping,
        *,
        selection: Selection = Selection(),
        force: bool = False,
        freshness_hours: float = 0.0,
    ) -> None:
        self.root = root
        self.mapping = mapping
        self.selection = selection
        self.force = force
        self.freshness_hours = freshness_hours

    def parameters(self) -> dict[str, object]:
        return {
            "path": str(self.root),
            "mapping": str(self.mapping.path),
            "symbols": list(self.selection.symbols),
            "interval": self.selection.interval,
            "force": self.force,
            "freshness_hours": self.freshness_hours,
        }

    def _file_key(self, path: Path) -> str:
        """The resolved path; a row-filtered read of a file is a load of its own."""
        filtered_by_rows = (self.selection.symbols and self.mapping.symbol.column) or (
            self.selection.interval and self.mapping.interval.column
        )
        if not filtered_by_rows:
            return str(path)
        return (
            f"{path} [symbols={','.join(self.selection.symbols) or 'all'}, "
            f"interval={self.selection.interval or 'all'}]"
        )

    def _select_files(self) -> tuple[list[FileTarget], list[tuple[Path, str]]]:
        """Files to read (within --symbols / --interval), and files passed over with why."""
        single_file = self.root.is_file()
        targets: list[FileTarget] = []
        passed_over: list[tuple[Path, str]] = []
        for path in list_files(self.root):
            if not single_file and not self.mapping.accepts_name(path.name):
                passed_over.append((path, f"name does not match the mapping {self.mapping.name}"))
                continue
            target = _target_for(path, self.mapping)
            if single_file and self.mapping.file_pattern and target.match is None:
                raise ValueError(
                    f"--path {path}: the file name does not match file_pattern "
                    f"{self.mapping.file_pattern.pattern!r} of {self.mapping.path}"
                )
            if not self.selection.excludes(target.symbol, target.interval):
                targets.append(target)
        return targets, passed_over

    def _fresh_reason(self, store: RawStore, target: FileTarget) -> str | None:
        if self.force or self.freshness_hours <= 0 or not (target.symbol and target.interval):
            return None
        loaded_at = store.last_loaded(self.name, target.interval).get(target.symbol)
        if loaded_at is None:
            return None
        age_hours = (utc_now() - loaded_at).total_seconds() / 3600
        if age_hours >= self.freshness_hours:
            return None
        return (
            f"{target.symbol} {target.interval} is fresh: loaded {age_hours:.1f} h ago "
            f"(--freshness-hours {self.freshness_hours:g})"
        )

    def plan(self, store: RawStore) -> tuple[list[WorkItem], list[tuple[WorkItem, str]]]:
        targets, passed_over = self._select_files()
        items: list[WorkItem] = []
        skipped = [(WorkItem(key=str(path), label=path.name), why) for path, why in passed_over]
        for target in targets:
            item = WorkItem(key=self._file_key(target.path), label=target.path.name, payload=target)
            checksum = sha256_of(target.path)
            if not self.force and store.loaded_checksum(self.name, item.key) == checksum:
                why = f"already loaded with the same checksum (sha256 {checksum[:12]}...); "
                skipped.append((item, why + "--force reloads it, e.g. after a mapping change"))
                continue
            fresh = self._fresh_reason(store, target)
            if fresh:
                skipped.append((item, fresh))
                continue
            items.append(item)
        return items, skipped

    def read(self, item: WorkItem) -> SourcePart:
        target = cast(FileTarget, item.payload)
        try:
            data = target.path.read_bytes()
        except OSError as exc:
            return SourcePart(item=item, file_error=f"cannot read the file: {exc}", track_file=True)
        checksum = hashlib.sha256(data).hexdigest()
        try:
            if target.problem:
                raise FileProblem(target.problem)
            raw = READERS[self.mapping.format](data, self.mapping)
            candidates, rejects = to_candidates(raw, self.mapping, target, self.selection)
        except FileProblem as exc:
            return SourcePart(item=item, checksum=checksum, file_error=str(exc), track_file=True)
        pairs = candidates.group_by(["symbol", "interval"]).aggregate([]).to_pydict()
        return SourcePart(
            item=item,
            candidates=candidates,
            parse_rejects=rejects,
            checksum=checksum,
            track_file=True,
            symbol_loads=sorted(zip(pairs["symbol"], pairs["interval"], strict=True)),
        )


def build(options: IngestOptions) -> FilesSource:
    if options.path is None:
        raise ValueError("--path is required with --source files (a CSV/Parquet file or folder)")
    root = options.path.expanduser().resolve()
    files = list_files(root)
    mapping = load_mapping(options.mapping) if options.mapping else select_mapping(files)
    return FilesSource(
        root,
        mapping,
        selection=Selection(options.symbols, options.interval),
        force=options.force,
        freshness_hours=options.freshness_hours or 0.0,
    )
