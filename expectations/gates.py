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
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
from great_expectations.core import (
    ExpectationSuiteValidationResult,
    ExpectationValidationResult,
)
from great_expectations.data_context.types.resource_identifiers import ValidationResultIdentifier

from expectations.chunks import iter_frames
from expectations.merge import merge_suite
from expectations.report import gate_lines
from expectations.scopes import ScopeResolver
from expectations.suites import SuiteSpec, layer_suites
from expectations.tables import Query, Scope, Slice, scoped_rows
from expectations.workspace import SAMPLE_LIMIT, GateWorkspace
from ingest.raw_store import TOXIC_FACTOR
from quantwarehouse.paths import runs_dir
from quantwarehouse.runs import validate_run_id

__all__ = ["GateResult", "GateSession", "GateSettings", "Slice", "run_directory", "run_gate"]

log = logging.getLogger(__name__)

SuiteStatus = Literal["passed", "failed", "skipped"]


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


class GateSession:
    """Gates validated into one run directory through one GE context, whose Data Docs are
    rendered once for all of them (`build_docs`): GE takes a tenth of a second to open a context
    and most of a second to render a site, however few results it renders."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._workspace: GateWorkspace | None = None
        self._stored: list[ValidationResultIdentifier] = []

    @property
    def workspace(self) -> GateWorkspace:
        if self._workspace is None:  # not before a gate runs: a refused slice writes nothing
            self._workspace = GateWorkspace(self.run_dir)
        return self._workspace

    @property
    def data_docs(self) -> Path:
        return GateWorkspace.docs_index_of(self.run_dir)

    def run(
        self,
        con: duckdb.DuckDBPyConnection,
        layer: str,
        *,
        slice: Slice | None = None,
        settings: GateSettings | None = None,
    ) -> GateResult:
        """Validate `layer` (whole tables, or only `slice`); its Data Docs wait for `build_docs`."""
        settings = settings or GateSettings()
        started = time.perf_counter()
        specs = layer_suites(layer)
        for spec in specs:  # a slice that does not apply to a table is the caller's error
            scoped_rows(spec.table, slice)
        existing = existing_relations(con)
        scopes = ScopeResolver(con, slice, existing)
        try:
            outcomes = [self._suite(con, spec, scopes, existing, settings) for spec in specs]
        finally:
            scopes.close()
        seconds = time.perf_counter() - started
        return GateResult(layer, tuple(outcomes), self.data_docs, seconds, slice, settings)

    def build_docs(self) -> Path:
        """Render the results validated since the last call, and the index of the run."""
        if self._stored:
            self.workspace.build_docs(self._stored)
            self._stored = []
        return self.data_docs

    def _suite(
        self,
        con: duckdb.DuckDBPyConnection,
        spec: SuiteSpec,
        scopes: ScopeResolver,
        existing: set[str],
        settings: GateSettings,
    ) -> SuiteOutcome:
        missing = [r for r in spec.relations if r not in existing]
        if missing:
            reason = f"{missing[0]} does not exist yet (not built)"
            log.debug("  skipped %s: %s", spec.name, reason)
            return SuiteOutcome(spec.name, spec.table.relation, "skipped", reason=reason)
        try:
            scope = scopes.scope(spec.table, spec.relations)
            outcome, result = _validate_suite(
                con, spec, self.workspace, scope, scopes.slice, settings
            )
        except duckdb.Error as exc:
            reason = f"could not read the rows to validate: {' '.join(str(exc).split())}"
            log.error("  %s failed: %s", spec.name, reason)
            return SuiteOutcome(spec.name, spec.table.relation, "failed", reason=reason)
        batch = "whole_tables" if scopes.slice is None else "slice"
        self._stored.append(self.workspace.store(result, run_name=self.run_dir.name, batch=batch))
        log.debug("  %s: %s (%d rows)", spec.name, outcome.status, outcome.rows)
        return outcome


def existing_relations(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute(
        "select table_schema || '.' || table_name from information_schema.tables "
        "where table_catalog = current_database()"
    ).fetchall()
    return {name for (name,) in rows}


def _validate_frames(
    con: duckdb.DuckDBPyConnection,
    spec: SuiteSpec,
    workspace: GateWorkspace,
    query: Query,
    settings: GateSettings,
    *,
    detailed: bool,
) -> tuple[ExpectationSuiteValidationResult, int, int]:
    """The suite's result over every chunk of `query`, with the rows and chunks read."""
    suite = workspace.suite(spec)
    merged: ExpectationSuiteValidationResult | None = None
    rows = chunks = 0
    for frame in iter_frames(con, query, spec.keys, settings.chunk_rows):
        part = workspace.validate(
            suite,
            frame,
            index_columns=spec.keys,
            parameters=settings.parameters(),
            detailed=detailed,
        )
        merged = merge_suite(merged, part, limit=SAMPLE_LIMIT)
        rows += len(frame)
        chunks += 1
    assert merged is not None  # iter_frames yields at least one frame
    return merged, rows, chunks


def _validate_suite(
    con: duckdb.DuckDBPyConnection,
    spec: SuiteSpec,
    workspace: GateWorkspace,
    scope: Scope,
    slice_: Slice | None,
    settings: GateSettings,
) -> tuple[SuiteOutcome, ExpectationSuiteValidationResult]:
    """Validate whether each expectation holds; a suite that fails again, with the counts and the
    failing rows' keys (GE takes three times as long to collect those, and a passing suite has
    none to show)."""
    query = scope.rows if spec.frame is None else spec.frame(scope)
    merged, rows, chunks = _validate_frames(con, spec, workspace, query, settings, detailed=False)
    if not merged.success:
        merged, rows, chunks = _validate_frames(
            con, spec, workspace, query, settings, detailed=True
        )
    scope_label = "whole tables" if slice_ is None else slice_.describe()
    merged.meta.update(
        {"relation": spec.table.relation, "rows": rows, "chunks": chunks, "scope": scope_label}
    )
    failures = tuple(
        _failure(spec, result, settings) for result in merged.results if not result.success
    )
    outcome = SuiteOutcome(
        spec.name,
        spec.table.relation,
        "passed" if merged.success else "failed",
        evaluated=len(merged.results),
        rows=rows,
        chunks=chunks,
        failures=failures,
    )
    return outcome, merged


def _failure(
    spec: SuiteSpec, result: ExpectationValidationResult, settings: GateSettings
) -> FailedExpectation:
    config = result.expectation_config
    details = result.result or {}
    samples = details.get("partial_unexpected_index_list") or []
    return FailedExpectation(
        suite=spec.name,
        check=_with_parameters((config.meta or {}).get("check", config.type), settings),
        expectation_type=config.type,
        unexpected_count=details.get("unexpected_count"),
        element_count=details.get("element_count"),
        sample_rows=tuple(
            _plain_row(row, spec.keys)
            for row in samples[: settings.sample_rows]
            if isinstance(row, dict)
        ),
        detail=_detail(result),
    )


def _with_parameters(check: str, settings: GateSettings) -> str:
    """A check's name with its thresholds' values: `days_behind in [0, $max_days_behind]`."""
    for name, value in settings.parameters().items():
        check = check.replace(f"${name}", str(value))
    return check


def _detail(result: ExpectationValidationResult) -> str | None:
    """Why a non row-wise expectation failed: GE's exception, or the columns it missed."""
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    mismatched = (result.result or {}).get("details", {}).get("mismatched")
    if mismatched:
        return "; ".join(f"{kind} columns: {', '.join(cols)}" for kind, cols in mismatched.items())
    return None


def _plain(value: object) -> object:
    """numpy / pandas scalars as plain Python values, NaN as None (for printing and JSON)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, datetime | date | str | int | float | bool) or value is None:
        return value
    return str(value)


def _plain_row(row: dict[str, object], keys: tuple[str, ...]) -> dict[str, object]:
    """The row's keys first, then the values the expectation looked at."""
    ordered = [k for k in keys if k in row] + [k for k in row if k not in keys]
    return {str(k): _plain(row[k]) for k in ordered}
