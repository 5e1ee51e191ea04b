"""The `synthetic` source: one work item per symbol, generated on the worker that reads it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import ClassVar

from ingest.loader import SourcePart, WorkItem
from ingest.options import IngestOptions
from ingest.raw_store import RawStore, utc_now
from ingest.synthetic.generate import (
    DEFAULT_SEED,
    effective_until,
    listing_date,
    market_panel,
    resolve_preset,
    symbol_history,
)
from ingest.synthetic.presets import Preset
from ingest.synthetic.universe import metadata_table, symbol_indices, symbol_names

# A local generator is cheap and reloading identical data stores nothing: no freshness skip.
DEFAULT_FRESHNESS_HOURS = 0.0


@dataclass(frozen=True)
class SyntheticSource:
    preset: Preset
    seed: int
    until: date
    start: date | None
    end: date | None
    indices: tuple[int, ...]
    force: bool
    freshness_hours: float
    name: ClassVar[str] = "synthetic"

    def parameters(self) -> dict[str, object]:
        symbols = symbol_names(self.preset)
        chosen = [symbols[i] for i in self.indices]
        return {
            "preset": self.preset.name,
            "seed": self.seed,
            "interval": self.preset.interval,
            "until": self.until.isoformat(),
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "symbols": chosen if len(chosen) < len(symbols) else "all",
            "force": self.force,
            "freshness_hours": self.freshness_hours,
        }

    def plan(self, store: RawStore) -> tuple[list[WorkItem], list[tuple[WorkItem, str]]]:
        panel = market_panel(self.preset, self.seed)
        last_loaded = store.last_loaded(self.name, self.preset.interval)
        now = utc_now()
        items: list[WorkItem] = []
        skipped: list[tuple[WorkItem, str]] = []
        for index in self.indices:
            symbol = panel.universe.symbols[index]
            item = WorkItem(
                key=f"synthetic/{self.preset.name}/{symbol}/{self.preset.interval}",
                label=symbol,
                payload=index,
            )
            listed = listing_date(panel, index)
            hours_since = (
                (now - last_loaded[symbol]).total_seconds() / 3600
                if symbol in last_loaded
                else None
            )
            if listed > self.until:
                skipped.append((item, f"not on the exchange yet: lists on {listed}"))
            elif not self.force and hours_since is not None and hours_since < self.freshness_hours:
                skipped.append(
                    (item, f"fresh: loaded {hours_since:.1f} h ago (< {self.freshness_hours:g} h)")
                )
            else:
                items.append(item)
        return items, skipped

    def read(self, item: WorkItem) -> SourcePart:
        index = int(item.payload)  # type: ignore[call-overload]
        panel = market_panel(self.preset, self.seed)
        history = symbol_history(panel, index, self.seed)
        return SourcePart(
            item=item,
            candidates=history.published(self.until, self.start, self.end),
            symbols=metadata_table(self.preset, panel.universe, [index], self.until),
            symbol_loads=[(history.symbol, self.preset.interval)],
        )


def build(options: IngestOptions) -> SyntheticSource:
    preset = resolve_preset(options.preset)
    if options.interval and options.interval != preset.interval:
        raise ValueError(
            f"--interval: preset {preset.name} generates {preset.interval} bars, not "
            f"{options.interval}; omit --interval or pick another preset"
        )
    return SyntheticSource(
        preset=preset,
        seed=DEFAULT_SEED if options.seed is None else options.seed,
        until=effective_until(preset, options.until),
        start=options.start,
        end=options.end,
        indices=tuple(symbol_indices(preset, options.symbols)),
        force=options.force,
        freshness_hours=(
            DEFAULT_FRESHNESS_HOURS if options.freshness_hours is None else options.freshness_hours
        ),
    )
