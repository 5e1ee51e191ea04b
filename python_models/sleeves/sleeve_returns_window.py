"""sleeve_returns_window (step 1, aggregation): every candidate's one-day simple return on every
calendar day of the lookback window ending on the as-of date; a missing return is a null row (the
strict-health holes), so the window reads back exactly as the library built it."""

from typing import Any

import duckdb
import pandas as pd

from quantwarehouse.production import long, read_window_returns, run_params
from quantwarehouse.sleeves.selection import aggregate


def model(dbt: Any, session: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    profile = run_params(dbt.config.get("meta")).profile()
    candidates = dbt.ref("sleeve_candidates").df()
    symbols = candidates.sort_values("scan_rank")["symbol"].tolist()
    as_of = candidates["as_of"].iloc[0]
    returns = read_window_returns(
        dbt.source("wh", "returns_daily"), symbols, as_of, profile.lookback_days
    )
    window = aggregate(symbols, returns, profile.lookback_days, as_of).returns_window
    return long(window, "simple_return")
