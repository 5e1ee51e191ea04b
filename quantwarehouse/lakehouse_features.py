"""`features_matrix/`: the features matrix published for tools outside the warehouse.

One Parquet file per calendar month of bar_date (`features_matrix/2026-06.parquet`) with the rows
and columns of the dbt model `features_matrix` of that month (without its audit column
`invocation_id`), ordered by bar_date then symbol. Read it as one table with
`read_parquet('data/lakehouse/features_matrix/*.parquet')` in DuckDB or
`pyarrow.parquet.read_table('data/lakehouse/features_matrix')`: the files sort by month, so the
rows come in bar_date order, and a reader filtering on dates opens only the months it needs.
Point in time: the row of day d uses only the symbol's bars up to d. Null means the indicator is
still warming up or undefined. Each file's metadata records the source model, the newest raw load
batch behind its rows (the data version), the write time and its month's fingerprint.

Incremental: the fingerprint of a month is the count of its rows in the warehouse, a hash of
their keys and of the dbt invocation that wrote each row (a recomputed row carries a new one), and
the columns. A publish rewrites only the months whose fingerprint differs from their file's, writes
months new to the warehouse and removes the files of months it no longer has: a one-day refresh
rewrites the current month and the months of late revisions, not the 1.3 million rows of bench.
Each file is written atomically (`lakehouse.copy_parquet_atomic`); a reader listing the folder
during a publish may find some months rewritten and others not yet, each one whole. A publish
stopped part way is completed by the next one, whose fingerprints still differ.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from quantwarehouse.lakehouse import PublishedFile, copy_parquet_atomic
from quantwarehouse.paths import lakehouse_dir

FEATURES_MATRIX_FOLDER = "features_matrix"
# Where sessions before the monthly files published the whole matrix: removed by a publish.
SINGLE_FILE = "features_matrix.parquet"
FEATURES_MATRIX_RELATION = "main.features_matrix"
AUDIT_COLUMN = "invocation_id"
FEATURES_MATRIX_CONVENTION = (
    "one row per (bar_date, symbol) from features_matrix; the row of day d uses only bars up to d; "
    "null while an indicator warms up or where it is undefined"
)
FINGERPRINT_KEY = "quantwarehouse.rows_fingerprint"
MONTH_FILE = re.compile(r"^(\d{4}-(?:0[1-9]|1[0-2]))\.parquet$")
# Staged in the publishing connection, dropped when the publish ends.
STAGED_MONTHS = "features_matrix__months_to_publish"

MONTH_OF_ROW = "strftime(bar_date, '%Y-%m')"
MONTHS_SQL = f"""
select
    {MONTH_OF_ROW} as month,
    count(*) as row_count,
    -- One string per row: DuckDB's hash of several values combines theirs, and a combination
    -- xored over rows can cancel (an even number of rows written by one run).
    bit_xor(hash(concat_ws('|', symbol, bar_date, {AUDIT_COLUMN}))) as rows_hash,
    max(source_batch_id) as newest_batch
from {FEATURES_MATRIX_RELATION}
group by month
order by month
"""


@dataclass(frozen=True)
class MonthRows:
    """A month of the matrix in the warehouse."""

    month: str
    rows: int
    fingerprint: str
    newest_batch: int | None


def features_matrix_path(folder: Path | None = None) -> Path:
    """The folder of the monthly files."""
    return (folder or lakehouse_dir()) / FEATURES_MATRIX_FOLDER


def _published_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(f"describe {FEATURES_MATRIX_RELATION}").fetchall()
    return [name for name, *_ in rows if name != AUDIT_COLUMN]


def warehouse_months(con: duckdb.DuckDBPyConnection, columns: list[str]) -> list[MonthRows]:
    """Each month of the matrix in the warehouse, with its fingerprint."""
    shape = ",".join(columns)
    return [
        MonthRows(month, rows, f"{rows}:{rows_hash}:{shape}", newest_batch)
        for month, rows, rows_hash, newest_batch in con.execute(MONTHS_SQL).fetchall()
    ]


def published_fingerprints(folder: Path) -> dict[str, str]:
    """The fingerprint recorded in each monthly file of `folder` ('' when it has none)."""
    found = {}
    for path in folder.glob("*.parquet"):
        matched = MONTH_FILE.match(path.name)
        if matched:
            metadata = pq.read_metadata(path).metadata or {}
            found[matched.group(1)] = metadata.get(FINGERPRINT_KEY.encode(), b"").decode()
    return found


def _write_month(con: duckdb.DuckDBPyConnection, month: MonthRows, path: Path) -> None:
    metadata = {
        "quantwarehouse.source_model": "features_matrix",
        "quantwarehouse.source_batch_id": ""
        if month.newest_batch is None
        else str(month.newest_batch),
        "quantwarehouse.written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quantwarehouse.values": FEATURES_MATRIX_CONVENTION,
        FINGERPRINT_KEY: month.fingerprint,
    }
    query = (
        f"select * from {STAGED_MONTHS} "
        f"where {MONTH_OF_ROW} = '{month.month}' order by bar_date, symbol"
    )
    copy_parquet_atomic(con, query, path, metadata)


def _stage(con: duckdb.DuckDBPyConnection, months: list[MonthRows], columns: list[str]) -> None:
    """The rows of `months` in a temporary table: one scan of the matrix, however many months."""
    listed = ", ".join(f"'{m.month}'" for m in months)
    con.execute(
        f"create or replace temp table {STAGED_MONTHS} as "
        f"select {', '.join(columns)} from {FEATURES_MATRIX_RELATION} "
        f"where {MONTH_OF_ROW} in ({listed})"
    )


def publish_features_matrix(
    con: duckdb.DuckDBPyConnection, folder: Path | None = None
) -> PublishedFile:
    """Bring `features_matrix/` under `folder` (default the lakehouse folder) up to date with the
    warehouse: rewrite the months whose rows changed, remove those it no longer has."""
    target = features_matrix_path(folder)
    target.mkdir(parents=True, exist_ok=True)
    for left in target.glob(".*.tmp"):  # by a publish killed while writing (one writer at a time)
        left.unlink()
    columns = _published_columns(con)
    months = warehouse_months(con, columns)
    published = published_fingerprints(target)
    changed = [m for m in months if published.get(m.month) != m.fingerprint]
    if changed:
        _stage(con, changed, columns)
        try:
            for month in changed:
                _write_month(con, month, target / f"{month.month}.parquet")
        finally:
            con.execute(f"drop table if exists {STAGED_MONTHS}")
    removed = sorted(set(published) - {m.month for m in months})
    for month in removed:
        (target / f"{month}.parquet").unlink()
    (target.parent / SINGLE_FILE).unlink(missing_ok=True)
    return PublishedFile(
        path=target,
        rows=sum(m.rows for m in months),
        columns=len(columns),
        detail=_rewritten(changed, len(months), removed),
    )


def _rewritten(changed: list[MonthRows], months: int, removed: list[str]) -> str:
    names = [m.month for m in changed]
    listed = f" ({', '.join(names[:3])}{f' and {len(names) - 3} more' if len(names) > 3 else ''})"
    text = f"{len(names)} of {months} monthly files rewritten{listed if names else ''}"
    return text + (f", {len(removed)} removed ({', '.join(removed)})" if removed else "")
