"""A gate's result as text: one line per suite, and per failed expectation its sample rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from expectations.gates import FailedExpectation, GateResult, SuiteOutcome


def row_text(row: dict[str, object]) -> str:
    return " ".join(f"{column}={value}" for column, value in row.items())


def failure_lines(failure: FailedExpectation) -> list[str]:
    if failure.unexpected_count is not None:
        counted = f"{failure.unexpected_count} of {failure.element_count} rows"
    else:
        counted = failure.detail or "failed"
    lines = [f"    FAILED {failure.check} ({failure.expectation_type}): {counted}"]
    if failure.unexpected_count is not None and failure.detail:
        lines.append(f"      {failure.detail}")
    lines += [f"      e.g. {row_text(row)}" for row in failure.sample_rows]
    return lines


def suite_lines(outcome: SuiteOutcome) -> list[str]:
    if outcome.status == "skipped":
        return [f"  skipped {outcome.suite}: {outcome.reason}"]
    if outcome.reason:
        return [f"  {outcome.suite}: failed: {outcome.reason}"]
    chunks = f", {outcome.chunks} chunks" if outcome.chunks > 1 else ""
    head = (
        f"  {outcome.suite}: {outcome.status}, {len(outcome.failures)} of {outcome.evaluated} "
        f"expectations failed on {outcome.rows} rows{chunks}"
    )
    return [head] + [line for failure in outcome.failures for line in failure_lines(failure)]


def gate_lines(result: GateResult) -> list[str]:
    validated = [s for s in result.suites if s.status != "skipped"]
    scope = "whole tables" if result.slice is None else f"slice: {result.slice.describe()}"
    head = (
        f"gate {result.layer}: {'passed' if result.passed else 'FAILED'} in "
        f"{result.seconds:.1f}s ({scope}): {len(validated)} suites, {result.evaluated} "
        f"expectations evaluated, {len(result.failures)} failed"
    )
    if result.skipped:
        head += f", {len(result.skipped)} suites skipped"
    lines = [head]
    for outcome in result.suites:
        lines += suite_lines(outcome)
    lines.append(f"  data docs: {result.data_docs}")
    return lines
