"""The `synthetic` source: realistic, deterministic klines generated locally (the default data).

    python orchestrate.py ingest --source synthetic --preset tiny|demo|bench|minute
        [--until YYYY-MM-DD] [--start D] [--end D] [--symbols A,B] [--seed N] [--force]
        [--freshness-hours H]

Presets (configs/synthetic.yml) fix the calendar, so the same seed (default 7) and preset give the
same rows whatever today's date: `tiny` (8 symbols, 420 days, for tests), `demo` (60 symbols,
3 years), `bench` (500 symbols, 8 years), `minute` (50 symbols, 90 days of 1-minute bars, made
one symbol at a time). `--until` publishes history up to that day, so a later `--until` acts
like the next days' data arriving: earlier bars stay identical except late bars (gaps that fill)
and scheduled revisions. The market model is in `market.py`, the injected faults in `faults.py`.

For other code (benchmarks, archive writers, tests of other sources):

- `generate_symbol(preset, symbol, *, seed=7, until=None, start=None, end=None) -> pa.Table`:
  one symbol's rows in `records.CANDIDATE_SCHEMA`, faults included, Binance timestamps (epoch ms
  before 2025-01-01, microseconds from then on), exactly what a load stores or rejects.
- `symbol_metadata(preset, *, seed=7, until=None) -> pa.Table`: exchange metadata of the symbols
  listed by `until`, in `raw_store.SYMBOL_SCHEMA`.
- `preset_symbols(preset) -> list[str]`, `preset_interval(preset) -> str`,
  `resolve_preset(name) -> Preset` (start, end, days, faults, model), `load_presets(path)`.
- `market_panel(preset, seed=7) -> Panel`: the clean daily panel behind the bars (log closes,
  volatilities, regimes), for diagnostics.

`preset` is a name from configs/synthetic.yml (None: its default, demo) or a `Preset`, e.g. one
changed with `dataclasses.replace(resolve_preset("tiny"), faults=FaultRates.none())`.
"""

from ingest.synthetic.generate import (
    DEFAULT_SEED,
    generate_symbol,
    market_panel,
    preset_interval,
    preset_symbols,
    resolve_preset,
    symbol_metadata,
)
from ingest.synthetic.presets import FaultRates, ModelParams, Preset, load_presets
from ingest.synthetic.source import SyntheticSource, build

__all__ = [
    "DEFAULT_SEED",
    "FaultRates",
    "ModelParams",
    "Preset",
    "SyntheticSource",
    "build",
    "generate_symbol",
    "load_presets",
    "market_panel",
    "preset_interval",
    "preset_symbols",
    "resolve_preset",
    "symbol_metadata",
]
