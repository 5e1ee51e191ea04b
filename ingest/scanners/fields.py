"""Scanner fields per symbol, point in time: only bars with `bar_date <= as_of` are read.

- `close`: the last close on or before the as-of date.
- `traded_value`: quote volume summed over the `window_days` days ending on the as-of date,
  divided by `window_days` (a day without a bar counts as nothing traded). Where a source gave no
  quote volume, volume x close stands in for it.
- `volatility`: sample stdev of daily log close-to-close returns over the same days, x sqrt(365)
  (crypto trades every day).
- `listing_age_days`: days from `dim_symbols.listed_at` (or, when unknown, the first bar) to the
  as-of date.
- `days_since_last_bar`: days from the last bar to the as-of date.
- `rating_*`: `main.features_matrix` on the as-of date.
"""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd

from ingest.scanners.config import FEATURE_FIELDS, ScannerConfig, Universe

DAYS_PER_YEAR = 365
BARS_TABLE = "main.bars_1d"
SYMBOLS_TABLE = "main.dim_symbols"
FEATURES_TABLE = "main.features_matrix"
FEATURES_HINT = "run `orchestrate.py daily-refresh --features` first"


class ScannerInputError(RuntimeError):
    """A warehouse table the scanner needs is missing or empty."""


def table_columns(con: duckdb.DuckDBPyConnection, qualified: str) -> list[str]:
    """Column names of `schema.table`, or [] when it does not exist."""
    schema, table = qualified.split(".")
    rows = con.execute(
        "select column_name from information_schema.columns "
        "where table_schema = ? and table_name = ? order by ordinal_position",
        [schema, table],
    ).fetchall()
    return [row[0] for row in rows]


def require_inputs(con: duckdb.DuckDBPyConnection) -> None:
    """Fail clearly when the bars or the symbol dimension have not been built."""
    for table, needed in (
        (BARS_TABLE, ("symbol", "bar_date", "close", "volume", "quote_volume")),
        (SYMBOLS_TABLE, ("symbol", "exchange", "quote_asset", "listed_at", "delisted_at")),
    ):
        columns = table_columns(con, table)
        if not columns:
            raise ScannerInputError(
                f"{table} does not exist: build the warehouse models first "
                "(`orchestrate.py daily-refresh`)"
            )
        missing = [c for c in needed if c not in columns]
        if missing:
            raise ScannerInputError(f"{table} has no column {', '.join(missing)}")


def latest_bar_date(con: duckdb.DuckDBPyConnection) -> date:
    latest = con.execute(f"select max(bar_date) from {BARS_TABLE}").fetchone()[0]
    if latest is None:
        raise ScannerInputError(f"{BARS_TABLE} is empty: load and build bars first")
    return latest


def symbols_without_metadata(con: duckdb.DuckDBPyConnection, as_of: date) -> list[str]:
    """Symbols with bars up to `as_of` but no exchange metadata: outside every universe.

    `dim_symbols` keeps such symbols with a null exchange; they may also have no row at all.
    """
    rows = con.execute(
        f"""
        select distinct b.symbol from {BARS_TABLE} as b
        where b.bar_date <= ?
            and not exists (
                select 1 from {SYMBOLS_TABLE} as s
                where s.symbol = b.symbol and s.exchange is not null
            )
        order by b.symbol
        """,
        [as_of],
    ).fetchall()
    return [row[0] for row in rows]


UNIVERSE_FIELDS_SQL = f"""
with symbols as (
    select symbol, min(cast(listed_at as date)) as listed_on
    from {SYMBOLS_TABLE}
    where lower(exchange) = lower($exchange)
        and upper(quote_asset) in (select unnest($quote_assets))
        and (listed_at is null or cast(listed_at as date) <= $as_of)
        and (delisted_at is null or cast(delisted_at as date) > $as_of)
    group by symbol
),
bars as (
    select
        b.symbol,
        b.bar_date,
        b.close,
        coalesce(b.quote_volume, b.volume * b.close) as traded,
        ln(b.close / lag(b.close) over (
            partition by b.symbol order by b.bar_date nulls last
        )) as log_return
    from {BARS_TABLE} as b
    where b.bar_date <= $as_of and b.symbol in (select symbol from symbols)
),
per_symbol as (
    select
        symbol,
        max_by(close, bar_date) as close,
        sum(traded) filter (where bar_date > $as_of - $window_days) / $window_days
            as traded_value,
        stddev_samp(log_return) filter (where bar_date > $as_of - $window_days)
            * sqrt({DAYS_PER_YEAR}) as volatility,
        min(bar_date) as first_bar_date,
        max(bar_date) as last_bar_date
    from bars
    group by symbol
)
select
    p.symbol,
    p.close,
    p.traded_value,
    p.volatility,
    $as_of - coalesce(s.listed_on, p.first_bar_date) as listing_age_days,
    $as_of - p.last_bar_date as days_since_last_bar
from per_symbol as p
inner join symbols as s on p.symbol = s.symbol
order by p.symbol
"""


def universe_fields(
    con: duckdb.DuckDBPyConnection, universe: Universe, as_of: date
) -> pd.DataFrame:
    """The warehouse fields of every symbol of the universe's exchange and quote assets."""
    return con.execute(
        UNIVERSE_FIELDS_SQL,
        {
            "exchange": universe.exchange,
            "quote_assets": list(universe.quote_assets),
            "as_of": as_of,
            "window_days": universe.window_days,
        },
    ).df()


def feature_fields(
    con: duckdb.DuckDBPyConnection, scanner: ScannerConfig, as_of: date
) -> pd.DataFrame | None:
    """The features-matrix fields the scanner uses, on the as-of date (None when it uses none)."""
    wanted = scanner.feature_fields()
    if not wanted:
        return None
    columns = table_columns(con, FEATURES_TABLE)
    if not columns:
        raise ScannerInputError(
            f"uses {', '.join(wanted)}, but the features matrix ({FEATURES_TABLE}) has not been "
            f"built yet: {FEATURES_HINT}"
        )
    missing = [field for field in wanted if field not in columns]
    if missing:
        raise ScannerInputError(f"{FEATURES_TABLE} has no column {', '.join(missing)}")
    selected = ", ".join(wanted)
    frame = con.execute(
        f"select symbol, {selected} from {FEATURES_TABLE} where bar_date = ?", [as_of]
    ).df()
    if frame.empty:
        latest = con.execute(
            f"select max(bar_date) from {FEATURES_TABLE} where bar_date <= ?", [as_of]
        ).fetchone()[0]
        raise ScannerInputError(
            f"{FEATURES_TABLE} has no rows for {as_of} (latest before it: {latest or 'none'}): "
            f"refresh the features ({FEATURES_HINT})"
        )
    return frame


def scanner_fields(
    con: duckdb.DuckDBPyConnection, scanner: ScannerConfig, as_of: date
) -> pd.DataFrame:
    """Every field the scanner can use, one row per symbol of its exchange and quote assets."""
    fields = universe_fields(con, scanner.universe, as_of)
    features = feature_fields(con, scanner, as_of)
    if features is not None:
        fields = fields.merge(features, on="symbol", how="left")
    for field in FEATURE_FIELDS:
        if field not in fields:
            fields[field] = float("nan")
    return fields
