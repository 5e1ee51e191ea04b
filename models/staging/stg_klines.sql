-- Latest revision of every kline, with OHLC repaired: a high (low) below (above) the open/close range
-- is set to the range's max (min) and flagged. Nothing else is changed.
with klines as (
    select * from {{ source('raw', 'klines') }}
),

latest as (
    select *
    from klines
    qualify row_number() over (
        partition by symbol, interval, open_time
        order by revision desc nulls last
    ) = 1
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
