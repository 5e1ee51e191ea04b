-- Sleeve universe by day: which symbols does the all-long ratings sleeve keep on each day?
-- The sleeve's rule (DOMAIN.md, "Scanners"): rating_all > -0.3 (var universe_min_rating). One row per
-- day and symbol kept, with the day's universe size and the symbol's rank in it (best rating first).
-- Only the rating rule: the scanner configs/scanners/binance_spot_rating_all_long.yml adds liquidity
-- and listing-age filters on top. A symbol whose rating is null (indicators still warming up) is not
-- kept; a day where no symbol is kept has no row.
-- Run: dbt compile -q --select sleeve_universe_by_day | python orchestrate.py sql - --format csv

with features as (
    select
        bar_date,
        symbol,
        rating_all
    from {{ ref('features_matrix') }}
),

kept as (
    select
        bar_date,
        symbol,
        rating_all
    from features
    where rating_all > {{ var('universe_min_rating', -0.3) }}
),

final as (
    select
        bar_date,
        symbol,
        rating_all,
        cast(count(*) over (partition by bar_date) as integer) as universe_size,
        cast(
            row_number() over (
                partition by bar_date order by rating_all desc nulls last, symbol asc nulls last
            ) as integer
        ) as universe_rank
    from kept
)

select * from final
order by bar_date, universe_rank
