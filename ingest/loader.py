"""Runs one load: sources read in parallel worker threads, one connection writes in batches.

A source plans a list of work items (files, or symbols to fetch), reads each into a `SourcePart`
on a bounded pool of workers, and the loader validates and writes the parts one transaction each,
in the order they finish. At most `2 * workers` parts are in memory at once, so memory stays flat
in the number of files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from ingest.raw_store import BatchStats, RawStore
from ingest.records import empty_rejects, validate_candidates


@dataclass(frozen=True)
class WorkItem:
    """One unit a source reads: a file, or one symbol and interval to fetch."""

    key: str
    label: str
    payload: object = None


@dataclass
class SourcePart:
    """What a source read for one work item.

    `candidates` follow `records.CANDIDATE_SCHEMA`; `parse_rejects` follow `records.REJECT_SCHEMA`.
    A part with `file_error` set is a file that could not be read at all: it is recorded as a
    rejected file and nothing else from it is stored.
    """

    item: WorkItem
    candidates: pa.Table | None = None
    parse_rejects: pa.Table = field(default_factory=empty_rejects)
    checksum: str | None = None
    file_error: str | None = None
    track_file: bool = False
    symbol_loads: list[tuple[str, str]] = field(default_factory=list)
    symbols: pa.Table | None = None


class Source(Protocol):
    """What the loader needs from a data source."""

    name: str

    def parameters(self) -> dict[str, object]: ...

    def plan(self, store: RawStore) -> tuple[list[WorkItem], list[tuple[WorkItem, str]]]:
        """Items to read, and items skipped with the reason (fresh, already loaded)."""
        ...

    def read(self, item: WorkItem) -> SourcePart: ...


@dataclass
class LoadSummary:
    batch_id: int
    source: str
    status: str
    stats: BatchStats
    skipped: list[tuple[str, str]]
    rejected_files: list[tuple[str, str]]
    seconds: float
    error: str | None = None

    def lines(self) -> list[str]:
        rows = self.stats.rows
        out = [
            f"load batch {self.batch_id} from {self.source}: {self.status} in {self.seconds:.1f}s",
            f"  files read {self.stats.files_read}, skipped {self.stats.files_skipped}, "
            f"rejected {self.stats.files_rejected}",
            f"  rows read {self.stats.rows_read}, inserted {rows.inserted}, revised "
            f"{rows.revised}, unchanged {rows.unchanged}, rejected {rows.rejected}",
            f"  symbols skipped as fresh {self.stats.symbols_skipped_fresh}",
        ]
        out += [f"  skipped {key}: {why}" for key, why in self.skipped[:20]]
        if len(self.skipped) > 20:
            out.append(f"  ... and {len(self.skipped) - 20} more skipped")
        out += [f"  rejected file {key}: {why}" for key, why in self.rejected_files]
        if self.error:
            out.append(f"  error: {self.error}")
        return out


ProgressCallback = Callable[[int, int, str], None]


def _bounded_parallel(
    items: list[WorkItem], read: Callable[[WorkItem], SourcePart], workers: int
) -> Iterator[SourcePart]:
    """Yield parts as workers finish them, keeping at most 2 * workers in flight."""
    pending: set[Future[SourcePart]] = set()
    queue: Iterable[WorkItem] = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
        for item in queue:
            pending.add(pool.submit(read, item))
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in done)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (future.result() for future in done)


def _write_part(
    store: RawStore,
    batch_id: int,
    source: str,
    part: SourcePart,
    stats: BatchStats,
    rejected_files: list[tuple[str, str]],
) -> None:
    """Validate and store one part in a single transaction (with its file record)."""
    with store.transaction():
        if part.file_error is not None:
            store.record_file(
                batch_id,
                source,
                part.item.key,
                checksum=part.checksum,
                status="rejected",
                reason=part.file_error,
            )
            stats.files_rejected += 1
            rejected_files.append((part.item.key, part.file_error))
            return
        source_file = part.item.key if part.track_file else None
        rows_read = part.parse_rejects.num_rows
        stats.rows.rejected += store.write_rejects(
            batch_id, source, source_file, part.parse_rejects
        )
        if part.candidates is not None and part.candidates.num_rows:
            rows_read += part.candidates.num_rows
            checked = validate_candidates(part.candidates, now_us=_now_us())
            stats.rows.rejected += store.write_rejects(
                batch_id, source, source_file, checked.rejects
            )
            stats.rows.add(
                store.write_klines(
                    batch_id, source, checked.valid, source_file=source_file, checksum=part.checksum
                )
            )
        if part.symbols is not None and part.symbols.num_rows:
            store.write_symbols(batch_id, source, part.symbols)
        stats.rows_read += rows_read
        if part.track_file:
            stats.files_read += 1
            store.record_file(
                batch_id,
                source,
                part.item.key,
                checksum=part.checksum,
                status="loaded",
                rows_read=rows_read,
            )
        for symbol, interval in part.symbol_loads:
            store.record_symbol_load(batch_id, source, symbol, interval, rows_read)


def _now_us() -> int:
    return int(time.time() * 1_000_000)


def run_load(
    source: Source,
    store: RawStore,
    *,
    workers: int = 4,
    progress: ProgressCallback | None = None,
) -> LoadSummary:
    """Plan, read and write one load batch; the batch row records the outcome."""
    started = time.perf_counter()
    batch_id = store.start_batch(source.name, source.parameters())
    stats = BatchStats()
    rejected_files: list[tuple[str, str]] = []
    status, error = "success", None
    try:
        items, skipped = source.plan(store)
        stats.files_skipped = sum(1 for _, why in skipped if "checksum" in why)
        stats.symbols_skipped_fresh = sum(1 for _, why in skipped if "fresh" in why)
        for done, part in enumerate(_bounded_parallel(items, source.read, workers), start=1):
            _write_part(store, batch_id, source.name, part, stats, rejected_files)
            if progress:
                progress(done, len(items), part.item.label)
    except Exception as exc:  # recorded on the batch, then re-raised for the caller's exit code
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        store.finish_batch(batch_id, stats, status, error)
        raise
    if rejected_files:
        status = "partial"
    store.finish_batch(batch_id, stats, status, error)
    return LoadSummary(
        batch_id=batch_id,
        source=source.name,
        status=status,
        stats=stats,
        skipped=[(item.key, why) for item, why in skipped],
        rejected_files=rejected_files,
        seconds=time.perf_counter() - started,
        error=error,
    )
