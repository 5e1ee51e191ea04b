-- Top movers by rating change: which symbols' All rating moved most on a day?
-- rating_all (features_matrix, -1 strong sell .. +1 strong buy) on the as-of day against the symbol's
-- previous daily row (prev_bar_date: an earlier day when days are missing), risers and fallers alike,
-- largest move first. Symbols whose rating is null on either day (indicators still warming up) are
-- left out.
-- Vars: movers_as_of (YYYY-MM-DD; default the latest bar_date of features_matrix), movers_top_n
-- (default 10).
-- Run: dbt compile -q --select top_movers_by_rating_change | python orchestrate.py sql -

with features as (
    select
        symbol,
        bar_date,
        rating_all
    from {{ ref('features_matrix') }}
),

as_of as (
    {% if var('movers_as_of', none) -%}
        select cast('{{ var("movers_as_of") }}' as date) as as_of_date
    {%- else -%}
        select max(bar_date) as as_of_date
        from features
    {%- endif %}
),

with_previous as (
    select
        symbol,
        bar_date,
        rating_all,
        lag(bar_date) over by_symbol as prev_bar_date,
        lag(rating_all) over by_symbol as prev_rating_all
    from features
    window by_symbol as (partition by symbol order by bar_date asc nulls last)
),

moves as (
    select
        w.symbol,
        w.bar_date,
        w.prev_bar_date,
        w.prev_rating_all,
        w.rating_all,
        w.rating_all - w.prev_rating_all as rating_change
    from with_previous as w
    inner join as_of as a on w.bar_date = a.as_of_date
    where w.rating_all is not null and w.prev_rating_all is not null
),

ranked as (
    select
        *,
        case
            when rating_change > 0 then 'up'
            when rating_change < 0 then 'down'
            else 'flat'
        end as direction,
        cast(
            row_number() over (order by abs(rating_change) desc nulls last, symbol asc nulls last)
            as integer
        ) as move_rank
    from moves
),

final as (
    select
        move_rank,
        symbol,
        bar_date,
        prev_bar_date,
        prev_rating_all,
        rating_all,
        rating_change,
        direction
    from ranked
    where move_rank <= {{ var('movers_top_n', 10) }}
)

select * from final
order by move_rank
