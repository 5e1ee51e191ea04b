"""Presets of the synthetic source: read from `configs/synthetic.yml` and validated on load.

A preset fixes everything the generator needs besides the seed: the calendar (fixed start and end
dates, so the data never depends on today's date), the bar interval, how many symbols and where
their names come from, how many are listed late or delisted early, the fault rates and the market
model. Every key is checked on load; an error names the file, the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from ingest.intervals import INTERVAL_MICROS, MICROS_PER_DAY
from ingest.synthetic.names import NAME_SPACE
from quantwarehouse.config import REQUIRED, ConfigNode, describe, load_config
from quantwarehouse.paths import CONFIG_DIR

PRESETS_FILE = CONFIG_DIR / "synthetic.yml"
# The generator splits each simulated day into bars, so an interval must divide a UTC day.
SUPPORTED_INTERVALS: tuple[str, ...] = tuple(
    name
    for name, length in INTERVAL_MICROS.items()
    if length <= MICROS_PER_DAY and MICROS_PER_DAY % length == 0
)
MAX_FAULT_RATE = 0.2


class ConfigProblem(ValueError):
    """A bad value, with the key it belongs to (relative to the mapping being read)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class FaultRates:
    """Shares of a symbol's bars given each fault, and the delays of late bars and revisions."""

    missing: float = 0.004
    late: float = 0.004
    duplicate: float = 0.004
    revision: float = 0.004
    ohlc_inconsistent: float = 0.004
    toxic_spike: float = 0.002
    late_lag_days: tuple[int, int] = (1, 5)
    revision_after_days: tuple[int, int] = (30, 200)

    RATE_NAMES: typing.ClassVar[tuple[str, ...]] = (
        "missing",
        "late",
        "duplicate",
        "revision",
        "ohlc_inconsistent",
        "toxic_spike",
    )

    def __post_init__(self) -> None:
        for name in self.RATE_NAMES:
            if not 0.0 <= getattr(self, name) <= MAX_FAULT_RATE:
                raise ConfigProblem(name, f"expected a share of bars from 0 to {MAX_FAULT_RATE}")
        for name in ("late_lag_days", "revision_after_days"):
            if getattr(self, name)[0] < 1:
                raise ConfigProblem(name, "expected delays of at least 1 day")

    @classmethod
    def none(cls) -> FaultRates:
        """No faults at all: clean data, e.g. for measuring the market model."""
        return cls(**dict.fromkeys(cls.RATE_NAMES, 0.0))


@dataclass(frozen=True)
class ModelParams:
    """The market model, in daily units whatever the bar interval."""

    tail_dof: float = 5.0  # Student-t degrees of freedom of every innovation
    daily_vol: tuple[float, float] = (0.025, 0.065)  # range of the symbols' typical daily vol
    market_loading: tuple[float, float] = (0.45, 0.75)
    sector_loading: tuple[float, float] = (0.2, 0.45)
    sectors: int = 6
    vol_persistence: float = 0.97  # EGARCH(1,1) beta
    vol_shock: float = 0.35  # EGARCH(1,1) alpha: response of log variance to |shock|
    leverage: float = -0.05  # EGARCH(1,1) gamma: falls raise volatility more than rises
    regime_days: float = 50.0  # mean length of a regime
    trend_share: float = 0.6  # share of regimes that trend (up or down); the rest mean-revert
    trend_drift: float = 0.15  # daily drift in a trend, in units of the symbol's daily vol
    momentum: float = 0.08  # autocorrelation of returns in a trend
    reversion: float = 0.08  # daily pull back to the level where a mean-reverting regime began

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("tail_dof", self.tail_dof > 2, "expected more than 2 (finite variance)"),
            (
                "daily_vol",
                self.daily_vol[0] > 0 and self.daily_vol[1] < 0.5,
                "expected 0 < v < 0.5",
            ),
            ("market_loading", self.market_loading[0] >= 0, "expected loadings >= 0"),
            ("sector_loading", self.sector_loading[0] >= 0, "expected loadings >= 0"),
            (
                "sector_loading",
                self.market_loading[1] ** 2 + self.sector_loading[1] ** 2 < 0.95,
                "expected market_loading^2 + sector_loading^2 < 0.95 (room for own risk)",
            ),
            ("sectors", self.sectors >= 1, "expected at least 1"),
            ("vol_persistence", 0 <= self.vol_persistence < 1, "expected 0 <= beta < 1"),
            ("vol_shock", 0 <= self.vol_shock <= 1, "expected 0 <= alpha <= 1"),
            ("leverage", -1 < self.leverage < 1, "expected -1 < gamma < 1"),
            ("regime_days", self.regime_days >= 1, "expected at least 1 day"),
            ("trend_share", 0 <= self.trend_share <= 1, "expected a share from 0 to 1"),
            ("trend_drift", 0 <= self.trend_drift <= 1, "expected 0 to 1 daily vols"),
            ("momentum", -1 < self.momentum < 1, "expected -1 < momentum < 1"),
            ("reversion", 0 <= self.reversion < 1, "expected 0 <= reversion < 1"),
        ]
        for key, ok, message in checks:
            if not ok:
                raise ConfigProblem(key, message)


@dataclass(frozen=True)
class Preset:
    """One named data set the synthetic source generates."""

    name: str
    description: str
    interval: str
    symbols: int
    start: date
    end: date
    name_offset: int = 0  # index of the first name in the shared sequence of symbol names
    listed_late: int = 0  # symbols first listed after `start`
    delisted: int = 0  # symbols delisted before `end`
    faults: FaultRates = field(default_factory=FaultRates)
    model: ModelParams = field(default_factory=ModelParams)

    def __post_init__(self) -> None:
        if self.interval not in SUPPORTED_INTERVALS:
            raise ConfigProblem(
                "interval", f"expected one of {', '.join(SUPPORTED_INTERVALS)} (divides a day)"
            )
        if self.symbols < 1:
            raise ConfigProblem("symbols", "expected at least 1 symbol")
        if self.end <= self.start:
            raise ConfigProblem("end", f"expected a date after start ({self.start})")
        if not 0 <= self.name_offset <= NAME_SPACE - self.symbols:
            raise ConfigProblem("name_offset", f"expected 0 to {NAME_SPACE - self.symbols}")
        for key in ("listed_late", "delisted"):
            if getattr(self, key) < 0:
                raise ConfigProblem(key, "expected a count >= 0")
        if self.listed_late + self.delisted > self.symbols - 1:
            raise ConfigProblem(
                "delisted", "expected listed_late + delisted <= symbols - 1 (one lives throughout)"
            )

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def day(self, index: int) -> date:
        """The calendar's day at `index` (0: start)."""
        return self.start + timedelta(days=index)

    @property
    def bars_per_day(self) -> int:
        return MICROS_PER_DAY // INTERVAL_MICROS[self.interval]

    @property
    def name_range(self) -> range:
        return range(self.name_offset, self.name_offset + self.symbols)


@dataclass(frozen=True)
class PresetFile:
    path: Path
    default: str
    presets: dict[str, Preset]

    def get(self, name: str | None) -> Preset:
        chosen = name or self.default
        if chosen not in self.presets:
            raise ValueError(
                f"--preset: unknown preset {chosen!r}; expected one of "
                f"{', '.join(self.presets)} (defined in {self.path})"
            )
        return self.presets[chosen]


def _default_of(spec: dataclasses.Field) -> Any:
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return REQUIRED


def _date(node: ConfigNode, key: str, default: Any) -> date:
    raw = node.data.get(key)
    if raw is None:
        if default is REQUIRED:
            raise node.error(key, "missing; expected a date YYYY-MM-DD")
        return default
    if isinstance(raw, date):
        return raw
    try:
        return date.fromisoformat(str(raw))
    except ValueError:
        raise node.error(key, f"expected a date YYYY-MM-DD, got {describe(raw)}") from None


def _pair(node: ConfigNode, key: str, item_kind: type, default: Any) -> tuple[Any, Any]:
    if not node.has(key):
        return default
    values = node.items(key, item_kind)
    if len(values) != 2 or values[0] > values[1]:
        raise node.error(key, f"expected [low, high] with low <= high, got {values!r}")
    return values[0], values[1]


def _field_value(node: ConfigNode, key: str, kind: Any, default: Any) -> Any:
    if dataclasses.is_dataclass(kind):
        return _build(kind, node.child(key, default={}))
    if typing.get_origin(kind) is tuple:
        return _pair(node, key, typing.get_args(kind)[0], default)
    if kind is date:
        return _date(node, key, default)
    return node.value(key, kind, default=default)


def _build(cls: type, node: ConfigNode, **given: object) -> Any:
    """A dataclass from a config mapping, driven by its fields: their types and defaults."""
    specs = [spec for spec in dataclasses.fields(cls) if spec.name not in given]
    node.only_keys(spec.name for spec in specs)
    kinds = typing.get_type_hints(cls)
    values = {
        spec.name: _field_value(node, spec.name, kinds[spec.name], _default_of(spec))
        for spec in specs
    }
    try:
        return cls(**given, **values)
    except ConfigProblem as problem:
        raise node.error(problem.key, problem.message) from None


def _check_disjoint_names(node: ConfigNode, presets: dict[str, Preset]) -> None:
    ordered = sorted(presets.values(), key=lambda preset: preset.name_offset)
    for before, after in itertools.pairwise(ordered):
        if after.name_offset < before.name_range.stop:
            raise node.child(after.name).error(
                "name_offset",
                f"names {after.name_offset}..{after.name_range.stop - 1} overlap preset "
                f"{before.name}'s {before.name_offset}..{before.name_range.stop - 1}; presets "
                "take disjoint ranges so that they can share a warehouse",
            )


def load_presets(path: Path = PRESETS_FILE) -> PresetFile:
    """Read and validate a presets file; errors name the file, the key and what is allowed."""
    root = load_config(path)
    root.only_keys(["default", "presets"])
    entries = root.child("presets")
    presets = {
        str(name): _build(Preset, entries.child(str(name)), name=str(name)) for name in entries.data
    }
    if not presets:
        raise entries.error(None, "expected at least one preset")
    _check_disjoint_names(entries, presets)
    default = root.choice("default", list(presets))
    return PresetFile(path=path, default=default, presets=presets)
