"""Combining the GE results of a suite's chunks into the result of the whole frame.

Every check of the suites is a row-wise expectation (counts add up over chunks; the frame passes
when no chunk has an unexpected row) or a schema expectation (the same columns in every chunk:
the first failing chunk's result stands, as for results without counts, GE's BOOLEAN_ONLY
format). Samples of unexpected rows are kept up to the limit.
"""

from __future__ import annotations

from great_expectations.core import (
    ExpectationSuiteValidationResult,
    ExpectationValidationResult,
)

COUNT_FIELDS = ("element_count", "unexpected_count", "missing_count")
SAMPLE_FIELDS = ("partial_unexpected_list", "partial_unexpected_index_list")


def _percent(part: int, whole: int) -> float | None:
    return 100.0 * part / whole if whole else None


def _merged_value_counts(first: list[dict], second: list[dict], limit: int) -> list[dict]:
    merged: list[dict] = [dict(entry) for entry in first]
    for entry in second:
        same = next((m for m in merged if m["value"] == entry["value"]), None)
        if same is None:
            merged.append(dict(entry))
        else:
            same["count"] += entry["count"]
    return sorted(merged, key=lambda m: -m["count"])[:limit]


def _merged_result(first: dict, second: dict, limit: int) -> dict:
    result = dict(first)
    for name in COUNT_FIELDS:
        if name in first and name in second:
            result[name] = first[name] + second[name]
    for name in SAMPLE_FIELDS:
        if name in first and name in second:
            result[name] = (first[name] + second[name])[:limit]
    if "partial_unexpected_counts" in first and "partial_unexpected_counts" in second:
        result["partial_unexpected_counts"] = _merged_value_counts(
            first["partial_unexpected_counts"], second["partial_unexpected_counts"], limit
        )
    if "element_count" in result and "unexpected_count" in result:
        elements, unexpected = result["element_count"], result["unexpected_count"]
        missing = result.get("missing_count", 0)
        result["unexpected_percent_total"] = _percent(unexpected, elements)
        result["unexpected_percent_nonmissing"] = _percent(unexpected, elements - missing)
        result["unexpected_percent"] = result["unexpected_percent_nonmissing"]
        if "missing_count" in result:
            result["missing_percent"] = _percent(missing, elements)
    return result


def merge_expectation(
    first: ExpectationValidationResult, second: ExpectationValidationResult, limit: int
) -> ExpectationValidationResult:
    row_wise = "element_count" in first.result and "element_count" in second.result
    if not row_wise:
        return first if not first.success else second
    raised = first if (first.exception_info or {}).get("raised_exception") else second
    return ExpectationValidationResult(
        success=bool(first.success and second.success),
        expectation_config=first.expectation_config,
        result=_merged_result(first.result, second.result, limit),
        meta=first.meta,
        exception_info=raised.exception_info,
    )


def statistics(results: list[ExpectationValidationResult]) -> dict[str, object]:
    evaluated = len(results)
    successful = sum(1 for r in results if r.success)
    return {
        "evaluated_expectations": evaluated,
        "successful_expectations": successful,
        "unsuccessful_expectations": evaluated - successful,
        "success_percent": _percent(successful, evaluated),
    }


def merge_suite(
    first: ExpectationSuiteValidationResult | None,
    second: ExpectationSuiteValidationResult,
    limit: int,
) -> ExpectationSuiteValidationResult:
    """The result of two chunks together (`first` None: `second` alone)."""
    if first is None:
        return second
    results = [
        merge_expectation(a, b, limit) for a, b in zip(first.results, second.results, strict=True)
    ]
    return ExpectationSuiteValidationResult(
        success=all(r.success for r in results),
        results=results,
        suite_name=first.suite_name,
        suite_parameters=first.suite_parameters,
        statistics=statistics(results),
        meta=first.meta,
        batch_id=first.batch_id,
    )
