-- One row per symbol: its latest exchange metadata (the most recently loaded, when a symbol is listed
-- on several exchanges) and the range of its daily bars. Symbols with bars but no metadata, and
-- metadata without bars, are both kept.

with symbols as (
    select * from {{ ref('stg_symbols') }}
),

bars as (
    select * from {{ ref('bars_1d') }}
),

ranked_metadata as (
    select
        *,
        row_number() over (
            partition by symbol
            order by loaded_at desc nulls last, exchange asc nulls last
        ) as metadata_rank
    from symbols
),

latest_metadata as (
    select * from ranked_metadata
    where metadata_rank = 1
),

bar_ranges as (
    select
        symbol,
        min(bar_date) as first_bar_date,
        max(bar_date) as last_bar_date,
        cast(count(*) as bigint) as bar_count
    from bars
    group by symbol
),

final as (
    select
        coalesce(m.symbol, b.symbol) as symbol,
        m.exchange,
        m.status,
        m.base_asset,
        m.quote_asset,
        m.tick_size,
        m.step_size,
        m.min_qty,
        m.listed_at,
        m.delisted_at,
        m.loaded_at as metadata_loaded_at,
        b.first_bar_date,
        b.last_bar_date,
        coalesce(b.bar_count, 0) as bar_count,
        cast(
            {{ dbt.datediff('b.first_bar_date', 'b.last_bar_date', 'day') }}
            + 1 - b.bar_count as bigint
        ) as missing_day_count,
        m.symbol is not null as has_metadata,
        b.symbol is not null as has_bars
    from latest_metadata as m
    full outer join bar_ranges as b
        on m.symbol = b.symbol
)

select * from final
