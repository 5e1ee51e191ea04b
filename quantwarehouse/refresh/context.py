"""What one `daily-refresh` run knows: its options, and what its steps did so far.

Symbols are skipped (the dbt var `exclude_symbols`) for two reasons, both named in the summary:
a symbol that failed in a step (a model error isolated to it, or a quality gate failing on its
rows) is skipped by every step needing that step, directly or not (`RunContext.failed`); a symbol
whose inputs are stale is skipped by the step that found them stale (`RunContext.stale`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import duckdb

from expectations.worker import GateWorker, GateWorkerError
from quantwarehouse.dbt import NodeResult
from quantwarehouse.refresh.config import RefreshConfig
from quantwarehouse.refresh.filters import EmaFilter
from quantwarehouse.refresh.state import ModelGraph
from quantwarehouse.warehouse import connect

# The write-ahead log a run may grow before DuckDB checkpoints (see holding_warehouse): a crash
# replays at most this much on the next open.
RUN_CHECKPOINT_THRESHOLD = "1GB"

log = logging.getLogger(__name__)

# Statuses of a step. "partial": it ran, but some symbols failed (they are skipped downstream).
SUCCESS, PARTIAL, FAILED, SKIPPED, CACHED = "success", "partial", "failed", "skipped", "cached"


@dataclass(frozen=True)
class RefreshOptions:
    targets: tuple[str, ...]
    config: RefreshConfig
    symbols: tuple[str, ...] = ()
    ema_filter: EmaFilter = field(default_factory=EmaFilter)
    full_refresh: bool = False
    resume: bool = False
    validate: bool = False
    cache: bool = False
    alert_on_error: bool = False
    dry_run: bool = False
    quiet: bool = False
    verbose: bool = False

    @property
    def full_refresh_symbols(self) -> tuple[str, ...]:
        """`--full-refresh --symbols X`: these symbols are recomputed from their first bar."""
        return self.symbols if self.full_refresh else ()

    @property
    def rebuilds_everything(self) -> bool:
        """`--full-refresh` without --symbols: dbt rebuilds every model from scratch."""
        return self.full_refresh and not self.symbols


@dataclass
class StepReport:
    """What one step did: its models, detail lines, and why it failed or was skipped."""

    step: str
    status: str
    seconds: float = 0.0
    models: tuple[NodeResult, ...] = ()
    skipped_nodes: tuple[NodeResult, ...] = ()
    invocation_ids: tuple[str, ...] = ()
    lines: list[str] = field(default_factory=list)
    reason: str | None = None
    failed_symbols: dict[str, str] = field(default_factory=dict)
    symbols: int | None = None  # how many symbols the step worked on, when known
    blocks_downstream: bool = False  # steps that need this one are skipped
    is_violation: bool = False  # a quality gate failed (alerts only with --alert-on-error)
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status in (FAILED, PARTIAL)


class ProjectLoad:
    """dbt's parsed project, loaded in a background thread from the start of the run.

    Importing dbt and reading its parsed project take seconds that the first step (the ingest)
    does not need: they overlap with it."""

    def __init__(self, parse: Callable[[], Any]) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dbt-project")
        self._future: Future[Any] = self._executor.submit(parse)
        self._executor.shutdown(wait=False)

    def manifest(self) -> Any:
        """The parsed project (waits for it); raises what parsing raised."""
        return self._future.result()

    def loaded(self) -> bool:
        """Whether parsing has ended (the project is loaded, or failed to)."""
        return self._future.done()


@dataclass
class RunContext:
    options: RefreshOptions
    run_id: str
    run_dir: Path
    warehouse: Path
    project: ProjectLoad
    # step -> steps it needs (set by the runner)
    needs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # step -> symbol -> why: symbols that failed in the step (skipped by the steps needing it)
    failed: dict[str, dict[str, str]] = field(default_factory=dict)
    # step -> symbol -> why: symbols the step itself skipped (stale inputs)
    stale: dict[str, dict[str, str]] = field(default_factory=dict)
    reports: dict[str, StepReport] = field(default_factory=dict)
    # bars_1d's newest load batch before the run: rows of later batches are what this run brings
    batch_before: int = 0
    memo: dict[object, Any] = field(default_factory=dict)  # e.g. each dbt step's node list
    # The run's own connection while it holds the warehouse open (see `holding_warehouse`).
    held: duckdb.DuckDBPyConnection | None = None
    # Great Expectations' process for the run's gates (started with the run when it validates).
    gate_worker: GateWorker | None = None

    @property
    def dbt_manifest(self) -> Any:
        return self.project.manifest()

    @cached_property
    def graph(self) -> ModelGraph:
        return ModelGraph(self.dbt_manifest)

    def record_failed(self, step: str, reasons: Mapping[str, str]) -> None:
        self.failed.setdefault(step, {}).update(reasons)

    def record_stale(self, step: str, reasons: Mapping[str, str]) -> None:
        self.stale.setdefault(step, {}).update(reasons)

    def needed_by(self, step: str) -> list[str]:
        """Every step `step` needs, directly or not."""
        found: dict[str, None] = {}
        queue = list(self.needs.get(step, ()))
        while queue:
            name = queue.pop(0)
            if name not in found:
                found[name] = None
                queue.extend(self.needs.get(name, ()))
        return list(found)

    def excluded_for(self, step: str) -> dict[str, str]:
        """The symbols `step` skips, with the first reason for each: its stale inputs, those
        that already failed in it, and those that failed in a step it needs."""
        found = {**self.failed.get(step, {}), **self.stale.get(step, {})}
        for name in self.needed_by(step):
            for symbol, reason in self.failed.get(name, {}).items():
                found.setdefault(symbol, reason)
        return found

    def blocked_by(self, needs: tuple[str, ...]) -> str | None:
        """Why a step needing these steps cannot run (one failed or blocked), else None."""
        for name in needs:
            report = self.reports.get(name)
            if report is not None and report.blocks_downstream:
                return f"it needs step '{name}', which {report.status}"
        return None

    @contextmanager
    def holding_warehouse(self) -> Iterator[None]:
        """Keep the warehouse open while the steps run. DuckDB shares one database per file in a
        process: dbt, the loader, the gates and the steps' own reads then use this instance
        instead of opening the file (reading its catalog) and checkpointing it on each close, about
        a hundred times a run. The writer lock keeps other writers out meanwhile.

        While held, DuckDB checkpoints only once the write-ahead log passes RUN_CHECKPOINT_THRESHOLD
        (a one-day run logs about 40 MB): with its default of 16 MB it checkpointed the 5 GB bench
        file about twice in the middle of a one-day run, about 1.5 s each. Closing checkpoints once.
        """
        self.held = connect(self.warehouse)
        self.held.execute(f"set checkpoint_threshold = '{RUN_CHECKPOINT_THRESHOLD}'")
        try:
            yield
        finally:
            held, self.held = self.held, None
            held.close()

    def stop_gate_worker(self) -> None:
        """Wait for the Data Docs still rendering, then stop the gates' worker."""
        worker, self.gate_worker = self.gate_worker, None
        if worker is None:
            return
        try:
            worker.close()
        except GateWorkerError as exc:  # the verdicts are in; only the report may be incomplete
            log.error("the quality gates' worker: %s", exc)

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A connection for the steps' reads: a cursor on the held warehouse during the run,
        else (a dry run, before the run holds it) a read-only connection."""
        if self.held is not None:
            return self.held.cursor()
        return duckdb.connect(str(self.warehouse), read_only=True)
