"""Generating a preset's data: the cached daily panel, one symbol's rows, symbol metadata."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

import numpy as np
import pyarrow as pa

from ingest.intervals import MICROS_PER_DAY
from ingest.synthetic.bars import Bars, build_bars, to_candidates
from ingest.synthetic.faults import FaultPlan, plan_faults, published_bars
from ingest.synthetic.market import Panel, simulate_panel, symbol_path
from ingest.synthetic.presets import Preset, load_presets
from ingest.synthetic.rng import Stream, stream_rng
from ingest.synthetic.universe import metadata_table, symbol_indices, symbol_names

DEFAULT_SEED = 7
_PANEL_LOCK = threading.Lock()


def resolve_preset(preset: str | Preset | None) -> Preset:
    """A preset by name from configs/synthetic.yml (None: its default), or the preset given."""
    return preset if isinstance(preset, Preset) else load_presets().get(preset)


def preset_interval(preset: str | Preset | None) -> str:
    return resolve_preset(preset).interval


def preset_symbols(preset: str | Preset | None) -> list[str]:
    return symbol_names(resolve_preset(preset))


def effective_until(preset: Preset, until: date | None) -> date:
    """`until`, or the preset's last day when absent or later (the calendar is fixed)."""
    return min(until or preset.end, preset.end)


@lru_cache(maxsize=2)
def _cached_panel(preset: Preset, seed: int) -> Panel:
    return simulate_panel(preset, seed)


def clear_panel_cache() -> None:
    """Forget computed panels (the next call computes afresh: for timing and determinism)."""
    _cached_panel.cache_clear()


def market_panel(preset: str | Preset | None, seed: int = DEFAULT_SEED) -> Panel:
    """The daily panel (closes, volatilities, regimes) behind a preset; cached per process."""
    with _PANEL_LOCK:
        return _cached_panel(resolve_preset(preset), seed)


@dataclass(frozen=True)
class SymbolHistory:
    """One symbol's clean bars over its life and the faults scheduled on them."""

    symbol: str
    interval: str
    bars: Bars
    faults: FaultPlan

    def shown(self, until: date, start: date | None = None, end: date | None = None) -> Bars:
        """The bars as published by `until`, restricted to [start, end], faults included."""
        return published_bars(
            self.bars,
            self.faults,
            until_day=_epoch_day(until),
            first_day=_epoch_day(start) if start else np.iinfo(np.int64).min,
            last_day=_epoch_day(end) if end else np.iinfo(np.int64).max,
        )

    def published(
        self, until: date, start: date | None = None, end: date | None = None
    ) -> pa.Table:
        """Candidate rows as published by `until`, restricted to [start, end]."""
        return to_candidates(self.shown(until, start, end), self.symbol, self.interval)


def _epoch_day(day: date) -> int:
    return int(np.datetime64(day, "D").astype(np.int64))


def symbol_history(
    panel: Panel, index: int, seed: int, days: tuple[date | None, date] | None = None
) -> SymbolHistory:
    """One symbol's bars and their faults: over its whole life, or only the bars of the days
    `days` = (first or None for the start, last), with the values they have in the whole life."""
    preset = panel.preset
    path = symbol_path(panel, index, seed)
    bar_day = path.open_us // MICROS_PER_DAY
    rows = slice(None) if days is None else _rows_between(bar_day, *days)
    bars = build_bars(path, panel.universe, index, stream_rng(seed, Stream.BARS, index), rows)
    faults = plan_faults(bar_day, preset.faults, stream_rng(seed, Stream.FAULTS, index))
    return SymbolHistory(panel.universe.symbols[index], preset.interval, bars, faults.rows(rows))


def _rows_between(bar_day: np.ndarray, first: date | None, last: date) -> slice:
    """The rows of bars whose day (epoch days, ascending) is within [first, last]."""
    low = np.searchsorted(bar_day, _epoch_day(first)) if first else 0
    return slice(int(low), int(np.searchsorted(bar_day, _epoch_day(last), side="right")))


def generate_symbol(
    preset: str | Preset | None,
    symbol: str,
    *,
    seed: int = DEFAULT_SEED,
    until: date | None = None,
    start: date | None = None,
    end: date | None = None,
) -> pa.Table:
    """One symbol's candidate rows (`records.CANDIDATE_SCHEMA`), faults included, as published by
    `until` (default: the preset's last day) and restricted to [start, end]."""
    panel = market_panel(preset, seed)
    (index,) = symbol_indices(panel.preset, [symbol])
    history = symbol_history(panel, index, seed)
    return history.published(effective_until(panel.preset, until), start, end)


def symbol_metadata(
    preset: str | Preset | None, *, seed: int = DEFAULT_SEED, until: date | None = None
) -> pa.Table:
    """Exchange metadata (`raw_store.SYMBOL_SCHEMA`) of the symbols listed by `until`."""
    panel = market_panel(preset, seed)
    as_of = effective_until(panel.preset, until)
    listed = [i for i in range(panel.preset.symbols) if listing_date(panel, i) <= as_of]
    return metadata_table(panel.preset, panel.universe, listed, as_of)


def listing_date(panel: Panel, index: int) -> date:
    return panel.preset.day(int(panel.universe.listed_day[index]))


def trades_between(panel: Panel, index: int, first: date | None, last: date) -> bool:
    """Whether the symbol has bars on any day of [first, last] (`first` None: from the start).

    Late bars and revisions keep their own day, so a symbol that does not trade then publishes
    nothing there whatever `until` is: its history need not be generated for that window.
    """
    universe, preset = panel.universe, panel.preset
    first_index = (first - preset.start).days if first else 0
    last_index = (last - preset.start).days
    listed, delisted = int(universe.listed_day[index]), int(universe.delisted_day[index])
    return listed <= last_index and delisted - 1 >= first_index
