"""The Great Expectations side of the gates: a file data context in the run's directory.

`data/runs/<run_id>/gx/` holds the suites and every validation result as GE JSON;
`data/runs/<run_id>/data_docs/` is the Data Docs site built from them (`index.html`). Each gate
of a run adds its suites and results to the same context, so the site lists every layer validated
in the run, whichever process validated it.

Frames are validated through GE's pandas dataframe route (one dataframe asset for every frame: each
asset added is a rewrite of the context's configuration, and the suite names the frame anyway).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import great_expectations as gx
import pandas as pd
from great_expectations.core import ExpectationSuiteValidationResult
from great_expectations.core.batch_definition import BatchDefinition
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.data_context.types.resource_identifiers import (
    ExpectationSuiteIdentifier,
    ValidationResultIdentifier,
)
from great_expectations.render.renderer.site_builder import SiteBuilder

from expectations.gates import SAMPLE_LIMIT, data_docs_index
from expectations.suites import Check, SuiteSpec

DOCS_SITE = "local_site"
DATASOURCE = "warehouse"
ASSET = "frames"
BATCH_DEFINITION = "chunk"


def build_expectation(check: Check) -> gx.expectations.Expectation:
    expectation_class = getattr(gx.expectations, check.expectation)
    return expectation_class(**check.kwargs, meta={"check": check.name}, notes=check.notes)


def build_suite(spec: SuiteSpec) -> gx.ExpectationSuite:
    return gx.ExpectationSuite(
        name=spec.name,
        expectations=[build_expectation(check) for check in spec.checks],
        meta={"relation": spec.table.relation, "about": spec.about},
    )


def _show_sample_keys(result: dict) -> None:
    """Let Data Docs list the sampled unexpected rows with their keys.

    GE renders keys only from `unexpected_index_list` (the COMPLETE format, unbounded); the sample
    kept from SUMMARY chunks stands in for it (headed "Sampled Unexpected Values" when partial).
    """
    sample = result.get("partial_unexpected_index_list")
    if sample and all(isinstance(row, dict) for row in sample):
        result["unexpected_index_list"] = list(sample)


class GateWorkspace:
    """The GE file context of one run directory: suites, validations, results, Data Docs."""

    def __init__(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = run_dir
        self.context = gx.get_context(mode="file", project_root_dir=run_dir)
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.context.update_data_docs_site(
            DOCS_SITE, {"class_name": "SiteBuilder", **self._site_config()}
        )
        self.batch_definition = self._batch_definition()
        self._suites: dict[str, gx.ExpectationSuite] = {}
        self._site: SiteBuilder | None = None
        self._results = self.context.validation_results_store  # GE looks it up on each access

    def _site_config(self) -> dict[str, object]:
        return {
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(self.docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }

    @property
    def docs_dir(self) -> Path:
        return data_docs_index(self.run_dir).parent

    @property
    def docs_index(self) -> Path:
        return data_docs_index(self.run_dir)

    def suite(self, spec: SuiteSpec) -> gx.ExpectationSuite:
        """The spec's suite, saved in the context the first time the workspace validates it."""
        if spec.name not in self._suites:
            self._suites[spec.name] = self.context.suites.add_or_update(build_suite(spec))
        return self._suites[spec.name]

    def _batch_definition(self) -> BatchDefinition:
        """The context's one dataframe batch definition (added on the run's first gate)."""
        sources = self.context.data_sources
        if DATASOURCE in sources.all():
            asset = sources.get(DATASOURCE).get_asset(ASSET)
            return asset.get_batch_definition(BATCH_DEFINITION)
        asset = sources.add_pandas(DATASOURCE).add_dataframe_asset(ASSET)
        return asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION)

    def validate(
        self,
        suite: gx.ExpectationSuite,
        frame: pd.DataFrame,
        *,
        index_columns: Sequence[str],
        parameters: Mapping[str, object],
        detailed: bool = True,
    ) -> ExpectationSuiteValidationResult:
        """Validate one frame (a chunk) against the suite; nothing is stored.

        `detailed`: GE's SUMMARY result format, with the counts and a sample of the unexpected
        rows and their keys; else BOOLEAN_ONLY (whether each expectation holds), which GE
        computes in a third of the time.
        """
        batch = self.batch_definition.get_batch(batch_parameters={"dataframe": frame})
        result_format: dict[str, object] = {"result_format": "BOOLEAN_ONLY"}
        if detailed:
            result_format = {
                "result_format": "SUMMARY",
                "unexpected_index_column_names": [c for c in index_columns if c in frame],
                "partial_unexpected_count": SAMPLE_LIMIT,
            }
        return batch.validate(
            suite, result_format=result_format, expectation_parameters=dict(parameters)
        )

    def store(
        self, result: ExpectationSuiteValidationResult, *, run_name: str, batch: str
    ) -> ValidationResultIdentifier:
        run_id = RunIdentifier(run_name=run_name, run_time=datetime.now(UTC))
        result.meta["run_id"] = run_id
        for expectation in result.results:
            _show_sample_keys(expectation.result)
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=result.suite_name),
            run_id=run_id,
            batch_identifier=batch,
        )
        self._results.set(key, result)
        return key

    def build_docs(self, keys: Iterable[ValidationResultIdentifier]) -> Path:
        """Render these results and their suites, and the index of the whole run.

        The site builder is the one the context's `build_data_docs` would make from the site's
        configuration, kept for the workspace's later builds: each new one compiles its page
        templates again, which is most of the time a small build takes.
        """
        keys = list(keys)
        suites = {key.expectation_suite_identifier.name for key in keys}
        if self._site is None:
            self._site = SiteBuilder(
                data_context=self.context, site_name=DOCS_SITE, **self._site_config()
            )
        self._site.build(
            resource_identifiers=[*keys, *(ExpectationSuiteIdentifier(name=s) for s in suites)]
        )
        return self.docs_index
