{{
    config(
        range_column='bar_date',
        partition_keys=['symbol'],
        post_hook="{{ update_state() }}",
    )
}}
-- Canonical daily bars: the day's daily kline, or, for a day without one, the day aggregated from
-- its coarsest intraday interval (with the count of source bars and whether the day is complete).

with klines as (
    select * from {{ ref('stg_klines') }}
    where interval in {{ daily_source_intervals() }}
),

{% if is_incremental() %}
    dirty as (
        {{ dirty_symbols(
            "(select * from " ~ source('raw', 'klines') ~ " where interval in " ~ daily_source_intervals() ~ ")",
            'open_time', 'batch_id'
        ) }}
    ),
{% endif %}

scoped as (
    select
        k.*,
        cast(k.open_time as date) as bar_date,
        {{ interval_seconds('k.interval') }} as interval_seconds
    from klines as k
    {% if is_incremental() %}
        inner join dirty as d
            on
                k.symbol = d.symbol
                and k.open_time >= cast(cast(d.dirty_from as date) as timestamp)
    {% endif %}
),

with_extremes as (
    select
        *,
        max(high) over (partition by symbol, bar_date, interval) as interval_high,
        min(low) over (partition by symbol, bar_date, interval) as interval_low,
        max(source_batch_id) over (partition by symbol, bar_date) as day_batch_id
    from scoped
),

per_interval as (
    select
        symbol,
        bar_date,
        interval,
        interval_seconds,
        min_by(open, open_time) as open,
        max(high) as high,
        min(low) as low,
        max_by(close, open_time) as close,
        sum(volume) as volume,
        sum(quote_volume) as quote_volume,
        cast(sum(trade_count) as bigint) as trade_count,
        sum(taker_buy_base_volume) as taker_buy_base_volume,
        sum(taker_buy_quote_volume) as taker_buy_quote_volume,
        min(case when high = interval_high then open_time end) as time_high,
        min(case when low = interval_low then open_time end) as time_low,
        cast(count(*) as integer) as source_bar_count,
        cast(86400 / interval_seconds as integer) as expected_bar_count,
        bool_or(repaired_high) as repaired_high,
        bool_or(repaired_low) as repaired_low,
        max(day_batch_id) as source_batch_id
    from with_extremes
    group by symbol, bar_date, interval, interval_seconds
),

final as (
    select
        symbol,
        bar_date,
        cast(bar_date as timestamp) as open_time,
        open,
        high,
        low,
        close,
        volume,
        quote_volume,
        trade_count,
        taker_buy_base_volume,
        taker_buy_quote_volume,
        time_high,
        time_low,
        interval as source_interval,
        source_bar_count,
        expected_bar_count,
        source_bar_count = expected_bar_count as is_complete_day,
        repaired_high,
        repaired_low,
        source_batch_id,
        '{{ invocation_id }}' as invocation_id
    from per_interval
    qualify row_number() over (
        partition by symbol, bar_date
        order by interval_seconds desc nulls last
    ) = 1
)

select * from final
