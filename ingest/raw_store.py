"""The raw writer: one connection, Arrow batches, lossless and idempotent.

Every write of klines classifies each incoming row against the latest stored revision of its
(symbol, interval, open_time): new rows are inserted as revision 1, changed values become the next
revision, identical rows are counted as unchanged and not stored again. The toxic guard runs here
because it needs the previously stored close.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.raw_schema import ensure_raw_schema
from ingest.records import REJECT_SCHEMA, make_rejects

# A close-to-close move of 500 % or more (a factor of 6 either way) is a toxic print.
TOXIC_FACTOR = 6.0
# How far back the toxic guard first looks for the close before a revision or backfill.
PRIOR_LOOKBACK = timedelta(days=7)
KLINE_VALUE_COLUMNS = (
    "close_time, open, high, low, close, volume, quote_volume, trade_count, "
    "taker_buy_base_volume, taker_buy_quote_volume"
)
SYMBOL_VALUE_COLUMNS = (
    "status, base_asset, quote_asset, tick_size, step_size, min_qty, listed_at, delisted_at"
)
SYMBOL_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("exchange", pa.string()),
        ("status", pa.string()),
        ("base_asset", pa.string()),
        ("quote_asset", pa.string()),
        ("tick_size", pa.float64()),
        ("step_size", pa.float64()),
        ("min_qty", pa.float64()),
        ("listed_at", pa.timestamp("us")),
        ("delisted_at", pa.timestamp("us")),
    ]
)


def symbol_rows(symbols: pa.Table) -> pa.Table:
    """Symbol metadata in `SYMBOL_SCHEMA`'s columns and types."""
    return symbols.select(SYMBOL_SCHEMA.names).cast(SYMBOL_SCHEMA)


def utc_now() -> datetime:
    """Naive UTC now: the warehouse stores UTC timestamps without a zone."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class WriteCounts:
    inserted: int = 0
    revised: int = 0
    unchanged: int = 0
    rejected: int = 0

    def add(self, other: WriteCounts) -> None:
        self.inserted += other.inserted
        self.revised += other.revised
        self.unchanged += other.unchanged
        self.rejected += other.rejected


@dataclass(frozen=True)
class FileRecord:
    """A file a load read (status loaded) or could not read (status rejected, with the reason)."""

    file_key: str
    checksum: str | None
    status: str
    reason: str | None
    rows_read: int


def with_provenance(table: pa.Table, source_file: str | None, checksum: str | None) -> pa.Table:
    """Validated klines plus the file they came from (constant columns, dictionary-encoded)."""
    rows = table.num_rows
    return table.append_column(
        "source_file", pa.array([source_file] * rows, pa.string()).dictionary_encode()
    ).append_column("source_checksum", pa.array([checksum] * rows, pa.string()).dictionary_encode())


@dataclass
class BatchStats:
    files_read: int = 0
    files_skipped: int = 0
    files_rejected: int = 0
    rows_read: int = 0
    symbols_skipped_fresh: int = 0
    rows: WriteCounts = field(default_factory=WriteCounts)


def toxic_mask(keys: np.ndarray, closes: np.ndarray, prior_close: dict[str, float]) -> np.ndarray:
    """Rows (sorted by key, then time) whose close moved by a factor >= 6 from the last kept close.

    The comparison is with the last *accepted* close, so a one-bar spike is rejected and the bar
    after it, compared with the close before the spike, is kept.
    """
    toxic = np.zeros(len(closes), dtype=bool)
    if len(closes) == 0:
        return toxic
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    previous = np.r_[np.nan, closes[:-1]]
    previous[starts] = [prior_close.get(keys[s], np.nan) for s in starts]
    with np.errstate(divide="ignore", invalid="ignore"):
        suspect = np.abs(np.log(closes / previous)) >= math.log(TOXIC_FACTOR)
    if not suspect.any():
        return toxic
    ends = np.r_[starts[1:], len(closes)]
    for start, end in zip(starts, ends, strict=True):
        if suspect[start:end].any():
            _resolve_toxic_run(closes, suspect, toxic, start, end, prior_close.get(keys[start]))
    return toxic


def _resolve_toxic_run(
    closes: np.ndarray,
    suspect: np.ndarray,
    toxic: np.ndarray,
    start: int,
    end: int,
    prior: float | None,
) -> None:
    """Walk one series comparing each close with the last kept one, jumping over stretches where
    the previous row was kept and the row is no suspect (those rows are kept as they are)."""
    last = prior if prior is not None and np.isfinite(prior) else np.nan
    previous_kept = True
    suspects = np.flatnonzero(suspect[start:end]) + start
    row = start
    while row < end:
        if previous_kept and not suspect[row]:
            later = suspects[suspects > row]
            row = int(later[0]) if len(later) else end
            last = closes[row - 1]
            continue
        ratio = closes[row] / last if np.isfinite(last) else 1.0
        previous_kept = 1.0 / TOXIC_FACTOR < ratio < TOXIC_FACTOR
        toxic[row] = not previous_kept
        if previous_kept:
            last = closes[row]
        row += 1


class RawStore:
    """Writes to the raw layer through one DuckDB connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self._tails: dict[str, tuple[datetime, float]] | None = None
        ensure_raw_schema(con)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.con.execute("begin transaction")
        try:
            yield
        except BaseException:
            self.con.execute("rollback")
            self._tails = None  # the cache may hold rows that were just rolled back
            raise
        self.con.execute("commit")

    # -- batches -----------------------------------------------------------------------------

    def start_batch(self, source: str, parameters: dict[str, object]) -> int:
        # Loads run under the writer lock, so a batch still 'running' now was killed mid-way.
        self.con.execute(
            "update raw.load_batches set status = 'interrupted' where status = 'running'"
        )
        # nextval in the same statement as the insert: a nextval committed on its own is not
        # replayed from the WAL after a crash, so the next load would reuse the batch id.
        batch_id = self.con.execute(
            "insert into raw.load_batches (batch_id, source, parameters, started_at, status) "
            "values (nextval('raw.load_batch_seq'), ?, ?, ?, 'running') returning batch_id",
            [source, json.dumps(parameters, default=str), utc_now()],
        ).fetchone()[0]
        return int(batch_id)

    def finish_batch(
        self, batch_id: int, stats: BatchStats, status: str, error: str | None = None
    ) -> None:
        self.con.execute(
            """
            update raw.load_batches set finished_at = ?, status = ?, files_read = ?,
                files_skipped = ?, files_rejected = ?, rows_read = ?, rows_inserted = ?,
                rows_revised = ?, rows_unchanged = ?, rows_rejected = ?,
                symbols_skipped_fresh = ?, error = ?
            where batch_id = ?
            """,
            [
                utc_now(),
                status,
                stats.files_read,
                stats.files_skipped,
                stats.files_rejected,
                stats.rows_read,
                stats.rows.inserted,
                stats.rows.revised,
                stats.rows.unchanged,
                stats.rows.rejected,
                stats.symbols_skipped_fresh,
                error,
                batch_id,
            ],
        )

    # -- files -------------------------------------------------------------------------------

    def loaded_checksum(self, source: str, file_key: str) -> str | None:
        """Checksum of the last successful load of a file, or None."""
        row = self.con.execute(
            "select checksum from raw.loaded_files where source = ? and file_key = ? "
            "and status = 'loaded' order by loaded_at desc limit 1",
            [source, file_key],
        ).fetchone()
        return row[0] if row else None

    def record_files(self, batch_id: int, source: str, files: list[FileRecord]) -> None:
        if not files:
            return
        self.con.executemany(
            "insert into raw.loaded_files values (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                [source, f.file_key, f.checksum, f.status, f.reason, f.rows_read, batch_id, now]
                for now in [utc_now()]
                for f in files
            ],
        )

    # -- rejects -----------------------------------------------------------------------------

    def write_rejects(
        self, batch_id: int, source: str, source_file: str | None, rejects: pa.Table
    ) -> int:
        return self.write_rejects_of_reads(batch_id, source, [(source_file, rejects)])

    def write_rejects_of_reads(
        self, batch_id: int, source: str, reads: Sequence[tuple[str | None, pa.Table]]
    ) -> int:
        """Rejects (`REJECT_SCHEMA`) of several reads, each with the file it came from, in one
        statement. The same bad row read again (a reload of the same data, or an earlier read of
        this same call) is not recorded twice, exactly as if the reads were written one by one."""
        tables = [
            rejects.select(REJECT_SCHEMA.names)
            .append_column("source_file", pa.array([source_file] * rejects.num_rows, pa.string()))
            .append_column("read", pa.array(np.full(rejects.num_rows, read, dtype=np.int64)))
            for read, (source_file, rejects) in enumerate(reads)
            if rejects.num_rows
        ]
        if not tables:
            return 0
        combined = pa.concat_tables(tables)
        self.con.register(
            "rejected_rows",
            combined.append_column("ord", pa.array(np.arange(combined.num_rows, dtype=np.int64))),
        )
        self.con.execute(
            """
            insert into raw.rejects
            select ?, ?, n.source_file, n.source_row, n.symbol, n.interval, n.raw_row, n.reason, ?
            from rejected_rows as n
            where not exists (
                select 1 from raw.rejects as r
                where r.source = ? and r.source_file is not distinct from n.source_file
                    and r.raw_row = n.raw_row and r.reason = n.reason
            )
            qualify n.read = min(n.read) over (partition by n.source_file, n.raw_row, n.reason)
            order by n.ord
            """,
            [batch_id, source, utc_now(), source],
        )
        self.con.unregister("rejected_rows")
        return combined.num_rows

    # -- klines ------------------------------------------------------------------------------

    def _series_tails(self) -> dict[str, tuple[datetime, float]]:
        """Newest stored (open_time, close) per `symbol|interval`, read once per store.

        The store is the warehouse's only writer (the writer lock), so the cache stays true as long
        as every write goes through `write_klines`, which keeps it up to date.
        """
        if self._tails is None:
            rows = self.con.execute(
                """
                with tail as (
                    select symbol, interval, max(open_time) as open_time
                    from raw.klines group by symbol, interval
                )
                select symbol || '|' || interval, open_time, max_by(close, revision)
                from tail join raw.klines using (symbol, interval, open_time)
                group by symbol, interval, open_time
                """
            ).fetchall()
            self._tails = {key: (open_time, close) for key, open_time, close in rows}
        return self._tails

    def _prior_closes(self, firsts: dict[str, datetime]) -> dict[str, float]:
        """Latest stored close before each series' first incoming bar (`symbol|interval` keys)."""
        tails = self._series_tails()
        prior = {
            key: tails[key][1]
            for key, first in firsts.items()
            if key in tails and tails[key][0] < first
        }
        inside = [key for key, first in firsts.items() if key in tails and tails[key][0] >= first]
        if inside:  # revisions or backfills inside stored history: exact, one lookup for all
            prior.update(self._closes_before({key: firsts[key] for key in inside}))
        return prior

    def _closes_before(self, firsts: dict[str, datetime]) -> dict[str, float]:
        """Latest stored close before the given open time of each series (`symbol|interval`).

        Looked for among the bars of the `PRIOR_LOOKBACK` before the earliest of the open times
        (a small part of the table), and over the whole history only when a series has no bar
        there (a longer gap, or nothing stored before).
        """
        symbols, intervals = zip(*(key.split("|", 1) for key in firsts), strict=True)
        self.con.register(
            "series_firsts",
            pa.table(
                {
                    "symbol": pa.array(symbols, pa.string()),
                    "interval": pa.array(intervals, pa.string()),
                    "first_open": pa.array(list(firsts.values()), pa.timestamp("us")),
                }
            ),
        )
        lower = min(firsts.values()) - PRIOR_LOOKBACK
        closes = self._closes_before_since(lower)
        if len(closes) < len(firsts):
            closes = self._closes_before_since(None)
        self.con.unregister("series_firsts")
        return closes

    def _closes_before_since(self, lower: datetime | None) -> dict[str, float]:
        since = "" if lower is None else "where k.open_time >= ?"
        rows = self.con.execute(
            f"""
            select f.symbol || '|' || f.interval, max_by(k.close, (k.open_time, k.revision))
            from series_firsts as f
            join raw.klines as k
                on k.symbol = f.symbol and k.interval = f.interval and k.open_time < f.first_open
            {since}
            group by f.symbol, f.interval
            """,
            [] if lower is None else [lower],
        ).fetchall()
        return {key: close for key, close in rows if close is not None}

    @staticmethod
    def _series_keys(table: pa.Table) -> np.ndarray:
        return pc.binary_join_element_wise(
            table.column("symbol"), table.column("interval"), "|"
        ).to_numpy(zero_copy_only=False)

    def _first_open_times(
        self, keys: np.ndarray, open_times: pa.ChunkedArray
    ) -> dict[str, datetime]:
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        return {keys[i]: open_times[int(i)].as_py() for i in starts}

    def _split_toxic(self, valid: pa.Table) -> tuple[pa.Table, pa.Table, dict[str, datetime]]:
        """Sorted rows to keep, toxic rows, and each series' first incoming open time."""
        ordered = valid.sort_by(
            [("symbol", "ascending"), ("interval", "ascending"), ("open_time", "ascending")]
        )
        keys = self._series_keys(ordered)
        firsts = self._first_open_times(keys, ordered.column("open_time"))
        toxic = toxic_mask(keys, ordered.column("close").to_numpy(), self._prior_closes(firsts))
        return ordered.filter(pa.array(~toxic)), ordered.filter(pa.array(toxic)), firsts

    def _remember_tails(self, kept: pa.Table) -> None:
        tails = self._series_tails()
        keys = self._series_keys(kept)
        ends = np.r_[np.flatnonzero(keys[1:] != keys[:-1]), len(keys) - 1]
        open_times = kept.column("open_time")
        closes = kept.column("close")
        for i in ends:
            key, open_time = keys[i], open_times[int(i)].as_py()
            if key not in tails or tails[key][0] <= open_time:
                tails[key] = (open_time, closes[int(i)].as_py())

    def write_klines(
        self,
        batch_id: int,
        source: str,
        valid: pa.Table,
        *,
        source_file: str | None = None,
        checksum: str | None = None,
    ) -> WriteCounts:
        """Store validated klines (`records.KLINE_SCHEMA`); toxic rows become rejects.

        The file a row came from is `source_file`/`checksum`, or per row when the table already
        has `source_file` and `source_checksum` columns (`with_provenance`).
        """
        if valid.num_rows == 0:
            return WriteCounts()
        if "source_file" not in valid.column_names:
            valid = with_provenance(valid, source_file, checksum)
        kept, toxic, firsts = self._split_toxic(valid)
        counts = WriteCounts(rejected=self._write_toxic(batch_id, source, toxic))
        if kept.num_rows == 0:
            return counts
        tails = self._series_tails()
        appends_only = all(
            key not in tails or tails[key][0] < first for key, first in firsts.items()
        )
        audit = ("?, ?, ?, source_file, source_checksum", [source, batch_id, utc_now()])
        if appends_only:
            # Bars after every series' newest stored bar cannot exist yet: no lookup needed.
            self._insert_new(kept, audit)
            counts.inserted = kept.num_rows
        else:
            bounds = pc.min_max(kept.column("open_time"))
            stored = self._store_revisions(
                kept,
                target="raw.klines",
                key="symbol, interval, open_time",
                values=KLINE_VALUE_COLUMNS,
                current_filter=(
                    "open_time between ? and ? and symbol in (select symbol from incoming)"
                ),
                filter_params=[bounds["min"].as_py(), bounds["max"].as_py()],
                audit=audit,
            )
            counts.inserted, counts.revised, counts.unchanged = (
                stored.inserted,
                stored.revised,
                stored.unchanged,
            )
        self._remember_tails(kept)
        return counts

    def _write_toxic(self, batch_id: int, source: str, toxic: pa.Table) -> int:
        """Toxic rows become rejects of the file each came from."""
        files = toxic.column("source_file").cast(pa.string())
        reads: list[tuple[str | None, pa.Table]] = []
        for source_file in pc.unique(files).to_pylist() if toxic.num_rows else []:
            rows = toxic.filter(
                pc.is_null(files) if source_file is None else pc.equal(files, source_file)
            )
            described = rows.drop_columns(["source_row", "source_file", "source_checksum"])
            rejects = make_rejects(
                rows.column("source_row").to_pylist(),
                rows.column("symbol").to_pylist(),
                rows.column("interval").to_pylist(),
                [json.dumps(row, default=str) for row in described.to_pylist()],
                ["toxic print: close moved 500 % or more from the previous kept close"]
                * rows.num_rows,
            )
            reads.append((source_file, rejects))
        return self.write_rejects_of_reads(batch_id, source, reads)

    def _insert_new(self, kept: pa.Table, audit: tuple[str, list[object]]) -> None:
        self.con.register("incoming", kept)
        self.con.execute(
            f"""
            insert into raw.klines
            select symbol, interval, open_time, {KLINE_VALUE_COLUMNS}, 1,
                hash({KLINE_VALUE_COLUMNS}), {audit[0]}
            from incoming
            """,
            audit[1],
        )
        self.con.unregister("incoming")

    def _store_revisions(
        self,
        incoming: pa.Table,
        *,
        target: str,
        key: str,
        values: str,
        current_filter: str,
        filter_params: list[object],
        audit: tuple[str, list[object]],
    ) -> WriteCounts:
        """Insert rows whose values differ from their key's latest revision; count each kind."""
        self.con.register("incoming", incoming)
        # Only the rows to store are materialized: the unchanged ones are counted, not copied.
        self.con.execute(
            f"""
            create or replace temp table _changed as
            with fresh as (
                select *, hash({values}) as value_hash from incoming
            ),
            current_rev as (
                select {key}, max(revision) as revision, max_by(value_hash, revision) as value_hash
                from {target} where {current_filter} group by all
            )
            select f.*, c.revision as current_revision
            from fresh as f left join current_rev as c using ({key})
            where c.value_hash is distinct from f.value_hash
            """,
            filter_params,
        )
        self.con.execute(
            f"""
            insert into {target}
            select {key}, {values}, coalesce(current_revision, 0) + 1, value_hash, {audit[0]}
            from _changed
            """,
            audit[1],
        )
        inserted, revised = self.con.execute(
            "select count(*) filter (where current_revision is null), "
            "count(*) filter (where current_revision is not null) from _changed"
        ).fetchone()
        self.con.execute("drop table _changed")
        self.con.unregister("incoming")
        unchanged = incoming.num_rows - inserted - revised
        return WriteCounts(inserted=inserted, revised=revised, unchanged=unchanged)

    # -- symbols -----------------------------------------------------------------------------

    def write_symbols(self, batch_id: int, source: str, symbols: pa.Table) -> WriteCounts:
        """Store symbol metadata (`SYMBOL_SCHEMA`); a changed value becomes a new revision."""
        return self._store_revisions(
            symbol_rows(symbols),
            target="raw.symbols",
            key="symbol, exchange",
            values=SYMBOL_VALUE_COLUMNS,
            current_filter="true",
            filter_params=[],
            audit=("?, ?, ?", [source, batch_id, utc_now()]),
        )

    # -- freshness ---------------------------------------------------------------------------

    def record_symbol_loads(
        self, batch_id: int, source: str, loads: list[tuple[str, str, int]]
    ) -> None:
        """Note that symbols' data from a source was fully read (the freshness record)."""
        if not loads:
            return
        symbols, intervals, rows = zip(*loads, strict=True)
        self.con.register(
            "loads_read",
            pa.table(
                {
                    "symbol": pa.array(symbols, pa.string()),
                    "interval": pa.array(intervals, pa.string()),
                    "rows_read": pa.array(rows, pa.int64()),
                }
            ),
        )
        self.con.execute(
            "insert into raw.symbol_loads select ?, symbol, interval, rows_read, ?, ? "
            "from loads_read",
            [source, batch_id, utc_now()],
        )
        self.con.unregister("loads_read")

    def last_open_times(self, interval: str) -> dict[str, datetime]:
        """The newest stored bar's open time per symbol at an interval, whatever its source."""
        rows = self.con.execute(
            "select symbol, max(open_time) from raw.klines where interval = ? group by symbol",
            [interval],
        ).fetchall()
        return dict(rows)

    def last_loaded(self, source: str, interval: str) -> dict[str, datetime]:
        """When each symbol of a source and interval was last fully read."""
        rows = self.con.execute(
            "select symbol, max(loaded_at) from raw.symbol_loads "
            "where source = ? and interval = ? group by symbol",
            [source, interval],
        ).fetchall()
        return dict(rows)
