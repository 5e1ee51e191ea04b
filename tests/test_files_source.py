"""The `files` source: the real sample through the shipped mapping, and malformed inputs."""

from __future__ import annotations

import csv
import hashlib
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.files import MAPPINGS_DIR, build, load_mapping
from ingest.loader import LoadSummary, run_load
from ingest.options import IngestOptions
from ingest.raw_store import RawStore
from quantwarehouse.config import ConfigError
from tests.conftest import run_cli

SAMPLE_HEADER = "open_time_ms,open,high,low,close,volume"
DAY_MS = 86_400_000
T0_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def load(con, path: Path, **options) -> LoadSummary:
    source = build(IngestOptions(path=path, **options))
    return run_load(source, RawStore(con), workers=2)


def sample_rows(folder: Path) -> dict[tuple[str, str], list[tuple[int, float, ...]]]:
    """Every CSV of the sample parsed with the csv module: (symbol, interval) -> rows."""
    expected = {}
    for path in sorted(folder.glob("*.csv")):
        symbol, interval, _ = path.stem.split("_")
        with path.open(newline="") as handle:
            header, *rows = list(csv.reader(handle))
        assert header == SAMPLE_HEADER.split(",")
        expected[(symbol, interval)] = [(int(r[0]), *(float(v) for v in r[1:])) for r in rows]
    return expected


def stored_rows(con, symbol: str, interval: str) -> list[tuple]:
    return con.execute(
        "select epoch_ms(open_time), open, high, low, close, volume from raw.klines "
        "where symbol = ? and interval = ? order by open_time",
        [symbol, interval],
    ).fetchall()


def write_mapping(folder: Path, text: str, name: str = "mapping.yml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def sample_mapping(folder: Path, **replace: str) -> Path:
    """The shipped sample mapping with some lines replaced (key -> new 'key: value' line)."""
    lines = (MAPPINGS_DIR / "symbol_tf_csv.yml").read_text().splitlines()
    for key, line in replace.items():
        lines = [line if current.startswith(f"{key}:") else current for current in lines]
    return write_mapping(folder, "\n".join(lines) + "\n")


# -- the real sample -----------------------------------------------------------------------------


def test_real_sample_loads_every_row_exactly(con, real_sample):
    expected = sample_rows(real_sample)
    summary = load(con, real_sample)

    assert summary.status == "success"
    assert summary.stats.files_read == len(expected) == 50
    assert summary.stats.files_rejected == 0
    assert summary.stats.rows.inserted == sum(len(rows) for rows in expected.values())
    assert len(expected[("BTCUSDT", "1d")]) == 254
    # The sample has no invalid row (every field parses, no duplicate open time, no 500 % move),
    # so nothing is rejected.
    assert con.sql("select count(*) from raw.rejects").fetchone()[0] == 0
    counts = dict(
        ((s, i), n)
        for s, i, n in con.sql(
            "select symbol, interval, count(*) from raw.klines group by all"
        ).fetchall()
    )
    assert counts == {key: len(rows) for key, rows in expected.items()}
    for (symbol, interval), rows in expected.items():
        assert stored_rows(con, symbol, interval) == rows, (symbol, interval)
    loads = con.sql("select symbol, interval from raw.symbol_loads order by all").fetchall()
    assert loads == sorted(expected)


def test_real_sample_timestamps_are_utc_open_times(con, real_sample):
    load(con, real_sample, symbols=("BTCUSDT",), interval="1d")
    first_open, first_close = con.sql(
        "select open_time, close_time from raw.klines order by open_time limit 1"
    ).fetchone()
    # 1502928000000 ms is 2017-08-17 00:00 UTC; a daily bar closes 1 ms before the next opens.
    assert datetime.fromtimestamp(1502928000000 / 1000, UTC).replace(tzinfo=None) == first_open
    assert first_open == datetime(2017, 8, 17)
    assert first_close == datetime(2017, 8, 17, 23, 59, 59, 999000)


def test_real_sample_keeps_the_btcusdt_4h_outage_as_a_gap(con, real_sample):
    load(con, real_sample, symbols=("BTCUSDT",), interval="4h")
    times = [
        row[0]
        for row in con.sql(
            "select open_time from raw.klines where open_time between "
            "'2018-02-07 20:00' and '2018-02-09 12:00' order by open_time"
        ).fetchall()
    ]
    assert times == [
        datetime(2018, 2, 7, 20),
        datetime(2018, 2, 8, 0),
        datetime(2018, 2, 9, 8),
        datetime(2018, 2, 9, 12),
    ]


def test_real_sample_reload_inserts_nothing(con, real_sample):
    first = load(con, real_sample)
    total = first.stats.rows.inserted
    again = load(con, real_sample)
    assert again.stats.files_read == 0 and again.stats.files_skipped == 50
    assert all("checksum" in why for key, why in again.skipped if key.endswith(".csv"))
    assert again.stats.rows.inserted == 0
    forced = load(con, real_sample, force=True)
    assert forced.stats.files_read == 50
    assert (forced.stats.rows.inserted, forced.stats.rows.revised) == (0, 0)
    assert forced.stats.rows.unchanged == total
    assert con.sql("select count(*) from raw.klines").fetchone()[0] == total


def test_symbols_and_interval_select_files(con, real_sample):
    summary = load(con, real_sample, symbols=("BTCUSDT", "ETHUSDT"), interval="4h")
    assert summary.stats.files_read == 2
    pairs = con.sql("select distinct symbol, interval from raw.klines order by all").fetchall()
    assert pairs == [("BTCUSDT", "4h"), ("ETHUSDT", "4h")]


def test_shipped_mapping_is_selected_by_file_names(real_sample, tmp_path):
    assert build(IngestOptions(path=real_sample)).mapping.name == "symbol_tf_csv.yml"
    vision = tmp_path / "vision"
    vision.mkdir()
    (vision / "BTCUSDT-1d-2024-01.csv").write_text("")
    assert build(IngestOptions(path=vision)).mapping.name == "binance_klines_csv.yml"
    other = tmp_path / "other"
    other.mkdir()
    (other / "prices.csv").write_text("")
    with pytest.raises(ValueError, match=r"--mapping: no mapping .* pass --mapping"):
        build(IngestOptions(path=other))


def test_cli_loads_the_real_sample(data_dir, real_sample):
    result = run_cli("ingest", "--source", "files", "--path", str(real_sample), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "files read 50, skipped 0, rejected 0" in result.stdout
    result = run_cli("ingest", "--source", "files", "--path", str(real_sample), "--quiet")
    assert "files read 0, skipped 50" in result.stdout
    assert "inserted 0" in result.stdout


def test_changed_file_is_read_again_and_revises(con, real_sample, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    copy = folder / "BTCUSDT_1d_1581774962.csv"
    shutil.copy(real_sample / copy.name, copy)
    load(con, folder)
    lines = copy.read_text().splitlines()
    fields = lines[10].split(",")
    fields[4] = str(float(fields[4]) + 1.5)
    lines[10] = ",".join(fields)
    copy.write_text("\n".join(lines) + "\n")

    summary = load(con, folder)
    assert (summary.stats.files_read, summary.stats.files_skipped) == (1, 0)
    rows = summary.stats.rows
    assert (rows.inserted, rows.revised, rows.unchanged) == (0, 1, 253)
    close, revision, checksum = con.execute(
        "select close, revision, source_checksum from raw.klines where epoch_ms(open_time) = ? "
        "order by revision desc limit 1",
        [int(fields[0])],
    ).fetchone()
    assert (close, revision) == (float(fields[4]), 2)
    assert checksum == hashlib.sha256(copy.read_bytes()).hexdigest()


# -- files the tests write -----------------------------------------------------------------------


def sample_csv(folder: Path, body: list[str], name: str = "AAAUSDT_1d_1.csv") -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("\n".join([SAMPLE_HEADER, *body]) + "\n")
    return path


def day_row(day: int, close: float = 10.0) -> str:
    return f"{T0_MS + day * DAY_MS},{close},{close + 1},{close - 1},{close},5.0"


def rejects(con) -> list[tuple]:
    return con.sql(
        "select source_file, source_row, symbol, reason, raw_row from raw.rejects "
        "order by source_row"
    ).fetchall()


def test_bad_numbers_become_rejects_with_their_line(con, tmp_path):
    path = sample_csv(
        tmp_path / "in",
        [
            day_row(0),
            f"{T0_MS + DAY_MS},10.0,11.0,9.0,ten,5.0",
            "",  # a blank line is no row, but still counts as a line
            f"{T0_MS + 2 * DAY_MS},10.0,11.0,9.0,10.0,",
            "17e3,10.0,11.0,9.0,10.0,5",
            day_row(4),
        ],
    )
    summary = load(con, path.parent)
    assert summary.stats.rows.inserted == 2
    found = rejects(con)
    assert [(row, symbol) for _, row, symbol, _, _ in found] == [
        (3, "AAAUSDT"),
        (5, "AAAUSDT"),
        (6, "AAAUSDT"),
    ]
    assert all(source_file == str(path) for source_file, *_ in found)
    assert found[0][3] == "'close' (close): 'ten' is not a number"
    assert '"close": "ten"' in found[0][4]
    assert found[1][3] == "volume is missing or not a number"
    assert found[2][3] == "'open_time_ms' (open_time): '17e3' is not an integer"
    assert summary.stats.rows.rejected == 3
    assert summary.stats.rows_read == 5


def test_wrong_field_counts_become_rejects(con, tmp_path):
    path = sample_csv(
        tmp_path / "in",
        [day_row(0), f"{T0_MS + DAY_MS},10.0,11.0,9.0,10.0", day_row(2) + ",7", day_row(3)],
    )
    load(con, path.parent)
    found = rejects(con)
    assert [(row, reason) for _, row, _, reason, _ in found] == [
        (3, "expected 6 fields, found 5"),
        (4, "expected 6 fields, found 7"),
    ]
    assert found[0][4] == f"{T0_MS + DAY_MS},10.0,11.0,9.0,10.0"
    assert con.sql("select count(*) from raw.klines").fetchone()[0] == 2


def test_quoted_fields_and_a_byte_order_mark(con, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    header = ",".join(f'"{name}"' for name in SAMPLE_HEADER.split(","))
    rows = [f'"{T0_MS}","10.5","11","9.5","10.25","2"', f'{T0_MS + DAY_MS},10,11,9,10,"1,5"']
    (folder / "AAAUSDT_1d_1.csv").write_bytes(("\ufeff" + "\n".join([header, *rows])).encode())
    load(con, folder)
    assert con.sql("select open_time, open, close, volume from raw.klines").fetchall() == [
        (datetime(2024, 1, 1), 10.5, 10.25, 2.0)
    ]
    (reject,) = rejects(con)
    assert reject[1:4] == (3, "AAAUSDT", "'volume' (volume): '1,5' is not a number")


def test_timestamps_in_another_unit_than_declared_are_rejected(con, tmp_path):
    path = sample_csv(tmp_path / "in", [day_row(0), f"{T0_MS // 1000},10.0,11.0,9.0,10.0,5.0"])
    load(con, path.parent)  # the shipped mapping declares milliseconds
    (reason,) = [r[3] for r in rejects(con)]
    assert (
        reason == f"open_time {str(T0_MS // 1000)!r} is not an epoch timestamp in ms "
        "(expected 1973 to 5138)"
    )


def test_seconds_are_converted_when_declared(con, tmp_path):
    path = sample_csv(tmp_path / "in", [f"{T0_MS // 1000},10.0,11.0,9.0,10.0,5.0"])
    load(con, path.parent, mapping=sample_mapping(tmp_path, timestamp_unit="timestamp_unit: s"))
    assert con.sql("select open_time from raw.klines").fetchone()[0] == datetime(2024, 1, 1)


def test_column_missing_from_the_file_rejects_the_file(con, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / "AAAUSDT_1d_1.csv"
    path.write_text("time,open,high,low,close,volume\n" + day_row(0) + "\n")
    summary = load(con, folder)
    assert summary.status == "partial"
    status, reason = con.sql("select status, reason from raw.loaded_files").fetchone()
    assert status == "rejected"
    assert reason == (
        "column 'open_time_ms' (columns.open_time in symbol_tf_csv.yml) is not in the file; "
        "its columns are: time, open, high, low, close, volume"
    )
    assert con.sql("select count(*) from raw.klines").fetchone()[0] == 0
    # A rejected file is not "already loaded": fixing it loads it.
    path.write_text(f"{SAMPLE_HEADER}\n{day_row(0)}\n")
    assert load(con, folder).stats.rows.inserted == 1


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "the first line is empty; the mapping expects a header row"),
        (
            b"open_time_ms,open,open,high,low,close,volume\n",
            "the file has 2 columns named 'open' (columns.open)",
        ),
        (SAMPLE_HEADER.encode() + b"\n1704067200000,1\xff,2,3,4,5\n", "not UTF-8 text"),
    ],
)
def test_unreadable_csv_files_are_rejected_with_the_reason(con, tmp_path, content, reason):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "AAAUSDT_1d_1.csv").write_bytes(content)
    summary = load(con, folder)
    ((_, why),) = summary.rejected_files
    assert why.startswith(reason), why


BINANCE_MS_ROW = (
    "1735603200000,93576.0,95151.15,92888.0,94591.79,10373.32613,1735689599999,"
    "978226854.0,1502879,5003.79,472113497.0,0"
)
BINANCE_US_ROW = (
    "1735689600000000,94591.78,94956.0,94591.78,94760.01,214.09,1735693199999999,"
    "20291470.1,44012,108.25,10263160.0,0"
)


def test_headerless_binance_layout_with_ms_and_us_times(con, tmp_path):
    folder = tmp_path / "vision"
    folder.mkdir()
    (folder / "BTCUSDT-1d-2024-12.csv").write_text(BINANCE_MS_ROW + "\n")
    (folder / "BTCUSDT-1h-2025-01-01.csv").write_text(BINANCE_US_ROW + "\n")
    summary = load(con, folder)
    assert summary.stats.rows.inserted == 2
    rows = con.sql(
        "select symbol, interval, open_time, close_time, close, quote_volume, trade_count, "
        "taker_buy_quote_volume from raw.klines order by open_time"
    ).fetchall()
    assert rows == [
        (
            "BTCUSDT",
            "1d",
            datetime(2024, 12, 31),
            datetime(2024, 12, 31, 23, 59, 59, 999000),
            94591.79,
            978226854.0,
            1502879,
            472113497.0,
        ),
        (
            "BTCUSDT",
            "1h",
            datetime(2025, 1, 1),
            datetime(2025, 1, 1, 0, 59, 59, 999999),
            94760.01,
            20291470.1,
            44012,
            10263160.0,
        ),
    ]


def test_parquet_with_symbol_column_and_typed_times(con, tmp_path):
    folder = tmp_path / "pq"
    folder.mkdir()
    table = pa.table(
        {
            "ts": pa.array(
                [datetime(2024, 1, 1, h, tzinfo=UTC) for h in (0, 1)], pa.timestamp("ms", tz="UTC")
            ),
            "ticker": ["btcusdt", "ETHUSDT"],
            "o": [1.0, 2.0],
            "h": [1.5, 2.5],
            "l": [0.5, 1.5],
            "c": [1.2, 2.2],
            "v": pa.array([10, 20], pa.int64()),
        }
    )
    pq.write_table(table, folder / "bars.parquet")
    mapping = write_mapping(
        tmp_path,
        "format: parquet\n"
        "columns: {open_time: ts, open: o, high: h, low: l, close: c, volume: v}\n"
        "symbol: {column: ticker}\ninterval: {value: 1h}\n",
    )
    summary = load(con, folder, mapping=mapping)
    assert summary.stats.rows.inserted == 2
    rows = con.sql(
        "select symbol, interval, open_time, close, volume from raw.klines order by symbol"
    ).fetchall()
    assert rows == [
        ("BTCUSDT", "1h", datetime(2024, 1, 1, 0), 1.2, 10.0),
        ("ETHUSDT", "1h", datetime(2024, 1, 1, 1), 2.2, 20.0),
    ]
    # --symbols filters rows when the symbol is a column; that read is a load of its own.
    only_eth = load(con, folder, mapping=mapping, symbols=("ETHUSDT",))
    assert (only_eth.stats.files_read, only_eth.stats.rows.unchanged) == (1, 1)


def test_unreadable_parquet_files_are_rejected_with_the_reason(con, tmp_path):
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(
        pa.table({"ts": [T0_MS], "o": [True], "h": [1.0], "l": [1.0], "c": [1.0], "v": [1.0]}),
        folder / "AAAUSDT.parquet",
    )
    (folder / "BBBUSDT.parquet").write_text(SAMPLE_HEADER + "\n")
    mapping = write_mapping(
        tmp_path,
        "format: parquet\ntimestamp_unit: ms\nfile_pattern: '(?P<symbol>[A-Z]+)\\.parquet'\n"
        "columns: {open_time: ts, open: o, high: h, low: l, close: c, volume: v}\n"
        "symbol: {filename_group: symbol}\ninterval: {value: 1d}\n",
    )
    summary = load(con, folder, mapping=mapping)
    reasons = dict(summary.rejected_files)
    assert (
        reasons[str(folder / "AAAUSDT.parquet")]
        == "column 'o' (open) has type bool; expected numbers"
    )
    assert reasons[str(folder / "BBBUSDT.parquet")].startswith("not readable as Parquet")


def test_freshness_skips_recently_loaded_symbols(con, tmp_path):
    path = sample_csv(tmp_path / "in", [day_row(0)])
    load(con, path.parent)
    sample_csv(tmp_path / "in", [day_row(0), day_row(1)])
    fresh = load(con, path.parent, freshness_hours=1.0)
    assert fresh.stats.symbols_skipped_fresh == 1 and fresh.stats.files_read == 0
    assert "AAAUSDT 1d is fresh" in fresh.skipped[0][1]
    assert load(con, path.parent).stats.rows.inserted == 1  # the default: freshness off


# -- mapping validation --------------------------------------------------------------------------

VALID_MAPPING = (MAPPINGS_DIR / "symbol_tf_csv.yml").read_text()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("format: csv", "format: xlsx"), "format: unknown value 'xlsx'; allowed: csv, parquet"),
        (("header: true", "headr: true"), "headr: unknown key; allowed keys: description"),
        (("  open: open\n", ""), "columns.open: missing; expected a string"),
        (("  open: open\n", "  opn: open\n"), "columns.opn: unknown key; allowed keys: open_time"),
        (
            ("timestamp_unit: ms", "timestamp_unit: minutes"),
            "timestamp_unit: unknown value 'minutes'; allowed: s, ms, us, ns, auto",
        ),
        (
            ("header: true", "header: false"),
            "column_names: missing; files without a header need the column names",
        ),
        (
            ("header: true", "header: true\ncolumn_names: [a]"),
            "column_names: only for files without a header (header: false)",
        ),
        (
            ("  filename_group: symbol", "  filename_group: sym"),
            "symbol.filename_group: group 'sym' is not a named group of file_pattern "
            "(named groups: interval, symbol)",
        ),
        (
            ("  filename_group: symbol", "  filename_group: symbol\n  value: BTCUSDT"),
            "symbol: expected exactly one of value, column, filename_group, got 2",
        ),
        (
            ("interval:\n  filename_group: interval", "interval: {value: 7x}"),
            "interval.value: unknown value '7x'; allowed: 1s, 1m",
        ),
        (("file_pattern: '^", "file_pattern: '(^"), "file_pattern: not a valid regular expression"),
        (("format: csv", "format: parquet"), "header: applies to csv files only"),
        (
            (
                "columns:\n  open_time: open_time_ms\n  open: open\n  high: high\n  low: low\n"
                "  close: close\n  volume: volume\n",
                "columns: [open]\n",
            ),
            "columns: expected a mapping, got a list (['open'])",
        ),
    ],
)
def test_bad_mappings_name_the_file_and_key(tmp_path, change, expected):
    old, new = change
    assert old in VALID_MAPPING
    path = write_mapping(tmp_path, VALID_MAPPING.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_mapping(path)
    assert str(caught.value).startswith(f"{path}: {expected}"), str(caught.value)


def test_headerless_mapping_columns_must_be_declared(tmp_path):
    text = (MAPPINGS_DIR / "binance_klines_csv.yml").read_text()
    path = write_mapping(tmp_path, text.replace("  close: close\n", "  close: last\n"))
    with pytest.raises(ConfigError, match=r"columns\.close: column 'last' is not in column_names"):
        load_mapping(path)


def test_shipped_mappings_are_valid():
    names = sorted(p.name for p in MAPPINGS_DIR.glob("*.yml"))
    assert names == ["binance_klines_csv.yml", "symbol_tf_csv.yml"]
    for name in names:
        load_mapping(MAPPINGS_DIR / name)


def test_path_is_required_and_must_exist(tmp_path):
    with pytest.raises(ValueError, match="--path is required"):
        build(IngestOptions())
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        build(IngestOptions(path=tmp_path / "missing"))
