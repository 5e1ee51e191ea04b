-- Per symbol with daily bars: the last bar date (from the state table of bars_1d, the truth of
-- progress), when its data was last loaded, how many days it is behind the as-of date, and whether
-- that is stale. A complete daily bar exists up to yesterday (UTC), so an up-to-date symbol is 1 day
-- behind. Only trading symbols (and symbols without metadata) can be stale.
-- Vars: stale_after_days (default 2), freshness_as_of (YYYY-MM-DD, default the run's UTC start date).

{%- set as_of = var('freshness_as_of', none) or run_started_at.strftime('%Y-%m-%d') %}

with bar_state as (
    select * from {{ source('state', 'bars_1d') }}
),

symbols as (
    select * from {{ ref('dim_symbols') }}
),

symbol_loads as (
    select * from {{ source('raw', 'symbol_loads') }}
),

klines as (
    select * from {{ source('raw', 'klines') }}
),

load_times as (
    select
        symbol,
        max(loaded_at) as last_loaded_at
    from (
        select
            symbol,
            loaded_at
        from symbol_loads
        union all
        select
            symbol,
            max(loaded_at) as loaded_at
        from klines
        group by symbol
    ) as loads
    group by symbol
),

measured as (
    select
        s.symbol,
        m.status,
        cast(s.last_source_ts as date) as last_bar_date,
        s.updated_at as bars_updated_at,
        l.last_loaded_at,
        cast('{{ as_of }}' as date) as as_of_date,
        cast({{ var('stale_after_days') }} as integer) as stale_after_days
    from bar_state as s
    left join symbols as m
        on s.symbol = m.symbol
    left join load_times as l
        on s.symbol = l.symbol
),

behind as (
    select
        *,
        cast(
            {{ dbt.datediff('last_bar_date', 'as_of_date', 'day') }}
            as integer
        ) as days_behind
    from measured
),

final as (
    select
        *,
        coalesce(status, 'TRADING') = 'TRADING' and days_behind > stale_after_days as is_stale
    from behind
)

select * from final
