"""sleeve_backtest_metrics (step 8, validation): the backtest's performance metrics (net of
costs; CAGR, volatility, Sharpe, Sortino, max drawdown, Calmar, hit rate, annualized with 365
days), turnover and costs; also written to validation_metrics.json."""

from typing import Any

import duckdb
import pandas as pd

from quantwarehouse.production import run_params, write_artifact_json
from quantwarehouse.sleeves.metrics import performance_metrics


def model(dbt: Any, session: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    params = run_params(dbt.config.get("meta"))
    ledger = dbt.ref("sleeve_backtest").df().sort_values("bar_date")
    daily = ledger.set_index(pd.to_datetime(ledger["bar_date"]))["net_return"]
    figures = performance_metrics(daily)
    figures |= {
        "rebalances": int(ledger["turnover"].notna().sum()),
        "total_turnover": float(ledger["turnover"].sum()),
        "total_cost": float(ledger["cost"].sum()),
    }
    write_artifact_json(
        params, "validation_metrics.json", {"run_id": params.run_id, "metrics": figures}
    )
    numeric = {k: v for k, v in figures.items() if k not in ("start", "end")}
    return pd.DataFrame(
        {
            "metric": list(numeric),
            "value": [float(v) if v is not None else None for v in numeric.values()],
        }
    ).astype({"value": "float64"})
