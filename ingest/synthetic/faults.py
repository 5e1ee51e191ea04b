"""Faults the synthetic source injects, scheduled once per symbol and published as of a day.

The schedule is drawn from the seed over a symbol's whole life, independent of `--until`,
`--start` and `--end`, so a later run sees the same bars plus what has since been published:

- missing: the bar never appears (a permanent gap);
- late: the bar appears only once `until` reaches its day plus a lag (a gap that fills later);
- duplicate: the bar appears twice (the loader rejects the repeat: duplicate within the file);
- revision: from a day 30-200 days after the bar its close and volumes change (a new revision);
- ohlc_inconsistent: high below the open/close range, or low above it (kept raw, repaired later);
- toxic_spike: the close jumps to 10-20 times the open (or a tenth to a twentieth) and the next
  bar returns (the toxic guard rejects it).

A symbol's first bar never gets a fault: the toxic guard needs a previous close to compare with.
Nor does its last bar: on the last day of a preset's fixed calendar no later day can bring a late
bar or a revision, so a fault there would stay a missing latest bar for good.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from ingest.intervals import MICROS_PER_DAY
from ingest.synthetic.bars import QUOTE_DECIMALS, Bars, to_grid
from ingest.synthetic.presets import FaultRates

NEVER = np.iinfo(np.int64).max
REVISED_CLOSE = (0.002, 0.01)  # size of a revision of the close, either way
REVISED_VOLUME = 0.05  # a revision scales volumes by up to this much, either way
SPIKE_FACTOR = (10.5, 20.0)  # on the open, which is the previous close but for small gaps
SPIKE_UP_SHARE = 2 / 3


@dataclass(frozen=True)
class FaultPlan:
    """Per bar of a symbol's life: which fault it has, and when late bars and revisions publish."""

    missing: np.ndarray
    published_day: np.ndarray  # epoch day from which the bar is visible (later for late bars)
    duplicate: np.ndarray
    revised_day: np.ndarray  # epoch day from which the revised values replace the first ones
    close_revision: np.ndarray  # factors applied by a revision (1 where none)
    volume_revision: np.ndarray
    high_below_range: np.ndarray
    low_above_range: np.ndarray
    spike: np.ndarray  # a spiked close is this factor times the open (1 where none)

    def rows(self, rows: slice) -> FaultPlan:
        """The plan of the bars at `rows` only."""
        return FaultPlan(*(getattr(self, f.name)[rows] for f in fields(self)))


def _positions(size: int, rates: FaultRates, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Distinct bars for each fault kind (never the first nor the last), about `rate * size` of
    each."""
    counts = [rng.binomial(size, getattr(rates, name)) for name in FaultRates.RATE_NAMES]
    order = rng.permutation(np.arange(1, size))
    groups = np.split(order, np.cumsum(counts))[:-1]  # the last group: bars left clean
    # Dropped after the draw, not left out of it, so that every other bar keeps its fault.
    groups = [group[group != size - 1] for group in groups]
    return dict(zip(FaultRates.RATE_NAMES, groups, strict=True))


def plan_faults(bar_day: np.ndarray, rates: FaultRates, rng: np.random.Generator) -> FaultPlan:
    size = bar_day.size
    at = _positions(size, rates, rng)

    def flags(name: str) -> np.ndarray:
        mask = np.zeros(size, dtype=bool)
        mask[at[name]] = True
        return mask

    published_day = bar_day.copy()
    published_day[at["late"]] += rng.integers(
        rates.late_lag_days[0], rates.late_lag_days[1] + 1, at["late"].size
    )
    revised = at["revision"]
    revised_day = np.full(size, NEVER, dtype=np.int64)
    low, high = rates.revision_after_days
    revised_day[revised] = bar_day[revised] + rng.integers(low, high + 1, revised.size)
    close_revision = np.ones(size)
    close_revision[revised] = 1.0 + rng.choice([-1.0, 1.0], revised.size) * rng.uniform(
        *REVISED_CLOSE, revised.size
    )
    volume_revision = np.ones(size)
    volume_revision[revised] = 1.0 + rng.uniform(-REVISED_VOLUME, REVISED_VOLUME, revised.size)
    inconsistent = at["ohlc_inconsistent"]
    high_side = rng.random(inconsistent.size) < 0.5
    high_below, low_above = np.zeros(size, dtype=bool), np.zeros(size, dtype=bool)
    high_below[inconsistent[high_side]] = True
    low_above[inconsistent[~high_side]] = True
    spiked = at["toxic_spike"]
    factor = rng.uniform(*SPIKE_FACTOR, spiked.size)
    spike = np.ones(size)
    spike[spiked] = np.where(rng.random(spiked.size) < SPIKE_UP_SHARE, factor, 1.0 / factor)
    return FaultPlan(
        missing=flags("missing"),
        published_day=published_day,
        duplicate=flags("duplicate"),
        revised_day=revised_day,
        close_revision=close_revision,
        volume_revision=volume_revision,
        high_below_range=high_below,
        low_above_range=low_above,
        spike=spike,
    )


def _revise(
    bars: Bars, revised: np.ndarray, close_factor: np.ndarray, volume_factor: np.ndarray
) -> Bars:
    close = np.where(revised, to_grid(bars.close * close_factor, bars.price_decimals), bars.close)
    volume = np.where(revised, to_grid(bars.volume * volume_factor, bars.qty_decimals), bars.volume)
    scale = np.where(revised, volume / bars.volume, 1.0)
    return replace(
        bars,
        close=close,
        high=np.maximum(bars.high, close),
        low=np.minimum(bars.low, close),
        volume=volume,
        quote_volume=np.round(bars.quote_volume * scale, QUOTE_DECIMALS),
        trade_count=np.maximum(np.rint(bars.trade_count * scale), 1).astype(np.int64),
        taker_buy_base_volume=np.minimum(
            np.round(bars.taker_buy_base_volume * scale, bars.qty_decimals), volume
        ),
        taker_buy_quote_volume=np.round(bars.taker_buy_quote_volume * scale, QUOTE_DECIMALS),
    )


def _break_ohlc(bars: Bars, high_below: np.ndarray, low_above: np.ndarray) -> Bars:
    """Move high (low) inside the open/close range: at least one tick from its edge."""
    tick = 10.0**-bars.price_decimals
    top, bottom = np.maximum(bars.open, bars.close), np.minimum(bars.open, bars.close)
    range_ticks = np.rint((top - bottom) / tick)
    inside = np.maximum(range_ticks // 2, 1) * tick
    has_range = range_ticks >= 1
    return replace(
        bars,
        high=np.where(
            high_below & has_range, np.round(top - inside, bars.price_decimals), bars.high
        ),
        low=np.where(
            low_above & has_range, np.round(bottom + inside, bars.price_decimals), bars.low
        ),
    )


def _spike(bars: Bars, factor: np.ndarray) -> Bars:
    spiked = factor != 1.0
    close = np.where(spiked, to_grid(bars.open * factor, bars.price_decimals), bars.close)
    return replace(
        bars, close=close, high=np.maximum(bars.high, close), low=np.minimum(bars.low, close)
    )


def published_bars(
    bars: Bars, plan: FaultPlan, until_day: int, first_day: int, last_day: int
) -> Bars:
    """Bars published by `until_day` in [first_day, last_day] (epoch days), faults included."""
    bar_day = bars.open_us // MICROS_PER_DAY
    kept = np.flatnonzero(
        ~plan.missing
        & (plan.published_day <= until_day)
        & (bar_day >= first_day)
        & (bar_day <= min(last_day, until_day))
    )
    shown = bars.take(kept)
    shown = _revise(
        shown,
        plan.revised_day[kept] <= until_day,
        plan.close_revision[kept],
        plan.volume_revision[kept],
    )
    shown = _break_ohlc(shown, plan.high_below_range[kept], plan.low_above_range[kept])
    shown = _spike(shown, plan.spike[kept])
    return shown.take(np.repeat(np.arange(kept.size), 1 + plan.duplicate[kept]))
