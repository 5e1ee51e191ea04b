{#
    Incremental strategy `symbol_range`: the model's new rows replace, per partition (symbol, and
    timeframe where the model has one), every stored row from the partition's first new row onward.

    A model using it emits, for each dirty partition, all rows from its recompute start (the earliest
    touched bar less the warm-up its windows need) to the end of the data. Config:
      range_column    the model's time column (e.g. bar_date)
      partition_keys  the columns of a partition (default ['symbol'])

    Before writing, it records per partition what the write changes (temp table, see
    written_partitions()): the rows it deletes and the new rows' range, batch and count, from
    which `update_state()` moves the watermarks without reading the model's table again.
#}
{% macro get_incremental_symbol_range_sql(arg_dict) %}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set temp = arg_dict['temp_relation'] -%}
    {%- set keys = config.get('partition_keys', ['symbol']) -%}
    {%- set range_column = config.require('range_column') -%}
    {%- set columns = arg_dict['dest_columns'] | map(attribute='quoted') | join(', ') -%}
    create or replace temp table {{ written_partitions() }} as
    with recomputed as (
        select
            {{ keys | join(', ') }},
            min({{ range_column }}) as range_start,
            max({{ range_column }}) as range_end,
            max(source_batch_id) as last_batch_id,
            count(*) as inserted_rows
        from {{ temp }}
        group by {{ keys | join(', ') }}
    ),
    replaced as (
        select
            {% for key in keys -%}
                existing.{{ key }},
            {% endfor -%}
            count(*) as deleted_rows
        from {{ target }} as existing
        inner join recomputed
            on
                {% for key in keys -%}
                    existing.{{ key }} = recomputed.{{ key }} and
                {% endfor -%}
                existing.{{ range_column }} >= recomputed.range_start
        group by {% for key in keys %}{{ 'existing.' ~ key }}{{ ', ' if not loop.last }}{% endfor %}
    )
    select
        recomputed.*,
        coalesce(replaced.deleted_rows, 0) as deleted_rows
    from recomputed
    left join replaced using ({{ keys | join(', ') }});
    {#- A join, not a correlated `exists`: DuckDB plans the latter as a delim join over every stored
        row (100 s instead of 5 s on 64 million rows). -#}
    delete from {{ target }} as existing
    using {{ written_partitions() }} as recomputed
    where
        {% for key in keys -%}
            existing.{{ key }} = recomputed.{{ key }} and
        {% endfor -%}
        existing.{{ range_column }} >= recomputed.range_start;
    insert into {{ target }} ({{ columns }})
    select {{ columns }} from {{ temp }}
{% endmacro %}

{#- The temp table in which symbol_range records the partitions it writes. -#}
{% macro written_partitions() -%}
    {{ this.identifier }}__written_partitions
{%- endmacro %}
