"""A local HTTP server speaking Binance's formats, with faults to inject, for the source tests.

It serves (a) a folder as the Vision archive (`/data/spot/...`), (b) `/api/v3/klines` from an
in-memory series per symbol, honouring `startTime`, `endTime` and `limit` as Binance does (the
last bar of a series is still open), and (c) `/api/v3/exchangeInfo`. A test queues faults for
the next requests to a path (and symbol): an HTTP status with `Retry-After`, a slow answer, a
truncated body. Every request is logged for the test to inspect. Tests use it through the
`binance_server` fixture (registered in conftest.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

KLINES_PATH = "/api/v3/klines"
EXCHANGE_INFO_PATH = "/api/v3/exchangeInfo"
REQUEST_WEIGHT = {KLINES_PATH: 2, EXCHANGE_INFO_PATH: 20}
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Fault:
    """What a request gets instead of (or before) its normal answer."""

    status: int | None = None  # e.g. 429, 418, 500
    retry_after: float | None = None  # seconds, sent as the Retry-After header
    delay: float = 0.0  # sleep this long before answering
    truncate: bool = False  # send only the first half of the body


@dataclass
class _Rule:
    path: str
    symbol: str | None
    fault: Fault
    remaining: int


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    query: dict[str, str]
    at: float  # time.monotonic() when it arrived


@dataclass
class BinanceTestServer:
    """The server's state; tests change it between requests."""

    archive_root: Path | None = None
    series: dict[tuple[str, str], list[list]] = field(default_factory=dict)
    symbol_info: dict[str, dict] = field(default_factory=dict)
    used_weight: int | None = None  # a fixed X-MBX-USED-WEIGHT-1M value; else the running sum
    requests: list[LoggedRequest] = field(default_factory=list, init=False)
    _rules: list[_Rule] = field(default_factory=list, init=False)
    _weight: int = field(default=0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _httpd: ThreadingHTTPServer | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    # -- what tests set up -------------------------------------------------------------------

    def fail(self, path: str, fault: Fault, *, times: int = 1, symbol: str | None = None) -> None:
        """The next `times` requests to `path` (for `symbol`, if given) get `fault`."""
        with self._lock:
            self._rules.append(_Rule(path, symbol, fault, times))

    def add_symbol(
        self,
        symbol: str,
        interval: str,
        rows: list[list],
        *,
        status: str = "TRADING",
        tick_size: str = "0.01000000",
        step_size: str = "0.00001000",
        min_qty: str = "0.00001000",
    ) -> None:
        """Serve `rows` (Binance kline rows, oldest first) and list the symbol in exchangeInfo."""
        self.series[(symbol, interval)] = rows
        base, quote = symbol[:-4], symbol[-4:]
        self.symbol_info[symbol] = {
            "symbol": symbol,
            "status": status,
            "baseAsset": base,
            "quoteAsset": quote,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": tick_size, "maxPrice": "1000000.00",
                 "tickSize": tick_size},
                {"filterType": "LOT_SIZE", "minQty": min_qty, "maxQty": "9000.00000000",
                 "stepSize": step_size},
            ],
        }  # fmt: skip

    def requests_to(self, path: str, symbol: str | None = None) -> list[LoggedRequest]:
        with self._lock:
            return [
                r
                for r in self.requests
                if r.path == path and (symbol is None or r.query.get("symbol") == symbol)
            ]

    # -- answering ---------------------------------------------------------------------------

    def record(self, method: str, path: str, query: dict[str, str]) -> Fault | None:
        """Record the request; return the fault it gets, if any."""
        with self._lock:
            self.requests.append(LoggedRequest(method, path, query, time.monotonic()))
            self._weight += REQUEST_WEIGHT.get(path, 1)
            for rule in self._rules:
                matches = rule.path == path and rule.symbol in (None, query.get("symbol"))
                if matches and rule.remaining > 0:
                    rule.remaining -= 1
                    return rule.fault
        return None

    def weight_header(self) -> str:
        return str(self.used_weight if self.used_weight is not None else self._weight)

    def klines(self, query: dict[str, str]) -> tuple[int, object]:
        rows = self.series.get((query.get("symbol", ""), query.get("interval", "")))
        if rows is None:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        limit = min(int(query.get("limit", 500)), 1000)
        start = int(query["startTime"]) if "startTime" in query else None
        end = int(query["endTime"]) if "endTime" in query else None
        chosen = [
            row
            for row in rows
            if (start is None or row[0] >= start) and (end is None or row[0] <= end)
        ]
        return 200, chosen[:limit] if start is not None else chosen[-limit:]

    def exchange_info(self) -> tuple[int, object]:
        return 200, {
            "timezone": "UTC",
            "serverTime": int(time.time() * 1000),
            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                            "intervalNum": 1, "limit": 6000}],
            "symbols": list(self.symbol_info.values()),
        }  # fmt: skip

    def archive_file(self, path: str) -> bytes | None:
        if self.archive_root is None or ".." in path:
            return None
        target = self.archive_root / path.lstrip("/")
        return target.read_bytes() if target.is_file() else None


def _handler_for(server: BinanceTestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10  # an idle keep-alive connection is closed after this

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def _answer(self, *, send_body: bool) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            fault = server.record(self.command, parts.path, query)
            if fault and fault.delay:
                time.sleep(fault.delay)
            if fault and fault.status:
                body = json.dumps({"code": -1003, "msg": f"injected HTTP {fault.status}"})
                headers = {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
                self._send(fault.status, body.encode(), headers, send_body, fault)
                return
            status, payload = self._route(parts.path, query)
            self._send(status, payload, {}, send_body, fault)

        def _route(self, path: str, query: dict[str, str]) -> tuple[int, bytes]:
            if path == KLINES_PATH:
                status, answer = server.klines(query)
            elif path == EXCHANGE_INFO_PATH:
                status, answer = server.exchange_info()
            else:
                data = server.archive_file(path)
                return (200, data) if data is not None else (404, b"Not Found")
            return status, json.dumps(answer).encode()

        def _send(
            self,
            status: int,
            body: bytes,
            headers: dict[str, object],
            send_body: bool,
            fault: Fault | None,
        ) -> None:
            if fault and fault.truncate:
                body = body[: len(body) // 2]
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-MBX-USED-WEIGHT-1M", server.weight_header())
                for name, value in headers.items():
                    self.send_header(name, str(value))
                self.end_headers()
                if send_body:
                    self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                self.close_connection = True

    return Handler


def kline_rows(first_open_ms: int, count: int, *, step_ms: int = DAY_MS, seed: int = 1) -> list:
    """`count` Binance kline rows from `first_open_ms` on, prices as strings as the API sends."""
    rng = np.random.default_rng(seed)
    closes = np.round(100 * np.exp(np.cumsum(rng.normal(0, 0.01, count))), 2)
    rows = []
    for i, close in enumerate(closes):
        open_ms = first_open_ms + i * step_ms
        opened = closes[i - 1] if i else 100.0
        volume = round(float(rng.uniform(1, 10)), 4)
        rows.append([
            open_ms, f"{opened:.8f}", f"{max(opened, close) + 0.5:.8f}",
            f"{min(opened, close) - 0.5:.8f}", f"{close:.8f}", f"{volume:.8f}",
            open_ms + step_ms - 1, f"{volume * close:.8f}", int(rng.integers(1, 100)),
            f"{volume / 2:.8f}", f"{volume * close / 2:.8f}", "0",
        ])  # fmt: skip
    return rows


def today_open_ms() -> int:
    """Open time of today's daily bar (UTC), which is still forming."""
    now_ms = int(time.time() * 1000)
    return now_ms - now_ms % DAY_MS


def series_up_to_now(closed: int, *, seed: int = 1) -> list:
    """`closed` daily bars ending yesterday, then today's bar, still open."""
    return kline_rows(today_open_ms() - closed * DAY_MS, closed + 1, seed=seed)


def _wait_if_midnight_is_near(margin_s: float = 30.0) -> None:
    """Tests fix today's open bar in advance: don't let the day end under them."""
    now = datetime.now(UTC)
    left = 86_400 - (now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6)
    if left < margin_s:
        time.sleep(left + 1)


@pytest.fixture
def binance_server(tmp_path: Path) -> Iterator[BinanceTestServer]:
    """A started server whose archive folder is `tmp_path / "archive"`."""
    _wait_if_midnight_is_near()
    server = BinanceTestServer(archive_root=tmp_path / "archive")
    server.start()
    yield server
    server.stop()
