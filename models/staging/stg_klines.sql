-- Latest revision of every kline, with OHLC repaired: a high (low) below (above) the open/close range
-- is set to the range's max (min) and flagged. Nothing else is changed.
--
-- A key is stored once, except when revised (or, a fault the raw gate reports, the same revision
-- stored twice): only those few keys need their latest row picked (the highest revision, then the
-- latest batch and load), by a window over their rows alone rather than over every raw kline, which
-- lets a model reading a few symbols' recent klines read only those.
with repeated as (
    select
        symbol,
        interval,
        open_time
    from {{ source('raw', 'klines') }}
    group by symbol, interval, open_time
    having count(*) > 1
),

stored_once as (
    select k.*
    from {{ source('raw', 'klines') }} as k
    left join repeated as r
        on
            k.symbol = r.symbol
            and k.interval = r.interval
            and k.open_time = r.open_time
    where r.symbol is null
),

latest_of_repeated as (
    select k.*
    from {{ source('raw', 'klines') }} as k
    inner join repeated as r
        on
            k.symbol = r.symbol
            and k.interval = r.interval
            and k.open_time = r.open_time
    qualify row_number() over (
        partition by k.symbol, k.interval, k.open_time
        order by k.revision desc nulls last, k.batch_id desc, k.loaded_at desc
    ) = 1
),

latest as (
    select * from stored_once
    union all
    select * from latest_of_repeated
),

final as (
    select
        symbol,
        interval,
        open_time,
        close_time,
        open,
        greatest(high, open, close) as high,
        least(low, open, close) as low,
        close,
        volume,
        quote_volume,
        trade_count,
        taker_buy_base_volume,
        taker_buy_quote_volume,
        high < greatest(open, close) as repaired_high,
        low > least(open, close) as repaired_low,
        revision,
        source,
        batch_id as source_batch_id,
        loaded_at
    from latest
)

select * from final
