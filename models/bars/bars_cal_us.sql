{{
    config(
        range_column='bar_date',
        partition_keys=['symbol', 'tf'],
        post_hook="{{ update_state() }}",
    )
}}
-- Calendar bars on US weeks (Sunday to Saturday), months, quarters and years, as snapshots: one row
-- per daily close inside a bar. A symbol's partial first period (its first day is not the period's
-- first day) is left out. Timeframes: var cal_timeframes.
{{ calendar_bar_family(
    week_system='us',
    timeframes=calendar_timeframes('cal_timeframes', suffix=''),
    keep_partial_first=false
) }}
