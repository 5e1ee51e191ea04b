"""sleeve_backtest (step 8, validation): the walk-forward backtest's daily ledger over the last
`backtest_days` up to the as-of date: gross and net return, equity, drawdown, and on rebalance
days the eligible universe (read from the features matrix as of that day), the selection,
turnover and cost. The weights set at each rebalance go to backtest_weights.csv and the
rebalance records to validation.json."""

from typing import Any

import duckdb
import pandas as pd

from quantwarehouse.production import (
    backtest_ledger,
    backtest_period,
    read_window_returns,
    run_params,
    write_artifact_json,
    write_atomically,
)
from quantwarehouse.sleeves.backtest import walk_forward


def model(dbt: Any, session: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    params = run_params(dbt.config.get("meta"))
    profile = params.profile()
    candidates = dbt.ref("sleeve_candidates").df()
    as_of = candidates["as_of"].iloc[0]
    features = (
        dbt.source("wh", "features_matrix")
        .filter(f"bar_date <= date '{pd.Timestamp(as_of).date()}'")
        .project(f"bar_date, symbol, {profile.rating_field}")
        .df()
    )
    start, end = backtest_period(features, profile, as_of)
    returns_relation = dbt.source("wh", "returns_daily")
    symbols = sorted(features["symbol"].unique())
    days = (end - start).days + 1 + profile.lookback_days
    returns = read_window_returns(returns_relation, symbols, end, days)
    result = walk_forward(features, returns, profile, start, end)
    write_atomically(params.run_dir / "backtest_weights.csv", result.weights_history.to_csv())
    write_artifact_json(
        params,
        "validation.json",
        {
            "run_id": params.run_id,
            "profile": profile.name,
            "start": start,
            "end": end,
            "rebalance_days": profile.rebalance_days,
            "cost_bps": profile.cost_bps,
            "missing_held_returns": result.missing_held_returns,
            "rebalances": result.rebalances.to_dict("records"),
        },
    )
    return backtest_ledger(result)
