"""The dirty symbols of an incremental dbt Python model: the twin of the SQL macro `dirty_symbols`
in macros/incremental/state.sql (Python models cannot call macros). Change both together.

Per symbol, dirty_from is the earliest upstream time written by a load batch later than the
model's watermark (`last_batch_id` in state.<model>); a symbol without state, or a model without a
state table, is dirty from its first row. `only_symbols` (the var `symbols` of
`daily-refresh --symbols`) keeps only those symbols dirty; `exclude_symbols` (the var
`exclude_symbols`, symbols whose inputs failed or are stale) keeps those clean. The symbols left
out wait for a later run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

STATE_SCHEMA = "state"


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def state_table(session: duckdb.DuckDBPyConnection, database: str, model: str) -> str | None:
    """The model's state table (`<database>.state.<model>`), or None when it does not exist."""
    found = session.sql(
        "select count(*) from information_schema.tables"
        " where table_catalog = ? and table_schema = ? and table_name = ?",
        params=[database, STATE_SCHEMA, model],
    ).fetchall()
    if not found[0][0]:
        return None
    return ".".join(_quoted(part) for part in (database, STATE_SCHEMA, model))


def _symbol_filters(column: str, only: Sequence[str], exclude: Sequence[str]) -> list[str]:
    found = []
    if only:
        found.append(f"{column} in ({', '.join(map(_literal, only))})")
    if exclude:
        found.append(f"{column} not in ({', '.join(map(_literal, exclude))})")
    return found


def dirty_symbols(
    session: duckdb.DuckDBPyConnection,
    upstream: duckdb.DuckDBPyRelation,
    this: Any,
    time_column: str,
    batch_column: str = "source_batch_id",
    only_symbols: Sequence[str] = (),
    exclude_symbols: Sequence[str] = (),
    upstream_state: str | None = None,
) -> duckdb.DuckDBPyRelation:
    """Relation (symbol, dirty_from) over `upstream` for the model `this` (dbt's `dbt.this`).

    `upstream_state`, the state table of an incremental upstream model, narrows what is read to the
    same answer: rows no older than the oldest watermark (a literal, so the scan skips row groups
    of older batches by their zone maps) for the symbols with a watermark, and for the others their
    earliest time from that state (invariant 4: it lists every upstream symbol).
    """
    state = state_table(session, this.database, this.identifier)
    if state is not None and upstream_state is not None:
        return _narrowed_dirty_symbols(
            session,
            upstream,
            (state, upstream_state),
            (time_column, batch_column),
            (only_symbols, exclude_symbols),
        )
    join = ""
    conditions = ["true"]
    if state is not None:
        join = f"""
            left join (
                select symbol, min(last_batch_id) as last_batch_id from {state} group by symbol
            ) as s
                on u.symbol = s.symbol"""
        conditions = [f"(s.symbol is null or u.{batch_column} > s.last_batch_id)"]
    conditions += _symbol_filters("u.symbol", only_symbols, exclude_symbols)
    return upstream.query(
        "upstream",
        f"""
        select u.symbol, min(u.{time_column}) as dirty_from
        from upstream as u {join}
        where {" and ".join(conditions)}
        group by u.symbol""",
    )


def oldest_watermark(session: duckdb.DuckDBPyConnection, state: str) -> int:
    """The lowest last_batch_id of a state table (-1 when it is empty): no row of an older or
    equal batch is dirty for a symbol that has a watermark."""
    (oldest,) = session.sql(f"select coalesce(min(last_batch_id), -1) from {state}").fetchone()
    return int(oldest)


def _narrowed_dirty_symbols(
    session: duckdb.DuckDBPyConnection,
    upstream: duckdb.DuckDBPyRelation,
    states: tuple[str, str],
    columns: tuple[str, str],
    symbols: tuple[Sequence[str], Sequence[str]],
) -> duckdb.DuckDBPyRelation:
    state, upstream_state = states
    time_column, batch_column = columns
    watermarked = " and ".join(
        [
            f"u.{batch_column} > {oldest_watermark(session, state)}",
            f"u.{batch_column} > s.last_batch_id",
            *_symbol_filters("u.symbol", *symbols),
        ]
    )
    unwatermarked = " and ".join(["true", *_symbol_filters("p.symbol", *symbols)])
    return upstream.query(
        "upstream",
        f"""
        with watermarks as (
            select symbol, min(last_batch_id) as last_batch_id from {state} group by symbol
        )

        select u.symbol, min(u.{time_column}) as dirty_from
        from upstream as u
        inner join watermarks as s on u.symbol = s.symbol
        where {watermarked}
        group by u.symbol

        union all

        select p.symbol, min(p.earliest_ts) as dirty_from
        from {upstream_state} as p
        anti join watermarks as s on p.symbol = s.symbol
        where {unwatermarked}
        group by p.symbol""",
    )
