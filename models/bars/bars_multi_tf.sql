{{
    config(
        range_column='bar_date',
        partition_keys=['symbol', 'tf'],
        post_hook="{{ update_state() }}",
    )
}}
-- Rolling N-day bars in observation order, as snapshots: the k-th daily row of a symbol falls in bar
-- floor((k-1)/N)+1 at position ((k-1) mod N)+1, counting from the symbol's first row. Timeframes:
-- var multi_tf_days. k counts the symbol's whole history (int_bars_1d_sequenced.day_seq), so a row
-- inserted before others (a gap filled later, a backfill) moves every later row: the recompute
-- starts at the bar holding it.

{#- Read where it is used, not through a CTE: DuckDB would materialize the whole table. -#}
{%- set sequenced = ref('int_bars_1d_sequenced') %}
with timeframes as (
    {{ timeframes_relation(multi_tf_timeframes()) }}
),

{% if is_incremental() %}
    dirty as (
        {{ dirty_symbols(sequenced, 'bar_date') }}
    ),

    -- Per symbol and timeframe, the first row of the bar holding the earliest touched day.
    recompute_from as (
        select
            s.symbol,
            t.tf_id,
            cast(floor((s.day_seq - 1) / (1.0 * t.tf_units)) as bigint) * t.tf_units + 1 as day_seq
        from {{ sequenced }} as s
        inner join dirty on s.symbol = dirty.symbol and s.bar_date = dirty.dirty_from
        cross join timeframes as t
    ),
{% endif %}

{{ family_days(sequenced, 'day_seq', 'recompute_from', 'day_seq') }}

placed as (
    select
        d.*,
        t.tf_id,
        cast(floor((d.day_seq - 1) / (1.0 * t.tf_units)) as bigint) + 1 as bar_seq
    from days as d
    cross join timeframes as t
    {% if is_incremental() %}
        inner join recompute_from as r
            on d.symbol = r.symbol and t.tf_id = r.tf_id and d.day_seq >= r.day_seq
    {% endif %}
),

final as (
    {{ bar_snapshot_select('placed', 'symbols', 'timeframes') }}
)

{{ rows_from_dirty_days('final') }}
