{#
    Calendar bar families (bars_cal_us, bars_cal_iso, bars_cal_anchor_us, bars_cal_anchor_iso).

    Every calendar timeframe is a group of N weeks or N months on globally fixed boundaries:
    period index = floor(weeks since the first week of 1970 / N) or floor(months since 1970-01 / N).
    US weeks start on Sunday (counted from 1970-01-04), ISO weeks on Monday (from 1970-01-05).
#}

{% macro first_week_start(week_system) %}
    {%- if week_system == 'us' -%}
        cast('1970-01-04' as date)
    {%- elif week_system == 'iso' -%}
        cast('1970-01-05' as date)
    {%- else -%}
        {{ exceptions.raise_compiler_error(
            "calendar bars: week_system must be 'us' (weeks from Sunday) or 'iso' (from Monday), got "
            ~ week_system) }}
    {%- endif -%}
{% endmacro %}

{#- Index of the period holding `date_column`, for a timeframe of `units` weeks or months. -#}
{% macro calendar_period_index(date_column, unit_column, units_column, week_system) %}
    cast(floor(
        case {{ unit_column }}
            when 'week'
                then {{ dbt.datediff(first_week_start(week_system), date_column, 'day') }} / (7.0 * {{ units_column }})
            when 'month'
                then ((extract(year from {{ date_column }}) - 1970) * 12 + extract(month from {{ date_column }}) - 1)
                / (1.0 * {{ units_column }})
        end
    ) as bigint)
{% endmacro %}

{#- First day of period `index_column` of a timeframe of `units` weeks or months. -#}
{% macro calendar_period_start(index_column, unit_column, units_column, week_system) %}
    case {{ unit_column }}
        when 'week'
            then {{ add_days(first_week_start(week_system), '(' ~ index_column ~ ') * 7 * ' ~ units_column) }}
        when 'month'
            then cast({{ dbt.dateadd('month', '(' ~ index_column ~ ') * ' ~ units_column, "cast('1970-01-01' as date)") }} as date)
    end
{% endmacro %}

{#
    The whole model SQL of a calendar family.
      week_system         'us' or 'iso'
      timeframes          from calendar_timeframes()
      keep_partial_first  false: a symbol's first period is left out unless the symbol's first day
                          is the period's first day (bars_cal_*); true: kept and flagged
                          is_partial_start (bars_cal_anchor_*)
#}
{% macro calendar_bar_family(week_system, timeframes, keep_partial_first) %}
    with sequenced as (
        select * from {{ ref('int_bars_1d_sequenced') }}
    ),

    timeframes as (
        {{ timeframes_relation(timeframes) }}
    ),

    period_index as (
        select
            d.bar_date,
            t.tf_id,
            t.tf_unit,
            t.tf_units,
            {{ calendar_period_index('d.bar_date', 't.tf_unit', 't.tf_units', week_system) }} as bar_index
        from (select distinct bar_date from sequenced) as d
        cross join timeframes as t
    ),

    -- Every date with a daily row, placed in its period of each timeframe.
    periods as (
        select
            bar_date,
            tf_id,
            bar_index,
            {{ calendar_period_start('bar_index', 'tf_unit', 'tf_units', week_system) }} as bar_start_date,
            {{ add_days(calendar_period_start('bar_index + 1', 'tf_unit', 'tf_units', week_system), -1) }}
                as bar_end_date
        from period_index
    ),

    {% if is_incremental() %}
        dirty as (
            {{ dirty_symbols(ref('int_bars_1d_sequenced'), 'bar_date') }}
        ),

        -- Per symbol and timeframe, the first period to recompute: the one holding the earliest
        -- touched day, or that of the row before it when that row's period ends later (a row
        -- arriving after it may close its bar and so change its end-missing count).
        recompute_from as (
            select
                s.symbol,
                touched.tf_id,
                case
                    when s.prev_bar_date < before.bar_end_date then before.bar_index
                    else touched.bar_index
                end as bar_index,
                case
                    when s.prev_bar_date < before.bar_end_date then before.bar_start_date
                    else touched.bar_start_date
                end as bar_start_date
            from sequenced as s
            inner join dirty on s.symbol = dirty.symbol and s.bar_date = dirty.dirty_from
            inner join periods as touched on s.bar_date = touched.bar_date
            left join periods as before
                on s.prev_bar_date = before.bar_date and touched.tf_id = before.tf_id
        ),
    {% endif %}

    {{ family_days('sequenced', 'bar_date', 'bar_start_date') }}

    -- Per symbol and timeframe, the first period kept: bar_seq 1.
    first_periods as (
        select
            s.symbol_id,
            p.tf_id,
            p.bar_index
            {%- if not keep_partial_first %}
                + case when p.bar_start_date < s.first_date then 1 else 0 end
            {%- endif %} as first_bar_index
        from symbols as s
        inner join periods as p on s.first_date = p.bar_date
    ),

    placed as (
        select
            d.*,
            p.tf_id,
            p.bar_index - f.first_bar_index + 1 as bar_seq
        from days as d
        inner join periods as p on d.bar_date = p.bar_date
        inner join first_periods as f on d.symbol_id = f.symbol_id and p.tf_id = f.tf_id
        {% if is_incremental() %}
            inner join recompute_from as r on d.symbol = r.symbol and p.tf_id = r.tf_id
        {% endif %}
        where
            p.bar_index >= f.first_bar_index
            {% if is_incremental() %}
                and p.bar_index >= r.bar_index
            {% endif %}
    ),

    final as (
        {{ bar_snapshot_select('placed', 'symbols', 'timeframes', periods='periods') }}
    )

    {{ changed_snapshot_rows('final', 'sequenced') }}
{% endmacro %}
