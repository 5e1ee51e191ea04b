{#
    Per-model state tables (schema `state`, one table per model): per partition the last source
    timestamp and load batch processed, the earliest timestamp seen, the row count and when.

    `update_state()` runs as a post-hook inside the model's transaction, so rows and watermark move
    together (a crash leaves both as they were). It refreshes the partitions the current invocation
    wrote (rows tagged with `invocation_id`), or all of them on a full rebuild.
#}
{% macro state_relation(model_name=none) %}
    {%- set name = model_name or this.identifier -%}
    {{- adapter.quote_as_configured(this.database, 'database') }}.state.{{ name -}}
{% endmacro %}

{% macro update_state() %}
    {%- set keys = config.get('partition_keys', ['symbol']) -%}
    {%- set range_column = config.require('range_column') -%}
    {%- set state = state_relation() -%}
    create schema if not exists {{ this.database }}.state;
    create table if not exists {{ state }} as
    select
        {{ keys | join(', ') }},
        max({{ range_column }}) as last_source_ts,
        max(source_batch_id) as last_batch_id,
        min({{ range_column }}) as earliest_ts,
        count(*) as row_count,
        now() as updated_at
    from {{ this }}
    where false
    group by {{ keys | join(', ') }};
    {% if is_incremental() %}
        delete from {{ state }} as s
        where exists (
            select 1 from {{ this }} as m
            where m.invocation_id = '{{ invocation_id }}'
                {% for key in keys %} and m.{{ key }} = s.{{ key }}{% endfor %}
        );
    {% else %}
        delete from {{ state }};
    {% endif %}
    insert into {{ state }}
    select
        {{ keys | join(', ') }},
        max({{ range_column }}) as last_source_ts,
        max(source_batch_id) as last_batch_id,
        min({{ range_column }}) as earliest_ts,
        count(*) as row_count,
        now() as updated_at
    from {{ this }} as m
    where exists (
        select 1 from {{ this }} as w
        where w.invocation_id = '{{ invocation_id }}'
            {% for key in keys %} and w.{{ key }} = m.{{ key }}{% endfor %}
    )
    group by {{ keys | join(', ') }}
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
