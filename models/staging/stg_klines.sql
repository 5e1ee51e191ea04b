-- Latest revision of every kline, with OHLC repaired: a high (low) below (above) the open/close range
-- is set to the range's max (min) and flagged. Nothing else is changed.
--
-- Revisions of a key are numbered 1, 2, ... (the raw revision suite checks it), so only the few keys
-- stored above revision 1 need their latest revision looked up: a join to those keys, not a window
-- over every raw row, which lets a model reading a few symbols' recent klines read only those.
with klines as (
    select * from {{ source('raw', 'klines') }}
),

revised as (
    select
        symbol,
        interval,
        open_time,
        max(revision) as latest_revision
    from {{ source('raw', 'klines') }}
    where revision > 1
    group by symbol, interval, open_time
),

latest as (
    select k.*
    from klines as k
    left join revised as r
        on
            k.symbol = r.symbol
            and k.interval = r.interval
            and k.open_time = r.open_time
    where r.latest_revision is null or k.revision = r.latest_revision
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
