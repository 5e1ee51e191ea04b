"""What a gate reads: the warehouse tables under it, and the slice of them a refresh changed.

Everything here builds SQL; nothing runs it. Values reach DuckDB as named parameters (`$name`),
never spliced into the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


@dataclass(frozen=True)
class Query:
    """SQL with its named parameters (DuckDB refuses parameters the text does not use)."""

    sql: str
    params: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Table:
    """A warehouse relation under a gate and the columns a slice of it is taken by."""

    relation: str
    keys: tuple[str, ...]
    time_column: str
    batch_column: str
    invocation_column: str | None = "invocation_id"

    @property
    def schema(self) -> str:
        return self.relation.split(".")[0]

    @property
    def name(self) -> str:
        return self.relation.split(".")[1]


@dataclass(frozen=True)
class Slice:
    """The part of a layer a refresh changed; an empty field does not restrict.

    - `invocation_id`: rows written by that dbt invocation (models only);
    - `min_batch_id`: rows from raw load batches at or after this one (`batch_id` in raw,
      `source_batch_id` downstream);
    - `symbols`: only these symbols;
    - `since`: only rows at or after this day.

    Rows picked by `invocation_id` or `min_batch_id` are widened, per symbol, to every row from the
    symbol's earliest picked row on: a key written twice, once before the refresh and once by it,
    is then still seen twice. Per-symbol checks (calendar, coverage) cover the symbols of the slice
    whole; table-wide checks (the latest date, freshness) always cover the whole table.
    """

    invocation_id: str | None = None
    min_batch_id: int | None = None
    symbols: tuple[str, ...] = ()
    since: date | None = None

    def describe(self) -> str:
        parts = []
        if self.invocation_id:
            parts.append(f"invocation {self.invocation_id}")
        if self.min_batch_id is not None:
            parts.append(f"load batches >= {self.min_batch_id}")
        if self.symbols:
            parts.append(f"symbols {', '.join(self.symbols)}")
        if self.since:
            parts.append(f"since {self.since}")
        return "; ".join(parts) or "whole tables"


def scoped_rows(table: Table, slice_: Slice | None) -> Query:
    """The rows of `table` a gate validates: all of them, or those of the slice (widened)."""
    if slice_ is None:
        return Query(f"select * from {table.relation}")
    filters, params = _row_filters(table, slice_)
    markers, marker_params = _change_markers(table, slice_)
    where = " and ".join(filters) or "true"
    if not markers:
        return Query(f"select t.* from {table.relation} as t where {where}", params)
    time = table.time_column
    sql = f"""
        with touched as (
            select t.symbol, min(t.{time}) as touched_from
            from {table.relation} as t
            where {" and ".join(markers)} and {where}
            group by t.symbol
        )
        select t.*
        from {table.relation} as t
        inner join touched as c on t.symbol = c.symbol
        where t.{time} >= c.touched_from and {where}
    """
    return Query(sql, {**params, **marker_params})


def _row_filters(table: Table, slice_: Slice) -> tuple[list[str], dict[str, object]]:
    filters: list[str] = []
    params: dict[str, object] = {}
    if slice_.symbols:
        filters.append("list_contains($symbols, t.symbol)")
        params["symbols"] = list(slice_.symbols)
    if slice_.since:
        filters.append(f"t.{table.time_column} >= $since")
        params["since"] = slice_.since
    return filters, params


def _change_markers(table: Table, slice_: Slice) -> tuple[list[str], dict[str, object]]:
    markers: list[str] = []
    params: dict[str, object] = {}
    if slice_.invocation_id:
        if table.invocation_column is None:
            raise ValueError(
                f"slice by invocation_id: {table.relation} is not written by dbt (it has no "
                "invocation_id column); slice it by min_batch_id, symbols or since"
            )
        markers.append(f"t.{table.invocation_column} = $invocation_id")
        params["invocation_id"] = slice_.invocation_id
    if slice_.min_batch_id is not None:
        markers.append(f"t.{table.batch_column} >= $min_batch_id")
        params["min_batch_id"] = slice_.min_batch_id
    return markers, params


@dataclass(frozen=True)
class Symbols:
    """The symbols a per-symbol frame covers: every symbol (`names` None) or the slice's."""

    names: tuple[str, ...] | None = None

    def where(self, column: str) -> str:
        return "true" if self.names is None else f"list_contains($symbols, {column})"

    @property
    def params(self) -> dict[str, object]:
        return {} if self.names is None else {"symbols": list(self.names)}


@dataclass(frozen=True)
class Scope:
    """What one suite of a gate reads: the scoped rows of its table and their symbols."""

    rows: Query
    symbols: Symbols
