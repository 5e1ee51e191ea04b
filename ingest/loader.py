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
import pyarrow.compute as pc

from ingest.raw_store import (
    BatchStats,
    FileRecord,
    RawStore,
    WriteCounts,
    symbol_rows,
    with_provenance,
)
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
    rejected file and nothing else from it is stored. `symbol_loads` are the (symbol, interval)
    series the part read in full; `symbol_rows` the rows it read of each, where a part holds
    several symbols' rows (None: all the part's rows count for each).
    """

    item: WorkItem
    candidates: pa.Table | None = None
    parse_rejects: pa.Table = field(default_factory=empty_rejects)
    checksum: str | None = None
    file_error: str | None = None
    track_file: bool = False
    symbol_loads: list[tuple[str, str]] = field(default_factory=list)
    symbol_rows: list[int] | None = None
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


@dataclass
class _ValidatedPart:
    part: SourcePart
    valid: pa.Table | None
    rejects: list[pa.Table]
    rows_read: int


class ChunkWriter:
    """Validates parts as they arrive and writes them in chunks, one transaction per chunk.

    A chunk (all its rows, rejects and file records) commits whole or not at all, so a crash never
    leaves a file half-recorded. Chunks are bounded in rows, so memory stays flat however many
    files a load reads.
    """

    max_rows = 1_000_000
    max_parts = 256

    def __init__(self, store: RawStore, batch_id: int, source: str, stats: BatchStats) -> None:
        self.store = store
        self.batch_id = batch_id
        self.source = source
        self.stats = stats
        self.rejected_files: list[tuple[str, str]] = []
        self._pending: list[_ValidatedPart] = []
        self._pending_rows = 0

    def add(self, part: SourcePart) -> None:
        rejects = [part.parse_rejects]
        valid = None
        rows_read = part.parse_rejects.num_rows
        if part.file_error is None and part.candidates is not None and part.candidates.num_rows:
            rows_read += part.candidates.num_rows
            checked = validate_candidates(part.candidates, now_us=int(time.time() * 1_000_000))
            valid = checked.valid
            rejects.append(checked.rejects)
        self._pending.append(_ValidatedPart(part, valid, rejects, rows_read))
        self._pending_rows += rows_read
        if self._pending_rows >= self.max_rows or len(self._pending) >= self.max_parts:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        with self.store.transaction():
            counts = self._write_pending()
        self.stats.rows.add(counts)
        for entry in self._pending:
            self._count(entry)
        self._pending, self._pending_rows = [], 0

    def _write_pending(self) -> WriteCounts:
        """Write the chunk's parts: each kind of row in one statement where the parts share no
        key, so the result is that of writing the parts one by one, in order."""
        counts = WriteCounts()
        files: list[FileRecord] = []
        loads: list[tuple[str, str, int]] = []
        rejects: list[tuple[str | None, pa.Table]] = []
        klines: list[pa.Table] = []
        symbols: list[pa.Table] = []
        for entry in self._pending:
            part, source_file = entry.part, entry.part.item.key if entry.part.track_file else None
            if part.file_error is not None:
                files.append(
                    FileRecord(part.item.key, part.checksum, "rejected", part.file_error, 0)
                )
                continue
            rejects += [(source_file, table) for table in entry.rejects]
            if entry.valid is not None and entry.valid.num_rows:
                klines.append(with_provenance(entry.valid, source_file, part.checksum))
            if part.symbols is not None and part.symbols.num_rows:
                symbols.append(symbol_rows(part.symbols))
            if part.track_file:
                files.append(
                    FileRecord(part.item.key, part.checksum, "loaded", None, entry.rows_read)
                )
            rows = part.symbol_rows
            if rows is None:
                rows = [entry.rows_read] * len(part.symbol_loads)
            loads += [(s, i, n) for (s, i), n in zip(part.symbol_loads, rows, strict=True)]
        counts.rejected += self.store.write_rejects_of_reads(self.batch_id, self.source, rejects)
        for table in _without_shared_keys(symbols, SYMBOL_KEY):
            self.store.write_symbols(self.batch_id, self.source, table)
        for table in _without_shared_keys(klines, KLINE_KEY):
            counts.add(self.store.write_klines(self.batch_id, self.source, table))
        self.store.record_files(self.batch_id, self.source, files)
        self.store.record_symbol_loads(self.batch_id, self.source, loads)
        return counts

    def _count(self, entry: _ValidatedPart) -> None:
        part = entry.part
        if part.file_error is not None:
            self.stats.files_rejected += 1
            self.rejected_files.append((part.item.key, part.file_error))
            return
        self.stats.rows_read += entry.rows_read
        self.stats.files_read += int(part.track_file)


KLINE_KEY = ("symbol", "interval", "open_time")
SYMBOL_KEY = ("symbol", "exchange")


def _without_shared_keys(tables: list[pa.Table], key: tuple[str, ...]) -> list[pa.Table]:
    """One table for the chunk, unless two parts hold the same key (e.g. a bar in a monthly and a
    daily file): then each part is written on its own, so the later one becomes a revision."""
    if len(tables) <= 1:
        return tables
    combined = pa.concat_tables(tables)
    leading = [set(pc.unique(table.column(key[0])).to_pylist()) for table in tables]
    if sum(map(len, leading)) == len(set().union(*leading)):
        return [combined]  # e.g. one symbol per part: no part can hold another one's key
    distinct = combined.group_by(list(key)).aggregate([]).num_rows
    return [combined] if distinct == combined.num_rows else tables


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
    writer = ChunkWriter(store, batch_id, source.name, stats)
    status, error = "success", None
    try:
        items, skipped = source.plan(store)
        stats.files_skipped = sum(1 for _, why in skipped if "checksum" in why)
        stats.symbols_skipped_fresh = sum(1 for _, why in skipped if "fresh" in why)
        if progress:
            progress(0, len(items), "planned")
        for done, part in enumerate(_bounded_parallel(items, source.read, workers), start=1):
            writer.add(part)
            if progress:
                progress(done, len(items), part.item.label)
        writer.flush()
    except Exception as exc:  # recorded on the batch, then re-raised for the caller's exit code
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        store.finish_batch(batch_id, stats, status, error)
        raise
    if writer.rejected_files:
        status = "partial"
    store.finish_batch(batch_id, stats, status, error)
    return LoadSummary(
        batch_id=batch_id,
        source=source.name,
        status=status,
        stats=stats,
        skipped=[(item.key, why) for item, why in skipped],
        rejected_files=writer.rejected_files,
        seconds=time.perf_counter() - started,
        error=error,
    )
