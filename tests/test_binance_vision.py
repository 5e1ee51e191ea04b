"""The binance-vision source on archive files written here: local folder, URL, and the CLI."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from ingest.archive import (
    ArchiveFile,
    daily_file,
    klines_csv,
    monthly_file,
    sample_klines,
    write_archive_file,
)
from ingest.binance_vision import BinanceVisionSource
from ingest.http import RetryPolicy
from ingest.loader import LoadSummary, run_load
from ingest.options import IngestOptions
from ingest.raw_store import RawStore
from tests.binance_server import Fault
from tests.conftest import run_cli

FAST = RetryPolicy(timeout=1.0, attempts=3, backoff_base=0.01, backoff_cap=0.05)
NOV = monthly_file("BTCUSDT", "1d", 2024, 11)
DEC = [daily_file("BTCUSDT", "1d", date(2024, 12, day)) for day in (1, 2, 3)]
ETH_JAN = monthly_file("ETHUSDT", "1d", 2025, 1)
ETH_FEB_1 = daily_file("ETHUSDT", "1d", date(2025, 2, 1))


def write(root: Path, file: ArchiveFile, *, seed: int = 0) -> pa.Table:
    """Write `file` with sample bars; return the bars as written."""
    bars = sample_klines(file, seed=seed)
    write_archive_file(root, file, klines_csv(bars))
    return bars


def load(store: RawStore, **options: object) -> LoadSummary:
    return run_load(BinanceVisionSource(IngestOptions(**options), policy=FAST), store, workers=2)


def stored(con: duckdb.DuckDBPyConnection, symbol: str) -> list[tuple[int, float]]:
    """(open time in epoch us, close) of a symbol's latest revisions, in time order."""
    return con.sql(
        f"""
        select epoch_us(open_time), max_by(close, revision) from raw.klines
        where symbol = '{symbol}' group by open_time order by open_time
        """
    ).fetchall()


def as_us(bars: pa.Table, unit: str) -> list[tuple[int, float]]:
    scale = 1000 if unit == "ms" else 1
    return [
        (t * scale, c)
        for t, c in zip(bars["open_time"].to_pylist(), bars["close"].to_pylist(), strict=True)
    ]


def test_monthly_and_daily_files_in_ms_and_us_all_load(tmp_path, con):
    root = tmp_path / "archive"
    nov, dec = write(root, NOV), [write(root, f, seed=i) for i, f in enumerate(DEC)]
    jan, feb = write(root, ETH_JAN, seed=7), write(root, ETH_FEB_1, seed=8)
    assert jan["open_time"][0].as_py() > 10**15  # 2025 files are written in microseconds

    summary = load(RawStore(con), path=root)

    assert summary.status == "success"
    assert (summary.stats.files_read, summary.stats.rows.inserted) == (6, 30 + 3 + 31 + 1)
    december = [bar for bars in dec for bar in as_us(bars, "ms")]
    assert stored(con, "BTCUSDT") == as_us(nov, "ms") + december
    assert stored(con, "ETHUSDT") == as_us(jan, "us") + as_us(feb, "us")
    files = dict(con.sql("select file_key, checksum from raw.loaded_files").fetchall())
    for file in (NOV, *DEC, ETH_JAN, ETH_FEB_1):
        assert files[file.relpath] == hashlib.sha256((root / file.relpath).read_bytes()).hexdigest()
    loads = con.sql(
        "select symbol, count(*) from raw.symbol_loads group by 1 order by 1"
    ).fetchall()
    assert loads == [("BTCUSDT", 4), ("ETHUSDT", 2)]


def test_a_monthly_file_wins_and_daily_files_fill_months_without_one(tmp_path, con):
    root = tmp_path / "archive"
    write(root, NOV)
    write(root, daily_file("BTCUSDT", "1d", date(2024, 11, 5)))  # covered by the monthly file
    for file in DEC:
        write(root, file)

    summary = load(
        RawStore(con),
        path=root,
        symbols=("BTCUSDT",),
        start=date(2024, 11, 10),
        end=date(2024, 12, 2),
    )

    keys = {row[0] for row in con.sql("select file_key from raw.loaded_files").fetchall()}
    assert keys == {NOV.relpath, DEC[0].relpath, DEC[1].relpath}
    assert summary.stats.rows.inserted == 30 + 2


def test_bad_files_are_rejected_and_the_rest_loads(tmp_path, con):
    root = tmp_path / "archive"
    good = write(root, NOV)
    mismatch, corrupt, no_checksum, unreadable = DEC[0], DEC[1], DEC[2], ETH_FEB_1
    write(root, mismatch)
    (root / mismatch.checksum_relpath).write_text("0" * 64 + f"  {mismatch.name}\n")
    garbage = b"this is not a zip file"
    (root / corrupt.relpath).parent.mkdir(parents=True, exist_ok=True)
    (root / corrupt.relpath).write_bytes(garbage)
    (root / corrupt.checksum_relpath).write_text(hashlib.sha256(garbage).hexdigest() + "  x\n")
    write(root, no_checksum)
    (root / no_checksum.checksum_relpath).unlink()
    write_archive_file(root, unreadable, b"1738368000000000;1;2;0.5;1.5;10\n")
    write_archive_file(root, ETH_JAN, b"open_time,open,high,low,close,volume,a,b,c,d,e,f\n")

    summary = load(RawStore(con), path=root)

    assert summary.status == "partial"
    assert summary.stats.files_rejected == 5 and summary.stats.files_read == 1
    assert stored(con, "BTCUSDT") == as_us(good, "ms")
    reasons = dict(
        con.sql(
            "select file_key, reason from raw.loaded_files where status = 'rejected'"
        ).fetchall()
    )
    assert (
        "checksum mismatch" in reasons[mismatch.relpath]
        and mismatch.name in reasons[mismatch.relpath]
    )
    assert "corrupt zip" in reasons[corrupt.relpath] and corrupt.name in reasons[corrupt.relpath]
    assert ".CHECKSUM file is missing" in reasons[no_checksum.relpath]
    assert "unreadable CSV: no line has 12" in reasons[unreadable.relpath]
    assert "unreadable CSV: no rows" in reasons[ETH_JAN.relpath]  # a header and nothing else
    assert con.sql("select status from raw.load_batches").fetchone()[0] == "partial"


def test_same_checksum_is_skipped_and_a_replaced_file_becomes_revisions(tmp_path, con):
    root = tmp_path / "archive"
    bars = write(root, NOV)
    store = RawStore(con)
    load(store, path=root)

    again = load(store, path=root)
    assert again.stats.files_skipped == 1 and again.stats.files_read == 0
    assert again.skipped == [(NOV.relpath, "already loaded, same checksum")]

    closes = bars["close"].to_pylist()
    closes[4] += 1.0
    replaced = bars.set_column(4, "close", pa.array(closes))
    write_archive_file(root, NOV, klines_csv(replaced))
    changed = load(store, path=root)
    assert (changed.stats.rows.revised, changed.stats.rows.unchanged) == (1, 29)
    assert stored(con, "BTCUSDT") == as_us(replaced, "ms")

    forced = load(store, path=root, force=True)
    assert forced.stats.files_read == 1 and forced.stats.rows.unchanged == 30


def test_bad_rows_become_rejects_with_reason_and_line_number(tmp_path, con):
    root = tmp_path / "archive"
    lines = klines_csv(sample_klines(NOV)).decode().splitlines()
    short_line = lines[2].rsplit(",", 1)[0]  # 11 columns
    fields = lines[4].split(",")
    fields[2] = "12x.5"  # high
    bad_number = ",".join(fields)
    fields = lines[5].split(",")
    fields[1] = "-" + fields[1]  # a negative open
    negative = ",".join(fields)
    header = "open_time,open,high,low,close,volume,close_time,quote_volume,count,tbbv,tbqv,ignore"
    text = [header, lines[0], lines[1], short_line, lines[3], bad_number, negative, *lines[6:]]
    write_archive_file(root, NOV, ("\n".join(text) + "\n").encode())

    summary = load(RawStore(con), path=root)

    rejects = con.sql("select source_row, raw_row, reason from raw.rejects order by 1").fetchall()
    assert [row[0] for row in rejects] == [4, 6, 7]  # the header is line 1
    assert rejects[0][1] == short_line
    assert "expected 12, found 11" in rejects[0][2] and "line 4" in rejects[0][2]
    assert rejects[1][1] == bad_number
    assert "unparsable number in column high" in rejects[1][2] and "line 6" in rejects[1][2]
    assert "open is zero or negative" in rejects[2][2]
    assert summary.stats.rows.inserted == 27 and summary.stats.rows.rejected == 3
    assert summary.stats.rows_read == 30


def test_url_mode_reads_the_archive_over_http_and_agrees_with_the_folder(binance_server, con):
    root = binance_server.archive_root
    nov = write(root, NOV)
    dec = [write(root, file, seed=i) for i, file in enumerate(DEC[:2])]
    binance_server.fail("/" + DEC[0].relpath, Fault(status=500))
    store = RawStore(con)

    summary = load(
        store,
        base_url=binance_server.url,
        symbols=("BTCUSDT",),
        start=date(2024, 11, 1),
        end=date(2024, 12, 2),
    )

    assert summary.status == "success" and summary.stats.files_read == 3
    assert stored(con, "BTCUSDT") == as_us(nov, "ms") + as_us(dec[0], "ms") + as_us(dec[1], "ms")
    december = monthly_file("BTCUSDT", "1d", 2024, 12)
    methods = [(r.method, r.path) for r in binance_server.requests]
    assert ("HEAD", "/" + december.relpath) in methods  # no monthly file: daily files instead
    assert methods.count(("GET", "/" + DEC[0].relpath)) == 2  # the 500 was retried
    again = load(store, path=root)  # the same files from the folder: same keys, same checksums
    assert again.stats.files_skipped == 3 and again.stats.files_read == 0


def test_url_mode_needs_symbols_and_start():
    with pytest.raises(ValueError, match="needs --symbols and --start"):
        BinanceVisionSource(IngestOptions(base_url="http://127.0.0.1:9"))


def test_cli_ingest_end_to_end(tmp_path, warehouse):
    root = tmp_path / "archive"
    nov = write(root, NOV)
    write_archive_file(root, DEC[0], b"not,a,kline\n")

    first = run_cli("ingest", "--source", "binance-vision", "--path", str(root), "--interval", "1d")
    second = run_cli("ingest", "--source", "binance-vision", "--path", str(root))

    assert first.returncode == 1, first.stdout + first.stderr  # partial: one file rejected
    assert "rows read 30, inserted 30" in first.stdout
    assert f"rejected file {DEC[0].relpath}" in first.stdout
    assert "skipped 1" in second.stdout and "inserted 0" in second.stdout
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert stored(con, "BTCUSDT") == as_us(nov, "ms")
        statuses = con.sql("select status from raw.load_batches order by batch_id").fetchall()
    assert statuses == [("partial",), ("partial",)]


def test_a_malformed_checksum_file_rejects_its_zip(tmp_path, con):
    root = tmp_path / "archive"
    write(root, NOV)
    (root / NOV.checksum_relpath).write_text("not-a-digest  BTCUSDT-1d-2024-11.zip\n")

    summary = load(RawStore(con), path=root)

    [(key, reason)] = summary.rejected_files
    assert key == NOV.relpath and "malformed .CHECKSUM" in reason and NOV.name in reason
