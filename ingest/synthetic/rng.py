"""Independent random streams: each part of the generator draws from its own stream of the seed.

A stream is keyed by (seed, stream, index...), so adding draws to one part never shifts another,
and a symbol's own draws do not depend on how many other symbols exist.
"""

from __future__ import annotations

import math
from enum import IntEnum

import numpy as np

# Innovations beyond this many standard deviations are clipped: fat tails, but no natural bar
# ever moves far enough to look like a toxic print (those are injected on purpose).
MAX_INNOVATION = 8.0


class Stream(IntEnum):
    UNIVERSE = 1
    MARKET = 2
    SECTORS = 3
    IDIOSYNCRATIC = 4
    REGIMES = 5
    INTRADAY = 6
    BARS = 7
    FAULTS = 8


def stream_rng(seed: int, stream: Stream, *index: int) -> np.random.Generator:
    return np.random.default_rng([seed, int(stream), *index])


def standardized_t(rng: np.random.Generator, dof: float, size: int | tuple[int, ...]) -> np.ndarray:
    """Student-t draws scaled to unit variance, clipped at +-MAX_INNOVATION."""
    draws = rng.standard_t(dof, size) * math.sqrt((dof - 2.0) / dof)
    return np.clip(draws, -MAX_INNOVATION, MAX_INNOVATION)


def mean_abs_standardized_t(dof: float) -> float:
    """E|z| of a unit-variance Student-t with `dof` degrees of freedom."""
    log_ratio = math.lgamma((dof + 1.0) / 2.0) - math.lgamma(dof / 2.0)
    mean_abs_t = 2.0 * math.sqrt(dof) * math.exp(log_ratio) / (math.sqrt(math.pi) * (dof - 1.0))
    return mean_abs_t * math.sqrt((dof - 2.0) / dof)
