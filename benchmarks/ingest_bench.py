"""Ingest benchmark: the `minute` preset written in the archive layout, loaded by binance-vision,
against DuckDB's own `read_csv` of the same (unzipped) files; memory at two numbers of files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import duckdb

from benchmarks.harness import Case, Metrics, timed
from ingest.archive import write_series
from ingest.loader import run_load
from ingest.options import IngestOptions
from ingest.raw_store import RawStore
from ingest.sources import build_source
from ingest.synthetic import generate_symbol, preset_interval, preset_symbols

PRESET = "minute"


def write_minute_archive(root: Path, symbols: list[str]) -> list[Path]:
    interval = preset_interval(PRESET)
    files: list[Path] = []
    for symbol in symbols:
        files += write_series(root, symbol, interval, generate_symbol(PRESET, symbol))
    return files


def duckdb_read_csv_seconds(zips: list[Path], folder: Path) -> tuple[float, int]:
    """DuckDB's bare read of the same files, unzipped beforehand (unzipping is not timed)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in zips:
        with zipfile.ZipFile(path) as archive:
            archive.extractall(folder)
    con = duckdb.connect()
    seconds, _ = timed(
        lambda: con.execute(
            f"create table klines as select * from read_csv('{folder}/*.csv', header = false)"
        )
    )
    return seconds, con.execute("select count(*) from klines").fetchone()[0]


def ingest_archive(symbol_count: int, workdir: Path) -> Metrics:
    symbols = preset_symbols(PRESET)[:symbol_count]
    archive = workdir / "archive"
    zips = write_minute_archive(archive, symbols)
    con = duckdb.connect(str(workdir / "warehouse.duckdb"))
    source = build_source("binance-vision", IngestOptions(path=archive, interval="1m", workers=2))
    seconds, summary = timed(lambda: run_load(source, RawStore(con), workers=2))
    rows = summary.stats.rows_read
    duck_seconds, duck_rows = duckdb_read_csv_seconds(zips, workdir / "csv")
    ours, theirs = rows / seconds, duck_rows / duck_seconds
    return {
        "files": len(zips),
        "rows": rows,
        "ingest_s": round(seconds, 2),
        "ingest_rows_per_s": round(ours),
        "duckdb_read_csv_rows_per_s": round(theirs),
        "ratio_vs_duckdb": round(ours / theirs, 3),
    }


CASES = [
    Case(
        "ingest_minute_25_symbols",
        "binance-vision load of 25 minute symbols (90 days)",
        lambda workdir: ingest_archive(25, workdir),
    ),
    Case(
        "ingest_minute_50_symbols",
        "binance-vision load of the whole minute preset",
        lambda workdir: ingest_archive(50, workdir),
    ),
]
