"""sleeve_candidates (step 1, aggregation): the profile's scanner candidates as of the latest
features date, computed read-only from the warehouse, with their strict health over the lookback.

The scanner (ingest.scanners) reads `main.bars_1d`, `main.dim_symbols` and
`main.features_matrix`; here it runs on a cursor whose default database is the read-only
warehouse `wh`, so those names are the source tables declared below.
"""

from typing import Any

import duckdb
import pandas as pd

from ingest.scanners.config import SCANNERS_DIR, load_scanner
from ingest.scanners.fields import scanner_fields
from ingest.scanners.run import select_candidates
from quantwarehouse.production import (
    candidate_records,
    latest_date,
    read_window_returns,
    run_params,
    write_artifact_json,
)
from quantwarehouse.sleeves.selection import aggregate


def model(dbt: Any, session: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    params = run_params(dbt.config.get("meta"))
    profile = params.profile()
    features = dbt.source("wh", "features_matrix")
    dbt.source("wh", "bars_1d")
    dbt.source("wh", "dim_symbols")
    returns = dbt.source("wh", "returns_daily")
    as_of = latest_date(features, "bar_date")
    scanner = load_scanner(SCANNERS_DIR / f"{profile.scanner}.yml")
    reader = session.cursor()
    try:
        reader.execute("use wh")
        found = select_candidates(scanner, scanner_fields(reader, scanner, as_of))
    finally:
        reader.close()
    symbols = found.frame["symbol"].tolist()
    if not symbols:
        raise RuntimeError(
            f"scanner {scanner.name} found no candidates as of {as_of} (universe "
            f"{found.in_universe}, after filters {found.passed_filters}): nothing to select from"
        )
    window = read_window_returns(returns, symbols, as_of, profile.lookback_days)
    health = aggregate(symbols, window, profile.lookback_days, as_of).health
    table = candidate_records(found.frame, health, profile, scanner.name, as_of)
    write_artifact_json(
        params,
        "candidates.json",
        {
            "run_id": params.run_id,
            "profile": profile.name,
            "scanner": scanner.name,
            "as_of": as_of,
            "lookback_days": profile.lookback_days,
            "counts": {
                "in_universe": found.in_universe,
                "passed_filters": found.passed_filters,
                "candidates": len(table),
                "healthy": int(table["healthy"].sum()),
            },
            "candidates": table.to_dict("records"),
        },
    )
    return table
