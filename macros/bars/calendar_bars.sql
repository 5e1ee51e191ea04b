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
    {#- Read where it is used, not through a CTE: DuckDB would materialize the whole table. -#}
    {%- set sequenced = ref('int_bars_1d_sequenced') %}
    with timeframes as (
        {{ timeframes_relation(timeframes) }}
    ),

    {% if is_incremental() %}
        dirty as (
            {{ dirty_symbols(sequenced, 'bar_date') }}
        ),

        emit as (
            {{ emit_points(sequenced) }}
        ),
    {% endif %}

    {{ family_days(sequenced, 'bar_date', 'emit', 'emit_from') }}

    period_index as (
        select
            d.bar_date,
            t.tf_id,
            t.tf_unit,
            t.tf_units,
            {{ calendar_period_index('d.bar_date', 't.tf_unit', 't.tf_units', week_system) }} as bar_index
        from (
            select bar_date from scoped_days
            union
            select first_date from symbols
        ) as d
        cross join timeframes as t
    ),

    -- Every date a run places (its daily rows, and the symbols' first days for first_periods),
    -- in its period of each timeframe.
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
        {% if is_incremental() %}
            {{ after_emit_point('d') }}
        {% endif %}
        inner join periods as p on d.bar_date = p.bar_date
        inner join first_periods as f on d.symbol_id = f.symbol_id and p.tf_id = f.tf_id
        where p.bar_index >= f.first_bar_index
    ),

    {% if is_incremental() %}
        seeds as (
            {{ carried_seeds(sequenced, 'days', 'symbols', 'timeframes') }}
        ),
    {% endif %}

    final as (
        {{ bar_snapshot_select(
            'placed', 'symbols', 'timeframes', periods='periods',
            seeds='seeds' if is_incremental() else none
        ) }}
    )

    select * from final
{% endmacro %}
