"""sleeve_portfolio (step 7, reporting): the sleeve's portfolio, one row per atom with the weight
of the optimizer in use; also writes weights.csv (every method side by side) and tearsheet.html."""

from typing import Any

import duckdb
import pandas as pd

from quantwarehouse.production import run_params
from quantwarehouse.reports import (
    portfolio_table,
    report_inputs,
    write_tearsheet,
    write_weights_csv,
)


def model(dbt: Any, session: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    params = run_params(dbt.config.get("meta"))
    tables = {
        "candidates": dbt.ref("sleeve_candidates").df(),
        "selection": dbt.ref("sleeve_selection").df(),
        "atoms": dbt.ref("sleeve_atoms").df(),
        "atom_returns": dbt.ref("sleeve_atom_returns").df(),
        "clusters": dbt.ref("sleeve_clusters").df(),
        "linkage": dbt.ref("sleeve_cluster_linkage").df(),
        "weights": dbt.ref("sleeve_weights").df(),
        "optimizers": dbt.ref("sleeve_optimizers").df(),
        "sign_test_pre_opt": dbt.ref("sleeve_sign_test_pre_opt").df(),
        "sign_test": dbt.ref("sleeve_sign_test").df(),
    }
    inputs = report_inputs(params, tables)
    write_weights_csv(params.run_dir, inputs)
    write_tearsheet(params.run_dir, inputs)
    return portfolio_table(inputs)
