-- Gap report: where is data missing, symbol by symbol? One row per symbol, gap_source and timeframe:
--   gap_source 'klines', per interval (kline_gaps): gap_count gaps between stored klines, missing_count
--     whole intervals missing in them (missing_unit 'bars');
--   gap_source a bar family (bars_multi_tf, bars_cal_us, bars_cal_iso, bars_cal_anchor_us,
--     bars_cal_anchor_iso), per timeframe: gap_count bars flagged is_missing_days, missing_count
--     calendar days without a daily bar inside them (missing_unit 'days'), as of each bar's latest
--     snapshot.
-- The missing stretches lie within [first_missing_at, missing_until) (UTC). Symbols without gaps have
-- no row; leading and trailing missing data (before the first or after the last bar) is not a gap.
-- Run: dbt compile -q --select gap_report | python orchestrate.py sql - --limit 0

{%- set bar_families = [
    'bars_multi_tf', 'bars_cal_us', 'bars_cal_iso', 'bars_cal_anchor_us', 'bars_cal_anchor_iso',
] %}

with kline_gaps as (
    select * from {{ ref('kline_gaps') }}
),

{% for family in bar_families %}
    {{ family }} as (
        select
            symbol,
            tf,
            bar_seq,
            bar_date,
            is_missing_days,
            count_missing_days,
            first_missing_day,
            last_missing_day
        from {{ ref(family) }}
    ),
{% endfor %}

kline_gap_summary as (
    select
        symbol,
        'klines' as gap_source,
        interval as timeframe,
        cast(count(*) as bigint) as gap_count,
        cast(sum(missing_bar_count) as bigint) as missing_count,
        'bars' as missing_unit,
        min(gap_start_at) as first_missing_at,
        max(gap_end_at) as missing_until
    from kline_gaps
    group by symbol, interval
),

-- Each bar as of its latest snapshot (the one with its last daily close so far).
bar_latest as (
    {% for family in bar_families %}
        select
            '{{ family }}' as gap_source,
            symbol,
            tf,
            max_by(is_missing_days, bar_date) as is_missing_days,
            max_by(count_missing_days, bar_date) as count_missing_days,
            max_by(first_missing_day, bar_date) as first_missing_day,
            max_by(last_missing_day, bar_date) as last_missing_day
        from {{ family }}
        group by symbol, tf, bar_seq
        {% if not loop.last %}union all{% endif %}
    {% endfor %}
),

bar_gap_summary as (
    select
        symbol,
        gap_source,
        tf as timeframe,
        cast(count(*) as bigint) as gap_count,
        cast(sum(count_missing_days) as bigint) as missing_count,
        'days' as missing_unit,
        cast(min(first_missing_day) as timestamp) as first_missing_at,
        cast({{ add_days('max(last_missing_day)', 1) }} as timestamp) as missing_until
    from bar_latest
    where is_missing_days
    group by symbol, gap_source, tf
),

final as (
    select * from kline_gap_summary
    union all
    select * from bar_gap_summary
)

select * from final
order by symbol, gap_source, timeframe
