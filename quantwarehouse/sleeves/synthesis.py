"""Strategy atoms: (symbol, direction, sleeve), and their return streams.

A LONG atom earns the asset's raw return. A SHORT atom earns `-clip(raw, upper=1.0)`: the short
position's return, whose loss is capped at 100 % (a price more than doubling cannot cost more than
the whole position). The optimizer then holds every atom, SHORT ones included, as a long position
with a weight >= 0 in this synthetic return stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd

DIRECTIONS = ("LONG", "SHORT")
SHORT_LOSS_CAP = 1.0  # a raw return above +100 % costs the short exactly 100 %
ATOM_COLUMNS = ("atom", "symbol", "direction", "sleeve")


@dataclass(frozen=True)
class AtomReturns:
    returns: pd.DataFrame  # index date, one column per atom id
    atoms: pd.DataFrame  # atom, symbol, direction, sleeve (one row per column of `returns`)


def atom_id(symbol: str, direction: str, sleeve: str) -> str:
    """`SYMBOL:DIRECTION:sleeve`, e.g. `BTCUSDT:SHORT:binance_spot_rating_all_short`."""
    return f"{symbol}:{direction}:{sleeve}"


Returns = TypeVar("Returns", pd.DataFrame, pd.Series, np.ndarray)


def short_returns(raw: Returns) -> Returns:
    """`-clip(raw, upper=1.0)`; a missing raw return stays missing."""
    return -np.minimum(raw, SHORT_LOSS_CAP)


def synthesize(
    window_returns: pd.DataFrame, selected: list[str], direction: str, sleeve: str
) -> AtomReturns:
    """One atom per selected symbol, all in `direction`, named by `atom_id`."""
    if direction not in DIRECTIONS:
        raise ValueError(
            f"direction: unknown value {direction!r}; allowed: {', '.join(DIRECTIONS)}"
        )
    absent = [symbol for symbol in selected if symbol not in window_returns.columns]
    if absent:
        raise ValueError(f"selected symbols without returns: {', '.join(absent)}")
    raw = window_returns[list(selected)]
    returns = raw if direction == "LONG" else short_returns(raw)
    ids = [atom_id(symbol, direction, sleeve) for symbol in selected]
    atoms = pd.DataFrame(
        {"atom": ids, "symbol": list(selected), "direction": direction, "sleeve": sleeve},
        columns=list(ATOM_COLUMNS),
    )
    return AtomReturns(returns.set_axis(ids, axis=1), atoms)
