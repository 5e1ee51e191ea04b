"""ARCHITECTURE invariant 3 as a property: however a fixed small dataset is split into 2-4 load
batches (per symbol in order, backwards, or scattered so that gaps fill later), with revisions of
random old rows and resends of random rows in later batches, the incremental runs end equal to a
full rebuild, for every incremental model and its state table.

Bounded to about two minutes on two cores: a few hundred rows, 8 examples, compared after the last
batch only (tests/test_incremental_equals_full.py compares after every batch), no shrinking (a
failure prints the load plan that broke; replay it with `@example(plan=...)`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.incremental_harness import (
    assert_incremental_equals_full,
    concat,
    except_days,
    on_days,
    parsed_project,
    random_walk,
    revised,
)

START = date(2024, 1, 1)
DAYS = 120


def dataset() -> pa.Table:
    """Four symbols with different histories; one has six days only as 4h klines."""
    with_hours = random_walk("PROPCUSDT", START, DAYS, price=5.0)
    hours = random_walk("PROPCUSDT", START, DAYS, interval="4h", price=5.0)
    first_hour_day, last_hour_day = date(2024, 2, 10), date(2024, 2, 15)
    return concat(
        random_walk("PROPAUSDT", START, DAYS, price=20_000.0),
        except_days(random_walk("PROPBUSDT", START, DAYS, price=0.0005), START, date(2024, 1, 20)),
        except_days(random_walk("PROPDUSDT", START, DAYS), START, date(2024, 3, 10)),
        except_days(with_hours, first_hour_day, last_hour_day),
        on_days(hours, first_hour_day, last_hour_day),
    ).sort_by([("symbol", "ascending"), ("open_time", "ascending")])


DATASET = dataset()
ROWS = DATASET.num_rows
SYMBOLS = sorted(set(DATASET.column("symbol").to_pylist()))
SPLITS = ("in_order", "backwards", "scattered")


@dataclass(frozen=True)
class SymbolSplit:
    """How one symbol's rows (in time order) are spread over the batches."""

    mode: str
    cuts: tuple[int, ...]
    seed: int


@dataclass(frozen=True)
class LoadPlan:
    batches: int
    splits: tuple[SymbolSplit, ...]
    # (row, batches after the row's own batch, close factor)
    revisions: tuple[tuple[int, int, float], ...]
    # (row, batch): the row as originally loaded, sent again
    resends: tuple[tuple[int, int], ...]


@st.composite
def symbol_splits(draw: st.DrawFn, batches: int) -> SymbolSplit:
    return SymbolSplit(
        mode=draw(st.sampled_from(SPLITS)),
        cuts=tuple(
            draw(st.lists(st.integers(0, DAYS), min_size=batches - 1, max_size=batches - 1))
        ),
        seed=draw(st.integers(0, 2**16)),
    )


@st.composite
def load_plans(draw: st.DrawFn) -> LoadPlan:
    batches = draw(st.integers(2, 4))
    return LoadPlan(
        batches=batches,
        splits=tuple(draw(symbol_splits(batches)) for _ in SYMBOLS),
        revisions=tuple(
            draw(
                st.lists(
                    st.tuples(st.integers(0, ROWS - 1), st.integers(1, 3), st.floats(0.8, 1.25)),
                    max_size=8,
                )
            )
        ),
        resends=tuple(
            draw(
                st.lists(
                    st.tuples(st.integers(0, ROWS - 1), st.integers(0, batches - 1)), max_size=8
                )
            )
        ),
    )


def batch_of_each_row(plan: LoadPlan) -> np.ndarray:
    """The batch each dataset row is first loaded in."""
    symbols = np.asarray(DATASET.column("symbol").to_pylist())
    assigned = np.zeros(ROWS, dtype=np.int64)
    for symbol, split in zip(SYMBOLS, plan.splits, strict=True):
        rows = np.flatnonzero(symbols == symbol)
        if split.mode == "scattered":
            rng = np.random.default_rng(split.seed)
            assigned[rows] = rng.integers(0, plan.batches, len(rows))
            continue
        position = np.arange(len(rows)) * DAYS // len(rows)
        chunk = np.searchsorted(np.sort(split.cuts), position, side="right")
        assigned[rows] = chunk if split.mode == "in_order" else plan.batches - 1 - chunk
    return assigned


def batches_of(plan: LoadPlan) -> list[pa.Table]:
    """The candidate rows of each batch: first loads, resends, then revisions (one per row)."""
    assigned = batch_of_each_row(plan)
    # per batch: row -> close factor (1.0 = the original values)
    content: list[dict[int, float]] = [{} for _ in range(plan.batches)]
    for row, batch in enumerate(assigned):
        content[batch][row] = 1.0
    for row, batch in plan.resends:
        content[batch].setdefault(row, 1.0)
    for row, later, factor in plan.revisions:
        batch = assigned[row] + later
        if batch < plan.batches:
            content[batch][row] = factor
    return [batch_rows(rows) for rows in content]


def batch_rows(rows: dict[int, float]) -> pa.Table:
    ordered = sorted(rows)
    taken = DATASET.take(pa.array(ordered, pa.int64()))
    return revised(taken, np.array([rows[row] for row in ordered], dtype=np.float64))


@pytest.mark.slow
@settings(
    max_examples=5,
    deadline=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=(HealthCheck.too_slow,),
)
@given(plan=load_plans())
def test_any_split_into_batches_ends_equal_to_a_full_rebuild(plan: LoadPlan):
    with tempfile.TemporaryDirectory(prefix="qwh-property-") as workdir:
        assert_incremental_equals_full(
            parsed_project(), Path(workdir), batches_of(plan), run_tests=False
        )


def test_batches_hold_every_row_once_and_revisions_after_their_row():
    plan = LoadPlan(
        batches=3,
        splits=(
            SymbolSplit("in_order", (40, 80), 0),
            SymbolSplit("backwards", (60, 90), 0),
            SymbolSplit("scattered", (0, 0), 1),
            SymbolSplit("in_order", (0, 120), 0),
        ),
        revisions=((0, 1, 1.1), (ROWS - 1, 3, 0.9)),
        resends=((5, 2),),
    )
    batches = batches_of(plan)
    assert sum(b.num_rows for b in batches) == ROWS + 2  # the resend, and the revision in range

    def rows_of(symbol: str) -> list[int]:
        return [b.filter(pc.equal(b.column("symbol"), symbol)).num_rows for b in batches]

    assert rows_of("PROPAUSDT") == [40, 40 + 1, 40 + 1]  # in order; a revision; a resend
    assert rows_of("PROPBUSDT") == [25, 25, 50]  # backwards: its newest quarter first
    assert rows_of("PROPDUSDT") == [0, 50, 0]  # all its 50 days between the two cuts
    same_key = pc.and_(
        pc.equal(batches[1].column("symbol"), "PROPAUSDT"),
        pc.equal(batches[1].column("open_time"), DATASET["open_time"][0]),
    )
    revision = batches[1].filter(same_key)
    assert revision["close"].to_pylist() == [DATASET["close"][0].as_py() * 1.1]
