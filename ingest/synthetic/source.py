"""The `synthetic` source: work items of a few symbols each, generated on the worker that reads
them.

An item holds as many symbols as fit in `ITEM_BARS` bars of their whole lives (one symbol of
minute bars, dozens of daily ones): a symbol's history is generated whole, whatever the window
asked for, but the rows of an item are validated and stored together. A symbol with no bar in the
window (`start`..`end`, capped at `until`) is not generated at all: it can publish nothing there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import ClassVar

from ingest.loader import SourcePart, WorkItem
from ingest.options import IngestOptions
from ingest.raw_store import RawStore, utc_now
from ingest.synthetic.bars import symbols_candidates
from ingest.synthetic.generate import (
    DEFAULT_SEED,
    effective_until,
    listing_date,
    market_panel,
    resolve_preset,
    symbol_history,
    trades_between,
)
from ingest.synthetic.market import Panel
from ingest.synthetic.presets import Preset
from ingest.synthetic.universe import metadata_table, symbol_indices, symbol_names

# A local generator is cheap and reloading identical data stores nothing: no freshness skip.
DEFAULT_FRESHNESS_HOURS = 0.0
# Bars of the symbols' whole lives an item generates at most (at least one symbol per item).
ITEM_BARS = 100_000


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
    symbols_per_item: int
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
        chosen: list[int] = []
        skipped: list[tuple[WorkItem, str]] = []
        for index in self.indices:
            symbol = panel.universe.symbols[index]
            listed = listing_date(panel, index)
            hours_since = (
                (now - last_loaded[symbol]).total_seconds() / 3600
                if symbol in last_loaded
                else None
            )
            if listed > self.until:
                why = f"not on the exchange yet: lists on {listed}"
            elif not self.force and hours_since is not None and hours_since < self.freshness_hours:
                why = f"fresh: loaded {hours_since:.1f} h ago (< {self.freshness_hours:g} h)"
            else:
                chosen.append(index)
                continue
            skipped.append((self._item(panel, [index]), why))
        size = self.symbols_per_item
        items = [self._item(panel, chosen[i : i + size]) for i in range(0, len(chosen), size)]
        return items, skipped

    def _item(self, panel: Panel, indices: list[int]) -> WorkItem:
        first, last = (panel.universe.symbols[i] for i in (indices[0], indices[-1]))
        span = first if len(indices) == 1 else f"{first}..{last}"
        return WorkItem(
            key=f"synthetic/{self.preset.name}/{span}/{self.preset.interval}",
            label=span if len(indices) == 1 else f"{span} ({len(indices)} symbols)",
            payload=tuple(indices),
        )

    def read(self, item: WorkItem) -> SourcePart:
        indices: tuple[int, ...] = item.payload  # type: ignore[assignment]
        panel = market_panel(self.preset, self.seed)
        last = min(self.end, self.until) if self.end else self.until
        symbols = [panel.universe.symbols[i] for i in indices]
        shown = {
            symbol: symbol_history(panel, i, self.seed, days=(self.start, last)).shown(
                self.until, self.start, self.end
            )
            for symbol, i in zip(symbols, indices, strict=True)
            if trades_between(panel, i, self.start, last)
        }
        return SourcePart(
            item=item,
            candidates=symbols_candidates(list(shown.items()), self.preset.interval),
            symbols=metadata_table(self.preset, panel.universe, list(indices), self.until),
            symbol_loads=[(symbol, self.preset.interval) for symbol in symbols],
            symbol_rows=[shown[s].open_us.size if s in shown else 0 for s in symbols],
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
        symbols_per_item=max(1, ITEM_BARS // (preset.days * preset.bars_per_day)),
    )
