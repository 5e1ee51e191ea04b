"""The loader writes a chunk of parts in a few statements, with the rows writing them one by one
stores: revisions where parts share a bar or a symbol, each bad row once per file."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from ingest.loader import ChunkWriter, SourcePart, WorkItem
from ingest.raw_store import SYMBOL_SCHEMA, BatchStats, RawStore
from tests.conftest import raw_rows
from tests.test_raw_store import DAY_MS, T0_MS, candidates


def metadata(symbol: str, status: str) -> pa.Table:
    return pa.Table.from_pylist(
        [{"symbol": symbol, "exchange": "binance", "status": status, "tick_size": 0.01}],
        schema=SYMBOL_SCHEMA,
    )


def part(key: str, table: pa.Table, status: str, *, track_file: bool = False) -> SourcePart:
    symbol = table.column("symbol")[0].as_py()
    return SourcePart(
        WorkItem(key, key),
        candidates=table,
        checksum=f"sum-{key}" if track_file else None,
        track_file=track_file,
        symbols=metadata(symbol, status),
        symbol_loads=[(symbol, "1d")],
    )


def bars(symbol: str, closes: list[float], first_day: int = 0) -> pa.Table:
    return candidates(closes, symbol=symbol, t0=T0_MS + first_day * DAY_MS)


def overlapping_parts() -> list[SourcePart]:
    """Parts that share bars, symbols and bad rows: a close of 0, a toxic print, a repeat."""
    return [
        part("a.csv", bars("BTCUSDT", [10.0, 11.0, 0.0, 12.0]), "TRADING", track_file=True),
        part("b", bars("BTCUSDT", [12.5, 13.0], first_day=3), "BREAK"),
        part("c", bars("ETHUSDT", [1.0, 70.0, 1.1, 1.1]), "TRADING"),
        part("d", bars("ETHUSDT", [1.1, 1.1, 1.2], first_day=2), "TRADING"),
        part("a.csv", bars("BTCUSDT", [10.0, 11.0, 0.0]), "BREAK", track_file=True),
    ]


def disjoint_parts() -> list[SourcePart]:
    return [
        part("e", bars("BTCUSDT", [13.0, 14.0], first_day=5), "TRADING"),
        part("f", bars("ETHUSDT", [1.2, 0.1, 1.3], first_day=5), "TRADING"),
        part("g", bars("SOLUSDT", [20.0, 21.0]), "TRADING"),
    ]


def load(con: duckdb.DuckDBPyConnection, parts: list[SourcePart], max_parts: int) -> BatchStats:
    store = RawStore(con)
    batch = store.start_batch("test", {})
    stats = BatchStats()
    writer = ChunkWriter(store, batch, "test", stats)
    writer.max_parts = max_parts
    for each in parts:
        writer.add(each)
    writer.flush()
    store.finish_batch(batch, stats, "success")
    return stats


def test_a_chunk_stores_what_its_parts_store_one_by_one(con, tmp_path: Path):
    one_by_one = duckdb.connect(str(tmp_path / "one_by_one.duckdb"))
    loads = [overlapping_parts(), overlapping_parts(), disjoint_parts()]
    for parts in loads:
        together, alone = load(con, parts, max_parts=256), load(one_by_one, parts, max_parts=1)
        assert together == alone
    assert raw_rows(con) == raw_rows(one_by_one)
    revisions = con.sql("select symbol, max(revision) from raw.symbols group by all order by all")
    assert revisions.fetchall() == [("BTCUSDT", 5), ("ETHUSDT", 1), ("SOLUSDT", 1)]
    reasons = con.sql("select reason from raw.rejects").fetchall()
    assert sum("toxic" in r for (r,) in reasons) == 2 and sum("zero" in r for (r,) in reasons) == 1
