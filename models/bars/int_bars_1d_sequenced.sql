{{
    config(
        range_column='bar_date',
        partition_keys=['symbol'],
        post_hook="{{ update_state() }}",
    )
}}
-- bars_1d in each symbol's observation order, with what every bar family needs to place a daily row
-- in its bars: its position k in the symbol's history (day_seq), its neighbours' dates and the gaps
-- (calendar days without a row) before it. Computed once here for all families.
--
-- Incremental: a dirty row changes the positions of every later row and the next_bar_date of the
-- row before it, so the model reads the whole history of each dirty symbol and emits from that
-- previous row on.

with bars_1d as (
    select * from {{ ref('bars_1d') }}
),

{% if is_incremental() %}
    dirty as (
        {{ dirty_symbols(ref('bars_1d'), 'bar_date') }}
    ),
{% endif %}

ordered as (
    select
        b.symbol,
        b.bar_date,
        b.open,
        b.high,
        b.low,
        b.close,
        b.volume,
        b.quote_volume,
        b.time_high,
        b.time_low,
        b.source_batch_id,
        cast(row_number() over by_symbol as bigint) as day_seq,
        lag(b.bar_date) over by_symbol as prev_bar_date,
        lead(b.bar_date) over by_symbol as next_bar_date,
        first_value(b.bar_date) over by_symbol as first_date
    from bars_1d as b
    {% if is_incremental() %}
        where b.symbol in (select dirty.symbol from dirty)
    {% endif %}
    window by_symbol as (partition by b.symbol order by b.bar_date asc nulls last)
),

flagged as (
    select
        *,
        coalesce(prev_bar_date < {{ add_days('bar_date', -1) }}, false) as has_gap_before
    from ordered
),

with_gaps as (
    select
        *,
        cast(sum(case when has_gap_before then 1 else 0 end) over by_symbol as bigint) as gap_count,
        max(case when has_gap_before then {{ add_days('bar_date', -1) }} end)
            over by_symbol as last_gap_end
    from flagged
    window by_symbol as (
        partition by symbol order by day_seq asc nulls last
        rows between unbounded preceding and current row
    )
),

final as (
    select
        w.symbol,
        w.bar_date,
        w.day_seq,
        w.prev_bar_date,
        w.next_bar_date,
        w.first_date,
        w.has_gap_before,
        w.gap_count,
        w.last_gap_end,
        w.open,
        w.high,
        w.low,
        w.close,
        w.volume,
        w.quote_volume,
        w.time_high,
        w.time_low,
        w.source_batch_id,
        '{{ invocation_id }}' as invocation_id
    from with_gaps as w
    {% if is_incremental() %}
        inner join dirty as d
            on
                w.symbol = d.symbol
                and (w.bar_date >= d.dirty_from or w.next_bar_date >= d.dirty_from)
    {% endif %}
)

select * from final
