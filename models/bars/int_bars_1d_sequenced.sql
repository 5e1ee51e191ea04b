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
-- row before it (the anchor), so the model emits from the anchor on. What the rows after the
-- anchor need from the history before it (position, gap count, last gap, first date) is carried
-- from the anchor's stored row: the model reads only the rows from the anchor on, not the
-- symbol's whole history.

with bars_1d as (
    select * from {{ ref('bars_1d') }}
),

{% if is_incremental() %}
    dirty as (
        {{ dirty_symbols(ref('bars_1d'), 'bar_date') }}
    ),

    -- Per dirty symbol, its last stored row before the earliest touched day: the rows up to it are
    -- unchanged (a changed or added daily row carries a newer load batch, so it is dirty).
    anchors as (
        select
            t.symbol,
            t.bar_date,
            t.day_seq,
            t.prev_bar_date,
            t.has_gap_before,
            t.gap_count,
            t.last_gap_end,
            t.first_date
        from {{ this }} as t
        inner join dirty as d on t.symbol = d.symbol and t.bar_date < d.dirty_from
        qualify row_number() over (partition by t.symbol order by t.bar_date desc) = 1
    ),

    scoped as (
        select
            b.*,
            a.bar_date is not null and b.bar_date = a.bar_date as is_anchor,
            a.day_seq as anchor_day_seq,
            a.prev_bar_date as anchor_prev_bar_date,
            a.has_gap_before as anchor_has_gap_before,
            a.gap_count as anchor_gap_count,
            a.last_gap_end as anchor_last_gap_end,
            a.first_date as anchor_first_date
        from bars_1d as b
        inner join dirty as d on b.symbol = d.symbol
        left join anchors as a on b.symbol = a.symbol
        where a.bar_date is null or b.bar_date >= a.bar_date
    ),
{% else %}
    scoped as (
        select
            *,
            false as is_anchor,
            cast(null as bigint) as anchor_day_seq,
            cast(null as date) as anchor_prev_bar_date,
            cast(null as boolean) as anchor_has_gap_before,
            cast(null as bigint) as anchor_gap_count,
            cast(null as date) as anchor_last_gap_end,
            cast(null as date) as anchor_first_date
        from bars_1d
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
        b.is_anchor,
        b.anchor_has_gap_before,
        b.anchor_gap_count,
        b.anchor_last_gap_end,
        cast(coalesce(b.anchor_day_seq - 1, 0) + row_number() over by_symbol as bigint) as day_seq,
        case
            when b.is_anchor then b.anchor_prev_bar_date
            else lag(b.bar_date) over by_symbol
        end as prev_bar_date,
        lead(b.bar_date) over by_symbol as next_bar_date,
        coalesce(b.anchor_first_date, first_value(b.bar_date) over by_symbol) as first_date
    from scoped as b
    window by_symbol as (partition by b.symbol order by b.bar_date asc nulls last)
),

flagged as (
    select
        *,
        case
            when is_anchor then anchor_has_gap_before
            else coalesce(prev_bar_date < {{ add_days('bar_date', -1) }}, false)
        end as has_gap_before
    from ordered
),

-- The anchor row starts the running gap count and last gap end with its stored values.
with_gaps as (
    select
        *,
        cast(sum(
            case
                when is_anchor then anchor_gap_count
                when has_gap_before then 1
                else 0
            end
        ) over by_symbol as bigint) as gap_count,
        max(
            case
                when is_anchor then anchor_last_gap_end
                when has_gap_before then {{ add_days('bar_date', -1) }}
            end
        ) over by_symbol as last_gap_end
    from flagged
    window by_symbol as (
        partition by symbol order by day_seq asc nulls last
        rows between unbounded preceding and current row
    )
),

final as (
    select
        symbol,
        bar_date,
        day_seq,
        prev_bar_date,
        next_bar_date,
        first_date,
        has_gap_before,
        gap_count,
        last_gap_end,
        open,
        high,
        low,
        close,
        volume,
        quote_volume,
        time_high,
        time_low,
        source_batch_id,
        '{{ invocation_id }}' as invocation_id
    from with_gaps
)

select * from final
