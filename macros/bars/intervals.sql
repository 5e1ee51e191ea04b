{#- Length in seconds of a kline interval column (every fixed-length interval: 1s ... 1d, 3d, 1w; null for 1mo). -#}
{% macro interval_seconds(column) %}
    case {{ column }}
        when '1s' then 1
        when '1m' then 60
        when '3m' then 180
        when '5m' then 300
        when '15m' then 900
        when '30m' then 1800
        when '1h' then 3600
        when '2h' then 7200
        when '4h' then 14400
        when '6h' then 21600
        when '8h' then 28800
        when '12h' then 43200
        when '1d' then 86400
        when '3d' then 259200
        when '1w' then 604800
    end
{% endmacro %}

{#- The intervals bars_1d is built from, as a SQL list literal. -#}
{% macro daily_source_intervals() %}
    ('1d', '{{ var("intraday_intervals") | join("', '") }}')
{% endmacro %}
