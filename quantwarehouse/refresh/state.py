"""What the state tables say: per model and symbol, what is pending and how far behind it is.

The state tables (`state.<model>`, ARCHITECTURE invariant 4) are the only record of progress.
This module reads them, read-only, for the plan of a dry run, `--resume`, the freshness check
before returns, EMAs and features, progress counts, and the stage cache; and deletes a symbol's
rows and state (with the EMA models' carry) for `--full-refresh --symbols`.

A model's upstream is found in the dbt manifest: the incremental models it reads (through views),
or the raw klines for the bars. A symbol is pending in a model when its upstream holds a load
batch newer than the model's watermark for it (`min(last_batch_id)` over its partitions) or when
the model has no state for it: the same rule as the dirty detection of the models
(macros/incremental/state.sql), so a symbol pending here is exactly a symbol the next run
recomputes. For an upstream model its state table answers (its `last_batch_id` is the newest
`source_batch_id` of its rows); for the raw layer, the klines the daily bars are built from.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import duckdb

from quantwarehouse.refresh.filters import project_vars

RAW_SCHEMA = "raw"  # the loader's tables, not dbt's
RAW_KLINES = f"{RAW_SCHEMA}.klines"
STATE_SCHEMA = "state"


@dataclass(frozen=True)
class Model:
    """An incremental model and where its progress is measured from."""

    name: str
    relation: str
    partition_keys: tuple[str, ...]
    upstreams: tuple[str, ...]  # incremental model names, or RAW_KLINES

    @property
    def state(self) -> str:
        return f"{STATE_SCHEMA}.{self.name}"

    @property
    def carry(self) -> str:
        """Recursion state a model resumes from, where it keeps one (the EMA models)."""
        return f"{STATE_SCHEMA}.{self.name}__carry"


@dataclass(frozen=True)
class Pending:
    """A symbol the model has not caught up with: the newest upstream day and its own last day."""

    symbol: str
    upstream_day: date | None
    model_day: date | None

    @property
    def days_behind(self) -> int | None:
        if self.upstream_day is None or self.model_day is None:
            return None
        return (self.upstream_day - self.model_day).days


class ModelGraph:
    """The incremental models of the parsed dbt project and their progress upstreams."""

    def __init__(self, manifest: Any) -> None:
        self.manifest = manifest
        self.models: dict[str, Model] = {}
        for unique_id, node in manifest.nodes.items():
            if node.resource_type == "model" and node.config.materialized == "incremental":
                self.models[node.name] = Model(
                    name=node.name,
                    relation=f"{node.schema}.{node.alias or node.name}",
                    partition_keys=tuple(node.config.get("partition_keys") or ("symbol",)),
                    upstreams=tuple(self._upstreams(unique_id)),
                )

    def _upstreams(self, unique_id: str) -> list[str]:
        found: dict[str, None] = {}
        for parent in self.manifest.nodes[unique_id].depends_on.nodes:
            if parent.startswith("source."):
                source = self.manifest.sources[parent]
                if f"{source.schema}.{source.identifier}" == RAW_KLINES:
                    found[RAW_KLINES] = None
                continue
            node = self.manifest.nodes.get(parent)
            if node is None or node.resource_type != "model":
                continue
            if node.config.materialized == "incremental":
                found[node.name] = None
            else:  # a view or table in between (stg_klines): look through it
                found.update(dict.fromkeys(self._upstreams(parent)))
        return list(found)

    def incremental(self, names: Iterable[str]) -> list[Model]:
        return [self.models[name] for name in names if name in self.models]

    def ancestors(self, names: Iterable[str]) -> list[Model]:
        """The incremental models `names` read, directly or not, outside `names` themselves."""
        inside = set(names)
        seen: dict[str, None] = {}
        queue = [u for name in inside if name in self.models for u in self.models[name].upstreams]
        while queue:
            name = queue.pop()
            if name == RAW_KLINES or name in seen or name in inside:
                continue
            seen[name] = None
            queue.extend(self.models[name].upstreams)
        return [self.models[name] for name in sorted(seen)]


def relation_exists(con: duckdb.DuckDBPyConnection, relation: str) -> bool:
    schema, name = relation.split(".")
    row = con.execute(
        "select count(*) from information_schema.tables "
        "where table_catalog = current_database() and table_schema = ? and table_name = ?",
        [schema, name],
    ).fetchone()
    return bool(row and row[0])


def _in_list(symbols: Sequence[str]) -> str:
    return ", ".join("'" + s.replace("'", "''") + "'" for s in symbols)


def _upstream_sql(con: duckdb.DuckDBPyConnection, upstream: str) -> str | None:
    """Per symbol the newest batch and day of one upstream, or None when it does not exist."""
    if upstream == RAW_KLINES:
        if not relation_exists(con, RAW_KLINES):
            return None
        # The intervals the daily bars are built from (macros/bars/intervals.sql).
        intervals = _in_list(["1d", *project_vars().get("intraday_intervals", [])])
        return (
            "select symbol, max(batch_id) as batch, cast(max(open_time) as date) as day "
            f"from {RAW_KLINES} where interval in ({intervals}) group by symbol"
        )
    state = f"{STATE_SCHEMA}.{upstream}"
    if not relation_exists(con, state):
        return None
    return (
        "select symbol, max(last_batch_id) as batch, cast(max(last_source_ts) as date) as day "
        f"from {state} group by symbol"
    )


def pending_symbols(
    con: duckdb.DuckDBPyConnection, model: Model, only: Sequence[str] = ()
) -> dict[str, Pending]:
    """The symbols `model` has not caught up with (all its upstream's symbols before its first
    build), restricted to `only` when given."""
    parts = [sql for sql in (_upstream_sql(con, u) for u in model.upstreams) if sql]
    if not parts:
        return {}
    upstream = " union all ".join(parts)
    conditions = [f"u.symbol in ({_in_list(only)})"] if only else []
    if relation_exists(con, model.state):
        conditions.append("(p.symbol is null or u.batch > p.batch)")
        query = f"""
            with upstream as (
                select symbol, max(batch) as batch, max(day) as day
                from ({upstream}) as parts group by symbol
            ),
            progress as (
                select symbol, min(last_batch_id) as batch,
                    cast(min(last_source_ts) as date) as day
                from {model.state} group by symbol
            )
            select u.symbol, u.day, p.day
            from upstream as u left join progress as p on u.symbol = p.symbol
            where {" and ".join(conditions)}
            order by u.symbol
        """
    else:
        query = f"""
            select u.symbol, max(u.day), null
            from ({upstream}) as u
            where {" and ".join(conditions) or "true"}
            group by u.symbol order by u.symbol
        """
    return {s: Pending(s, _day(up), _day(own)) for s, up, own in con.execute(query).fetchall()}


def _day(value: object) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else None


@dataclass(frozen=True)
class Staleness:
    """Why a symbol's inputs are not fresh enough for the layers downstream."""

    symbol: str
    model: str
    reason: str


def stale_symbols(
    con: duckdb.DuckDBPyConnection, models: Iterable[Model], max_days_behind: int
) -> dict[str, Staleness]:
    """Symbols whose `models` lag their own upstream by more than `max_days_behind` days, or
    that the models have no rows for yet although their upstream has: the first reason each."""
    found: dict[str, Staleness] = {}
    for model in models:
        for symbol, pending in pending_symbols(con, model).items():
            if symbol in found:
                continue
            behind = pending.days_behind
            if pending.model_day is None:
                reason = (
                    f"{model.name} has no rows for it yet (its upstream has data up to "
                    f"{pending.upstream_day})"
                )
            elif behind is not None and behind > max_days_behind:
                reason = (
                    f"{model.name} stale: last bar {pending.model_day}, {behind} days behind "
                    f"its upstream ({pending.upstream_day}; threshold {max_days_behind})"
                )
            else:
                continue
            found[symbol] = Staleness(symbol, model.name, reason)
    return found


def state_fingerprint(con: duckdb.DuckDBPyConnection, models: Iterable[Model]) -> dict[str, Any]:
    """What changes whenever a model's rows change: its state's size, watermark and last write."""
    found: dict[str, Any] = {}
    for model in models:
        if not relation_exists(con, model.state):
            found[model.name] = None
            continue
        row = con.execute(
            "select count(*), sum(row_count), max(last_batch_id), max(updated_at) "
            f"from {model.state}"
        ).fetchone()
        found[model.name] = [str(value) for value in row]
    return found


def newest_load_batch(con: duckdb.DuckDBPyConnection) -> int:
    if not relation_exists(con, "raw.load_batches"):
        return 0
    return int(con.execute("select coalesce(max(batch_id), 0) from raw.load_batches").fetchone()[0])


def delete_symbols(
    con: duckdb.DuckDBPyConnection, models: Iterable[Model], symbols: Sequence[str]
) -> dict[str, int]:
    """Delete the symbols' rows and state from every model, in one transaction: the next
    incremental run recomputes them from their first bar. Rows deleted per model."""
    deleted: dict[str, int] = {}
    listed = _in_list(symbols)
    con.execute("begin transaction")
    try:
        for model in models:
            if not relation_exists(con, model.relation):
                continue
            rows = con.execute(
                f"delete from {model.relation} where symbol in ({listed})"
            ).fetchone()[0]
            for state in (model.state, model.carry):
                if relation_exists(con, state):
                    con.execute(f"delete from {state} where symbol in ({listed})")
            deleted[model.name] = int(rows)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return deleted


def count_symbol_rows(
    con: duckdb.DuckDBPyConnection, models: Iterable[Model], symbols: Sequence[str]
) -> dict[str, int]:
    """Rows the symbols have in each existing model (what `delete_symbols` would delete)."""
    listed = _in_list(symbols)
    return {
        model.name: int(
            con.execute(
                f"select count(*) from {model.relation} where symbol in ({listed})"
            ).fetchone()[0]
        )
        for model in models
        if relation_exists(con, model.relation)
    }


def known_symbols(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Every symbol the raw klines hold."""
    if not relation_exists(con, RAW_KLINES):
        return set()
    return {s for (s,) in con.execute(f"select distinct symbol from {RAW_KLINES}").fetchall()}


def load_batches_like(
    con: duckdb.DuckDBPyConnection, source: str, parameters: Mapping[str, object]
) -> int | None:
    """The newest successful load batch of `source` with these parameters, or None."""
    if not relation_exists(con, "raw.load_batches"):
        return None
    rows = con.execute(
        "select batch_id, parameters from raw.load_batches "
        "where source = ? and status = 'success' order by batch_id desc",
        [source],
    ).fetchall()
    wanted = json.loads(json.dumps(dict(parameters), default=str))
    for batch_id, stored in rows:
        if stored is not None and json.loads(stored) == wanted:
            return int(batch_id)
    return None
