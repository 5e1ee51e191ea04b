{{
    config(
        range_column='bar_date',
        partition_keys=['symbol', 'tf'],
        post_hook="{{ update_state() }}",
    )
}}
-- Anchored calendar bars: groups of N US weeks counted from 1970-01-04 (a Sunday) and of N months
-- counted from 1970-01, as snapshots. Bars cut by the start of a symbol's history are kept and
-- flagged is_partial_start. Timeframes: var cal_anchor_timeframes.
{{ calendar_bar_family(
    week_system='us',
    timeframes=calendar_timeframes('cal_anchor_timeframes', suffix='_anchor'),
    keep_partial_first=true
) }}
