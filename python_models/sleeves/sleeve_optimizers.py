"""sleeve_optimizers (step 6, optimization): one row per optimizer tried: the stable-sum gate's
verdict, whether it is the primary and the one used, its weights' sum and concentration, and the
settings it ran with (HRP distance, linkage, leaf order; solver objective)."""

import json
from typing import Any

import duckdb
import pandas as pd

from quantwarehouse.production import run_params
from quantwarehouse.sleeves.optimize import method_settings


def model(dbt: Any, session: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    profile = run_params(dbt.config.get("meta")).profile()
    weights = dbt.ref("sleeve_weights").df()
    table = (
        weights.groupby("method", sort=False)
        .agg(
            method_order=("method_order", "first"),
            gate_passed=("gate_passed", "first"),
            gate_reason=("gate_reason", "first"),
            raw_sum=("raw_sum", "first"),
            is_primary=("is_primary", "first"),
            is_chosen=("is_chosen", "first"),
            weight_sum=("weight", lambda w: w.sum(min_count=1)),
            max_weight=("weight", "max"),
            atoms_held=("weight", lambda w: int((w > 0).sum())),
        )
        .reset_index()
        .sort_values("method_order")
    )
    table["fallback_used"] = not table.loc[table["is_chosen"], "is_primary"].all()
    table["settings"] = [
        json.dumps(method_settings(method, profile), sort_keys=True) for method in table["method"]
    ]
    return table
