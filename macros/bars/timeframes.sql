{#
    Timeframes of the bar families, read from the `vars` of dbt_project.yml (one place to change
    them) and checked at compile time: a bad value stops the run with an error naming the var, the
    value and what is allowed.

    multi_tf_days          rolling N-day bars of bars_multi_tf: positive integers, tf '<N>d'
    cal_timeframes         calendar bars of bars_cal_us / bars_cal_iso: '<N><unit>', tf as written
    cal_anchor_timeframes  anchored bars of bars_cal_anchor_us / _iso: '<N><unit>', tf '<N><unit>_anchor'

    Units: w (weeks), M (months), Q (quarters = 3 months), Y (years = 12 months). Every calendar
    timeframe is a group of N weeks counted from the family's first week (1970-01-04, a Sunday, for
    US weeks; 1970-01-05, a Monday, for ISO weeks) or of N months counted from 1970-01; with N = 1
    these are the plain calendar weeks, months, quarters and years.
#}

{% macro multi_tf_timeframes() %}
    {%- set days = var('multi_tf_days') -%}
    {%- if days is string or days is not iterable or days | length == 0 -%}
        {{ exceptions.raise_compiler_error(
            "var multi_tf_days (dbt_project/dbt_project.yml): expected a non-empty list of "
            ~ "positive integers (bar lengths in days), got " ~ days) }}
    {%- endif -%}
    {%- set timeframes = [] -%}
    {%- for n in days -%}
        {%- if n is not number or n != n | int or n < 1 -%}
            {{ exceptions.raise_compiler_error(
                "var multi_tf_days (dbt_project/dbt_project.yml): expected positive integers, got "
                ~ n ~ " in " ~ days) }}
        {%- endif -%}
        {%- do timeframes.append({'tf': (n | int) ~ 'd', 'unit': 'day', 'units': n | int}) -%}
    {%- endfor -%}
    {{- return(_unique_timeframes(timeframes, 'multi_tf_days')) -}}
{% endmacro %}

{% macro calendar_timeframes(var_name, suffix='') %}
    {%- set unit_months = {'M': 1, 'Q': 3, 'Y': 12} -%}
    {%- set names = var(var_name) -%}
    {%- set allowed = "'<N><unit>' with N a positive integer and unit w (weeks), M (months), "
        ~ "Q (quarters) or Y (years), e.g. '1w', '2w', '1M', '3M', '1Q', '1Y'" -%}
    {%- if names is string or names is not iterable or names | length == 0 -%}
        {{ exceptions.raise_compiler_error(
            "var " ~ var_name ~ " (dbt_project/dbt_project.yml): expected a non-empty list of "
            ~ allowed ~ ", got " ~ names) }}
    {%- endif -%}
    {%- set timeframes = [] -%}
    {%- for name in names -%}
        {%- set text = name | string -%}
        {%- set count = text[:-1] -%}
        {%- set unit = text[-1:] -%}
        {%- if not count.isdigit() or count | int < 1 or unit not in ['w', 'M', 'Q', 'Y'] -%}
            {{ exceptions.raise_compiler_error(
                "var " ~ var_name ~ " (dbt_project/dbt_project.yml): " ~ name ~ " is not a timeframe; "
                ~ "expected " ~ allowed) }}
        {%- endif -%}
        {%- if unit == 'w' -%}
            {%- do timeframes.append({'tf': text ~ suffix, 'unit': 'week', 'units': count | int}) -%}
        {%- else -%}
            {%- do timeframes.append(
                {'tf': text ~ suffix, 'unit': 'month', 'units': (count | int) * unit_months[unit]}) -%}
        {%- endif -%}
    {%- endfor -%}
    {{- return(_unique_timeframes(timeframes, var_name)) -}}
{% endmacro %}

{% macro _unique_timeframes(timeframes, var_name) %}
    {%- if timeframes | length > 63 -%}
        {{ exceptions.raise_compiler_error(
            "var " ~ var_name ~ " (dbt_project/dbt_project.yml): at most 63 timeframes per family, got "
            ~ timeframes | length) }}
    {%- endif -%}
    {%- set seen = [] -%}
    {%- for timeframe in timeframes -%}
        {%- set key = timeframe['unit'] ~ timeframe['units'] -%}
        {%- if key in seen -%}
            {{ exceptions.raise_compiler_error(
                "var " ~ var_name ~ " (dbt_project/dbt_project.yml): " ~ timeframe['tf']
                ~ " repeats a timeframe already listed; list each one once") }}
        {%- endif -%}
        {%- do seen.append(key) -%}
    {%- endfor -%}
    {{- return(timeframes) -}}
{% endmacro %}

{#- The timeframes as rows (tf, tf_id, tf_unit, tf_units): a small relation to join bars with. -#}
{% macro timeframes_relation(timeframes) %}
    {%- for timeframe in timeframes %}
        select
            '{{ timeframe.tf }}' as tf,
            {{ loop.index }} as tf_id,
            '{{ timeframe.unit }}' as tf_unit,
            {{ timeframe.units }} as tf_units
        {% if not loop.last %}union all{% endif %}
    {%- endfor %}
{% endmacro %}
