"""The timeframe and period filters of `daily-refresh` (`--tfs`, `--periods`, `--tf-period-combos`).

Valid values come from the vars of dbt_project.yml, the one place the timeframes and EMA periods
are configured: '1d', '<N>d' for N in multi_tf_days, the cal_timeframes as written and the
cal_anchor_timeframes with '_anchor' (as the bar families name them, macros/bars/timeframes.sql),
and ema_periods. A bad value is an error listing the valid ones.

A filter narrows the run twice: the bar families and EMA models holding none of the chosen
timeframes are left out of the selection, and the EMA models receive the filter as dbt vars
(`tfs`, `periods`, `tf_periods`) to recompute only those (timeframe, period) partitions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml

from quantwarehouse.paths import DBT_PROJECT_DIR

# bar family -> (its EMA model, the var listing its timeframes, the suffix of their names)
FAMILIES: dict[str, tuple[str, str | None, str]] = {
    "bars_1d": ("emas_1d", None, ""),
    "bars_multi_tf": ("emas_multi_tf", "multi_tf_days", "d"),
    "bars_cal_us": ("emas_cal_us", "cal_timeframes", ""),
    "bars_cal_iso": ("emas_cal_iso", "cal_timeframes", ""),
    "bars_cal_anchor_us": ("emas_cal_anchor_us", "cal_anchor_timeframes", "_anchor"),
    "bars_cal_anchor_iso": ("emas_cal_anchor_iso", "cal_anchor_timeframes", "_anchor"),
}
EMA_MODELS: dict[str, str] = {ema: family for family, (ema, _, _) in FAMILIES.items()}


@cache
def project_vars() -> dict[str, Any]:
    """The `vars` of dbt_project.yml."""
    project = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text(encoding="utf-8"))
    return dict(project.get("vars") or {})


def family_timeframes(variables: Mapping[str, Any] | None = None) -> dict[str, tuple[str, ...]]:
    """Per bar family, the names of its timeframes."""
    variables = project_vars() if variables is None else variables
    found: dict[str, tuple[str, ...]] = {}
    for family, (_, var_name, suffix) in FAMILIES.items():
        if var_name is None:
            found[family] = ("1d",)
        else:
            found[family] = tuple(f"{value}{suffix}" for value in variables[var_name])
    return found


def valid_timeframes() -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for names in family_timeframes().values():
        seen.update(dict.fromkeys(names))
    return tuple(seen)


def valid_periods() -> tuple[int, ...]:
    return tuple(int(p) for p in project_vars()["ema_periods"])


def _split(flag: str, value: str | None) -> list[str]:
    if value is None:
        return []
    items = [item.strip() for item in value.split(",")]
    if not all(items):
        raise ValueError(f"{flag}: empty item in {value!r}; expected a comma-separated list")
    return items


def parse_tfs(value: str | None) -> tuple[str, ...]:
    valid = valid_timeframes()
    chosen = _split("--tfs", value)
    bad = [tf for tf in chosen if tf not in valid]
    if bad:
        raise ValueError(f"--tfs: unknown timeframe {', '.join(bad)}; valid: {', '.join(valid)}")
    return tuple(dict.fromkeys(chosen))


def _period(flag: str, text: str) -> int:
    valid = valid_periods()
    try:
        period = int(text)
    except ValueError:
        period = None
    if period not in valid:
        shown = ", ".join(map(str, valid))
        raise ValueError(f"{flag}: unknown period {text!r}; valid: {shown} (var ema_periods)")
    return period


def parse_periods(value: str | None) -> tuple[int, ...]:
    return tuple(dict.fromkeys(_period("--periods", text) for text in _split("--periods", value)))


def parse_combos(value: str | None) -> tuple[tuple[str, int], ...]:
    combos: list[tuple[str, int]] = []
    for item in _split("--tf-period-combos", value):
        tf, sep, period = item.partition(":")
        if not sep:
            raise ValueError(
                f"--tf-period-combos: {item!r} is not TF:PERIOD; expected e.g. 7d:10,7d:20"
            )
        valid = valid_timeframes()
        if tf not in valid:
            raise ValueError(
                f"--tf-period-combos: unknown timeframe {tf!r} in {item!r}; valid: "
                f"{', '.join(valid)}"
            )
        combos.append((tf, _period("--tf-period-combos", period)))
    return tuple(dict.fromkeys(combos))


@dataclass(frozen=True)
class EmaFilter:
    """Which (timeframe, period) partitions to refresh; every given filter applies (and)."""

    tfs: tuple[str, ...] = ()
    periods: tuple[int, ...] = ()
    combos: tuple[tuple[str, int], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.tfs or self.periods or self.combos)

    def keeps(self, tf: str, period: int) -> bool:
        return (
            (not self.tfs or tf in self.tfs)
            and (not self.periods or period in self.periods)
            and (not self.combos or (tf, period) in self.combos)
        )

    def partitions(self, family: str) -> list[tuple[str, int]]:
        """The family's (timeframe, period) partitions this filter keeps."""
        return [
            (tf, period)
            for tf in family_timeframes()[family]
            for period in valid_periods()
            if self.keeps(tf, period)
        ]

    def families(self) -> tuple[str, ...]:
        """The bar families holding at least one kept partition (all of them without a filter)."""
        return tuple(family for family in FAMILIES if self.partitions(family))

    def check_not_empty(self) -> None:
        if self and not self.families():
            raise ValueError(
                "--tfs, --periods and --tf-period-combos together select no (timeframe, period): "
                f"tfs {list(self.tfs) or 'any'}, periods {list(self.periods) or 'any'}, combos "
                f"{[f'{t}:{p}' for t, p in self.combos] or 'any'}"
            )

    @property
    def dbt_vars(self) -> dict[str, object]:
        """The vars the EMA models read to recompute only the kept partitions."""
        found: dict[str, object] = {}
        if self.tfs:
            found["tfs"] = list(self.tfs)
        if self.periods:
            found["periods"] = list(self.periods)
        if self.combos:
            found["tf_periods"] = [[tf, period] for tf, period in self.combos]
        return found

    def describe(self) -> str:
        parts = []
        if self.tfs:
            parts.append(f"tfs {','.join(self.tfs)}")
        if self.periods:
            parts.append(f"periods {','.join(map(str, self.periods))}")
        if self.combos:
            parts.append(f"combos {','.join(f'{t}:{p}' for t, p in self.combos)}")
        return "; ".join(parts)


def selected_models(models: Sequence[str], ema_filter: EmaFilter) -> list[str]:
    """`models` without the bar families and EMA models the filter leaves out."""
    if not ema_filter:
        return list(models)
    families = set(ema_filter.families())
    kept = []
    for name in models:
        family = EMA_MODELS.get(name, name)
        if family in FAMILIES and family not in families and name != "bars_1d":
            continue
        kept.append(name)
    return kept
