"""Sleeve profiles (`configs/profiles/<name>.yml`): validated on load, errors name file and key.

A profile says which scanner feeds the sleeve, its direction and rating filter, how assets are
selected (HTR), clustered, capped, optimized, rebalanced and gated:

```yaml
description: Binance spot USDT pairs with rating_all > -0.3, held long
scanner: binance_spot_rating_all_long   # configs/scanners/<scanner>.yml
direction: LONG                         # LONG | SHORT
rating_field: rating_all                # rating_all | rating_ma | rating_osc
threshold: -0.3                         # LONG keeps rating > threshold, SHORT rating < threshold
lookback_days: 180                      # estimation window (calendar days, strict health)
selection: {target_count: 15, min_history_days: 180, entropy_cap: 0.95,
            efficiency_floor: 0.05, per_cluster: 3}
clusters: {linkage: average, distance_threshold: 0.4}
regime: {window_days: 20, quantile: 0.8, max_weight: 0.25, high_vol_cap: 0.10}
optimizers: [hrp, min_variance, max_sharpe, equal_weight]
primary_optimizer: hrp
hrp: {codependence: pearson, linkage: single, leaf_order: true}
rebalance_days: 7
cost_bps: 10
backtest_days: 365
gates: {sign_test: true, stable_sum: true}
```

The rating filter must be the scanner's own (same field, `gt` for LONG, `lt` for SHORT, same
value), so that the production candidates and the backtest universe are one and the same rule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ingest.scanners.config import (
    FEATURE_FIELDS,
    NAME_PATTERN,
    SCANNERS_DIR,
    Filter,
    load_scanner,
)
from quantwarehouse.config import ConfigError, ConfigNode, load_config
from quantwarehouse.paths import CONFIG_DIR

PROFILES_DIR = CONFIG_DIR / "profiles"
DIRECTIONS = ("LONG", "SHORT")
DIRECTION_OPS = {"LONG": "gt", "SHORT": "lt"}
OPTIMIZERS = ("hrp", "min_variance", "max_sharpe", "equal_weight")
# Codependences whose distance is sqrt((1 - rho) / 2) in riskfolio-lib (DOMAIN.md).
HRP_CODEPENDENCES = ("pearson", "spearman", "kendall")
LINKAGES = ("single", "complete", "average", "weighted", "ward")
PROFILE_KEYS = (
    "description",
    "scanner",
    "direction",
    "rating_field",
    "threshold",
    "lookback_days",
    "selection",
    "clusters",
    "regime",
    "optimizers",
    "primary_optimizer",
    "hrp",
    "rebalance_days",
    "cost_bps",
    "backtest_days",
    "gates",
)


@dataclass(frozen=True)
class SelectionSettings:
    """HTR thresholds (quantwarehouse.sleeves.selection documents each measure)."""

    target_count: int = 15
    min_history_days: int = 180
    entropy_cap: float = 0.95
    efficiency_floor: float = 0.05
    per_cluster: int = 3


@dataclass(frozen=True)
class ClusterSettings:
    """Hierarchical clusters: scipy linkage on sqrt((1 - rho) / 2), cut at a distance."""

    linkage: str = "average"
    distance_threshold: float = 0.4


@dataclass(frozen=True)
class RegimeSettings:
    """Regime caps (quantwarehouse.sleeves.preopt.regime_caps documents the rule)."""

    window_days: int = 20
    quantile: float = 0.8
    max_weight: float = 0.25
    high_vol_cap: float = 0.10


@dataclass(frozen=True)
class HrpSettings:
    """riskfolio-lib HCPortfolio settings, reported with the weights."""

    codependence: str = "pearson"
    linkage: str = "single"
    leaf_order: bool = True


@dataclass(frozen=True)
class Gates:
    sign_test: bool = True
    stable_sum: bool = True


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    description: str
    scanner: str
    direction: str
    rating_field: str
    threshold: float
    lookback_days: int
    selection: SelectionSettings
    clusters: ClusterSettings
    regime: RegimeSettings
    optimizers: tuple[str, ...]
    primary_optimizer: str
    hrp: HrpSettings
    rebalance_days: int
    cost_bps: float
    backtest_days: int
    gates: Gates

    @property
    def rating_filter(self) -> Filter:
        """The universe rule: rating > threshold (LONG) or rating < threshold (SHORT)."""
        return Filter(self.rating_field, DIRECTION_OPS[self.direction], self.threshold)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (for the audit genesis record and reports)."""
        data = asdict(self)
        data["path"] = str(self.path)
        data["optimizers"] = list(self.optimizers)
        data["rating_filter"] = self.rating_filter.describe()
        return data


def _keys_of(settings: type) -> list[str]:
    return [field.name for field in fields(settings)]


def _parse_selection(node: ConfigNode) -> SelectionSettings:
    node.only_keys(_keys_of(SelectionSettings))
    default = SelectionSettings()
    return SelectionSettings(
        target_count=node.value("target_count", int, default=default.target_count, at_least=1),
        min_history_days=node.value(
            "min_history_days", int, default=default.min_history_days, at_least=0
        ),
        entropy_cap=_fraction(node, "entropy_cap", default.entropy_cap),
        efficiency_floor=_fraction(node, "efficiency_floor", default.efficiency_floor),
        per_cluster=node.value("per_cluster", int, default=default.per_cluster, at_least=1),
    )


def _fraction(node: ConfigNode, key: str, default: float) -> float:
    value = node.value(key, float, default=default, at_least=0)
    if value > 1:
        raise node.error(key, f"expected a value between 0 and 1, got {value!r}")
    return value


def _parse_clusters(node: ConfigNode) -> ClusterSettings:
    node.only_keys(_keys_of(ClusterSettings))
    default = ClusterSettings()
    threshold = _fraction(node, "distance_threshold", default.distance_threshold)
    return ClusterSettings(
        linkage=node.choice("linkage", LINKAGES, default=default.linkage),
        distance_threshold=threshold,
    )


def _parse_regime(node: ConfigNode) -> RegimeSettings:
    node.only_keys(_keys_of(RegimeSettings))
    default = RegimeSettings()
    settings = RegimeSettings(
        window_days=node.value("window_days", int, default=default.window_days, at_least=2),
        quantile=_fraction(node, "quantile", default.quantile),
        max_weight=_fraction(node, "max_weight", default.max_weight),
        high_vol_cap=_fraction(node, "high_vol_cap", default.high_vol_cap),
    )
    if settings.high_vol_cap > settings.max_weight:
        raise node.error(
            "high_vol_cap",
            f"expected at most max_weight ({settings.max_weight:g}), got {settings.high_vol_cap:g}",
        )
    return settings


def _parse_hrp(node: ConfigNode) -> HrpSettings:
    node.only_keys(_keys_of(HrpSettings))
    default = HrpSettings()
    return HrpSettings(
        codependence=node.choice("codependence", HRP_CODEPENDENCES, default=default.codependence),
        linkage=node.choice("linkage", LINKAGES, default=default.linkage),
        leaf_order=node.value("leaf_order", bool, default=default.leaf_order),
    )


def _parse_gates(node: ConfigNode) -> Gates:
    node.only_keys(_keys_of(Gates))
    return Gates(
        sign_test=node.value("sign_test", bool, default=True),
        stable_sum=node.value("stable_sum", bool, default=True),
    )


def _parse_optimizers(node: ConfigNode) -> tuple[tuple[str, ...], str]:
    optimizers = tuple(node.items("optimizers", str))
    if not optimizers:
        raise node.error("optimizers", f"expected at least one of: {', '.join(OPTIMIZERS)}")
    for i, name in enumerate(optimizers):
        if name not in OPTIMIZERS:
            raise node.error(
                f"optimizers[{i}]", f"unknown value {name!r}; allowed: {', '.join(OPTIMIZERS)}"
            )
    if len(set(optimizers)) != len(optimizers):
        raise node.error("optimizers", f"lists an optimizer twice: {', '.join(optimizers)}")
    primary = node.choice("primary_optimizer", optimizers)
    return optimizers, primary


def _check_scanner(
    node: ConfigNode, scanners_dir: Path, direction: str, rating_filter: Filter
) -> str:
    """The scanner exists, has the profile's intent and applies the profile's rating filter."""
    name = node.value("scanner", str)
    path = scanners_dir / f"{name}.yml"
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in scanners_dir.glob("*.yml"))) or "none"
        raise node.error(
            "scanner", f"no scanner {name!r} in {scanners_dir}; available: {available}"
        )
    scanner = load_scanner(path)
    if scanner.intent != direction:
        raise node.error(
            "direction", f"{direction} disagrees with scanner {name}'s intent {scanner.intent}"
        )
    if rating_filter not in scanner.filters:
        applied = "; ".join(f.describe() for f in scanner.filters) or "none"
        raise node.error(
            "threshold",
            f"the profile keeps {rating_filter.describe()} but scanner {name} ({path}) filters "
            f"{applied}; the backtest universe must be the scanner's rule",
        )
    return name


def parse_profile(path: Path, scanners_dir: Path = SCANNERS_DIR) -> Profile:
    """Read and validate one profile file; its name is the file name without `.yml`."""
    name = path.stem
    if not NAME_PATTERN.match(name):
        raise ConfigError(
            f"{path}: the profile name {name!r} (the file name) must be lowercase letters, "
            "digits, '_' and '-'"
        )
    node = load_config(path)
    node.only_keys(PROFILE_KEYS)
    direction = node.choice("direction", DIRECTIONS)
    rating_field = node.choice("rating_field", FEATURE_FIELDS)
    threshold = node.value("threshold", float)
    if not -1 <= threshold <= 1:
        raise node.error("threshold", f"ratings lie in [-1, 1], got {threshold:g}")
    rating_filter = Filter(rating_field, DIRECTION_OPS[direction], threshold)
    optimizers, primary = _parse_optimizers(node)
    return Profile(
        name=name,
        path=path,
        description=node.value("description", str, default=""),
        scanner=_check_scanner(node, scanners_dir, direction, rating_filter),
        direction=direction,
        rating_field=rating_field,
        threshold=threshold,
        lookback_days=node.value("lookback_days", int, at_least=30),
        selection=_parse_selection(node.child("selection", default={})),
        clusters=_parse_clusters(node.child("clusters", default={})),
        regime=_parse_regime(node.child("regime", default={})),
        optimizers=optimizers,
        primary_optimizer=primary,
        hrp=_parse_hrp(node.child("hrp", default={})),
        rebalance_days=node.value("rebalance_days", int, at_least=1),
        cost_bps=node.value("cost_bps", float, default=0.0, at_least=0),
        backtest_days=node.value("backtest_days", int, default=365, at_least=1),
        gates=_parse_gates(node.child("gates", default={})),
    )


def available_profiles(folder: Path = PROFILES_DIR) -> list[str]:
    return sorted(path.stem for path in folder.glob("*.yml"))


def load_profile(
    name_or_path: str | Path,
    folder: Path = PROFILES_DIR,
    scanners_dir: Path = SCANNERS_DIR,
) -> Profile:
    """A profile by name (`configs/profiles/<name>.yml`) or by the path of its file."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith((".yml", ".yaml")) or "/" in text:
        return parse_profile(Path(name_or_path), scanners_dir)
    path = folder / f"{text}.yml"
    if not path.is_file():
        available = ", ".join(available_profiles(folder)) or "none"
        raise ConfigError(f"{folder}: unknown profile {text!r}; available: {available}")
    return parse_profile(path, scanners_dir)
