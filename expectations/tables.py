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
    """A warehouse relation under a gate and the columns a slice of it is taken by.

    `partition`: the columns whose values a model recomputes together (symbol_range's
    partition_keys; for raw and staging, the kline series). `marked_in`: for a view, the table whose
    rows carry the load batches (stg_klines is the latest revision of each raw kline: a staged row
    of source batch >= b is a key with a raw row of batch >= b, since a later revision always comes
    from a later batch).
    """

    relation: str
    keys: tuple[str, ...]
    time_column: str
    batch_column: str
    invocation_column: str | None = "invocation_id"
    partition: tuple[str, ...] = ("symbol",)
    marked_in: Table | None = None

    @property
    def schema(self) -> str:
        return self.relation.split(".")[0]

    @property
    def name(self) -> str:
        return self.relation.split(".")[1]


def state_relation(relation: str) -> str | None:
    """The state table of a model (macros/incremental/state.sql): `state.<name>`, for models in
    `main` (the caller checks that it exists: only incremental models have one)."""
    schema, name = relation.split(".")
    return f"state.{name}" if schema == "main" else None


@dataclass(frozen=True)
class Slice:
    """The part of a layer a refresh changed; an empty field does not restrict.

    - `invocation_id`: rows written by that dbt invocation (models only);
    - `min_batch_id`: rows from raw load batches at or after this one (`batch_id` in raw,
      `source_batch_id` downstream);
    - `symbols`: only these symbols;
    - `since`: only rows at or after this day.

    Rows picked by `invocation_id` or `min_batch_id` are widened, per partition (the symbol, and
    the timeframe and period where the table has them), to every row from the partition's earliest
    picked row on: a key written twice, once before the refresh and once by it, is then still seen
    twice (`expectations.scopes` says when a gate finds those rows without scanning the table).
    Per-symbol checks (calendar, coverage) cover the symbols of the slice whole; table-wide checks
    (the latest date, freshness) always cover the whole table.
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

    @property
    def picks_by_invocation_only(self) -> bool:
        """Whether the picked rows are exactly what one dbt invocation wrote (no batch marker)."""
        return bool(self.invocation_id) and self.min_batch_id is None


def scoped_rows(table: Table, slice_: Slice | None) -> Query:
    """The rows of `table` a gate validates: all of them, or those of the slice (widened)."""
    if slice_ is None:
        return Query(f"select * from {table.relation}")
    touched = touched_partitions(table, slice_)
    if touched is None:
        return picked_rows(table, slice_)
    widened = widened_rows(table, slice_, "touched")
    return Query(
        f"with touched as ({touched.sql}) {widened.sql}", {**touched.params, **widened.params}
    )


def picked_rows(table: Table, slice_: Slice) -> Query:
    """The rows of `table` that carry the slice's markers (all rows if it has none), filtered."""
    filters, params = _row_filters(table, slice_)
    markers, marker_params = _change_markers(table, slice_, table)
    where = " and ".join([*markers, *filters]) or "true"
    return Query(
        f"select t.* from {table.relation} as t where {where}", {**params, **marker_params}
    )


def touched_partitions(table: Table, slice_: Slice) -> Query | None:
    """Per partition the slice picks rows of: its earliest picked time (`touched_from`).

    None when the slice has no change markers (only symbols or a day): nothing to widen then.
    """
    source = table.marked_in or table
    markers, marker_params = _change_markers(table, slice_, source)
    if not markers:
        return None
    filters, params = _row_filters(source, slice_)
    partition = ", ".join(f"t.{column}" for column in table.partition)
    return Query(
        f"""
        select {partition}, min(t.{source.time_column}) as touched_from
        from {source.relation} as t
        where {" and ".join([*markers, *filters])}
        group by {partition}
        """,
        {**params, **marker_params},
    )


def widened_rows(
    table: Table, slice_: Slice, touched: str, bounds: dict[str, object] | None = None
) -> Query:
    """Every row of a partition in `touched` (a relation of `touched_partitions`) from its
    `touched_from` on, filtered by the slice's symbols and day.

    `bounds` (`first_touched`: the earliest touched_from, `touched_symbols`: every symbol in
    `touched`) are constants DuckDB can push into the scan, through a view's window too, where a
    join condition cannot go.
    """
    filters, params = _row_filters(table, slice_)
    if bounds:
        filters += [
            f"t.{table.time_column} >= $first_touched",
            "list_contains($touched_symbols, t.symbol)",
        ]
        params = {**params, **bounds}
    on = " and ".join(f"t.{column} = c.{column}" for column in table.partition)
    where = " and ".join([f"t.{table.time_column} >= c.touched_from", *filters])
    return Query(
        f"select t.* from {table.relation} as t inner join {touched} as c on {on} where {where}",
        params,
    )


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


def _change_markers(
    table: Table, slice_: Slice, source: Table
) -> tuple[list[str], dict[str, object]]:
    """The conditions on `source` (the table, or the one its rows are marked in) picking the
    slice's changed rows."""
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
        markers.append(f"t.{source.batch_column} >= $min_batch_id")
        params["min_batch_id"] = slice_.min_batch_id
    return markers, params


@dataclass(frozen=True)
class Symbols:
    """The symbols a per-symbol frame covers: every symbol (`names` None) or the slice's."""

    names: tuple[str, ...] | None = None

    def where(self, column: str) -> str:
        return "true" if self.names is None else f"list_contains($scope_symbols, {column})"

    @property
    def params(self) -> dict[str, object]:
        return {} if self.names is None else {"scope_symbols": list(self.names)}


@dataclass(frozen=True)
class Scope:
    """What one suite of a gate reads: the scoped rows of its table and their symbols.

    `counted_by_state`: the relations whose rows per partition the frames read from their state
    table instead of counting the table (on a slice only, and only where the state accounts for
    every row of the table; see `expectations.scopes`).
    """

    rows: Query
    symbols: Symbols
    counted_by_state: frozenset[str] = frozenset()
