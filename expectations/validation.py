"""The Great Expectations side of a gate: validate a suite's frames, keep the results for Data Docs.

A `GateSession` reads the frames a suite validates and hands them to a `SuiteValidation`, in its
own process or in a worker process (`expectations.worker`); the validation keeps every result in
the run's GE context (`expectations.workspace`) and answers with what failed, as plain data
(`expectations.gates.SuiteOutcome`). Importing this module imports Great Expectations.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from pathlib import Path

import numpy as np
from great_expectations.core import (
    ExpectationSuiteValidationResult,
    ExpectationValidationResult,
)
from great_expectations.data_context.types.resource_identifiers import ValidationResultIdentifier

from expectations.gates import (
    SAMPLE_LIMIT,
    WHOLE_TABLES,
    Answered,
    FailedExpectation,
    Frames,
    GateSettings,
    SuiteOutcome,
)
from expectations.merge import merge_suite
from expectations.suites import SuiteSpec
from expectations.workspace import GateWorkspace

log = logging.getLogger(__name__)


class SuiteValidation:
    """Validates suites into one run directory through one GE context, whose Data Docs are
    rendered once for many results (`build_docs`): GE takes a tenth of a second to open a context
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

    def submit(
        self, spec: SuiteSpec, frames: Frames, scope: str, settings: GateSettings
    ) -> Answered:
        """Validate the suite on `frames` now; see `validate`."""
        return Answered(self.validate(spec, frames, scope, settings))

    def validate(
        self, spec: SuiteSpec, frames: Frames, scope: str, settings: GateSettings
    ) -> SuiteOutcome:
        """Validate the suite on `frames` (`scope` describes them); the result waits for
        `build_docs`."""
        outcome, result = _validate_suite(spec, self.workspace, frames, scope, settings)
        batch = "whole_tables" if scope == WHOLE_TABLES else "slice"
        self._stored.append(self.workspace.store(result, run_name=self.run_dir.name, batch=batch))
        log.debug("  %s: %s (%d rows)", spec.name, outcome.status, outcome.rows)
        return outcome

    def build_docs(self) -> None:
        """Render the results validated since the last call, and the index of the run."""
        if self._stored:
            self.workspace.build_docs(self._stored)
            self._stored = []


def _validate_frames(
    spec: SuiteSpec,
    workspace: GateWorkspace,
    frames: Frames,
    settings: GateSettings,
    *,
    detailed: bool,
) -> tuple[ExpectationSuiteValidationResult, int, int]:
    """The suite's result over every frame (chunk), with the rows and chunks read."""
    suite = workspace.suite(spec)
    merged: ExpectationSuiteValidationResult | None = None
    rows = chunks = 0
    for frame in frames():
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
    assert merged is not None  # `frames` yields at least one frame (see iter_frames)
    return merged, rows, chunks


def _validate_suite(
    spec: SuiteSpec,
    workspace: GateWorkspace,
    frames: Frames,
    scope: str,
    settings: GateSettings,
) -> tuple[SuiteOutcome, ExpectationSuiteValidationResult]:
    """Validate whether each expectation holds; a suite that fails again, with the counts and the
    failing rows' keys (GE takes three times as long to collect those, and a passing suite has
    none to show)."""
    merged, rows, chunks = _validate_frames(spec, workspace, frames, settings, detailed=False)
    if not merged.success:
        merged, rows, chunks = _validate_frames(spec, workspace, frames, settings, detailed=True)
    merged.meta.update(
        {"relation": spec.table.relation, "rows": rows, "chunks": chunks, "scope": scope}
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
