-- Latest revision of every kline, with OHLC repaired: a high (low) below (above) the open/close range
-- is set to the range's max (min) and flagged. Nothing else is changed.
--
-- A key is stored once, except when revised (or, a fault the raw gate reports, the same revision
-- stored twice): only those few keys need a latest row picked (the highest revision, then the row
-- stored last), by a join to them rather than a window over every raw kline, which lets a model
-- reading a few symbols' recent klines read only those.
with klines as (
    select
        rowid as raw_row,
        *
    from {{ source('raw', 'klines') }}
),

repeated as (
    select
        symbol,
        interval,
        open_time,
        arg_max(raw_row, struct_pack(revision := revision, raw_row := raw_row)) as kept_row
    from klines
    group by symbol, interval, open_time
    having count(*) > 1
),

latest as (
    select k.*
    from klines as k
    left join repeated as r
        on
            k.symbol = r.symbol
            and k.interval = r.interval
            and k.open_time = r.open_time
    where r.kept_row is null or k.raw_row = r.kept_row
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
