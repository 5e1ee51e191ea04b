{{
    config(
        range_column='bar_date',
        partition_keys=['symbol'],
        post_hook="{{ update_state() }}",
    )
}}
-- Daily close-to-close returns per symbol from the canonical daily bars. A return whose previous bar
-- is more than one calendar day back keeps its value (the move over the whole span) and is flagged
-- with spans_missing_days; the wide matrix in the lakehouse leaves such cells empty.
-- Warm-up: one previous bar. An incremental run reads, per dirty symbol, from the bar before
-- dirty_from and emits from dirty_from on.

with bars as (
    select
        symbol,
        bar_date,
        close,
        is_complete_day,
        source_batch_id
    from {{ ref('bars_1d') }}
),

{% if is_incremental() %}
    dirty as (
        {{ dirty_symbols(ref('bars_1d'), 'bar_date') }}
    ),

    recompute_window as (
        select
            d.symbol,
            d.dirty_from,
            coalesce(max(b.bar_date), d.dirty_from) as read_from
        from dirty as d
        left join bars as b
            on
                d.symbol = b.symbol
                and d.dirty_from > b.bar_date
        group by d.symbol, d.dirty_from
    ),
{% endif %}

scoped as (
    select
        b.symbol,
        b.bar_date,
        b.close,
        b.is_complete_day,
        b.source_batch_id,
        {% if is_incremental() %}
            w.dirty_from as emit_from
        {% else %}
            b.bar_date as emit_from
        {% endif %}
    from bars as b
    {% if is_incremental() %}
        inner join recompute_window as w
            on
                b.symbol = w.symbol
                and b.bar_date >= w.read_from
    {% endif %}
),

with_previous as (
    select
        *,
        lag(bar_date) over (
            partition by symbol order by bar_date asc nulls last
        ) as prev_bar_date,
        lag(close) over (
            partition by symbol order by bar_date asc nulls last
        ) as prev_close,
        lag(source_batch_id) over (
            partition by symbol order by bar_date asc nulls last
        ) as prev_source_batch_id
    from scoped
),

measured as (
    select
        *,
        cast(
            {{ dbt.datediff('prev_bar_date', 'bar_date', 'day') }}
            as integer
        ) as days_spanned
    from with_previous
    where bar_date >= emit_from
),

final as (
    select
        symbol,
        bar_date,
        prev_bar_date,
        close,
        prev_close,
        close / nullif(prev_close, 0) - 1 as simple_return,
        case
            when close > 0 and prev_close > 0 then ln(close / prev_close)
        end as log_return,
        days_spanned,
        coalesce(days_spanned > 1, false) as spans_missing_days,
        prev_bar_date is null as is_first_bar,
        is_complete_day,
        greatest(source_batch_id, coalesce(prev_source_batch_id, source_batch_id)) as source_batch_id,
        '{{ invocation_id }}' as invocation_id
    from measured
)

select * from final
