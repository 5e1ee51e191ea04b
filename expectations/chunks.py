"""Reading a query's rows in bounded chunks, each a pandas frame Great Expectations can validate.

The rows come ordered by a key and a chunk never splits the rows of one key value: the rows of a
duplicated key always land in the same chunk, so per-chunk uniqueness is uniqueness over the whole
table. A chunk holds at most `chunk_rows` rows plus the rows of one key value carried over from the
previous read, so memory stays bounded however large the table.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import duckdb
import pandas as pd
import pyarrow as pa

from expectations.tables import Query


def ordered(query: Query, keys: Sequence[str]) -> Query:
    order = ", ".join(f"{key} asc nulls last" for key in keys)
    return Query(f"select * from ({query.sql}) as rows_in_scope order by {order}", query.params)


def iter_frames(
    con: duckdb.DuckDBPyConnection, query: Query, keys: Sequence[str], chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """Frames of about `chunk_rows` rows of `query`, ordered by `keys`, never splitting a key.

    Yields at least one frame: an empty one (with the columns) when the query has no rows.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows: expected a positive number of rows, got {chunk_rows}")
    reader = con.execute(ordered(query, keys).sql, query.params).to_arrow_reader(chunk_rows)
    pending: pd.DataFrame | None = None
    yielded = False
    for batch in reader:
        rows = _frame(pa.Table.from_batches([batch]))
        pending = rows if pending is None else pd.concat([pending, rows], ignore_index=True)
        if len(pending) < chunk_rows:
            continue
        cut = _last_key_start(pending, keys)
        if cut == 0:  # one key value fills the whole buffer: keep reading until it ends
            continue
        yield pending.iloc[:cut].reset_index(drop=True)
        yielded = True
        pending = pending.iloc[cut:].reset_index(drop=True)
    if pending is not None and len(pending):
        yield pending
    elif not yielded:
        yield _frame(reader.schema.empty_table())


def _frame(table: pa.Table) -> pd.DataFrame:
    """The rows as pandas, integers narrower than 64 bits widened to int64: GE checks a column of
    any other integer type value by value in Python (ExpectColumnValuesToBeBetween), ten times
    slower."""
    fields = [
        field.with_type(pa.int64())
        if pa.types.is_integer(field.type) and field.type.bit_width < 64
        else field
        for field in table.schema
    ]
    return table.cast(pa.schema(fields)).to_pandas()


def _last_key_start(frame: pd.DataFrame, keys: Sequence[str]) -> int:
    """Position of the first row sharing the last row's key (the rows are ordered by key)."""
    if not keys:
        return len(frame)
    same = (frame[list(keys)] == frame[list(keys)].iloc[-1]).all(axis=1).to_numpy()
    # In key order the rows equal to the last key form the tail; count it from the end.
    tail = len(same) - 1
    while tail >= 0 and same[tail]:
        tail -= 1
    return tail + 1
