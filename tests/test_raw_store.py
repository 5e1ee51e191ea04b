"""The raw writer: revisions, idempotency, toxic guard and rejects on tiny explicit tables."""

from __future__ import annotations

import time
from collections import Counter

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from ingest.raw_store import RawStore, toxic_mask
from ingest.records import CANDIDATE_SCHEMA, validate_candidates

DAY_MS = 86_400_000
T0_MS = 1_600_000_000_000 - 1_600_000_000_000 % DAY_MS


def candidates(
    closes: list[float], *, t0: int = T0_MS, symbol: str = "BTCUSDT", **overrides: list
) -> pa.Table:
    n = len(closes)
    columns = {
        "symbol": [symbol] * n,
        "interval": ["1d"] * n,
        "open_time": [t0 + i * DAY_MS for i in range(n)],
        "close_time": [None] * n,
        "open": closes,
        "high": [c * 1.1 for c in closes],
        "low": [c * 0.9 for c in closes],
        "close": closes,
        "volume": [1.0] * n,
        "quote_volume": [None] * n,
        "trade_count": [None] * n,
        "taker_buy_base_volume": [None] * n,
        "taker_buy_quote_volume": [None] * n,
        "source_row": list(range(1, n + 1)),
    }
    columns.update(overrides)
    return pa.table(columns, schema=CANDIDATE_SCHEMA)


def now_us() -> int:
    return int(time.time() * 1_000_000)


def store_rows(store: RawStore, table: pa.Table):
    batch = store.start_batch("test", {})
    checked = validate_candidates(table, now_us())
    store.write_rejects(batch, "test", None, checked.rejects)
    return store.write_klines(batch, "test", checked.valid)


def test_same_data_twice_inserts_nothing(con):
    store = RawStore(con)
    first = store_rows(store, candidates([1.0, 2.0, 3.0]))
    second = store_rows(store, candidates([1.0, 2.0, 3.0]))
    assert (first.inserted, first.unchanged) == (3, 0)
    assert (second.inserted, second.revised, second.unchanged) == (0, 0, 3)
    assert con.sql("select count(*) from raw.klines").fetchone()[0] == 3


def test_changed_value_is_a_new_revision(con):
    store = RawStore(con)
    store_rows(store, candidates([1.0, 2.0, 3.0]))
    counts = store_rows(store, candidates([1.0, 2.5, 3.0]))
    assert (counts.inserted, counts.revised, counts.unchanged) == (0, 1, 2)
    rows = con.sql("select close, revision from raw.klines order by open_time, revision").fetchall()
    assert rows == [(1.0, 1), (2.0, 1), (2.5, 2), (3.0, 1)]


def test_toxic_spike_is_rejected_and_next_bar_kept(con):
    store = RawStore(con)
    counts = store_rows(store, candidates([10.0, 11.0, 70.0, 12.0]))
    assert counts.rejected == 1 and counts.inserted == 3
    reason, raw_row = con.sql("select reason, raw_row from raw.rejects").fetchone()
    assert "toxic" in reason and "70.0" in raw_row


def test_toxic_guard_uses_stored_close_before_the_batch(con):
    store = RawStore(con)
    store_rows(store, candidates([10.0, 11.0]))
    counts = store_rows(store, candidates([0.5], t0=T0_MS + 2 * DAY_MS))
    assert counts.rejected == 1 and counts.inserted == 0


def test_toxic_guard_inside_history_finds_the_close_before_a_long_gap(con):
    """A revision or backfill inside stored history compares with the stored close before it,
    however long the gap before it (beyond the week looked at first)."""
    store = RawStore(con)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        store_rows(store, candidates([10.0, 11.0, 12.0], symbol=symbol))
        store_rows(store, candidates([12.0] * 5, symbol=symbol, t0=T0_MS + 40 * DAY_MS))
    backfill = pa.concat_tables(
        [
            candidates([100.0, 12.0], symbol="BTCUSDT", t0=T0_MS + 38 * DAY_MS),
            candidates([100.0, 12.0], symbol="ETHUSDT", t0=T0_MS + 42 * DAY_MS),
        ]
    )
    counts = store_rows(store, backfill)
    assert (counts.rejected, counts.inserted, counts.unchanged) == (2, 1, 1)
    assert con.sql("select count(*) from raw.klines where close = 100").fetchone()[0] == 0


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"open_time": [T0_MS, 12345]}, "unknown unit"),
        ({"open_time": [T0_MS, int(time.time() * 1000) + 10 * DAY_MS]}, "future"),
        ({"open": [1.0, 0.0]}, "open is zero or negative"),
        ({"close": [1.0, float("nan")]}, "close is missing"),
        ({"volume": [1.0, -1.0]}, "volume is negative"),
        ({"open_time": [T0_MS, T0_MS]}, "duplicate"),
        ({"close_time": [None, T0_MS]}, "not before close_time"),
    ],
)
def test_rows_that_cannot_be_bars_are_rejected_with_a_reason(override, reason):
    table = candidates([1.0, 1.0], **override)
    checked = validate_candidates(table, now_us())
    assert checked.valid.num_rows == 1
    assert checked.rejects.num_rows == 1
    assert reason in checked.rejects.column("reason")[0].as_py()
    assert checked.rejects.column("source_row")[0].as_py() == 2


def test_microsecond_timestamps_are_detected_per_value():
    table = candidates([1.0, 1.0], open_time=[T0_MS, (T0_MS + DAY_MS) * 1000])
    checked = validate_candidates(table, now_us())
    times = checked.valid.column("open_time").cast(pa.int64()).to_pylist()
    assert times == [T0_MS * 1000, (T0_MS + DAY_MS) * 1000]


def test_ohlc_inconsistency_is_kept_as_received():
    table = candidates([2.0], high=[1.0], low=[3.0])
    checked = validate_candidates(table, now_us())
    assert checked.valid.num_rows == 1 and checked.rejects.num_rows == 0


def test_toxic_mask_by_hand():
    keys = np.array(["a", "a", "a", "b", "b"])
    closes = np.array([1.0, 7.0, 1.2, 5.0, 0.5])
    assert toxic_mask(keys, closes, {"b": 4.0}).tolist() == [False, True, False, False, True]


def test_a_batch_left_running_by_a_killed_load_is_marked_interrupted(con):
    store = RawStore(con)
    killed = store.start_batch("test", {})
    store.start_batch("test", {})
    status = con.execute("select status from raw.load_batches where batch_id = ?", [killed])
    assert status.fetchone()[0] == "interrupted"


def stored_rejects(con) -> list[tuple]:
    return con.sql(
        "select batch_id, source, source_file, source_row, symbol, interval, raw_row, reason "
        "from raw.rejects order by all"
    ).fetchall()


def test_rejects_of_several_reads_are_stored_as_if_written_one_by_one(con, tmp_path):
    """A row rejected again (by an earlier read of the same call, or an earlier load) is stored
    once per file; the same row twice within one read is kept twice, as it was read."""
    bad = [{"open": [1.0, 0.0]}, {"volume": [1.0, -1.0]}, {"open_time": [T0_MS, T0_MS]}]
    rejects = [validate_candidates(candidates([1.0, 1.0], **o), now_us()).rejects for o in bad]
    twice = pa.concat_tables([rejects[0], rejects[0]])
    reads = [
        ("a.csv", rejects[0]),
        ("a.csv", rejects[1]),
        (None, rejects[0]),
        ("b.csv", twice),
        ("a.csv", rejects[0]),
        ("a.csv", rejects[2]),
        (None, rejects[0]),
    ]
    one_by_one = duckdb.connect(str(tmp_path / "one_by_one.duckdb"))
    for connection, write_together in ((con, True), (one_by_one, False)):
        store = RawStore(connection)
        earlier = store.start_batch("test", {})
        store.write_rejects(earlier, "test", "a.csv", rejects[2])
        batch = store.start_batch("test", {})
        if write_together:
            counted = store.write_rejects_of_reads(batch, "test", reads)
        else:
            counted = sum(store.write_rejects(batch, "test", f, table) for f, table in reads)
        assert counted == 8
    assert stored_rejects(con) == stored_rejects(one_by_one)
    files = Counter(row[2] for row in stored_rejects(con) if row[0] == 2)
    assert files == {"a.csv": 2, "b.csv": 2, None: 1}
