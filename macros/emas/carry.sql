{#
    The carry of the EMA models (python_models/emas, quantwarehouse/ema_models.py): per partition
    (symbol, tf, period), the recursion state after its last stored row, from which a normal day's
    run resumes over the new rows only. Table state.<model>__carry, columns:
      symbol, tf, period  the partition
      as_of               bar_date of its last stored row
      row_count           its rows (bar rows of the series up to as_of)
      last_batch_id       the latest source batch among them
      bar_start_date      start of the bar the last row belongs to
      closes_bar          whether the last row closes that bar
      days_total          sum of the series' daily closes up to as_of (finishes an ema_v2 seed)
      bars_count          bars closed up to as_of
      bars_total          sum of their closes (finishes an ema_bar seed)
      ema_bar, ema_v2     the last row's values (null while in warm-up)
    A carry is used only while as_of, row_count and last_batch_id equal the partition's state.

    `update_ema_carry()` runs as a post-hook after `update_state()`, inside the model's
    transaction: it stores the carry the model staged in the temp table <model>__carry_staged
    (same connection) for every partition written, so the carry moves with the rows and the state.
    A full build replaces the whole table.
#}
{% macro update_ema_carry() %}
    {%- set carry = adapter.quote_as_configured(this.database, 'database') ~ '.state.' ~ this.identifier ~ '__carry' -%}
    {%- set staged = '"' ~ this.identifier ~ '__carry_staged"' -%}
    {%- set existing = adapter.get_relation(this.database, 'state', this.identifier ~ '__carry') -%}
    {% if is_incremental() and existing is not none %}
        delete from {{ carry }} as c
        using {{ staged }} as s
        where c.symbol = s.symbol and c.tf = s.tf and c.period = s.period;
        insert into {{ carry }} by name
        select * from {{ staged }};
    {% else %}
        create schema if not exists {{ this.database }}.state;
        create or replace table {{ carry }} as
        select * from {{ staged }};
    {% endif %}
    drop table {{ staged }};
{% endmacro %}
