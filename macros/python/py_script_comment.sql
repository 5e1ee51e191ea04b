{#
    What dbt Python models cannot otherwise see, attached to their `dbt` object: the run's
    invocation id (`dbt.invocation_id`, the audit column every model row carries, by which
    `update_state()` finds the rows a run wrote) and the vars they honour (`dbt.vars`; dbt has no
    var() in Python models): `symbols` and `exclude_symbols` (dirty detection, see
    macros/incremental/state.sql), and the EMA filters of `daily-refresh` (`tfs`, `periods`,
    `tf_periods`: recompute only those timeframe / period partitions), each empty when not set.
    dbt renders this macro, empty in dbt itself, at the end of every compiled Python model, at
    run time.
#}
{% macro py_script_comment() %}
dbtObj.invocation_id = {{ tojson(invocation_id) }}
{%- set honoured = {} -%}
{%- for name in ['symbols', 'exclude_symbols', 'tfs', 'periods', 'tf_periods'] -%}
    {%- do honoured.update({name: var(name, [])}) -%}
{%- endfor %}
dbtObj.vars = __import__("json").loads({{ tojson(tojson(honoured)) }})
{% endmacro %}
