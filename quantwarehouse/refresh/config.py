"""configs/refresh.yml: the source `daily-refresh --all` ingests from, and the refresh thresholds.

Validated on load: every error names the file, the key and what is allowed. The source is built
once here (with its options), so a bad preset, path or option fails before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from ingest.intervals import check_interval
from ingest.loader import Source
from ingest.options import IngestOptions, days_before
from ingest.sources import SOURCE_MODULES, build_source
from quantwarehouse.config import ConfigError, ConfigNode, describe, load_config
from quantwarehouse.paths import CONFIG_DIR, REPO_ROOT

DEFAULT_CONFIG = CONFIG_DIR / "refresh.yml"
TODAY = "today"

# option key -> (kind, lower bound for numbers); dates and paths are read by their own rules.
_SCALAR_OPTIONS: dict[str, tuple[type, float | None]] = {
    "interval": (str, None),
    "base_url": (str, None),
    "preset": (str, None),
    "seed": (int, None),
    "force": (bool, None),
    "freshness_hours": (float, 0),
    "workers": (int, 1),
}
_DATE_OPTIONS = ("start", "end", "until")
_PATH_OPTIONS = ("path", "mapping")
SOURCE_OPTIONS: tuple[str, ...] = ("symbols", *_SCALAR_OPTIONS, *_DATE_OPTIONS, *_PATH_OPTIONS)


@dataclass(frozen=True)
class GateConfig:
    max_days_behind: int = 2
    chunk_rows: int = 200_000


@dataclass(frozen=True)
class RefreshConfig:
    path: Path
    source_name: str
    source_options: IngestOptions
    max_days_behind: int = 1
    gates: GateConfig = GateConfig()

    def build_source(self) -> Source:
        return build_source(self.source_name, self.source_options)

    def describe_source(self) -> str:
        given = {
            f.name: getattr(self.source_options, f.name)
            for f in fields(IngestOptions)
            if f.name in SOURCE_OPTIONS
            and getattr(self.source_options, f.name) not in (None, (), False)
            and not (f.name == "workers" and self.source_options.workers == 4)
        }
        shown = ", ".join(
            f"{k}={v.isoformat() if isinstance(v, date) else v}" for k, v in given.items()
        )
        return f"{self.source_name} ({shown})" if shown else self.source_name


def today_utc() -> date:
    return datetime.now(UTC).date()


def _date_option(node: ConfigNode, key: str, until: date | None = None) -> date | None:
    """A date, 'today', or (given `until`) '-Nd': N days before `until`."""
    raw = node.data.get(key)
    if raw is None:
        return None
    if isinstance(raw, datetime):
        return raw.date()
    if isinstance(raw, date):
        return raw
    if raw == TODAY:
        return today_utc()
    if isinstance(raw, str):
        if until is not None:
            try:
                day = days_before(raw, until)
            except OverflowError:
                raise node.error(key, f"{raw} reaches before the year 1") from None
            if day is not None:
                return day
        try:
            return date.fromisoformat(raw)
        except ValueError:
            pass
    allowed = (
        f"a date (YYYY-MM-DD) or '{TODAY}'"
        if until is None
        else f"a date (YYYY-MM-DD), '{TODAY}' or days before until (-200d: 200 days before)"
    )
    raise node.error(key, f"expected {allowed}, got {describe(raw)}")


def _path_option(node: ConfigNode, key: str) -> Path | None:
    raw = node.value(key, str, default=None)
    if raw is None:
        return None
    path = Path(raw).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def _source_options(node: ConfigNode) -> IngestOptions:
    node.only_keys(SOURCE_OPTIONS)
    values: dict[str, Any] = {
        key: node.value(key, kind, default=None, at_least=low)
        for key, (kind, low) in _SCALAR_OPTIONS.items()
    }
    if values["interval"] is not None:
        try:
            check_interval(values["interval"])
        except ValueError as exc:
            raise node.error("interval", str(exc)) from None
    symbols = tuple(s.upper() for s in node.items("symbols", str, default=[]))
    until = _date_option(node, "until") or today_utc()  # the synthetic presets cap it
    dates = {
        "until": until,
        "start": _date_option(node, "start", until=until),
        "end": _date_option(node, "end"),
    }
    if dates["start"] and dates["end"] and dates["start"] > dates["end"]:
        raise node.error("start", f"{dates['start']} is after end {dates['end']}")
    paths = {key: _path_option(node, key) for key in _PATH_OPTIONS}
    present = {k: v for k, v in values.items() if v is not None}
    return IngestOptions(symbols=symbols, **present, **dates, **paths)


def load_refresh_config(path: Path | None = None) -> RefreshConfig:
    """Read and validate the refresh config (default configs/refresh.yml)."""
    path = path or DEFAULT_CONFIG
    root = load_config(path)
    root.only_keys(("source", "freshness", "gates"))
    source = root.child("source")
    source.only_keys(("name", "options"))
    name = source.choice("name", list(SOURCE_MODULES))
    options = _source_options(source.child("options", default={}))
    freshness = root.child("freshness", default={})
    freshness.only_keys(("max_days_behind",))
    gates = root.child("gates", default={})
    gates.only_keys(("max_days_behind", "chunk_rows"))
    config = RefreshConfig(
        path=path,
        source_name=name,
        source_options=options,
        max_days_behind=freshness.value("max_days_behind", int, default=1, at_least=0),
        gates=GateConfig(
            max_days_behind=gates.value("max_days_behind", int, default=2, at_least=0),
            chunk_rows=gates.value("chunk_rows", int, default=200_000, at_least=1),
        ),
    )
    try:
        config.build_source()
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"{path}: source: {exc}") from None
    return config
