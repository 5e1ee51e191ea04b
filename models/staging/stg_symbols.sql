-- Latest revision of each symbol's exchange metadata.
with symbols as (
    select * from {{ source('raw', 'symbols') }}
),

final as (
    select
        symbol,
        exchange,
        status,
        base_asset,
        quote_asset,
        tick_size,
        step_size,
        min_qty,
        listed_at,
        delisted_at,
        batch_id as source_batch_id,
        loaded_at
    from symbols
    qualify row_number() over (
        partition by symbol, exchange
        order by revision desc nulls last
    ) = 1
)

select * from final
