{#
    What a generic data test reads of the model it tests (dbt calls this macro for every generic
    test; the project's version replaces dbt's own). dbt's behaviour, the test's `where` config,
    is kept. With the var `data_tests_on_written_rows` (set by `daily-refresh`), a test of an
    incremental model (whose rows carry the `invocation_id` audit column) reads only the rows this
    invocation wrote, so that the tests of a one-day refresh cost what the day costs, not what the
    history does.
    Views and tables (staging, marts) are read whole. Whole-table audits: `dbt build` or
    `dbt test` without the var, and `orchestrate.py validate`.
#}
{% macro get_where_subquery(relation) -%}
    {%- set conditions = [] -%}
    {%- set where = config.get('where') -%}
    {%- if where -%}
        {%- do conditions.append('(' ~ where ~ ')') -%}
    {%- endif -%}
    {%- if var('data_tests_on_written_rows', false) and execute -%}
        {#- From the graph, not the database: no introspection query per test. -#}
        {%- set tested = graph.nodes.get(model.attached_node or '') -%}
        {%- if tested and tested.config.materialized == 'incremental' -%}
            {%- do conditions.append("invocation_id = '" ~ invocation_id ~ "'") -%}
        {%- endif -%}
    {%- endif -%}
    {%- if conditions -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ conditions | join(' and ') }}) as dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
