"""The binance-api source against the local Binance-format server, faults included."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from itertools import pairwise

import duckdb
import pytest

from ingest.binance_api import BinanceApiSource
from ingest.http import HttpClient, RetryPolicy, redact_url
from ingest.loader import LoadSummary, run_load
from ingest.options import IngestOptions
from ingest.raw_store import RawStore
from tests.binance_server import (
    EXCHANGE_INFO_PATH,
    KLINES_PATH,
    BinanceTestServer,
    Fault,
    series_up_to_now,
    today_open_ms,
)

FAST = RetryPolicy(
    timeout=0.5, attempts=3, backoff_base=0.01, backoff_cap=0.05, max_wait=5, weight_pause_cap=0.4
)


def load(
    server: BinanceTestServer,
    store: RawStore,
    *,
    policy: RetryPolicy = FAST,
    workers: int = 2,
    **options: object,
) -> LoadSummary:
    source = BinanceApiSource(IngestOptions(base_url=server.url, **options), policy=policy)
    return run_load(source, store, workers=workers)


def stored(con: duckdb.DuckDBPyConnection, symbol: str) -> list[list]:
    """A symbol's stored bars, written back in the API's row shape (open/close times in ms)."""
    rows = con.sql(
        f"""
        select epoch_ms(open_time), open, high, low, close, volume, epoch_ms(close_time),
            quote_volume, trade_count, taker_buy_base_volume, taker_buy_quote_volume
        from raw.klines where symbol = '{symbol}' order by open_time
        """
    ).fetchall()
    return [list(row) for row in rows]


def as_served(rows: list[list]) -> list[list]:
    """Server rows with the numbers parsed, and without the last ("ignore") field."""
    return [
        [r[0], *map(float, r[1:6]), r[6], float(r[7]), r[8], *map(float, r[9:11])] for r in rows
    ]


@pytest.fixture
def two_symbols(binance_server: BinanceTestServer) -> BinanceTestServer:
    binance_server.add_symbol("BTCUSDT", "1d", series_up_to_now(40, seed=1))
    binance_server.add_symbol("ETHUSDT", "1d", series_up_to_now(25, seed=2), tick_size="0.10")
    return binance_server


def test_pages_through_more_than_1000_bars_and_never_stores_the_open_bar(
    binance_server, con, caplog
):
    rows = series_up_to_now(2345)
    binance_server.add_symbol("BTCUSDT", "1d", rows)
    caplog.set_level(logging.INFO, logger="ingest.binance_api")

    summary = load(binance_server, RawStore(con), symbols=("BTCUSDT",))

    assert summary.status == "success" and summary.stats.rows.inserted == 2345
    assert stored(con, "BTCUSDT") == as_served(rows[:-1])
    assert rows[-1][0] == today_open_ms()  # the bar left out is today's, still forming
    starts = [int(r.query["startTime"]) for r in binance_server.requests_to(KLINES_PATH)]
    assert starts == [0, rows[999][0] + 1, rows[1999][0] + 1]
    assert "open bar skipped" in caplog.text
    assert con.sql("select count(*) from raw.rejects").fetchone()[0] == 0


def test_exchange_info_lands_in_raw_symbols(two_symbols, con):
    load(two_symbols, RawStore(con), symbols=("BTCUSDT", "ETHUSDT"))

    rows = con.sql(
        "select symbol, exchange, status, base_asset, quote_asset, tick_size, step_size, min_qty "
        "from raw.symbols order by symbol"
    ).fetchall()
    assert rows == [
        ("BTCUSDT", "binance", "TRADING", "BTC", "USDT", 0.01, 0.00001, 0.00001),
        ("ETHUSDT", "binance", "TRADING", "ETH", "USDT", 0.1, 0.00001, 0.00001),
    ]


def test_429_waits_for_retry_after_then_succeeds(two_symbols, con):
    two_symbols.fail(KLINES_PATH, Fault(status=429, retry_after=0.3), times=2, symbol="BTCUSDT")
    started = time.monotonic()

    summary = load(two_symbols, RawStore(con), symbols=("BTCUSDT", "ETHUSDT"))

    assert summary.status == "success"
    assert time.monotonic() - started >= 0.6
    calls = two_symbols.requests_to(KLINES_PATH, "BTCUSDT")
    assert len(calls) == 3 and calls[1].at - calls[0].at >= 0.3
    assert len(stored(con, "BTCUSDT")) == 40 and len(stored(con, "ETHUSDT")) == 25


@pytest.mark.parametrize(
    "fault",
    [Fault(status=500), Fault(status=503), Fault(delay=1.0), Fault(truncate=True)],
    ids=["500", "503", "slow-answer-times-out", "truncated-json"],
)
def test_transient_failures_are_retried(two_symbols, con, fault):
    two_symbols.fail(KLINES_PATH, fault, times=2, symbol="ETHUSDT")

    summary = load(two_symbols, RawStore(con), symbols=("BTCUSDT", "ETHUSDT"))

    assert summary.status == "success"
    assert len(two_symbols.requests_to(KLINES_PATH, "ETHUSDT")) == 3
    assert stored(con, "ETHUSDT") == as_served(two_symbols.series[("ETHUSDT", "1d")][:-1])


def test_failures_past_the_retries_are_reported_and_other_symbols_load(two_symbols, con):
    two_symbols.fail(KLINES_PATH, Fault(truncate=True), times=3, symbol="ETHUSDT")

    summary = load(two_symbols, RawStore(con), symbols=("BTCUSDT", "ETHUSDT"))

    assert summary.status == "partial"
    [(key, reason)] = summary.rejected_files
    assert key == "ETHUSDT/1d"
    assert reason.startswith("ETHUSDT 1d: GET http://127.0.0.1:")
    assert "symbol=ETHUSDT" in reason and "unreadable body" in reason and "3 attempts" in reason
    assert len(stored(con, "BTCUSDT")) == 40 and stored(con, "ETHUSDT") == []
    fresh = con.sql("select symbol from raw.symbol_loads").fetchall()
    assert fresh == [("BTCUSDT",)]  # the failed symbol is not marked as loaded


def test_418_fails_that_symbol_at_once_and_others_wait_then_load(two_symbols, con):
    two_symbols.fail(KLINES_PATH, Fault(status=418, retry_after=0.5), symbol="BTCUSDT")

    summary = load(two_symbols, RawStore(con), symbols=("BTCUSDT", "ETHUSDT"), workers=1)

    assert summary.status == "partial"
    [(key, reason)] = summary.rejected_files
    assert key == "BTCUSDT/1d" and "HTTP 418" in reason and "banned" in reason
    [banned] = two_symbols.requests_to(KLINES_PATH, "BTCUSDT")  # no retry into a ban
    [after_ban] = two_symbols.requests_to(KLINES_PATH, "ETHUSDT")
    assert after_ban.at - banned.at >= 0.5  # the other worker waited out the ban
    assert len(stored(con, "ETHUSDT")) == 25 and stored(con, "BTCUSDT") == []


def test_a_ban_longer_than_max_wait_stops_every_request(two_symbols, con):
    two_symbols.fail(EXCHANGE_INFO_PATH, Fault(status=418, retry_after=600))

    summary = load(two_symbols, RawStore(con), symbols=("BTCUSDT", "ETHUSDT"), workers=1)

    assert summary.status == "partial" and len(summary.rejected_files) == 3
    reasons = dict(summary.rejected_files)
    assert "exchangeInfo" in reasons["exchangeInfo"] and "HTTP 418" in reasons["exchangeInfo"]
    assert reasons["ETHUSDT/1d"].startswith("ETHUSDT 1d: GET http://127.0.0.1:")
    assert "symbol=ETHUSDT" in reasons["ETHUSDT/1d"] and "banned" in reasons["ETHUSDT/1d"]
    assert two_symbols.requests_to(KLINES_PATH) == []


def test_used_weight_near_the_limit_pauses_requests(two_symbols, con):
    two_symbols.used_weight = 5900
    load(two_symbols, RawStore(con), symbols=("BTCUSDT", "ETHUSDT"), workers=1)
    slow = [r.at for r in two_symbols.requests]

    two_symbols.used_weight = 100
    load(two_symbols, RawStore(con), symbols=("BTCUSDT", "ETHUSDT"), workers=1, force=True)
    fast = [r.at for r in two_symbols.requests][len(slow) :]

    assert len(slow) == len(fast) == 3
    assert min(b - a for a, b in pairwise(slow)) >= 0.35
    assert max(b - a for a, b in pairwise(fast)) < 0.35


def test_rerun_skips_fresh_symbols_and_force_fetches_only_new_bars(two_symbols, con):
    store = RawStore(con)
    first = load(two_symbols, store, symbols=("BTCUSDT", "ETHUSDT"))
    fresh = load(two_symbols, store, symbols=("BTCUSDT", "ETHUSDT"))
    forced = load(two_symbols, store, symbols=("BTCUSDT", "ETHUSDT"), force=True)
    stale = load(two_symbols, store, symbols=("BTCUSDT",), freshness_hours=0)

    assert first.stats.rows.inserted == 40 + 25
    assert fresh.stats.symbols_skipped_fresh == 2 and fresh.stats.rows_read == 0
    assert all("fresh" in why for _, why in fresh.skipped)
    assert forced.stats.rows.inserted == 0 and stale.stats.rows.inserted == 0
    btc_calls = two_symbols.requests_to(KLINES_PATH, "BTCUSDT")
    assert len(btc_calls) == 3  # none while fresh
    yesterday_ms = today_open_ms() - 86_400_000
    assert [int(r.query["startTime"]) for r in btc_calls] == [0, yesterday_ms + 1, yesterday_ms + 1]
    assert con.sql("select count(*) from raw.klines").fetchone()[0] == 40 + 25


def test_start_and_end_bound_the_request(two_symbols, con):
    rows = two_symbols.series[("BTCUSDT", "1d")]
    first = datetime.fromtimestamp(rows[10][0] / 1000, UTC).date()
    last = datetime.fromtimestamp(rows[19][0] / 1000, UTC).date()

    load(two_symbols, RawStore(con), symbols=("BTCUSDT",), start=first, end=last)

    assert stored(con, "BTCUSDT") == as_served(rows[10:20])
    [call] = two_symbols.requests_to(KLINES_PATH, "BTCUSDT")
    assert int(call.query["endTime"]) == rows[19][0] + 86_400_000 - 1


def test_malformed_rows_become_rejects(binance_server, con):
    rows = series_up_to_now(6)
    rows[1][2] = "12x.5"  # high
    rows[2] = rows[2][:11]  # one field short
    rows[3][1] = "-" + rows[3][1]  # a negative open
    binance_server.add_symbol("BTCUSDT", "1d", rows)

    summary = load(binance_server, RawStore(con), symbols=("BTCUSDT",))

    rejects = con.sql("select source_row, reason from raw.rejects order by 1").fetchall()
    assert [row for row, _ in rejects] == [2, 3, 4]
    assert "unparsable number in column high" in rejects[0][1]
    assert "expected a list of 12 fields" in rejects[1][1]
    assert "open is zero or negative" in rejects[2][1]
    assert stored(con, "BTCUSDT") == as_served([rows[0], rows[4], rows[5]])
    assert summary.stats.rows.rejected == 3


def test_without_symbols_it_refreshes_the_symbols_already_loaded(two_symbols, con):
    store = RawStore(con)
    with pytest.raises(ValueError, match="no --symbols given"):
        load(two_symbols, store)
    assert con.sql("select status from raw.load_batches").fetchone()[0] == "failed"

    load(two_symbols, store, symbols=("ETHUSDT",))
    again = load(two_symbols, store, force=True)
    assert [key for key, _ in again.skipped] == []
    assert len(two_symbols.requests_to(KLINES_PATH, "ETHUSDT")) == 2
    assert two_symbols.requests_to(KLINES_PATH, "BTCUSDT") == []


def test_urls_in_messages_carry_no_credentials():
    url = "https://user:secret@api.example:8443/api/v3/klines?symbol=BTCUSDT&apiKey=k1&signature=s2"
    assert redact_url(url) == (
        "https://api.example:8443/api/v3/klines?symbol=BTCUSDT&apiKey=***&signature=***"
    )


def test_backoff_doubles_with_jitter_up_to_the_cap():
    client = HttpClient(RetryPolicy(backoff_base=0.5, backoff_cap=3.0))
    for retry, low, high in [(1, 0.25, 0.5), (2, 0.5, 1.0), (3, 1.0, 2.0), (5, 1.5, 3.0)]:
        waits = [client.backoff(retry) for _ in range(200)]
        assert low <= min(waits) and max(waits) <= high
        assert max(waits) - min(waits) > (high - low) / 2  # jittered, not fixed
