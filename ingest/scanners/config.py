"""Scanner configs (`configs/scanners/<name>.yml`), validated with errors naming file and key.

```yaml
description: Liquid USDT pairs, most volatile first
intent: DISCOVERY                   # LONG | SHORT | DISCOVERY
universe:
  exchange: binance
  quote_assets: [USDT]
  min_traded_value: 1000000         # mean daily quote volume over window_days, in the quote asset
  min_volatility: 0.4               # annualised stdev of daily log returns over window_days
  min_listing_age_days: 90
  window_days: 30
filters:
  - {field: rating_all, op: gt, value: -0.3}
  - {field: volatility, op: in_range, value: [0.2, 1.5]}
sort: {field: volatility, direction: desc}
limit: 20
```
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from quantwarehouse.config import ConfigError, ConfigNode, describe, load_config
from quantwarehouse.paths import CONFIG_DIR

if TYPE_CHECKING:
    import pandas as pd

SCANNERS_DIR = CONFIG_DIR / "scanners"
INTENTS = ("LONG", "SHORT", "DISCOVERY")
OPS = ("gt", "lt", "eq", "in_range")
DIRECTIONS = ("asc", "desc")
# Computed from main.bars_1d and main.dim_symbols (see ingest.scanners.fields).
WAREHOUSE_FIELDS = (
    "close",
    "traded_value",
    "volatility",
    "listing_age_days",
    "days_since_last_bar",
)
# Read from main.features_matrix on the as-of date.
FEATURE_FIELDS = ("rating_all", "rating_ma", "rating_osc")
FIELDS = (*WAREHOUSE_FIELDS, *FEATURE_FIELDS)
# Fields every candidate reports, whatever the scanner filters on.
REPORTED_FIELDS = ("close", "traded_value", "volatility", "listing_age_days")
SCANNER_KEYS = ("description", "intent", "universe", "filters", "sort", "limit")
UNIVERSE_KEYS = (
    "exchange",
    "quote_assets",
    "min_traded_value",
    "min_volatility",
    "min_listing_age_days",
    "window_days",
)
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
EQ_RELATIVE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Universe:
    exchange: str
    quote_assets: tuple[str, ...]
    min_traded_value: float = 0.0
    min_volatility: float = 0.0
    min_listing_age_days: int = 0
    window_days: int = 30

    def mask(self, fields: pd.DataFrame) -> pd.Series:
        """Symbols (already of this exchange and quote assets) that clear the minimums."""
        return (
            (fields["traded_value"] >= self.min_traded_value)
            & (fields["volatility"] >= self.min_volatility)
            & (fields["listing_age_days"] >= self.min_listing_age_days)
        )


@dataclass(frozen=True)
class Filter:
    field: str
    op: str
    value: float | tuple[float, float]

    def mask(self, values: pd.Series) -> pd.Series:
        """Rows passing the filter; a missing value never passes."""
        numbers = values.astype("float64")
        if self.op == "gt":
            return numbers > self.value
        if self.op == "lt":
            return numbers < self.value
        if self.op == "eq":
            return (numbers - self.value).abs() <= EQ_RELATIVE_TOLERANCE * abs(self.value)
        low, high = self.value
        return (numbers >= low) & (numbers <= high)

    def describe(self) -> str:
        if self.op == "in_range":
            low, high = self.value
            return f"{self.field} in [{low:g}, {high:g}]"
        symbol = {"gt": ">", "lt": "<", "eq": "=="}[self.op]
        return f"{self.field} {symbol} {self.value:g}"


@dataclass(frozen=True)
class Sort:
    field: str
    direction: str

    @property
    def ascending(self) -> bool:
        return self.direction == "asc"


@dataclass(frozen=True)
class ScannerConfig:
    name: str
    path: Path
    description: str
    intent: str
    universe: Universe
    filters: tuple[Filter, ...]
    sort: Sort
    limit: int | None

    def fields_used(self) -> list[str]:
        """Fields reported for each candidate: the usual ones, then filter and sort fields."""
        named = [*REPORTED_FIELDS, *(f.field for f in self.filters), self.sort.field]
        return list(dict.fromkeys(named))

    def feature_fields(self) -> list[str]:
        return [field for field in self.fields_used() if field in FEATURE_FIELDS]

    def describe(self) -> list[str]:
        u = self.universe
        limit = self.limit if self.limit is not None else "none"
        return [
            f"{self.name} ({self.intent}): {self.description}".rstrip(": "),
            f"  universe: {u.exchange} {'/'.join(u.quote_assets)}, traded value >= "
            f"{u.min_traded_value:g}, volatility >= {u.min_volatility:g}, listed >= "
            f"{u.min_listing_age_days} days, window {u.window_days} days",
            f"  filters: {'; '.join(f.describe() for f in self.filters) or 'none'}",
            f"  sort: {self.sort.field} {self.sort.direction}, limit {limit}",
        ]


def _parse_universe(node: ConfigNode) -> Universe:
    node.only_keys(UNIVERSE_KEYS)
    quote_assets = tuple(q.strip().upper() for q in node.items("quote_assets", str))
    if not quote_assets:
        raise node.error("quote_assets", "expected at least one quote asset, e.g. [USDT]")
    min_traded_value = node.value("min_traded_value", float, default=0.0, at_least=0)
    if min_traded_value > 0 and len(quote_assets) > 1:
        raise node.error(
            "min_traded_value",
            "is in units of the quote asset, so it needs exactly one quote asset in "
            f"quote_assets (got {', '.join(quote_assets)}); write one scanner per quote asset",
        )
    return Universe(
        exchange=node.value("exchange", str).strip(),
        quote_assets=quote_assets,
        min_traded_value=min_traded_value,
        min_volatility=node.value("min_volatility", float, default=0.0, at_least=0),
        min_listing_age_days=node.value("min_listing_age_days", int, default=0, at_least=0),
        window_days=node.value("window_days", int, default=30, at_least=2),
    )


def _parse_range(node: ConfigNode) -> tuple[float, float]:
    raw = node.data.get("value")
    if not isinstance(raw, list) or len(raw) != 2:
        raise node.error("value", f"in_range needs a [lo, hi] pair, got {describe(raw)}")
    low, high = (node.check(f"value[{i}]", item, float) for i, item in enumerate(raw))
    if low > high:
        raise node.error("value", f"in_range needs lo <= hi, got [{low:g}, {high:g}]")
    return low, high


def _parse_filter(node: ConfigNode) -> Filter:
    node.only_keys(("field", "op", "value"))
    field = node.choice("field", FIELDS)
    op = node.choice("op", OPS)
    value = _parse_range(node) if op == "in_range" else node.value("value", float)
    if op != "in_range" and not math.isfinite(value):
        raise node.error("value", f"expected a finite number, got {value}")
    return Filter(field=field, op=op, value=value)


def _parse_sort(node: ConfigNode) -> Sort:
    node.only_keys(("field", "direction"))
    return Sort(field=node.choice("field", FIELDS), direction=node.choice("direction", DIRECTIONS))


def load_scanner(path: Path) -> ScannerConfig:
    """Read and validate one scanner config; its name is the file name without `.yml`."""
    name = path.stem
    if not NAME_PATTERN.match(name):
        raise ConfigError(
            f"{path}: the scanner name {name!r} (the file name) must be lowercase letters, "
            "digits, '_' and '-'"
        )
    node = load_config(path)
    node.only_keys(SCANNER_KEYS)
    return ScannerConfig(
        name=name,
        path=path,
        description=node.value("description", str, default=""),
        intent=node.choice("intent", INTENTS),
        universe=_parse_universe(node.child("universe")),
        filters=tuple(_parse_filter(child) for child in node.children("filters", default=[])),
        sort=_parse_sort(node.child("sort")),
        limit=node.value("limit", int, default=None, at_least=1),
    )


def load_scanners(folder: Path, names: tuple[str, ...] = ()) -> list[ScannerConfig]:
    """The scanners in `folder` (all, or those named), every config validated."""
    available = {path.stem: path for path in sorted(folder.glob("*.yml"))}
    if not available:
        raise FileNotFoundError(f"no scanner configs (*.yml) in {folder}")
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ValueError(
            f"--scanners: unknown scanner {', '.join(unknown)}; "
            f"available in {folder}: {', '.join(available)}"
        )
    return [load_scanner(available[name]) for name in names or tuple(available)]
