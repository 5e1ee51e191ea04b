-- Every gap between consecutive klines of a symbol and interval: at least one whole interval with no
-- kline between two stored ones. The gap covers [gap_start_at, gap_end_at): from the open time the
-- next bar should have had to the open time of the bar that came. Spacing that is not a whole number
-- of intervals (a misaligned bar) only counts the whole intervals that fit.
-- A table rebuilt every run: a gap filled by a later load must disappear, which a per-symbol range
-- replacement cannot express when the filled range emits no row.

with klines as (
    select
        symbol,
        interval,
        open_time
    from {{ ref('stg_klines') }}
),

with_next as (
    select
        symbol,
        interval,
        open_time as prev_open_time,
        lead(open_time) over (
            partition by symbol, interval order by open_time asc nulls last
        ) as next_open_time,
        {{ interval_seconds('interval') }} as interval_seconds
    from klines
),

measured as (
    select
        *,
        case
            when interval = '1mo'
                then {{ dbt.datediff('prev_open_time', 'next_open_time', 'month') }}
            else floor(
                {{ dbt.datediff('prev_open_time', 'next_open_time', 'second') }}
                / interval_seconds
            )
        end as intervals_spanned
    from with_next
    where next_open_time is not null
),

final as (
    select
        symbol,
        interval,
        prev_open_time,
        next_open_time,
        case
            when interval = '1mo' then {{ dbt.dateadd('month', 1, 'prev_open_time') }}
            else {{ dbt.dateadd('second', 'interval_seconds', 'prev_open_time') }}
        end as gap_start_at,
        next_open_time as gap_end_at,
        cast(intervals_spanned - 1 as bigint) as missing_bar_count
    from measured
    where intervals_spanned > 1
)

select * from final
