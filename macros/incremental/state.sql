{#
    Per-model state tables (schema `state`, one table per model): per partition the last source
    timestamp and load batch processed, the earliest timestamp seen, the row count and when.

    `update_state()` runs as a post-hook inside the model's transaction, so rows and watermark move
    together (a crash leaves both as they were). On a full rebuild it aggregates the whole table. On
    an incremental run it moves the state of the partitions the run wrote from what symbol_range
    recorded of the write (written_partitions()), without reading the model's table again:
      last_source_ts  the new rows' last time (they run to the end of the partition)
      last_batch_id   the greater of the stored one and the new rows' (a recomputed row never
                      reads an older batch than the row it replaces: raw is append-only)
      earliest_ts     the lesser of the stored one and the new rows' first time
      row_count       stored - deleted + inserted
    A partition without a state row was recomputed from its first row (dirty_symbols() makes such
    a symbol dirty from its first upstream row), so the write alone is its state.
#}
{% macro state_relation(model_name=none) %}
    {%- set name = model_name or this.identifier -%}
    {{- adapter.quote_as_configured(this.database, 'database') }}.state.{{ name -}}
{% endmacro %}

{#- The state of every partition of the model's table (`filter`: a where clause). -#}
{% macro partition_state(keys, range_column, filter='') %}
    select
        {{ keys | join(', ') }},
        max({{ range_column }}) as last_source_ts,
        max(source_batch_id) as last_batch_id,
        min({{ range_column }}) as earliest_ts,
        count(*) as row_count,
        now() as updated_at
    from {{ this }}
    {{ filter }}
    group by {{ keys | join(', ') }}
{% endmacro %}

{% macro update_state() %}
    {%- set keys = config.get('partition_keys', ['symbol']) -%}
    {%- set range_column = config.require('range_column') -%}
    {%- set state = state_relation() -%}
    {%- set merged = this.identifier ~ '__state' -%}
    create schema if not exists {{ this.database }}.state;
    create table if not exists {{ state }} as
    {{ partition_state(keys, range_column, 'where false') }};
    {% if is_incremental() %}
        create or replace temp table {{ merged }} as
        select
            {% for key in keys -%}
                w.{{ key }},
            {% endfor -%}
            w.range_end as last_source_ts,
            greatest(s.last_batch_id, w.last_batch_id) as last_batch_id,
            least(s.earliest_ts, w.range_start) as earliest_ts,
            coalesce(s.row_count - w.deleted_rows, 0) + w.inserted_rows as row_count,
            now() as updated_at
        from {{ written_partitions() }} as w
        left join {{ state }} as s
            on
                {% for key in keys -%}
                    {{ 'and ' if not loop.first }}s.{{ key }} = w.{{ key }}
                {% endfor %};
        delete from {{ state }} as s
        using {{ merged }} as m
        where
            {% for key in keys -%}
                {{ 'and ' if not loop.first }}s.{{ key }} = m.{{ key }}
            {% endfor %};
        insert into {{ state }}
        select * from {{ merged }};
        drop table {{ merged }};
        drop table {{ written_partitions() }};
    {% else %}
        delete from {{ state }};
        insert into {{ state }}
        {{ partition_state(keys, range_column) }};
    {% endif %}
{% endmacro %}

{#
    The dirty symbols of an incremental run: per symbol, the earliest time of an upstream row
    written by a load batch later than the model's watermark for that symbol (a late revision at any
    old date, a gap filled later, a backfill, a new symbol). Returns rows (symbol, dirty_from).
    Without a state table (dropped by hand) every symbol is dirty. The var `symbols` (a list, set
    by `daily-refresh --symbols`) keeps only those symbols dirty; the var `exclude_symbols` (a
    list, set by `daily-refresh` for symbols whose inputs failed or are stale) keeps those clean.
    Either way the symbols left out keep their watermark and are picked up by a later run.

    upstream       relation with symbol, the batch column and the time column
    time_column    the upstream time column
    batch_column   the upstream column holding the load batch of each row
#}
{% macro dirty_symbols(upstream, time_column, batch_column='source_batch_id') %}
    {%- set state = adapter.get_relation(this.database, 'state', this.identifier) -%}
    {%- set only_symbols = var('symbols', []) -%}
    {%- set excluded_symbols = var('exclude_symbols', []) -%}
    select
        u.symbol,
        min(u.{{ time_column }}) as dirty_from
    from {{ upstream }} as u
    {% if state is not none %}
        left join (
            select
                symbol,
                min(last_batch_id) as last_batch_id
            from {{ state }}
            group by symbol
        ) as s
            on u.symbol = s.symbol
    {% endif %}
    where
        {% if state is not none %}
            (s.symbol is null or u.{{ batch_column }} > s.last_batch_id)
        {% else %}
            true
        {% endif %}
        {% if only_symbols %}
            and u.symbol in ('{{ only_symbols | map("replace", "'", "''") | join("', '") }}')
        {% endif %}
        {% if excluded_symbols %}
            and u.symbol not in ('{{ excluded_symbols | map("replace", "'", "''") | join("', '") }}')
        {% endif %}
    group by u.symbol
{% endmacro %}
