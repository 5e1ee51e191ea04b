"""sleeve_selection (step 2): HTR selection, one decision per candidate (kept or not, the stage
that kept it, why), with the stage that ended the selection; metadata (history, rating) is read
from the features matrix as of the selection date."""

from typing import Any

import duckdb
import pandas as pd

from quantwarehouse.production import run_params, wide, write_artifact_json
from quantwarehouse.sleeves.selection import metadata_as_of, select_htr


def model(dbt: Any, session: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    params = run_params(dbt.config.get("meta"))
    profile = params.profile()
    candidates = dbt.ref("sleeve_candidates").df()
    window = wide(dbt.ref("sleeve_returns_window").df(), "simple_return")
    as_of = pd.Timestamp(candidates["as_of"].iloc[0])
    health = candidates[["symbol", "healthy", "missing_bars", "first_missing", "health_reason"]]
    features = (
        dbt.source("wh", "features_matrix")
        .filter(f"bar_date <= date '{as_of.date()}'")
        .project(f"bar_date, symbol, {profile.rating_field}")
        .df()
    )
    features = features[features["symbol"].isin(candidates["symbol"])]
    metadata = metadata_as_of(features, as_of, profile.rating_field)
    result = select_htr(
        window, health.rename(columns={"health_reason": "reason"}), metadata, profile
    )
    order = {symbol: position for position, symbol in enumerate(result.selected, start=1)}
    decisions = result.decisions.assign(
        selection_order=result.decisions["symbol"].map(order).astype("Int64"),
        stage_ended=result.stage_ended,
        stage_reason=result.stage_reason,
    )
    write_artifact_json(
        params,
        "selection.json",
        {
            "run_id": params.run_id,
            "profile": profile.name,
            "as_of": as_of,
            "target_count": profile.selection.target_count,
            "selected": result.selected,
            "stage_ended": result.stage_ended,
            "stage_reason": result.stage_reason,
            "stage_counts": result.stage_counts,
        },
    )
    if not result.selected:
        raise RuntimeError(
            f"HTR selected no symbol out of {len(candidates)} candidates: {result.stage_reason}"
        )
    return decisions
