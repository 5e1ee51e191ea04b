{#
    The pieces every bar family (bars_multi_tf, bars_cal_*, bars_cal_anchor_*) shares. A family
    places each row of int_bars_1d_sequenced in a bar per timeframe; `bar_snapshot_select` turns
    those placed rows into snapshot rows: one per daily close inside a bar, with the bar's OHLCV so
    far and its quality flags. Every value of a row depends only on the rows of its bar up to that
    day, plus (for the missing days at a bar's end) whether the symbol's next row lies in a later bar.
#}

{#- A date moved by a whole number of days (dbt.dateadd returns a timestamp on some engines). -#}
{% macro add_days(date_expression, days) %}
    cast({{ dbt.dateadd('day', days, date_expression) }} as date)
{% endmacro %}

{#-
    One bigint per (symbol, tf, bar) to partition windows by: up to 63 timeframes per family,
    2^26 - 1 bars per symbol and 2^21 symbols (keys stay below 2^53, so the divisions in
    bar_key_part(), which takes a key apart again, are exact).
-#}
{% macro bar_partition_key(symbol_id, tf_id, bar_seq) %}
    ({{ symbol_id }} * 64 + {{ tf_id }}) * 67108864 + {{ bar_seq }}
{% endmacro %}

{% macro bar_key_part(bar_key, part) %}
    {%- if part == 'symbol' -%}
        cast(floor({{ bar_key }} / (64.0 * 67108864)) as bigint)
    {%- elif part == 'tf' -%}
        cast(floor({{ bar_key }} / 67108864.0) as bigint) - 64 * cast(floor({{ bar_key }} / (64.0 * 67108864)) as bigint)
    {%- else -%}
        {{ bar_key }} - cast(floor({{ bar_key }} / 67108864.0) as bigint) * 67108864
    {%- endif -%}
{% endmacro %}

{#
    The symbols of `days` numbered 1, 2, ... (symbol_id), with each symbol's first date: window
    partitions and joins on one number are much cheaper than on text. The numbers are only valid
    within one run.
#}
{% macro numbered_symbols(days) %}
    select
        symbol,
        first_date,
        cast(row_number() over (order by symbol asc nulls last) as bigint) as symbol_id
    from (
        select
            symbol,
            min(first_date) as first_date
        from {{ days }}
        group by symbol
    ) as distinct_symbols
{% endmacro %}

{#
    The CTEs `scoped_days` (the daily rows a family run reads: on an incremental run, each dirty
    symbol's rows from the earliest `start_column` of the CTE `starts`, compared with the daily
    rows' `day_column`), `symbols` (numbered_symbols()) and `days` (numbered_daily_bars()), each
    followed by a comma.
#}
{% macro family_days(sequenced, day_column, starts, start_column) %}
    scoped_days as (
        select s.*
        from {{ sequenced }} as s
        {% if is_incremental() %}
            inner join (
                select
                    symbol,
                    min({{ start_column }}) as scope_start
                from {{ starts }}
                group by symbol
            ) as scope
                on s.symbol = scope.symbol and s.{{ day_column }} >= scope.scope_start
        {% endif %}
    ),

    symbols as (
        {{ numbered_symbols('scoped_days') }}
    ),

    days as (
        {{ numbered_daily_bars('scoped_days', 'symbols') }}
    ),
{% endmacro %}

{#
    Snapshot rows of bars.
      placed      one row per (symbol, tf, daily row): symbol_id, tf_id, bar_seq and the columns of
                  numbered_daily_bars() (day_seq, bar_date, OHLCV, times, next_bar_date,
                  next_gap_start, last_gap_end, source_batch_id)
      symbols     numbered_symbols()
      timeframes  timeframes_relation()
      periods     calendar bars: (bar_date, tf_id, bar_start_date, bar_end_date); none for rolling
                  bars (bars_multi_tf), which start at their first row, span tf_units rows and are
                  expected to end tf_units - pos_in_bar days after the current row

    Missing days (calendar days of the bar's span with no daily row) are counted at the start (from
    the nominal start to the bar's first row, unless that start precedes the symbol's history: then
    the bar is a partial start instead), in the interior (between the bar's rows so far) and at the
    end (after the last row of a bar the symbol has moved past, up to the bar's end). Rolling bars
    span rows, so only their interior can miss days.

    time_high / time_low are those of the earliest daily row reaching the running high / low: the
    arg-max of (high, -day_seq) / arg-min of (low, day_seq) so far (equal extremes: the earliest).

    Cost: every row goes through one sorted window pass, which carries every column of its input
    through its sort: the pass gets only the columns it needs and partitions by one bigint per bar.

    Carried bars (incremental runs of the calendar families, `seeds` given: carried_seeds()):
    `placed` holds only the rows after each symbol's emit point, and a seed row per (symbol,
    timeframe) stands for the stored snapshot row at the emit point: its bar's running values so
    far (open, high, low, volumes, extremes' times, batch, first row and its next gap, days
    counted). Being the first row of its bar in the window, the seed gives the running values of
    the later rows of that bar, so a one-day refresh reads two rows per bar, not the whole forming
    bar (up to a year of days). The seed's own row
    is written again only when its missing days at the bar's end changed (the symbol's next row
    now lies in a later bar, past missing days): everything else in it is carried as stored. An
    appended day then writes only its own rows, and symbol_range deletes nothing. bars_multi_tf
    recomputes its bars from their first day instead (at most 90 rows): looking its seeds up in
    its 13 million rows costs more than that on bench.
#}
{% macro bar_snapshot_select(placed, symbols, timeframes, periods=none, seeds=none) %}
    with keyed as (
        select
            {{ bar_partition_key('symbol_id', 'tf_id', 'bar_seq') }} as bar_key,
            day_seq,
            bar_date,
            bar_date as first_row_date,
            0 as extra_days,
            open,
            high,
            low,
            close,
            volume,
            quote_volume,
            time_high,
            time_low,
            {% if seeds is not none -%}
                cast(null as integer) as stored_missing_end,
            {%- endif %}
            source_batch_id,
            next_bar_date,
            next_gap_start,
            last_gap_end
        from {{ placed }}
        {% if seeds is not none %}
            union all
            select
                {{ bar_partition_key('symbol_id', 'tf_id', 'bar_seq') }} as bar_key,
                day_seq,
                bar_date,
                first_row_date,
                extra_days,
                open,
                high,
                low,
                close,
                volume,
                quote_volume,
                time_high,
                time_low,
                stored_missing_end,
                source_batch_id,
                next_bar_date,
                next_gap_start,
                last_gap_end
            from {{ seeds }}
        {% endif %}
    ),

    running as (
        select
            bar_key,
            bar_date,
            close,
            next_bar_date,
            last_gap_end,
            {% if seeds is not none -%}
                stored_missing_end,
            {% endif -%}
            cast(row_number() over bar_so_far + first_value(extra_days) over bar_so_far as integer)
                as count_days,
            first_value(first_row_date) over bar_so_far as first_row_date,
            first_value(open) over bar_so_far as bar_open,
            first_value(next_gap_start) over bar_so_far as first_row_next_gap_start,
            max(high) over bar_so_far as bar_high,
            max_by(time_high, (high, -day_seq)) over bar_so_far as bar_time_high,
            min(low) over bar_so_far as bar_low,
            min_by(time_low, (low, day_seq)) over bar_so_far as bar_time_low,
            sum(volume) over bar_so_far as bar_volume,
            sum(quote_volume) over bar_so_far as bar_quote_volume,
            max(source_batch_id) over bar_so_far as bar_source_batch_id
        from keyed
        window bar_so_far as (
            partition by bar_key order by day_seq asc nulls last
            rows between unbounded preceding and current row
        )
    ),

    shaped as (
        select
            r.*,
            {{ bar_key_part('r.bar_key', 'bar') }} as bar_seq,
            s.symbol,
            t.tf,
            {% if periods is none -%}
                r.first_row_date as bar_start_date,
                {{ add_days('r.bar_date', 't.tf_units - r.count_days') }} as bar_end_date,
                cast(t.tf_units as integer) as tf_days,
                r.count_days as pos_in_bar,
                false as is_partial_start,
                false as is_next_in_later_bar
            {%- else -%}
                p.bar_start_date,
                p.bar_end_date,
                cast({{ dbt.datediff('p.bar_start_date', 'p.bar_end_date', 'day') }} + 1 as integer) as tf_days,
                cast({{ dbt.datediff('p.bar_start_date', 'r.bar_date', 'day') }} + 1 as integer) as pos_in_bar,
                p.bar_start_date < s.first_date as is_partial_start,
                coalesce(r.next_bar_date > p.bar_end_date, false) as is_next_in_later_bar
            {%- endif %}
        from running as r
        inner join {{ symbols }} as s on {{ bar_key_part('r.bar_key', 'symbol') }} = s.symbol_id
        inner join {{ timeframes }} as t on {{ bar_key_part('r.bar_key', 'tf') }} = t.tf_id
        {% if periods is not none -%}
            inner join {{ periods }} as p
                on r.bar_date = p.bar_date and {{ bar_key_part('r.bar_key', 'tf') }} = p.tf_id
        {%- endif %}
    ),

    counted as (
        select
            *,
            cast(
                case
                    when is_partial_start then 0
                    else {{ dbt.datediff('bar_start_date', 'first_row_date', 'day') }}
                end as integer
            ) as count_missing_start,
            cast(
                {{ dbt.datediff('first_row_date', 'bar_date', 'day') }} + 1 - count_days as integer
            ) as count_missing_interior,
            cast(
                case
                    when is_next_in_later_bar then {{ dbt.datediff('bar_date', 'bar_end_date', 'day') }}
                    else 0
                end as integer
            ) as count_missing_end
        from shaped
    )

    select
        c.symbol,
        c.tf,
        c.bar_date,
        c.bar_seq,
        c.bar_start_date,
        c.bar_end_date,
        c.tf_days,
        c.pos_in_bar,
        c.count_days,
        c.bar_open as open,
        c.bar_high as high,
        c.bar_low as low,
        c.close,
        c.bar_volume as volume,
        c.bar_quote_volume as quote_volume,
        c.bar_time_high as time_high,
        c.bar_time_low as time_low,
        c.is_partial_start,
        c.pos_in_bar < c.tf_days as is_partial_end,
        c.count_missing_start + c.count_missing_interior + c.count_missing_end > 0 as is_missing_days,
        c.count_missing_start + c.count_missing_interior + c.count_missing_end as count_missing_days,
        c.count_missing_start,
        c.count_missing_interior,
        c.count_missing_end,
        case
            when c.count_missing_start > 0 then c.bar_start_date
            -- the bar's first gap is the first gap after its first row
            when c.count_missing_interior > 0 then c.first_row_next_gap_start
            when c.count_missing_end > 0 then {{ add_days('c.bar_date', 1) }}
        end as first_missing_day,
        case
            when c.count_missing_end > 0 then c.bar_end_date
            when c.count_missing_interior > 0 then c.last_gap_end
            when c.count_missing_start > 0 then {{ add_days('c.first_row_date', -1) }}
        end as last_missing_day,
        c.bar_source_batch_id as source_batch_id,
        '{{ invocation_id }}' as invocation_id
    from counted as c
    {% if seeds is not none -%}
        -- a seed row (stored_missing_end set) only where it changed
        where c.stored_missing_end is null or c.count_missing_end != c.stored_missing_end
    {%- endif %}
{% endmacro %}

{#
    The rows of `days` (int_bars_1d_sequenced rows) with their symbol's number from `symbols` and
    the first missing day of the first gap after each row (next_gap_start).
#}
{% macro numbered_daily_bars(days, symbols) %}
    select
        d.*,
        s.symbol_id,
        g.gap_start as next_gap_start
    from {{ days }} as d
    inner join {{ symbols }} as s on d.symbol = s.symbol
    left join (
        select
            symbol,
            gap_count,
            {{ add_days('prev_bar_date', 1) }} as gap_start
        from {{ days }}
        where has_gap_before
    ) as g on d.symbol = g.symbol and d.gap_count + 1 = g.gap_count
{% endmacro %}

{#
    Where an incremental calendar family run starts, per dirty symbol (needs the CTE `dirty`,
    dirty_symbols()): the row before the earliest touched day (that row's end-missing count may
    change when a later row closes its bar), or the touched day itself when it is the symbol's
    first. emit_from: its date; has_predecessor: whether it is the row before (whose stored
    snapshot rows then seed the calendar bars, carried_seeds()).
#}
{% macro emit_points(sequenced) %}
    select
        s.symbol,
        coalesce(s.prev_bar_date, s.bar_date) as emit_from,
        s.prev_bar_date is not null as has_predecessor
    from {{ sequenced }} as s
    inner join dirty on s.symbol = dirty.symbol and s.bar_date = dirty.dirty_from
{% endmacro %}

{#
    The rows of `final` an incremental bars_multi_tf run writes: those from each symbol's earliest
    touched day on. The earlier rows of a recomputed bar equal the stored ones: a rolling bar's row
    depends only on the rows of its bar up to its day. Needs the CTE `dirty`.
#}
{% macro rows_from_dirty_days(final) %}
    select f.*
    from {{ final }} as f
    {% if is_incremental() %}
        inner join dirty on f.symbol = dirty.symbol and f.bar_date >= dirty.dirty_from
    {% endif %}
{% endmacro %}

{#
    The daily rows of `days` a family places in its bars on an incremental run: those after the
    symbol's emit point (the emit point itself is a seed, carried_seeds()), or from it on when the
    touched day is the symbol's first. Needs the CTE `emit` (emit_points()).
#}
{% macro after_emit_point(day_alias) %}
    inner join emit
        on
            {{ day_alias }}.symbol = emit.symbol
            and (
                {{ day_alias }}.bar_date > emit.emit_from
                or ({{ day_alias }}.bar_date = emit.emit_from and not emit.has_predecessor)
            )
{% endmacro %}

{#
    One seed row per (symbol, timeframe) whose emit point has a stored snapshot row in this family
    (see bar_snapshot_select): that row's running values, with the columns bar_snapshot_select's
    window reads. A timeframe without a stored row at the emit point (a partial first period the
    family leaves out) has no seed: its rows after the emit point are left out too, or start a
    new bar. Needs the CTE `emit` (emit_points()); `days` are the scoped daily rows (they start at
    the emit points).
      first_row_date   the bar's first daily row: count_missing_interior = its distance to the
                       emit point + 1 - count_days
      next_gap_start   the first missing day after that first row (the bar's first interior gap,
                       if any), from the gaps of `sequenced`
      extra_days       the days counted before the emit point's own
    Every join is on a key (or the few gaps of a symbol): a join of `sequenced` to itself on the
    symbol alone would pair every two rows of a symbol.
#}
{% macro carried_seeds(sequenced, days, symbols, timeframes) %}
    select
        n.symbol_id,
        t.tf_id,
        c.bar_seq,
        d.day_seq,
        c.bar_date,
        c.first_row_date,
        c.count_days - 1 as extra_days,
        c.open,
        c.high,
        c.low,
        c.close,
        c.volume,
        c.quote_volume,
        c.time_high,
        c.time_low,
        c.count_missing_end as stored_missing_end,
        c.source_batch_id,
        d.next_bar_date,
        (
            select min(g.gap_start)
            from (
                select
                    symbol,
                    {{ add_days('prev_bar_date', 1) }} as gap_start
                from {{ sequenced }}
                where has_gap_before
            ) as g
            where g.symbol = c.symbol and g.gap_start > c.first_row_date
        ) as next_gap_start,
        d.last_gap_end
    from (
        select
            stored.symbol,
            stored.tf,
            stored.bar_date,
            stored.bar_seq,
            stored.count_days,
            stored.open,
            stored.high,
            stored.low,
            stored.close,
            stored.volume,
            stored.quote_volume,
            stored.time_high,
            stored.time_low,
            stored.source_batch_id,
            stored.count_missing_end,
            {{ add_days('stored.bar_date', '-(stored.count_missing_interior + stored.count_days - 1)') }}
                as first_row_date
        from {{ this }} as stored
        inner join emit
            on
                stored.symbol = emit.symbol
                and stored.bar_date = emit.emit_from
                and emit.has_predecessor
    ) as c
    inner join {{ symbols }} as n on c.symbol = n.symbol
    inner join {{ timeframes }} as t on c.tf = t.tf
    inner join {{ days }} as d on c.symbol = d.symbol and c.bar_date = d.bar_date
{% endmacro %}
