"""What a gate's suites read on a slice, resolved once per table on the gate's connection.

A slice names the rows a refresh changed by a marker (the dbt invocation that wrote them, or the
load batches they came from). Finding those rows is cheap: DuckDB skips every row group whose
zone map excludes the marker, and a refresh's rows sit in the last row groups. What is not cheap
is reading a table's other rows: the bar families and EMA marts hold tens of millions of rows,
stored by symbol, so any condition on the day reads all of them. A gate on a slice therefore
reads, per table:

- its touched partitions (each with its first changed day), once, into a temporary table (the
  read-only connection allows those); the symbols of the slice come from there;
- the rows to validate: the rows of each touched partition from its first changed day on (the
  widened slice, `expectations.tables.widened_rows`), which takes a scan of the table, unless the
  slice is one dbt invocation's writes on a model whose state table accounts for every row of the
  table (`state_accounts_for_every_row`). The symbol_range strategy counts the stored rows from a
  partition's first new row on, deletes them and inserts the new rows, and moves the state's row
  count by what it counted; so when the table holds exactly the rows its state counts, no row
  older than the invocation is left in the range it rewrote, and its own rows (zone-map cheap) are
  the widened slice. A table holding a row its state does not count (a failed delete, a write
  outside dbt) falls back to the scan, which then shows a key written twice to the uniqueness
  check;
- the rows per partition the coverage frames compare, from the state tables that account for
  every row (`Scope.counted_by_state`), instead of counting every row of every touched symbol.
"""

from __future__ import annotations

import logging

import duckdb

from expectations.tables import (
    Query,
    Scope,
    Slice,
    Symbols,
    Table,
    picked_rows,
    scoped_rows,
    state_relation,
    touched_partitions,
    widened_rows,
)

log = logging.getLogger(__name__)


def state_accounts_for_every_row(
    con: duckdb.DuckDBPyConnection, relation: str, existing: set[str]
) -> bool:
    """Whether `relation` has a state table whose row counts add up to the table's rows.

    Both counts are cheap: DuckDB counts a table's rows from its row groups, and a state table has
    one row per partition.
    """
    state = state_relation(relation)
    if state is None or state not in existing:
        return False
    table_rows, state_rows = con.execute(
        f"select (select count(*) from {relation}), "
        f"(select coalesce(sum(row_count), 0) from {state})"
    ).fetchone()
    if table_rows != state_rows:
        log.warning(
            "  %s holds %d rows, its state counts %d: the gate reads the table itself",
            relation,
            table_rows,
            state_rows,
        )
    return bool(table_rows == state_rows)


class ScopeResolver:
    """The scopes of one gate: per table its rows and symbols, per relation whether its state
    accounts for every row; temporary tables dropped by `close()`."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, slice_: Slice | None, existing: set[str]
    ) -> None:
        self.con = con
        self.slice = slice_
        self.existing = existing
        self._tables: dict[Table, tuple[Query, Symbols]] = {}
        self._accounted: dict[str, bool] = {}
        self._temporary: list[str] = []

    def scope(self, table: Table, relations: tuple[str, ...]) -> Scope:
        """What a suite over `table` reading `relations` validates."""
        if table not in self._tables:
            self._tables[table] = self._rows(table)
        rows, symbols = self._tables[table]
        counted = frozenset(r for r in relations if self.slice is not None and self._accounts(r))
        return Scope(rows, symbols, counted)

    def close(self) -> None:
        for name in self._temporary:
            self.con.execute(f"drop table if exists {name}")
        self._temporary.clear()

    def _accounts(self, relation: str) -> bool:
        if relation not in self._accounted:
            self._accounted[relation] = state_accounts_for_every_row(
                self.con, relation, self.existing
            )
        return self._accounted[relation]

    def _rows(self, table: Table) -> tuple[Query, Symbols]:
        if self.slice is None:
            return scoped_rows(table, None), Symbols()
        touched = touched_partitions(table, self.slice)
        if touched is None:  # only symbols or a day: nothing to widen
            rows = picked_rows(table, self.slice)
            return rows, Symbols(self._symbols(f"({rows.sql})", rows.params))
        name = f"gate_touched_{table.schema}_{table.name}"
        self.con.execute(f"create or replace temp table {name} as {touched.sql}", touched.params)
        self._temporary.append(name)
        symbols = self._symbols(name, {})
        if self.slice.picks_by_invocation_only and self._accounts(table.relation):
            return picked_rows(table, self.slice), Symbols(symbols)
        (first,) = self.con.execute(f"select min(touched_from) from {name}").fetchone()
        bounds = {"first_touched": first, "touched_symbols": list(symbols)}
        return widened_rows(table, self.slice, name, bounds), Symbols(symbols)

    def _symbols(self, relation: str, params: dict[str, object]) -> tuple[str, ...]:
        found = self.con.execute(f"select distinct symbol from {relation} as r", params).fetchall()
        return tuple(sorted(symbol for (symbol,) in found))
