{#
    dbt-duckdb builds an incremental Python model's new rows into a plain table, but only drops that
    table when it is not marked temporary; marked temporary, one `<model>__dbt_tmp<time>` table was
    left behind per run. Python models therefore get a non-temporary relation, which the
    materialization drops after the commit. SQL models keep DuckDB temporary tables.
#}
{% macro duckdb__dispatch_temporary_relation(target_relation, batch_id='') %}
    {% do return({
        'relation': make_temp_relation(target_relation),
        'temporary': model.language != 'python',
    }) %}
{% endmacro %}
