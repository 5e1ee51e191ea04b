"""The `binance-api` source: klines and symbol metadata from the Binance REST API.

One work item per symbol pages through `/api/v3/klines` from where the warehouse stops (or
`--start`), 1000 bars a call; one more item reads `/api/v3/exchangeInfo` into `raw.symbols`.
The newest bar is still forming, so any bar whose close time is not yet past is left out. A
symbol that fails (ban, retries spent) is a reported failure; the other symbols still load.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.archive import KLINE_FIELDS
from ingest.binance_vision import candidates_from_text
from ingest.http import HttpClient, RequestFailed, RetryPolicy, redact_url
from ingest.intervals import INTERVAL_MICROS
from ingest.loader import SourcePart, WorkItem
from ingest.options import IngestOptions
from ingest.raw_store import SYMBOL_SCHEMA, RawStore, utc_now
from ingest.records import make_rejects, to_micros

log = logging.getLogger(__name__)

SOURCE_NAME = "binance-api"
DEFAULT_BASE_URL = "https://api.binance.com"
DEFAULT_INTERVAL = "1d"
DEFAULT_FRESHNESS_HOURS = 6.0
KLINES_LIMIT = 1000  # the most rows one call returns
API_INTERVALS = {"1mo": "1M"}  # where the REST API names an interval differently
EXCHANGE = "binance"


@dataclass(frozen=True)
class KlineRequest:
    """What to fetch for one symbol: open times from `start_ms`, up to `end_ms` if set."""

    symbol: str
    start_ms: int
    end_ms: int | None


def _epoch_ms(moment: datetime) -> int:
    return int(moment.replace(tzinfo=UTC).timestamp() * 1000)


def _day_start_ms(day: date) -> int:
    return _epoch_ms(datetime.combine(day, datetime.min.time()))


# -- turning answers into tables ---------------------------------------------------------------


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def klines_from_rows(rows: list[Any], symbol: str, interval: str) -> tuple[pa.Table, pa.Table]:
    """Candidates from `/api/v3/klines` rows, and rejects for rows that are not 12 fields."""
    numbers = np.arange(1, len(rows) + 1, dtype=np.int64)
    fits = np.array([isinstance(r, list) and len(r) == len(KLINE_FIELDS) for r in rows], bool)
    good = [row for row, ok in zip(rows, fits, strict=True) if ok]
    text = pa.table(
        {
            name: pa.array([_text(row[i]) for row in good], pa.string())
            for i, name in enumerate(KLINE_FIELDS)
        }
    )
    candidates, value_rejects = candidates_from_text(text, symbol, interval, numbers[fits])
    misfits = [(int(n), row) for n, row, ok in zip(numbers, rows, fits, strict=True) if not ok]
    shape_rejects = make_rejects(
        [n for n, _ in misfits],
        [symbol] * len(misfits),
        [interval] * len(misfits),
        [json.dumps(row, default=str) for _, row in misfits],
        [f"expected a list of {len(KLINE_FIELDS)} fields (row {n})" for n, _ in misfits],
    )
    return candidates, pa.concat_tables([shape_rejects, value_rejects])


def still_open(candidates: pa.Table, interval: str, now_us: int) -> np.ndarray:
    """Bars whose close time (given, or derived from the interval) is not yet past."""
    opens = to_micros(pc.fill_null(candidates.column("open_time"), -1).to_numpy())
    closes = to_micros(pc.fill_null(candidates.column("close_time"), -1).to_numpy())
    length = INTERVAL_MICROS.get(interval)
    if length is not None:
        closes = np.where((closes < 0) & (opens >= 0), opens + length - 1000, closes)
    return closes >= now_us


def _number(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def symbols_from_exchange_info(info: Any, wanted: Sequence[str]) -> pa.Table:
    """`raw.symbols` rows (`SYMBOL_SCHEMA`) for the wanted symbols listed in exchangeInfo."""
    rows = []
    for entry in info["symbols"]:
        if entry["symbol"] not in wanted:
            continue
        filters = {f.get("filterType"): f for f in entry.get("filters", [])}
        price, lot = filters.get("PRICE_FILTER", {}), filters.get("LOT_SIZE", {})
        rows.append(
            {
                "symbol": entry["symbol"],
                "exchange": EXCHANGE,
                "status": entry.get("status"),
                "base_asset": entry.get("baseAsset"),
                "quote_asset": entry.get("quoteAsset"),
                "tick_size": _number(price.get("tickSize")),
                "step_size": _number(lot.get("stepSize")),
                "min_qty": _number(lot.get("minQty")),
                "listed_at": None,
                "delisted_at": None,
            }
        )
    return pa.Table.from_pylist(rows, schema=SYMBOL_SCHEMA)


# -- the source --------------------------------------------------------------------------------


class BinanceApiSource:
    """Klines of one interval for some symbols, and their exchange metadata."""

    name = SOURCE_NAME

    def __init__(self, options: IngestOptions, *, policy: RetryPolicy | None = None) -> None:
        self.options = options
        self.interval = options.interval or DEFAULT_INTERVAL
        self.base_url = (options.base_url or DEFAULT_BASE_URL).rstrip("/")
        hours = options.freshness_hours
        self.freshness = timedelta(hours=DEFAULT_FRESHNESS_HOURS if hours is None else hours)
        self.client = HttpClient(policy)

    def parameters(self) -> dict[str, object]:
        return {
            "base_url": redact_url(self.base_url),
            "symbols": list(self.options.symbols),
            "interval": self.interval,
            "start": self.options.start,
            "end": self.options.end,
            "force": self.options.force,
            "freshness_hours": self.freshness.total_seconds() / 3600,
        }

    def _symbols(self, loaded: dict[str, datetime]) -> list[str]:
        """The symbols asked for, or else those this source already keeps up to date."""
        symbols = list(self.options.symbols) or sorted(loaded)
        if not symbols:
            raise ValueError(
                f"binance-api: no --symbols given and none loaded from binance-api at interval "
                f"{self.interval} yet; pass e.g. --symbols BTCUSDT,ETHUSDT"
            )
        return symbols

    def _kline_request(self, symbol: str, last_open: datetime | None) -> KlineRequest:
        """From `--start`, else just after the newest stored bar, else from the first bar."""
        if self.options.start is not None:
            start_ms = _day_start_ms(self.options.start)
        else:
            start_ms = _epoch_ms(last_open) + 1 if last_open else 0
        end = self.options.end
        return KlineRequest(
            symbol, start_ms, _day_start_ms(end + timedelta(days=1)) - 1 if end else None
        )

    def plan(self, store: RawStore) -> tuple[list[WorkItem], list[tuple[WorkItem, str]]]:
        loaded = store.last_loaded(SOURCE_NAME, self.interval)
        last_open = store.last_open_times(self.interval)
        now = utc_now()
        items, skipped = [], []
        for symbol in self._symbols(loaded):
            item = WorkItem(
                f"{symbol}/{self.interval}",
                symbol,
                self._kline_request(symbol, last_open.get(symbol)),
            )
            age = now - loaded[symbol] if symbol in loaded else None
            if not self.options.force and age is not None and age < self.freshness:
                hours = self.freshness.total_seconds() / 3600
                why = f"fresh: loaded {age.total_seconds() / 3600:.1f} h ago (within {hours:g} h)"
                skipped.append((item, why))
            else:
                items.append(item)
        if items:
            wanted = tuple(item.label for item in items)
            items.insert(0, WorkItem("exchangeInfo", "exchangeInfo", wanted))
        return items, skipped

    def read(self, item: WorkItem) -> SourcePart:
        if isinstance(item.payload, KlineRequest):
            return self._read_klines(item, item.payload)
        return self._read_exchange_info(item, item.payload)  # type: ignore[arg-type]

    def _fetch_klines(self, request: KlineRequest) -> list[Any]:
        """Every kline row from the start on, page by page (next page after the last open)."""
        url = f"{self.base_url}/api/v3/klines"
        interval = API_INTERVALS.get(self.interval, self.interval)
        params: dict[str, Any] = {"symbol": request.symbol, "interval": interval}
        if request.end_ms is not None:
            params["endTime"] = request.end_ms
        rows: list[Any] = []
        start = request.start_ms
        while True:
            page = self.client.get_json(url, {**params, "startTime": start, "limit": KLINES_LIMIT})
            if not isinstance(page, list):
                raise RequestFailed(
                    f"GET {redact_url(url)} for {request.symbol}: expected a JSON list of "
                    f"klines, got {json.dumps(page)[:200]}"
                )
            rows.extend(page)
            if len(page) < KLINES_LIMIT:
                return rows
            try:
                next_start = int(page[-1][0]) + 1
            except (TypeError, ValueError, IndexError, KeyError):
                raise RequestFailed(
                    f"GET {redact_url(url)} for {request.symbol}: cannot page on, the last row "
                    f"has no open time: {json.dumps(page[-1])[:200]}"
                ) from None
            if next_start <= start:
                raise RequestFailed(
                    f"GET {redact_url(url)}: open times do not advance past {start}"
                )
            start = next_start

    def _read_klines(self, item: WorkItem, request: KlineRequest) -> SourcePart:
        try:
            rows = self._fetch_klines(request)
        except RequestFailed as exc:
            return SourcePart(item, file_error=f"{request.symbol} {self.interval}: {exc}")
        candidates, rejects = klines_from_rows(rows, request.symbol, self.interval)
        forming = still_open(candidates, self.interval, int(time.time() * 1_000_000))
        if forming.any():
            log.info(
                "%s %s: open bar skipped (%d still forming, not stored)",
                request.symbol,
                self.interval,
                int(forming.sum()),
            )
        return SourcePart(
            item,
            candidates=candidates.filter(pa.array(~forming)),
            parse_rejects=rejects,
            symbol_loads=[(request.symbol, self.interval)],
        )

    def _read_exchange_info(self, item: WorkItem, wanted: tuple[str, ...]) -> SourcePart:
        url = f"{self.base_url}/api/v3/exchangeInfo"
        try:
            symbols = symbols_from_exchange_info(self.client.get_json(url), wanted)
        except RequestFailed as exc:
            return SourcePart(item, file_error=f"exchangeInfo: {exc}")
        except (KeyError, TypeError, AttributeError) as exc:
            return SourcePart(
                item, file_error=f"exchangeInfo from {redact_url(url)}: unexpected shape ({exc!r})"
            )
        unknown = sorted(set(wanted) - set(symbols.column("symbol").to_pylist()))
        if unknown:
            log.warning("exchangeInfo does not list %s", ", ".join(unknown))
        return SourcePart(item, symbols=symbols)


def build(options: IngestOptions) -> BinanceApiSource:
    return BinanceApiSource(options)
