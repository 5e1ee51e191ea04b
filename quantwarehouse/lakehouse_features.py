"""`features_matrix.parquet`: the features matrix published for tools outside the warehouse.

The rows and columns of the dbt model `features_matrix` (without its audit column
`invocation_id`), ordered by bar_date then symbol, so a reader filtering on dates skips whole
row groups. Point in time: the row of day d uses only the symbol's bars up to d. Null means the
indicator is still warming up or undefined. Written atomically (`lakehouse.copy_parquet_atomic`);
the file's metadata records the source model, the newest raw load batch behind it (the data
version) and the write time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from quantwarehouse.lakehouse import PublishedFile, copy_parquet_atomic
from quantwarehouse.paths import lakehouse_dir

FEATURES_MATRIX_FILE = "features_matrix.parquet"
FEATURES_MATRIX_RELATION = "main.features_matrix"
FEATURES_MATRIX_CONVENTION = (
    "one row per (bar_date, symbol) from features_matrix; the row of day d uses only bars up to d; "
    "null while an indicator warms up or where it is undefined"
)


def features_matrix_path(folder: Path | None = None) -> Path:
    return (folder or lakehouse_dir()) / FEATURES_MATRIX_FILE


def publish_features_matrix(
    con: duckdb.DuckDBPyConnection, folder: Path | None = None
) -> PublishedFile:
    """Write `features_matrix.parquet` under `folder` (default the lakehouse folder).

    DuckDB sorts and writes the file itself (in parallel, without a round trip through Python):
    the whole matrix is rewritten every day, so this is most of the step's time."""
    newest_batch = con.sql(
        f"select max(source_batch_id) from {FEATURES_MATRIX_RELATION}"
    ).fetchall()[0][0]
    metadata = {
        "quantwarehouse.source_model": "features_matrix",
        "quantwarehouse.source_batch_id": "" if newest_batch is None else str(newest_batch),
        "quantwarehouse.written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quantwarehouse.values": FEATURES_MATRIX_CONVENTION,
    }
    query = (
        f"select * exclude (invocation_id) from {FEATURES_MATRIX_RELATION} "
        "order by bar_date, symbol"
    )
    path = features_matrix_path(folder)
    copy_parquet_atomic(con, query, path, metadata)
    written = pq.ParquetFile(path).metadata
    return PublishedFile(path=path, rows=written.num_rows, columns=written.num_columns)
