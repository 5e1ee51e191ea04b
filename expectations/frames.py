"""Derived frames for the table-level and cross-row checks, computed in DuckDB.

A check such as "rows per symbol match the calendar" or "no symbol vanished on the latest date" is
not a property of one row. Each function here returns the SQL of a small frame (one row per
symbol, or per symbol and timeframe) whose columns make the check a per-row expectation; the gate
then validates that frame with Great Expectations like any table.

Listed symbols: a symbol is expected to trade on the table's newest date unless stg_symbols says
otherwise on every exchange it is listed on (a status other than TRADING, or delisted on or before
that date). Symbols without metadata are expected to trade.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from expectations.tables import Query, Scope, state_relation
from ingest.intervals import INTERVAL_MICROS, MICROS_PER_DAY

Frame = Callable[[Scope], Query]

DAILY_BARS = "main.bars_1d"
SYMBOLS = "main.stg_symbols"
RAW_KLINES = "raw.klines"
# The klines bars_1d is built from: the daily interval and every interval that divides a day
# (macro daily_source_intervals: '1d' plus var intraday_intervals).
DAILY_SOURCE_INTERVALS: tuple[str, ...] = tuple(
    interval for interval, micros in INTERVAL_MICROS.items() if micros <= MICROS_PER_DAY
)


def _listed_ctes(daily: str) -> str:
    """CTEs `daily` (symbol, bar_date), `newest` (latest_date) and `listed` (symbol, is_listed)."""
    return f"""
        daily as (
            select symbol, bar_date from {daily}
        ),
        newest as (
            select max(bar_date) as latest_date from daily
        ),
        listed as (
            select
                s.symbol,
                bool_or(
                    coalesce(s.status, 'TRADING') = 'TRADING'
                    and coalesce(cast(s.delisted_at as date) > n.latest_date, true)
                ) as is_listed
            from {SYMBOLS} as s
            cross join newest as n
            group by s.symbol
        )
    """


def latest_date_presence(_: Scope) -> Query:
    """Per listed symbol with a bar on the table's previous date: is it on the latest date too?

    The previous date is the newest bar date before the latest one. Whole table, whatever the slice:
    a refresh that loaded the new day for some symbols is exactly when another one goes missing.
    """
    return Query(f"""
        with {_listed_ctes(DAILY_BARS)},
        previous as (
            select max(d.bar_date) as previous_date
            from daily as d
            cross join newest as n
            where d.bar_date < n.latest_date
        )
        select
            p.symbol,
            pr.previous_date,
            n.latest_date,
            l.symbol is not null as is_on_latest_date
        from daily as p
        cross join previous as pr
        cross join newest as n
        left join daily as l on l.symbol = p.symbol and l.bar_date = n.latest_date
        left join listed as s on s.symbol = p.symbol
        where p.bar_date = pr.previous_date and coalesce(s.is_listed, true)
    """)


def freshness(_: Scope) -> Query:
    """Per listed symbol: its last bar date and how many days it is behind the table's newest bar.

    Whole table, whatever the slice (a symbol the refresh did not touch is the one going stale).
    """
    return Query(f"""
        with {_listed_ctes(DAILY_BARS)}
        select
            d.symbol,
            max(d.bar_date) as last_bar_date,
            n.latest_date,
            cast(datediff('day', max(d.bar_date), n.latest_date) as bigint) as days_behind
        from daily as d
        cross join newest as n
        left join listed as s on s.symbol = d.symbol
        where coalesce(s.is_listed, true)
        group by d.symbol, n.latest_date
    """)


def daily_bars_calendar(scope: Scope) -> Query:
    """Per symbol: daily bars, calendar days from its first to its last bar, and source days.

    Source days are the UTC days with at least one staged kline bars_1d is built from; the other
    calendar days are the gaps the source left (kline_gaps flags them per interval). Every source
    day must have exactly one daily bar. A symbol with klines and no bars shows 0 rows.

    The staged klines are the latest revision of each raw kline, so their days are read from the
    raw klines' first revisions (one row per kline: raw is append-only and numbers a kline's
    revisions from 1, which the raw gate checks), not through the view, which ranks every revision
    of every kline first. A daily kline is a day of its own; only the days of intraday klines are
    deduplicated, and only those without a daily kline.
    """
    symbols = scope.symbols
    intraday = ", ".join(f"'{interval}'" for interval in DAILY_SOURCE_INTERVALS if interval != "1d")
    return Query(
        f"""
        with bars as (
            select
                symbol,
                min(bar_date) as first_bar_date,
                max(bar_date) as last_bar_date,
                cast(count(*) as bigint) as row_count
            from {DAILY_BARS}
            where {symbols.where("symbol")}
            group by symbol
        ),
        daily_klines as (
            select symbol, cast(count(*) as bigint) as days
            from {RAW_KLINES}
            where interval = '1d' and revision = 1 and {symbols.where("symbol")}
            group by symbol
        ),
        intraday_days as (
            select symbol, cast(count(distinct cast(open_time as date)) as bigint) as days
            from {RAW_KLINES} as k
            where k.interval in ({intraday}) and k.revision = 1 and {symbols.where("k.symbol")}
                and not exists (
                    select 1 from {RAW_KLINES} as d
                    where d.symbol = k.symbol and d.interval = '1d' and d.revision = 1
                        and cast(d.open_time as date) = cast(k.open_time as date)
                )
            group by symbol
        ),
        sources as (
            select
                coalesce(d.symbol, i.symbol) as symbol,
                coalesce(d.days, 0) + coalesce(i.days, 0) as source_days
            from daily_klines as d
            full join intraday_days as i on d.symbol = i.symbol
        )
        select
            coalesce(b.symbol, s.symbol) as symbol,
            b.first_bar_date,
            b.last_bar_date,
            coalesce(b.row_count, 0) as row_count,
            coalesce(cast(datediff('day', b.first_bar_date, b.last_bar_date) + 1 as bigint), 0)
                as calendar_days,
            coalesce(s.source_days, 0) as source_days
        from bars as b
        full join sources as s on b.symbol = s.symbol
        """,
        symbols.params,
    )


def _daily_rows_cte(scope: Scope) -> str:
    return f"""
        daily_rows as (
            select symbol, row_count as daily_bar_rows
            from ({partition_rows(DAILY_BARS, ("symbol",), scope)}) as d
        )
    """


def returns_calendar(scope: Scope) -> Query:
    """Per symbol: returns rows, daily bars, calendar days and the missing days the returns flag.

    A return spanning missing days carries `days_spanned - 1` of them, so rows plus flagged missing
    days must equal the calendar days from the first to the last return's bar.
    """
    symbols = scope.symbols
    return Query(
        f"""
        with {_daily_rows_cte(scope)},
        returns as (
            select
                symbol,
                min(bar_date) as first_bar_date,
                max(bar_date) as last_bar_date,
                cast(count(*) as bigint) as row_count,
                cast(
                    coalesce(sum(case when spans_missing_days then days_spanned - 1 end), 0)
                    as bigint
                ) as flagged_missing_days
            from main.returns_daily
            where {symbols.where("symbol")}
            group by symbol
        )
        select
            coalesce(r.symbol, d.symbol) as symbol,
            r.first_bar_date,
            r.last_bar_date,
            coalesce(r.row_count, 0) as row_count,
            coalesce(d.daily_bar_rows, 0) as daily_bar_rows,
            coalesce(r.flagged_missing_days, 0) as flagged_missing_days,
            coalesce(r.row_count + r.flagged_missing_days, 0) as covered_days,
            coalesce(cast(datediff('day', r.first_bar_date, r.last_bar_date) + 1 as bigint), 0)
                as calendar_days
        from returns as r
        full join daily_rows as d on r.symbol = d.symbol
        """,
        symbols.params,
    )


def daily_panel_coverage(relation: str) -> Frame:
    """Per symbol: rows of a (symbol, bar_date) table next to the symbol's daily bars."""

    def frame(scope: Scope) -> Query:
        return Query(
            f"""
            with {_daily_rows_cte(scope)},
            panel as (
                select symbol, cast(count(*) as bigint) as row_count
                from {relation}
                where {scope.symbols.where("symbol")}
                group by symbol
            )
            select
                coalesce(p.symbol, d.symbol) as symbol,
                coalesce(p.row_count, 0) as row_count,
                coalesce(d.daily_bar_rows, 0) as daily_bar_rows
            from panel as p
            full join daily_rows as d on p.symbol = d.symbol
            """,
            scope.symbols.params,
        )

    return frame


def partition_rows(relation: str, partition: Sequence[str], scope: Scope) -> str:
    """SQL of (partition..., row_count) of `relation` for the scope's symbols.

    From the model's state table where the scope allows it (a slice, and the state accounts for
    every row): aggregating every row of every symbol a daily refresh touched is what a gate
    cannot afford on the bar families and EMA marts (tens of millions of rows).
    """
    columns = ", ".join(partition)
    where = scope.symbols.where("symbol")
    if relation in scope.counted_by_state:
        return f"select {columns}, row_count from {state_relation(relation)} where {where}"
    return f"""
        select {columns}, cast(count(*) as bigint) as row_count
        from {relation}
        where {where}
        group by {columns}
    """


def _counted(relation: str, scope: Scope) -> str:
    """What to read a column of every partition from (e.g. the distinct timeframes)."""
    return str(state_relation(relation)) if relation in scope.counted_by_state else relation


def family_coverage(relation: str) -> Frame:
    """Per symbol and timeframe of a bar family: its rows, the symbol's daily bars, and orphans.

    Every symbol with daily bars is paired with every timeframe of the family (0 rows when the
    family has none); an orphan is a row of the scope whose (symbol, bar_date) has no daily bar.
    """

    def frame(scope: Scope) -> Query:
        symbols = scope.symbols
        return Query(
            f"""
            with {_daily_rows_cte(scope)},
            timeframes as (
                select distinct tf from {_counted(relation, scope)}
            ),
            expected as (
                select d.symbol, t.tf, d.daily_bar_rows
                from daily_rows as d
                cross join timeframes as t
            ),
            counts as (
                {partition_rows(relation, ("symbol", "tf"), scope)}
            ),
            orphans as (
                -- not exists, not a left join: DuckDB would hash all the daily bars for a slice
                select f.symbol, f.tf, cast(count(*) as bigint) as orphan_rows
                from ({scope.rows.sql}) as f
                where not exists (
                    select 1 from {DAILY_BARS} as d
                    where d.symbol = f.symbol and d.bar_date = f.bar_date
                )
                group by f.symbol, f.tf
            ),
            keys as (
                select symbol, tf from expected
                union
                select symbol, tf from counts
                union
                select symbol, tf from orphans
            )
            select
                k.symbol,
                k.tf,
                coalesce(c.row_count, 0) as row_count,
                coalesce(e.daily_bar_rows, 0) as daily_bar_rows,
                coalesce(o.orphan_rows, 0) as orphan_rows
            from keys as k
            left join expected as e on k.symbol = e.symbol and k.tf = e.tf
            left join counts as c on k.symbol = c.symbol and k.tf = c.tf
            left join orphans as o on k.symbol = o.symbol and k.tf = o.tf
            """,
            {**scope.rows.params, **symbols.params},
        )

    return frame


_EMA_RANGE = """
    least(min(ema), min(ema_bar), min(ema_v2)) as lowest_ema,
    greatest(max(ema), max(ema_bar), max(ema_v2)) as highest_ema
"""


def _ema_rows(emas: str, scope: Scope) -> str:
    """SQL of (symbol, tf, ema_rows, lowest_ema, highest_ema) for the scope's symbols.

    Where the state counts the rows, the range is taken on the rows of the scope (an EMA row
    depends on the closes up to its day only, and those are recomputed with it); else rows and
    range come from one pass over every row of the symbols.
    """
    if emas not in scope.counted_by_state:
        return f"""
            select symbol, tf, cast(count(*) as bigint) as ema_rows, {_EMA_RANGE}
            from {emas}
            where {scope.symbols.where("symbol")}
            group by symbol, tf
        """
    return f"""
        with counts as (
            select symbol, tf, cast(sum(row_count) as bigint) as ema_rows
            from ({partition_rows(emas, ("symbol", "tf", "period"), scope)}) as e
            group by symbol, tf
        ),
        ranges as (
            select symbol, tf, {_EMA_RANGE}
            from ({scope.rows.sql}) as r
            group by symbol, tf
        )
        select
            coalesce(c.symbol, r.symbol) as symbol,
            coalesce(c.tf, r.tf) as tf,
            c.ema_rows,
            r.lowest_ema,
            r.highest_ema
        from counts as c
        full join ranges as r on c.symbol = r.symbol and c.tf = r.tf
    """


def ema_coverage(emas: str, bars: str) -> Frame:
    """Per symbol and timeframe: EMA rows against bar rows times periods, and the EMAs' range.

    An EMA (bar-space, preview or time-space) is a weighted mean of daily closes, so it lies within
    the symbol's lowest and highest close; the bounds get 1e-9 of relative slack for rounding.
    `bars` is a bar family, or bars_1d (its timeframe is '1d').
    """
    daily = bars == DAILY_BARS
    bar_tf = "'1d'" if daily else "tf"
    bar_partition = ("symbol",) if daily else ("symbol", "tf")

    def frame(scope: Scope) -> Query:
        symbols = scope.symbols
        params = symbols.params
        if emas in scope.counted_by_state:
            params = {**scope.rows.params, **params}
        return Query(
            f"""
            with bar_rows as (
                select symbol, {bar_tf} as tf, cast(sum(row_count) as bigint) as bar_rows
                from ({partition_rows(bars, bar_partition, scope)}) as b
                group by all
            ),
            ema_rows as (
                {_ema_rows(emas, scope)}
            ),
            periods as (
                select cast(count(distinct period) as bigint) as period_count
                from {_counted(emas, scope)}
            ),
            closes as (
                select symbol, min(close) as lowest_close, max(close) as highest_close
                from {DAILY_BARS}
                where {symbols.where("symbol")}
                group by symbol
            )
            select
                coalesce(b.symbol, e.symbol) as symbol,
                coalesce(b.tf, e.tf) as tf,
                coalesce(e.ema_rows, 0) as ema_rows,
                coalesce(b.bar_rows, 0) * p.period_count as expected_ema_rows,
                e.lowest_ema,
                c.lowest_close * (1 - 1e-9) as close_floor,
                e.highest_ema,
                c.highest_close * (1 + 1e-9) as close_ceiling
            from bar_rows as b
            full join ema_rows as e on b.symbol = e.symbol and b.tf = e.tf
            cross join periods as p
            left join closes as c on c.symbol = coalesce(b.symbol, e.symbol)
            """,
            params,
        )

    return frame


def raw_revision_history(scope: Scope) -> Query:
    """Per raw kline key stored more than once or above revision 1: its revision numbering.

    Revisions of a key are numbered 1, 2, ... n without gaps or repeats. Keys stored once at
    revision 1 (nearly all of them) cannot break that and are left out to keep the frame small.
    """
    return Query(
        f"""
        select
            symbol,
            interval,
            open_time,
            cast(count(*) as bigint) as revision_count,
            cast(min(revision) as bigint) as first_revision,
            cast(max(revision) as bigint) as last_revision
        from ({scope.rows.sql}) as k
        group by symbol, interval, open_time
        having count(*) > 1 or max(revision) > 1
        """,
        scope.rows.params,
    )
