"""Quality gates: validate a layer of the warehouse with its Great Expectations suites.

    from expectations.gates import Slice, run_gate, run_directory

    result = run_gate(con, "bars", run_dir=run_directory(run_id))
    if not result.passed:
        stop(result.lines())  # which expectation failed, on which rows

A gate only reads (ARCHITECTURE invariant 7: gates stop, never destroy): it runs SELECTs on the
connection it is given and writes nothing but its report under the run's directory. A suite whose
table does not exist yet is skipped and says so. Tables are read in key-ordered chunks of at most
`GateSettings.chunk_rows` rows (`expectations.chunks`); each chunk is validated by GE and the
chunks' results are combined into one GE validation result per suite (`expectations.merge`),
stored with the run and rendered as Data Docs (`expectations.workspace`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import duckdb
import pandas as pd

from expectations.chunks import iter_frames
from expectations.report import gate_lines
from expectations.scopes import ScopeResolver
from expectations.suites import SuiteSpec, layer_suites
from expectations.tables import Slice, scoped_rows
from ingest.raw_store import TOXIC_FACTOR
from quantwarehouse.paths import runs_dir
from quantwarehouse.runs import validate_run_id

__all__ = [
    "GateResult",
    "GateSession",
    "GateSettings",
    "PendingGate",
    "Slice",
    "run_directory",
    "run_gate",
]

log = logging.getLogger(__name__)

SuiteStatus = Literal["passed", "failed", "skipped"]
SAMPLE_LIMIT = 20  # unexpected rows kept per expectation (GE's partial lists, the Data Docs table)
WHOLE_TABLES = "whole tables"  # the scope of a gate without a slice
# The frames a suite validates, read anew on each call (a failing suite is validated twice).
Frames = Callable[[], Iterable[pd.DataFrame]]


@dataclass(frozen=True)
class GateSettings:
    """Thresholds (GE suite parameters) and reading limits of a gate."""

    max_days_behind: int = 2
    min_simple_return: float = -1.0
    max_simple_return: float = TOXIC_FACTOR - 1  # the raw layer's toxic-print bound: +500 %
    chunk_rows: int = 200_000
    sample_rows: int = 5

    def parameters(self) -> dict[str, object]:
        return {
            "max_days_behind": self.max_days_behind,
            "min_simple_return": self.min_simple_return,
            "max_simple_return": self.max_simple_return,
        }


@dataclass(frozen=True)
class FailedExpectation:
    """One expectation that failed: where, how often, and a few of the rows (with their keys)."""

    suite: str
    check: str
    expectation_type: str
    unexpected_count: int | None
    element_count: int | None
    sample_rows: tuple[dict[str, object], ...] = ()
    detail: str | None = None

    @property
    def name(self) -> str:
        return f"{self.suite}: {self.check}"


@dataclass(frozen=True)
class SuiteOutcome:
    suite: str
    relation: str
    status: SuiteStatus
    evaluated: int = 0
    rows: int = 0
    chunks: int = 0
    failures: tuple[FailedExpectation, ...] = ()
    reason: str | None = None


@dataclass(frozen=True)
class GateResult:
    """What a layer's gate found. `passed` is False when any suite failed."""

    layer: str
    suites: tuple[SuiteOutcome, ...]
    data_docs: Path
    seconds: float
    slice: Slice | None = None
    settings: GateSettings = field(default_factory=GateSettings)

    @property
    def passed(self) -> bool:
        return all(s.status != "failed" for s in self.suites)

    @property
    def failures(self) -> tuple[FailedExpectation, ...]:
        return tuple(f for s in self.suites for f in s.failures)

    @property
    def failed_expectations(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.failures)

    @property
    def evaluated(self) -> int:
        return sum(s.evaluated for s in self.suites)

    @property
    def skipped(self) -> tuple[SuiteOutcome, ...]:
        return tuple(s for s in self.suites if s.status == "skipped")

    def lines(self) -> list[str]:
        """The summary: per suite its status, per failed expectation a few rows."""
        return gate_lines(self)


def data_docs_index(run_dir: Path) -> Path:
    """The Data Docs site of a run's gates."""
    return run_dir / "data_docs" / "index.html"


def run_directory(run_id: str) -> Path:
    """`data/runs/<run_id>/`: where a run keeps its artifacts (the gates' report included)."""
    return runs_dir() / validate_run_id(run_id)


def run_gate(
    con: duckdb.DuckDBPyConnection,
    layer: str,
    *,
    slice: Slice | None = None,
    run_dir: Path,
    settings: GateSettings | None = None,
) -> GateResult:
    """Validate `layer` (whole tables, or only `slice`), write Data Docs under `run_dir`."""
    session = GateSession(run_dir)
    result = session.run(con, layer, slice=slice, settings=settings)
    session.build_docs()
    return result


class SuiteAnswer(Protocol):
    """A suite's outcome: known already, or when the worker validating it answers."""

    ready_at: float  # time.perf_counter() when the outcome was known (set by `outcome()`)

    def outcome(self) -> SuiteOutcome:
        """The outcome (waits for it)."""
        ...


@dataclass
class Answered:
    """An outcome known at once (validated in this process)."""

    known: SuiteOutcome
    ready_at: float = field(default_factory=time.perf_counter)

    def outcome(self) -> SuiteOutcome:
        return self.known


class Validator(Protocol):
    """Validates a suite's frames and keeps the results for Data Docs: in the gate's process
    (`expectations.validation.SuiteValidation`) or in a worker (`expectations.worker`).
    `submit` reads the frames at once; the outcome may come later."""

    def submit(
        self, spec: SuiteSpec, frames: Frames, scope: str, settings: GateSettings
    ) -> SuiteAnswer: ...

    def build_docs(self) -> None: ...


@dataclass
class PendingGate:
    """A gate whose suites were submitted: `result()` waits for their outcomes."""

    layer: str
    answers: list[SuiteAnswer]
    data_docs: Path
    started: float
    slice: Slice | None
    settings: GateSettings

    def result(self) -> GateResult:
        outcomes = tuple(answer.outcome() for answer in self.answers)
        seconds = self.ready_at - self.started
        return GateResult(self.layer, outcomes, self.data_docs, seconds, self.slice, self.settings)

    @property
    def ready_at(self) -> float:
        """When the last outcome was known (once `result()` has waited for them)."""
        return max((answer.ready_at for answer in self.answers), default=self.started)


class GateSession:
    """Gates validated into one run directory by one validator (one GE context), whose Data
    Docs are rendered once for all of them (`build_docs`). Without a `validator`, Great
    Expectations is imported in this process when the first suite is validated."""

    def __init__(self, run_dir: Path, validator: Validator | None = None) -> None:
        self.run_dir = run_dir
        self._validator = validator

    @property
    def validator(self) -> Validator:
        if self._validator is None:
            from expectations.validation import SuiteValidation

            self._validator = SuiteValidation(self.run_dir)
        return self._validator

    @property
    def data_docs(self) -> Path:
        return data_docs_index(self.run_dir)

    def run(
        self,
        con: duckdb.DuckDBPyConnection,
        layer: str,
        *,
        slice: Slice | None = None,
        settings: GateSettings | None = None,
    ) -> GateResult:
        """Validate `layer` (whole tables, or only `slice`); its Data Docs wait for `build_docs`."""
        return self.start(con, layer, slice=slice, settings=settings).result()

    def start(
        self,
        con: duckdb.DuckDBPyConnection,
        layer: str,
        *,
        slice: Slice | None = None,
        settings: GateSettings | None = None,
    ) -> PendingGate:
        """Read `layer`'s frames (whole tables, or only `slice`) and submit its suites; with a
        worker, they validate while the caller goes on until it asks for the result."""
        settings = settings or GateSettings()
        started = time.perf_counter()
        specs = layer_suites(layer)
        for spec in specs:  # a slice that does not apply to a table is the caller's error
            scoped_rows(spec.table, slice)
        existing = existing_relations(con)
        scopes = ScopeResolver(con, slice, existing)
        try:
            answers = [self._suite(con, spec, scopes, existing, settings) for spec in specs]
        finally:
            scopes.close()
        return PendingGate(layer, answers, self.data_docs, started, slice, settings)

    def build_docs(self) -> Path:
        """Render the results validated since the last call, and the index of the run."""
        if self._validator is not None:
            self._validator.build_docs()
        return self.data_docs

    def _suite(
        self,
        con: duckdb.DuckDBPyConnection,
        spec: SuiteSpec,
        scopes: ScopeResolver,
        existing: set[str],
        settings: GateSettings,
    ) -> SuiteAnswer:
        missing = [r for r in spec.relations if r not in existing]
        if missing:
            reason = f"{missing[0]} does not exist yet (not built)"
            log.debug("  skipped %s: %s", spec.name, reason)
            return Answered(SuiteOutcome(spec.name, spec.table.relation, "skipped", reason=reason))
        try:
            scope = scopes.scope(spec.table, spec.relations)
            query = scope.rows if spec.frame is None else spec.frame(scope)

            def frames() -> Iterable[pd.DataFrame]:
                return iter_frames(con, query, spec.keys, settings.chunk_rows)

            label = WHOLE_TABLES if scopes.slice is None else scopes.slice.describe()
            return self.validator.submit(spec, frames, label, settings)
        except duckdb.Error as exc:
            reason = f"could not read the rows to validate: {' '.join(str(exc).split())}"
            log.error("  %s failed: %s", spec.name, reason)
            return Answered(SuiteOutcome(spec.name, spec.table.relation, "failed", reason=reason))


def existing_relations(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute(
        "select table_schema || '.' || table_name from information_schema.tables "
        "where table_catalog = current_database()"
    ).fetchall()
    return {name for (name,) in rows}
