"""The EMA dbt models (python_models/emas): what a run reads, computes and writes.

Each model runs `ema_model` over one bar family (quantwarehouse.ema holds the computation). A full
build computes every (symbol, tf) series from its first row. An incremental run recomputes the
dirty symbols (quantwarehouse.incremental), each in one of two ways:

- resumed (a normal day): when every row touched since the symbol's watermark follows its stored
  rows, each series continues from its carry over the new rows only, and writes them. The reads
  are the rows of recent load batches (a literal bound, so DuckDB skips the row groups of older
  batches by their zone maps) and the small state and carry tables.
- recomputed: any other dirty symbol (a revision or a gap filled at an old date, a new symbol or
  series, a bar closed early by a gap, a carry out of step) is computed from its first row (its
  rows found by a literal symbol list, again by zone maps) and written from the row before its
  earliest touched one (whose bar a later row may now close), or whole where a partition has no
  state yet.

The carry (table state.<model>__carry, per symbol, tf and period) is the recursion state after a
partition's last stored row: its date, row count and latest batch, the bar it belongs to and
whether it closes it, the sums an SMA seed still in warm-up needs (daily closes, closed bars and
their closes) and the last ema_bar and ema_v2. It is used only when it describes the stored rows
exactly (its date, row count and batch equal the partition's state) and the rows read are all
that follow them (the upstream's state counts the carried rows plus the new ones). The model hands
the carry of every partition it writes to the post-hook `update_ema_carry()` (macros/emas/carry.sql)
in the temp table <model>__carry_staged, which stores it in the model's transaction, with the rows
and the state (ARCHITECTURE invariant 9).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from quantwarehouse.ema import (
    BarCarry,
    BarEmas,
    BarRows,
    bar_emas,
    nominal_tf_days,
    segmented_cummax,
)
from quantwarehouse.incremental import dirty_symbols, oldest_watermark, state_table
from quantwarehouse.refresh.filters import EMA_MODELS, EmaFilter

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
DayArray = NDArray[np.int32]

OUTPUT_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("tf", pa.string()),
        ("period", pa.int32()),
        ("bar_date", pa.date32()),
        ("ema", pa.float64()),
        ("ema_bar", pa.float64()),
        ("ema_v2", pa.float64()),
        ("is_partial_end", pa.bool_()),
        ("closes_bar", pa.bool_()),
        ("source_batch_id", pa.int64()),
        ("invocation_id", pa.dictionary(pa.int8(), pa.string())),
    ]
)
OUTPUT_COLUMNS = tuple(OUTPUT_SCHEMA.names)

CARRY_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("tf", pa.string()),
        ("period", pa.int32()),
        ("as_of", pa.date32()),
        ("row_count", pa.int64()),
        ("last_batch_id", pa.int64()),
        ("bar_start_date", pa.date32()),
        ("closes_bar", pa.bool_()),
        ("days_total", pa.float64()),
        ("bars_count", pa.int64()),
        ("bars_total", pa.float64()),
        ("ema_bar", pa.float64()),
        ("ema_v2", pa.float64()),
    ]
)
CARRY_SUFFIX = "__carry"
STAGED_CARRY_SUFFIX = "__carry_staged"

# written_from of a partition that writes all its rows, and of one that writes none.
EVERY_ROW = np.iinfo(np.int32).min
NO_ROW = np.iinfo(np.int32).max

_PERIODS_WHERE = "var ema_periods (dbt_project.yml)"

# The columns EMAs need, from bars_1d (every row is a whole one-day bar) or from a bar family.
# A bar closes on its row with is_partial_end = false, or on its last row once the symbol has moved
# to a later bar with the bar's last days missing (count_missing_end > 0): its last close is final.
_DAILY_ROWS = """
    select symbol, '1d' as tf, bar_date, bar_date as bar_start_date, close,
        false as is_partial_end, true as closes_bar, source_batch_id
    from bars_source
"""
_FAMILY_ROWS = """
    select symbol, tf, bar_date, bar_start_date, close, is_partial_end,
        not is_partial_end or count_missing_end > 0 as closes_bar, source_batch_id
    from bars_source
"""
ROW_COLUMNS = (
    "symbol",
    "tf",
    "bar_date",
    "bar_start_date",
    "close",
    "is_partial_end",
    "closes_bar",
    "source_batch_id",
)
_ROW_COLUMNS = ", ".join(ROW_COLUMNS)


def _numbered(picked: str, *, materialized: bool) -> str:
    """The rows of the query `picked`, numbered by series (symbol, tf) in key order: sorting on a
    small integer is cheaper than on the strings, and the ids give the series boundaries at once.
    `picked` is read twice: materialized when reading it costs more than keeping it (a scan of
    the bars for a few symbols), inlined when it is a plain scan (all rows)."""
    hint = "materialized" if materialized else "not materialized"
    return f"""
    with picked as {hint} ({picked}),

    series as (
        select symbol, tf, cast(row_number() over (order by symbol, tf) - 1 as integer) as series
        from (select distinct symbol, tf from picked) as pairs
    )

    select s.series, p.*
    from picked as p
    inner join series as s on p.symbol = s.symbol and p.tf = s.tf
    order by s.series, p.bar_date
    """


def validated_periods(value: object) -> tuple[int, ...]:
    """The configured EMA periods: a non-empty list of distinct positive integers."""
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"{_PERIODS_WHERE}: expected a non-empty list of periods, got {value!r}")
    for period in value:
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise ValueError(
                f"{_PERIODS_WHERE}: expected positive integers, got {period!r} in {value!r}"
            )
    if len(set(value)) != len(value):
        raise ValueError(f"{_PERIODS_WHERE}: each period must be listed once, got {value!r}")
    return tuple(sorted(value))


def partition_filter(variables: Mapping[str, Any]) -> EmaFilter:
    """The (tf, period) partitions an incremental run recomputes: dbt vars `tfs`, `periods` and
    `tf_periods` ([tf, period] pairs) as `daily-refresh` sets them, every one given applying."""
    return EmaFilter(
        tfs=tuple(str(tf) for tf in variables.get("tfs") or ()),
        periods=tuple(int(period) for period in variables.get("periods") or ()),
        combos=tuple((str(tf), int(period)) for tf, period in variables.get("tf_periods") or ()),
    )


# --- computing a run's rows ---------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesStart:
    """Per series of a run (ids 0, 1, ... as in the rows) and per period: the recursion state
    before the series' first row here, and the first bar_date the partition writes (EVERY_ROW,
    NO_ROW, or a day as days since 1970-01-01). batch_before is the latest source batch before the
    first row (-1: none)."""

    carry: Mapping[int, BarCarry]
    written_from: Mapping[int, DayArray]
    batch_before: IntArray

    @classmethod
    def fresh(cls, series: int, periods: Sequence[int]) -> SeriesStart:
        """Series computed from their first row, every row written."""
        return cls(
            {period: BarCarry.fresh(series) for period in periods},
            {period: np.full(series, EVERY_ROW, np.int32) for period in periods},
            np.full(series, -1, np.int64),
        )

    @property
    def series(self) -> int:
        return len(self.batch_before)


@dataclass(frozen=True)
class ModelInputs:
    """What one run computes from: rows (column series, then symbol, tf, bar_date,
    bar_start_date, close, is_partial_end, closes_bar, source_batch_id), sorted by series and
    bar_date, and where each series starts."""

    rows: pa.Table
    periods: tuple[int, ...]
    start: SeriesStart


class ModelOutput(NamedTuple):
    rows: pa.Table  # OUTPUT_SCHEMA
    carry: pa.Table  # CARRY_SCHEMA: one row per partition written


def series_offsets(series: IntArray, count: int) -> IntArray:
    """Boundaries of series 0..count-1 in rows sorted by series id."""
    sizes = np.bincount(series, minlength=count) if len(series) else np.zeros(count, np.int64)
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _numpy(rows: pa.Table, name: str) -> NDArray[Any]:
    return rows.column(name).to_numpy()


def _days(column: pa.ChunkedArray) -> DayArray:
    return pc.cast(column, pa.int32()).to_numpy().astype(np.int32)


def _nullable(values: FloatArray) -> pa.Array:
    """Float values with NaN (no EMA yet) as SQL nulls."""
    return pa.array(values, type=pa.float64(), from_pandas=True)


@dataclass(frozen=True)
class _Layout:
    """Where each series' rows are, and what its rows add to its carry whatever the period."""

    bars: BarRows
    days: DayArray
    batch: IntArray
    filled: IntArray  # the series with rows
    ends: pa.Table  # per filled series, its last row (symbol, tf, bar_date, bar_start_date, ...)
    day_sums: FloatArray
    bar_counts: IntArray
    bar_sums: FloatArray

    @classmethod
    def of(cls, rows: pa.Table, start: SeriesStart) -> _Layout:
        count = start.series
        offsets = series_offsets(_numpy(rows, "series").astype(np.int64), count)
        filled = np.flatnonzero(np.diff(offsets) > 0)
        # One take for all periods: a take from a chunked column copies the whole column.
        ends = rows.select(["symbol", "tf", "bar_date", "bar_start_date", "closes_bar"]).take(
            offsets[filled + 1] - 1
        )
        tf_days = np.ones(count, np.int64)
        tf_days[filled] = [nominal_tf_days(tf) for tf in ends.column("tf").to_pylist()]
        bars = BarRows(
            close=np.asarray(_numpy(rows, "close"), dtype=np.float64),
            completes_bar=np.asarray(_numpy(rows, "closes_bar"), dtype=bool),
            offsets=offsets,
            tf_days=tf_days,
        )
        completed_series = bars.series_of_row[bars.completed_rows]
        return cls(
            bars=bars,
            days=_days(rows.column("bar_date")),
            batch=segmented_cummax(_numpy(rows, "source_batch_id"), offsets, start.batch_before),
            filled=filled,
            ends=ends,
            day_sums=np.bincount(bars.series_of_row, weights=bars.close, minlength=count),
            bar_counts=np.bincount(completed_series, minlength=count),
            bar_sums=np.bincount(completed_series, weights=bars.completed_close, minlength=count),
        )

    @property
    def last_rows(self) -> IntArray:
        """The last row of each filled series."""
        return self.bars.offsets[self.filled + 1] - 1


def _model_rows(
    rows: pa.Table,
    period: int,
    emas: BarEmas,
    batch: IntArray,
    written: NDArray[np.bool_],
    invocation_id: str,
) -> pa.Table:
    """The written rows of one period, OUTPUT_SCHEMA (without copying when all are written)."""
    index = None if written.all() else np.flatnonzero(written)
    base = rows if index is None else rows.take(index)

    def picked(values: NDArray[Any]) -> NDArray[Any]:
        return values if index is None else values[index]

    size = base.num_rows
    columns = {
        "symbol": base.column("symbol"),
        "tf": base.column("tf"),
        "period": pa.array(np.full(size, period, np.int32)),
        "bar_date": base.column("bar_date"),
        "ema": _nullable(picked(emas.ema)),
        "ema_bar": _nullable(picked(emas.ema_bar)),
        "ema_v2": _nullable(picked(emas.ema_v2)),
        "is_partial_end": base.column("is_partial_end"),
        "closes_bar": base.column("closes_bar"),
        "source_batch_id": pa.array(picked(batch)),
        "invocation_id": pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(size, np.int8)), pa.array([invocation_id])
        ),
    }
    return pa.table(columns).cast(OUTPUT_SCHEMA)


def _carry_rows(
    period: int, emas: BarEmas, layout: _Layout, carry: BarCarry, written_from: DayArray
) -> pa.Table:
    """Per partition with a written row, the carry after the series' last row (CARRY_SCHEMA)."""
    last = layout.last_rows
    # Rows are in date order within a series: it writes a row when its last row is written.
    written = layout.days[last] >= written_from[layout.filled]
    series, last = layout.filled[written], last[written]
    ends = layout.ends.filter(pa.array(written))
    columns = {
        "symbol": ends.column("symbol"),
        "tf": ends.column("tf"),
        "period": pa.array(np.full(len(series), period, np.int32)),
        "as_of": ends.column("bar_date"),
        "row_count": carry.days.count[series] + np.diff(layout.bars.offsets)[series],
        "last_batch_id": layout.batch[last],
        "bar_start_date": ends.column("bar_start_date"),
        "closes_bar": ends.column("closes_bar"),
        "days_total": carry.days.total[series] + layout.day_sums[series],
        "bars_count": carry.bars.count[series] + layout.bar_counts[series],
        "bars_total": carry.bars.total[series] + layout.bar_sums[series],
        "ema_bar": _nullable(emas.ema_bar[last]),
        "ema_v2": _nullable(emas.ema_v2[last]),
    }
    return pa.table(columns).cast(CARRY_SCHEMA)


def _concatenated(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else schema.empty_table()


def ema_table(inputs: ModelInputs, invocation_id: str) -> ModelOutput:
    """The model's rows (OUTPUT_SCHEMA, one block per period) and the carry of every partition
    written (CARRY_SCHEMA).

    source_batch_id is the latest batch of the series' upstream rows up to each row (an EMA depends
    on all of them).
    """
    rows, start = inputs.rows, inputs.start
    layout = _Layout.of(rows, start)
    model_blocks, carry_blocks = [], []
    for period in inputs.periods:
        emas = bar_emas(layout.bars, period, start.carry[period])
        written_from = start.written_from[period]
        written = layout.days >= written_from[layout.bars.series_of_row]
        model_blocks.append(_model_rows(rows, period, emas, layout.batch, written, invocation_id))
        carry_blocks.append(_carry_rows(period, emas, layout, start.carry[period], written_from))
    return ModelOutput(
        _concatenated(model_blocks, OUTPUT_SCHEMA), _concatenated(carry_blocks, CARRY_SCHEMA)
    )


# --- what a run reads ---------------------------------------------------------------------------


@contextmanager
def _registered(session: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> Iterator[None]:
    session.register(name, table)
    try:
        yield
    finally:
        session.unregister(name)


def _literals(values: Sequence[str]) -> str:
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values)


def _kept_sql(keep: EmaFilter, tf: str, period: str) -> str:
    """SQL condition: the (tf, period) partition is one `keep` recomputes."""
    conditions = ["true"]
    if keep.tfs:
        conditions.append(f"{tf} in ({_literals(keep.tfs)})")
    if keep.periods:
        conditions.append(f"{period} in ({', '.join(map(str, keep.periods))})")
    if keep.combos:
        pairs = " or ".join(
            f"({tf} = {_literals([t])} and {period} = {int(p)})" for t, p in keep.combos
        )
        conditions.append(f"({pairs})")
    return " and ".join(conditions)


def _kept_tfs_sql(keep: EmaFilter, tf: str) -> str:
    """SQL condition on the timeframe alone: it holds a partition `keep` recomputes."""
    tfs = keep.tfs or tuple(dict.fromkeys(t for t, _ in keep.combos))
    return f"{tf} in ({_literals(tfs)})" if tfs else "true"


def _stored_periods(session: duckdb.DuckDBPyConnection, state: str) -> tuple[int, ...]:
    found = session.sql(f"select distinct period from {state} order by period").fetchall()
    return tuple(int(period) for (period,) in found)


def _check_same_periods(model: str, stored: tuple[int, ...], periods: tuple[int, ...]) -> None:
    if stored and stored != periods:
        raise ValueError(
            f"{model}: {_PERIODS_WHERE} is {list(periods)} but the model was built with "
            f"{list(stored)}; rebuild it with `dbt build --full-refresh --select {model}`"
        )


def carry_relation(session: duckdb.DuckDBPyConnection, database: str, model: str) -> str | None:
    """The model's carry table, or None when it does not exist (yet)."""
    return state_table(session, database, model + CARRY_SUFFIX)


@dataclass(frozen=True)
class _Tables:
    """The relations an incremental run of one model reads besides its bars."""

    state: str | None
    carry: str | None
    upstream_state: str | None
    daily: bool

    @property
    def resumable(self) -> bool:
        return None not in (self.state, self.carry, self.upstream_state)


# Recent rows of the dirty symbols: those of load batches after the oldest watermark (a literal, so
# the scan skips older row groups), from the symbol's dirty_from on. For a symbol resumed, these
# are all the rows after its stored ones (the partition check below proves it).
_RECENT_ROWS = """
    select {columns}
    from bars as b
    inner join ema_dirty as d on b.symbol = d.symbol
    where b.source_batch_id > {oldest} and b.bar_date >= d.dirty_from and {kept_tf}
"""

# Per kept partition of the dirty symbols' series (as the upstream's state lists them): its carry,
# and whether it can resume from it over the recent rows. `resumed` holds for a symbol whose
# partitions all can. Equal row counts and the same rows read give every period of a series the
# same last date and batch.
_PARTITIONS = """
    with recent as (
        select
            symbol, tf, count(*) as new_rows, arg_min(bar_start_date, bar_date) as first_bar_start
        from ema_recent
        group by symbol, tf
    ),

    partitions as (
        select u.symbol, {upstream_tf} as tf, p.period, u.row_count as upstream_rows, d.dirty_from
        from {upstream_state} as u
        inner join ema_dirty as d on u.symbol = d.symbol
        cross join (select unnest({periods}::integer[]) as period) as p
        where {kept}
    ),

    checked as (
        select
            pa.symbol,
            pa.tf,
            pa.period,
            coalesce(r.new_rows, 0) as new_rows,
            c.* exclude (symbol, tf, period),
            coalesce(
                c.as_of = s.last_source_ts
                and c.row_count = s.row_count
                and c.last_batch_id = s.last_batch_id
                and c.as_of < pa.dirty_from
                and c.row_count + coalesce(r.new_rows, 0) = pa.upstream_rows
                and (r.new_rows is null or c.closes_bar or r.first_bar_start = c.bar_start_date),
                false
            ) as resumable
        from partitions as pa
        left join recent as r on pa.symbol = r.symbol and pa.tf = r.tf
        left join {state} as s
            on pa.symbol = s.symbol and pa.tf = s.tf and pa.period = s.period
        left join {carry} as c
            on pa.symbol = c.symbol and pa.tf = c.tf and pa.period = c.period
    )

    select * exclude (resumable), bool_and(resumable) over (partition by symbol) as resumed
    from checked
"""


def _partitions(
    session: duckdb.DuckDBPyConnection,
    tables: _Tables,
    periods: tuple[int, ...],
    keep: EmaFilter,
) -> pa.Table:
    return session.sql(
        _PARTITIONS.format(
            upstream_tf="'1d'" if tables.daily else "u.tf",
            upstream_state=tables.upstream_state,
            periods=list(periods),
            kept=_kept_sql(keep, "'1d'" if tables.daily else "u.tf", "p.period"),
            state=tables.state,
            carry=tables.carry,
        )
    ).to_arrow_table()


_NO_ROWS = pa.table({"symbol": pa.array([], pa.string())})
_NO_PARTITIONS = pa.table(
    {
        "symbol": pa.array([], pa.string()),
        "tf": pa.array([], pa.string()),
        "period": pa.array([], pa.int32()),
    }
)


@dataclass(frozen=True)
class _Plan:
    """The dirty symbols split into resumed and recomputed, with what resuming needs."""

    recent: pa.Table  # the resumed symbols' rows (_RECENT_ROWS)
    carried: pa.Table  # their partitions with new rows (_PARTITIONS)
    recomputed: tuple[str, ...]


def _plan(
    session: duckdb.DuckDBPyConnection,
    bars: duckdb.DuckDBPyRelation,
    dirty: pa.Table,
    tables: _Tables,
    periods: tuple[int, ...],
    keep: EmaFilter,
) -> _Plan:
    symbols = dirty.column("symbol").to_pylist()
    if not tables.resumable:
        return _Plan(_NO_ROWS, _NO_PARTITIONS, tuple(symbols))
    assert tables.state is not None
    query = _RECENT_ROWS.format(
        columns=", ".join(f"b.{column}" for column in ROW_COLUMNS),
        oldest=oldest_watermark(session, tables.state),
        kept_tf=_kept_tfs_sql(keep, "b.tf"),
    )
    with _registered(session, "ema_dirty", dirty):
        recent = bars.query("bars", query).to_arrow_table()
        with _registered(session, "ema_recent", recent):
            partitions = _partitions(session, tables, periods, keep)
    resumed = pc.unique(partitions.filter(partitions.column("resumed")).column("symbol"))
    carried = partitions.filter(
        pc.and_(partitions.column("resumed"), pc.greater(partitions.column("new_rows"), 0))
    )
    recent = recent.filter(pc.is_in(recent.column("symbol"), value_set=resumed))
    resumed_set = set(resumed.to_pylist())
    return _Plan(recent, carried, tuple(s for s in symbols if s not in resumed_set))


def _picked_rows(
    session: duckdb.DuckDBPyConnection,
    bars: duckdb.DuckDBPyRelation,
    plan: _Plan,
    keep: EmaFilter,
) -> pa.Table:
    """The rows a run computes, numbered by series: the resumed symbols' recent rows and every row
    of the recomputed symbols."""
    parts = []
    if plan.recent.num_rows:
        parts.append(f"select {_ROW_COLUMNS} from ema_resumed_rows")
    if plan.recomputed:
        parts.append(
            f"select {_ROW_COLUMNS} from bars where symbol in ({_literals(plan.recomputed)})"
            f" and {_kept_tfs_sql(keep, 'tf')}"
        )
    if not parts:
        parts.append(f"select {_ROW_COLUMNS} from bars where false")
    query = _numbered(" union all ".join(parts), materialized=True)
    with _registered(session, "ema_resumed_rows", plan.recent):
        return bars.query("bars", query).to_arrow_table()


def _series_keys(rows: pa.Table) -> tuple[pa.Table, IntArray]:
    """The (symbol, tf, series) of each series of numbered rows, and their offsets."""
    count = int(pc.max(rows.column("series")).as_py()) + 1 if rows.num_rows else 0
    offsets = series_offsets(_numpy(rows, "series").astype(np.int64), count)
    first = offsets[:-1]
    keys = pa.table(
        {
            "symbol": rows.column("symbol").take(first),
            "tf": rows.column("tf").take(first),
            "series": pa.array(np.arange(count, dtype=np.int64)),
        }
    )
    return keys, offsets


def _rewritten_from(days: DayArray, offsets: IntArray, dirty_from: DayArray) -> DayArray:
    """Per series recomputed: the day of the row before its first on or after dirty_from (that
    row itself when it is the series' first; NO_ROW when the series has none)."""
    count = len(offsets) - 1
    series_of_row = np.repeat(np.arange(count), np.diff(offsets))
    later = np.bincount(series_of_row, weights=days >= dirty_from[series_of_row], minlength=count)
    later = later.astype(np.int64)
    first_later = offsets[1:] - later
    row = np.maximum(first_later - 1, offsets[:-1])
    found = np.full(count, NO_ROW, np.int32)
    has = later > 0
    found[has] = days[row[has]]
    return found


def _stored_partitions(
    session: duckdb.DuckDBPyConnection, state: str | None, symbols: Sequence[str]
) -> pa.Table:
    if state is None or not symbols:
        return _NO_PARTITIONS
    return session.sql(
        f"select symbol, tf, period from {state} where symbol in ({_literals(symbols)})"
    ).to_arrow_table()


def _series_start(
    rows: pa.Table,
    plan: _Plan,
    dirty: pa.Table,
    stored: pa.Table,
    periods: tuple[int, ...],
    keep: EmaFilter,
) -> SeriesStart:
    """Per series and period: the carry of the resumed ones, written_from for all."""
    keys, offsets = _series_keys(rows)
    count = keys.num_rows
    start = SeriesStart.fresh(count, periods)
    if count == 0:
        return start
    tfs = keys.column("tf").to_pylist()
    resumed_symbols = pc.unique(plan.recent.column("symbol"))
    resumed = pc.is_in(keys.column("symbol"), value_set=resumed_symbols).to_numpy(
        zero_copy_only=False
    )
    dirty_from = _days(
        keys.join(dirty, "symbol", join_type="left outer").sort_by("series").column("dirty_from")
    )
    rewritten_from = _rewritten_from(_days(rows.column("bar_date")), offsets, dirty_from)
    carried = plan.carried.join(keys, ["symbol", "tf"], join_type="inner")
    stored_keys = stored.join(keys, ["symbol", "tf"], join_type="inner")
    for period in periods:
        kept_tfs = {tf: keep.keeps(tf, period) for tf in set(tfs)}
        kept = np.array([kept_tfs[tf] for tf in tfs], dtype=bool)
        has_state = np.zeros(count, dtype=bool)
        mine = stored_keys.filter(pc.equal(stored_keys.column("period"), period))
        has_state[_numpy(mine, "series").astype(np.int64)] = True
        written_from = start.written_from[period]
        written_from[:] = np.where(has_state, rewritten_from, EVERY_ROW)
        written_from[resumed] = EVERY_ROW
        written_from[~kept] = NO_ROW
        fill_carry(start, period, carried.filter(pc.equal(carried.column("period"), period)))
    return start


def fill_carry(start: SeriesStart, period: int, carried: pa.Table) -> None:
    """Resume series from their carry: `carried` holds CARRY_SCHEMA rows of one period with the
    `series` id each continues."""
    if carried.num_rows == 0:
        return
    series = _numpy(carried, "series").astype(np.int64)
    carry = start.carry[period]
    carry.bars.count[series] = _numpy(carried, "bars_count")
    carry.bars.total[series] = _numpy(carried, "bars_total")
    carry.bars.last[series] = carried.column("ema_bar").to_numpy(zero_copy_only=False)
    carry.days.count[series] = _numpy(carried, "row_count")
    carry.days.total[series] = _numpy(carried, "days_total")
    carry.days.last[series] = carried.column("ema_v2").to_numpy(zero_copy_only=False)
    start.batch_before[series] = _numpy(carried, "last_batch_id")


def _incremental_inputs(
    dbt: Any,
    session: duckdb.DuckDBPyConnection,
    bars: duckdb.DuckDBPyRelation,
    periods: tuple[int, ...],
    *,
    daily: bool,
) -> ModelInputs:
    """The rows to compute (resumed symbols' new rows, recomputed symbols' every row) and where
    each series starts."""
    database, model = dbt.this.database, dbt.this.identifier
    tables = _Tables(
        state=state_table(session, database, model),
        carry=carry_relation(session, database, model),
        upstream_state=state_table(session, database, EMA_MODELS[model]),
        daily=daily,
    )
    if tables.state is not None:
        _check_same_periods(model, _stored_periods(session, tables.state), periods)
    keep = partition_filter(dbt.vars)
    periods = _kept_periods(keep, periods)
    dirty = dirty_symbols(
        session,
        bars,
        dbt.this,
        "bar_date",
        only_symbols=dbt.vars.get("symbols") or (),
        exclude_symbols=dbt.vars.get("exclude_symbols") or (),
        upstream_state=tables.upstream_state,
    ).to_arrow_table()
    plan = _plan(session, bars, dirty, tables, periods, keep)
    rows = _picked_rows(session, bars, plan, keep)
    stored = _stored_partitions(session, tables.state, plan.recomputed)
    return ModelInputs(rows, periods, _series_start(rows, plan, dirty, stored, periods, keep))


def _kept_periods(keep: EmaFilter, periods: tuple[int, ...]) -> tuple[int, ...]:
    """The periods of at least one partition `keep` may recompute."""
    combo_periods = {period for _, period in keep.combos}
    return tuple(
        period
        for period in periods
        if (not keep.periods or period in keep.periods)
        and (not keep.combos or period in combo_periods)
    )


def model_inputs(
    dbt: Any,
    session: duckdb.DuckDBPyConnection,
    upstream: duckdb.DuckDBPyRelation,
    periods: tuple[int, ...],
    *,
    daily: bool,
) -> ModelInputs:
    """What a model run computes from: every row on a full build; on an incremental run the new
    rows of the resumed symbols and every row of the recomputed ones, in the (tf, period)
    partitions the vars `tfs`, `periods` and `tf_periods` keep (a full build makes them all).

    `dbt` needs `this`, `is_incremental` and `vars` (symbols, exclude_symbols and the partition
    filters), as a dbt Python model's object has them (macros/python/py_script_comment.sql).
    """
    bars = upstream.query("bars_source", _DAILY_ROWS if daily else _FAMILY_ROWS)
    if dbt.is_incremental:
        return _incremental_inputs(dbt, session, bars, periods, daily=daily)
    rows = bars.query("bars", _numbered("select * from bars", materialized=False)).to_arrow_table()
    count = int(pc.max(rows.column("series")).as_py()) + 1 if rows.num_rows else 0
    return ModelInputs(rows, periods, SeriesStart.fresh(count, periods))


def stage_carry(session: duckdb.DuckDBPyConnection, model: str, carry: pa.Table) -> None:
    """Hand the carry to the post-hook update_ema_carry() (macros/emas/carry.sql): a temp table of
    this connection, which dbt runs the model's hooks on."""
    with _registered(session, "ema_carry_out", carry):
        session.execute(
            f'create or replace temp table "{model}{STAGED_CARRY_SUFFIX}" as '
            "select * from ema_carry_out"
        )


def ema_model(
    dbt: Any,
    session: duckdb.DuckDBPyConnection,
    upstream: duckdb.DuckDBPyRelation,
    ema_periods: object,
    *,
    daily: bool,
) -> pa.Table:
    """A dbt Python model's rows: EMAs over the bars of `upstream` (bars_1d when `daily`, else a bar
    family), all of them on a full build, the dirty symbols' otherwise; the carry of the partitions
    written goes to the post-hook. `dbt` also brings the run's `invocation_id`
    (macros/python/py_script_comment.sql)."""
    periods = validated_periods(ema_periods)
    inputs = model_inputs(dbt, session, upstream, periods, daily=daily)
    output = ema_table(inputs, dbt.invocation_id)
    stage_carry(session, dbt.this.identifier, output.carry)
    return output.rows
