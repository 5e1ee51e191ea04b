"""The quality suites, one set per layer, declared as data.

A layer's gate runs its suites in order. A suite validates either the rows of one table (the
whole table, or the slice a refresh changed) or a derived frame computed from it in DuckDB
(`expectations.frames`), with a list of checks. A check names one Great Expectations expectation
class and its arguments; `expectations.workspace` turns it into the GE object. Thresholds that a
user may tune are GE suite parameters (`{"$PARAMETER": name}`), filled from `GateSettings`.

This module does not import Great Expectations (it is slow to import), so the command line can
list layers and suites cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from expectations import frames
from expectations.frames import DAILY_SOURCE_INTERVALS, Frame
from expectations.tables import Table
from ingest.intervals import INTERVALS
from ingest.records import CANDIDATE_SCHEMA, PRICE_COLUMNS


@dataclass(frozen=True)
class Check:
    """One expectation: its report name, GE class name (in `gx.expectations`) and arguments."""

    name: str
    expectation: str
    kwargs: Mapping[str, object]
    notes: str | None = None


@dataclass(frozen=True)
class SuiteSpec:
    """A GE suite over a table's rows (`frame` None) or over a frame derived from the table."""

    name: str
    table: Table
    checks: tuple[Check, ...]
    frame: Frame | None = None
    frame_keys: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    about: str = ""

    @property
    def keys(self) -> tuple[str, ...]:
        """The key of the validated frame: ordering, chunk boundaries, sample rows."""
        return self.frame_keys if self.frame is not None else self.table.keys

    @property
    def relations(self) -> tuple[str, ...]:
        """Every relation the suite reads; a missing one skips the suite."""
        return (self.table.relation, *self.needs)


# -- checks ---------------------------------------------------------------------------------------


def parameter(name: str) -> dict[str, str]:
    """A threshold filled at validation time from `GateSettings.parameters()`."""
    return {"$PARAMETER": name}


def _shown(value: object) -> str:
    return f"${value['$PARAMETER']}" if isinstance(value, dict) else str(value)


def columns_present(*columns: str) -> Check:
    return Check(
        "documented columns present",
        "ExpectTableColumnsToMatchSet",
        {"column_set": list(columns), "exact_match": False},
    )


def unique(*columns: str) -> Check:
    return Check(
        f"unique ({', '.join(columns)})",
        "ExpectCompoundColumnsToBeUnique",
        {"column_list": list(columns)},
    )


def not_null(*columns: str) -> tuple[Check, ...]:
    return tuple(
        Check(f"{column} not null", "ExpectColumnValuesToNotBeNull", {"column": column})
        for column in columns
    )


def between(
    column: str,
    low: object = None,
    high: object = None,
    *,
    strict: bool = False,
    notes: str | None = None,
) -> Check:
    """low <= column <= high (strict: <), either bound optional; nulls are not checked."""
    if low is not None and low == high:
        name = f"{column} == {_shown(low)}"
    elif high is None:
        name = f"{column} {'>' if strict else '>='} {_shown(low)}"
    elif low is None:
        name = f"{column} {'<' if strict else '<='} {_shown(high)}"
    else:
        brackets = "()" if strict else "[]"
        name = f"{column} in {brackets[0]}{_shown(low)}, {_shown(high)}{brackets[1]}"
    kwargs = {"column": column, "min_value": low, "max_value": high}
    if strict:
        kwargs |= {"strict_min": low is not None, "strict_max": high is not None}
    return Check(name, "ExpectColumnValuesToBeBetween", kwargs, notes)


def greater(a: str, b: str, *, or_equal: bool = True, notes: str | None = None) -> Check:
    """a >= b (or a > b) row by row; rows where either is null are not checked."""
    return Check(
        f"{a} {'>=' if or_equal else '>'} {b}",
        "ExpectColumnPairValuesAToBeGreaterThanB",
        {
            "column_A": a,
            "column_B": b,
            "or_equal": or_equal,
            "ignore_row_if": "either_value_is_missing",
        },
        notes,
    )


def equal(a: str, b: str, *, notes: str | None = None) -> Check:
    return Check(
        f"{a} == {b}",
        "ExpectColumnPairValuesToBeEqual",
        {"column_A": a, "column_B": b},
        notes,
    )


def in_set(column: str, values: Sequence[object], *, notes: str | None = None) -> Check:
    shown = ", ".join(str(v) for v in values) if len(values) <= 6 else f"{len(values)} values"
    return Check(
        f"{column} in {{{shown}}}",
        "ExpectColumnValuesToBeInSet",
        {"column": column, "value_set": list(values)},
        notes,
    )


def ohlc_consistent() -> tuple[Check, ...]:
    """low <= open, close <= high, and prices above zero (after staging's repair)."""
    return (
        greater("high", "low"),
        greater("high", "open"),
        greater("high", "close"),
        greater("open", "low"),
        greater("close", "low"),
        between("low", 0, strict=True),
    )


# -- tables ---------------------------------------------------------------------------------------

RAW_KLINES = Table(
    "raw.klines",
    keys=("symbol", "interval", "open_time", "revision"),
    time_column="open_time",
    batch_column="batch_id",
    invocation_column=None,
    partition=("symbol", "interval"),
)
STG_KLINES = Table(
    "main.stg_klines",
    keys=("symbol", "interval", "open_time"),
    time_column="open_time",
    batch_column="source_batch_id",
    invocation_column=None,
    partition=("symbol", "interval"),
    marked_in=RAW_KLINES,
)
BARS_1D = Table("main.bars_1d", ("symbol", "bar_date"), "bar_date", "source_batch_id")
RETURNS_DAILY = Table("main.returns_daily", ("symbol", "bar_date"), "bar_date", "source_batch_id")
FEATURES_MATRIX = Table(
    "main.features_matrix", ("symbol", "bar_date"), "bar_date", "source_batch_id"
)
# Bar families (models/bars) and whether they keep a row for every daily bar; calendar bars leave
# out a symbol's partial first period.
BAR_FAMILIES: dict[str, bool] = {
    "bars_multi_tf": True,
    "bars_cal_us": False,
    "bars_cal_iso": False,
    "bars_cal_anchor_us": True,
    "bars_cal_anchor_iso": True,
}
# EMA marts (python_models/emas) and the bars each is computed over.
EMA_MARTS: dict[str, str] = {
    "emas_1d": "bars_1d",
    **{f"emas_{family.removeprefix('bars_')}": family for family in BAR_FAMILIES},
}


def family_table(name: str) -> Table:
    return Table(
        f"main.{name}",
        ("symbol", "tf", "bar_date"),
        "bar_date",
        "source_batch_id",
        partition=("symbol", "tf"),
    )


def ema_table(name: str) -> Table:
    return Table(
        f"main.{name}",
        ("symbol", "tf", "period", "bar_date"),
        "bar_date",
        "source_batch_id",
        partition=("symbol", "tf", "period"),
    )


# -- suites per layer -----------------------------------------------------------------------------

KLINE_KEY_COLUMNS = ("symbol", "interval", "open_time", "close_time", "source_row")
# open, high, low, close, volume, quote_volume, trade_count, taker_buy_*: what a source delivers.
KLINE_VALUE_COLUMNS = tuple(n for n in CANDIDATE_SCHEMA.names if n not in KLINE_KEY_COLUMNS)


def raw_suites() -> tuple[SuiteSpec, ...]:
    rows = SuiteSpec(
        "raw.klines",
        RAW_KLINES,
        (
            columns_present(
                "symbol", "interval", "open_time", "close_time", *KLINE_VALUE_COLUMNS,
                "revision", "value_hash", "source", "batch_id", "loaded_at",
            ),
            unique(*RAW_KLINES.keys),
            *not_null(
                "symbol", "interval", "open_time", "close_time", "open", "high", "low", "close",
                "volume", "revision", "source", "batch_id", "loaded_at",
            ),
            in_set("interval", INTERVALS),
            greater("close_time", "open_time", or_equal=False),
            *(between(price, 0, strict=True) for price in PRICE_COLUMNS),
            between("volume", 0),
            between("quote_volume", 0),
            between("trade_count", 0),
            between("revision", 1),
        ),
        about=(
            "Raw klines as received (append-only, one row per revision). OHLC consistency is not "
            "expected here: staging repairs it."
        ),
    )  # fmt: skip
    revisions = SuiteSpec(
        "raw.klines.revisions",
        RAW_KLINES,
        (
            in_set("first_revision", [1]),
            equal("revision_count", "last_revision"),
        ),
        frame=frames.raw_revision_history,
        frame_keys=("symbol", "interval", "open_time"),
        about="Revisions of each revised kline are numbered 1..n without gaps or repeats.",
    )
    return rows, revisions


def staging_suites() -> tuple[SuiteSpec, ...]:
    return (
        SuiteSpec(
            "staging.stg_klines",
            STG_KLINES,
            (
                columns_present(
                    "symbol", "interval", "open_time", "close_time", *KLINE_VALUE_COLUMNS,
                    "repaired_high", "repaired_low", "revision", "source", "source_batch_id",
                    "loaded_at",
                ),
                unique(*STG_KLINES.keys),
                *not_null(
                    "symbol", "interval", "open_time", "close_time", "open", "high", "low",
                    "close", "volume", "repaired_high", "repaired_low", "revision",
                    "source_batch_id",
                ),
                in_set("interval", INTERVALS),
                greater("close_time", "open_time", or_equal=False),
                *ohlc_consistent(),
                between("volume", 0),
                between("quote_volume", 0),
            ),
            about="The latest revision of every kline, OHLC repaired.",
        ),
    )  # fmt: skip


def daily_bar_suites() -> tuple[SuiteSpec, ...]:
    rows = SuiteSpec(
        "bars.bars_1d",
        BARS_1D,
        (
            columns_present(
                "symbol", "bar_date", "open_time", *KLINE_VALUE_COLUMNS, "time_high",
                "time_low", "source_interval", "source_bar_count", "expected_bar_count",
                "is_complete_day", "repaired_high", "repaired_low", "source_batch_id",
                "invocation_id",
            ),
            unique(*BARS_1D.keys),
            *not_null(
                "symbol", "bar_date", "open", "high", "low", "close", "volume",
                "source_interval", "source_bar_count", "is_complete_day", "repaired_high",
                "repaired_low", "source_batch_id", "invocation_id",
            ),
            *ohlc_consistent(),
            between("volume", 0),
            between("source_bar_count", 1),
            in_set("source_interval", DAILY_SOURCE_INTERVALS),
        ),
        about="Canonical daily bars.",
    )  # fmt: skip
    calendar = SuiteSpec(
        "bars.bars_1d.calendar",
        BARS_1D,
        (
            equal(
                "row_count",
                "source_days",
                notes="every UTC day with source klines has exactly one daily bar",
            ),
            greater("calendar_days", "row_count"),
        ),
        frame=frames.daily_bars_calendar,
        frame_keys=("symbol",),
        needs=(frames.RAW_KLINES,),
        about=(
            "Daily rows per symbol against the calendar: the calendar days without a bar are the "
            "days the source has no kline for (the flagged gaps)."
        ),
    )
    latest = SuiteSpec(
        "bars.bars_1d.latest_date",
        BARS_1D,
        (
            in_set(
                "is_on_latest_date",
                [True],
                notes=(
                    "a listed symbol with a bar on the previous date must have one on the latest "
                    "date (whole table)"
                ),
            ),
        ),
        frame=frames.latest_date_presence,
        frame_keys=("symbol",),
        needs=(frames.SYMBOLS,),
        about="No listed symbol silently vanishes from one day to the next.",
    )
    fresh = SuiteSpec(
        "bars.bars_1d.freshness",
        BARS_1D,
        (
            between(
                "days_behind",
                0,
                parameter("max_days_behind"),
                notes="last bar within $max_days_behind days of the newest bar (whole table)",
            ),
        ),
        frame=frames.freshness,
        frame_keys=("symbol",),
        needs=(frames.SYMBOLS,),
        about="Every listed symbol's last daily bar is recent relative to the newest bar.",
    )
    return rows, calendar, latest, fresh


def family_suites(name: str, keeps_every_day: bool) -> tuple[SuiteSpec, ...]:
    table = family_table(name)
    rows = SuiteSpec(
        f"bar_families.{name}",
        table,
        (
            columns_present(
                "symbol", "tf", "bar_date", "bar_seq", "bar_start_date", "bar_end_date",
                "tf_days", "pos_in_bar", "count_days", "open", "high", "low", "close", "volume",
                "quote_volume", "is_partial_start", "is_partial_end", "is_missing_days",
                "count_missing_days", "source_batch_id", "invocation_id",
            ),
            unique(*table.keys),
            *not_null(
                "symbol", "tf", "bar_date", "bar_seq", "tf_days", "pos_in_bar", "count_days",
                "open", "high", "low", "close", "volume", "is_partial_start", "is_partial_end",
                "count_missing_days", "source_batch_id", "invocation_id",
            ),
            *ohlc_consistent(),
            between("volume", 0),
            between("pos_in_bar", 1),
            greater("tf_days", "pos_in_bar"),
            greater("pos_in_bar", "count_days"),
            between("count_missing_days", 0),
            greater("bar_date", "bar_start_date"),
            greater("bar_end_date", "bar_date"),
        ),
        about=f"Snapshot rows of the {name} bar family.",
    )  # fmt: skip
    row_count = (
        equal("row_count", "daily_bar_rows", notes="one snapshot row per daily bar and timeframe")
        if keeps_every_day
        else greater(
            "daily_bar_rows",
            "row_count",
            notes="at most one snapshot row per daily bar (a partial first period is left out)",
        )
    )
    coverage = SuiteSpec(
        f"bar_families.{name}.coverage",
        table,
        (row_count, between("orphan_rows", 0, 0, notes="every row's day has a daily bar")),
        frame=frames.family_coverage(table.relation),
        frame_keys=("symbol", "tf"),
        needs=(frames.DAILY_BARS,),
        about=f"Rows of {name} per symbol and timeframe against the daily bars.",
    )
    return rows, coverage


def bar_family_suites() -> tuple[SuiteSpec, ...]:
    return tuple(
        suite
        for name, keeps_every_day in BAR_FAMILIES.items()
        for suite in family_suites(name, keeps_every_day)
    )


def returns_suites() -> tuple[SuiteSpec, ...]:
    rows = SuiteSpec(
        "returns.returns_daily",
        RETURNS_DAILY,
        (
            columns_present(
                "symbol", "bar_date", "prev_bar_date", "close", "prev_close", "simple_return",
                "log_return", "days_spanned", "spans_missing_days", "is_first_bar",
                "is_complete_day", "source_batch_id", "invocation_id",
            ),
            unique(*RETURNS_DAILY.keys),
            *not_null(
                "symbol", "bar_date", "close", "spans_missing_days", "is_first_bar",
                "is_complete_day", "source_batch_id", "invocation_id",
            ),
            between(
                "simple_return",
                parameter("min_simple_return"),
                parameter("max_simple_return"),
                strict=True,
                notes="a price cannot fall below zero; a move of 500 % or more is a toxic print",
            ),
            between("close", 0, strict=True),
            between("prev_close", 0, strict=True),
            between("days_spanned", 1),
        ),
        about="Close-to-close daily returns.",
    )  # fmt: skip
    calendar = SuiteSpec(
        "returns.returns_daily.calendar",
        RETURNS_DAILY,
        (
            equal("row_count", "daily_bar_rows", notes="one return row per daily bar"),
            equal(
                "covered_days",
                "calendar_days",
                notes="rows plus the missing days the returns flag cover the calendar",
            ),
        ),
        frame=frames.returns_calendar,
        frame_keys=("symbol",),
        needs=(frames.DAILY_BARS,),
        about="Return rows per symbol against the daily bars and the calendar.",
    )
    return rows, calendar


def ema_suites(name: str, bars: str) -> tuple[SuiteSpec, ...]:
    table = ema_table(name)
    rows = SuiteSpec(
        f"emas.{name}",
        table,
        (
            columns_present(
                "symbol", "tf", "period", "bar_date", "ema", "ema_bar", "ema_v2",
                "is_partial_end", "closes_bar", "source_batch_id", "invocation_id",
            ),
            unique(*table.keys),
            *not_null(
                "symbol", "tf", "period", "bar_date", "is_partial_end", "closes_bar",
                "source_batch_id", "invocation_id",
            ),
            between("period", 1),
            *(between(column, 0, strict=True) for column in ("ema", "ema_bar", "ema_v2")),
        ),
        about=f"EMAs over {bars}.",
    )  # fmt: skip
    coverage = SuiteSpec(
        f"emas.{name}.coverage",
        table,
        (
            equal("ema_rows", "expected_ema_rows", notes="one row per bar row and EMA period"),
            greater("lowest_ema", "close_floor", notes="an EMA is a mean of closes"),
            greater("close_ceiling", "highest_ema", notes="an EMA is a mean of closes"),
        ),
        frame=frames.ema_coverage(table.relation, f"main.{bars}"),
        frame_keys=("symbol", "tf"),
        needs=(f"main.{bars}", frames.DAILY_BARS),
        about=f"Rows of {name} per symbol and timeframe against {bars}, and the EMAs' range.",
    )
    return rows, coverage


def emas_suites() -> tuple[SuiteSpec, ...]:
    return tuple(suite for name, bars in EMA_MARTS.items() for suite in ema_suites(name, bars))


FEATURE_INDICATORS = (
    *(f"sma_{n}" for n in (10, 20, 30, 50, 100, 200)),
    *(f"ema_{n}" for n in (10, 20, 30, 50, 100, 200)),
    "hull_ma_9", "vwma_20", "ichimoku_conversion", "ichimoku_base", "ichimoku_span_a",
    "ichimoku_span_b", "rsi_14", "stoch_k", "stoch_d", "cci_20", "adx_14", "plus_di_14",
    "minus_di_14", "awesome_oscillator", "momentum_10", "macd", "macd_signal", "stoch_rsi_k",
    "stoch_rsi_d", "williams_r_14", "bull_power_13", "bear_power_13", "ultimate_oscillator",
)  # fmt: skip
VOTE_COLUMNS = {
    "ma_buy_votes": 15,
    "ma_sell_votes": 15,
    "ma_neutral_votes": 15,
    "osc_buy_votes": 11,
    "osc_sell_votes": 11,
    "osc_neutral_votes": 11,
}
PERCENT_OSCILLATORS = (
    "rsi_14", "stoch_k", "stoch_d", "adx_14", "plus_di_14", "minus_di_14", "stoch_rsi_k",
    "stoch_rsi_d", "ultimate_oscillator",
)  # fmt: skip
RATING_LABELS = ("strong_sell", "sell", "neutral", "buy", "strong_buy")


def features_suites() -> tuple[SuiteSpec, ...]:
    rows = SuiteSpec(
        "features.features_matrix",
        FEATURES_MATRIX,
        (
            columns_present(
                "bar_date", "symbol", "close", *FEATURE_INDICATORS, *VOTE_COLUMNS, "rating_ma",
                "rating_osc", "rating_all", "rating_all_label", "source_batch_id",
                "invocation_id",
            ),
            unique(*FEATURES_MATRIX.keys),
            *not_null(
                "symbol", "bar_date", "close", *VOTE_COLUMNS, "source_batch_id", "invocation_id"
            ),
            between("close", 0, strict=True),
            *(between(rating, -1, 1) for rating in ("rating_all", "rating_ma", "rating_osc")),
            in_set("rating_all_label", RATING_LABELS),
            *(between(column, 0, 100) for column in PERCENT_OSCILLATORS),
            between("williams_r_14", -100, 0),
            *(between(column, 0, votes) for column, votes in VOTE_COLUMNS.items()),
        ),
        about="Technical ratings and their indicators, point in time.",
    )  # fmt: skip
    coverage = SuiteSpec(
        "features.features_matrix.coverage",
        FEATURES_MATRIX,
        (equal("row_count", "daily_bar_rows", notes="one features row per daily bar"),),
        frame=frames.daily_panel_coverage(FEATURES_MATRIX.relation),
        frame_keys=("symbol",),
        needs=(frames.DAILY_BARS,),
        about="Features rows per symbol against the daily bars.",
    )
    return rows, coverage


LAYERS: dict[str, tuple[SuiteSpec, ...]] = {
    "raw": raw_suites(),
    "staging": staging_suites(),
    "bars": daily_bar_suites(),
    # Its own layer: only the EMAs read the families, so their gate need not hold up the returns.
    "bar_families": bar_family_suites(),
    "returns": returns_suites(),
    "emas": emas_suites(),
    "features": features_suites(),
}
# Upstream first: a layer's gate runs after the refresh step that builds it.
LAYER_ORDER: tuple[str, ...] = tuple(LAYERS)


def layer_suites(layer: str) -> tuple[SuiteSpec, ...]:
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}; expected one of {', '.join(LAYER_ORDER)}")
    return LAYERS[layer]


def suite_named(name: str) -> SuiteSpec:
    """The suite called `name`, whatever its layer."""
    for specs in LAYERS.values():
        for spec in specs:
            if spec.name == name:
                return spec
    raise ValueError(f"unknown suite {name!r}")
