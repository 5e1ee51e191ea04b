"""sleeve_post_analysis (step 9): the heavier plots (plots/*.png): correlation heatmap and atom
paths over the window; with the validation backtest, its equity and drawdown, turnover and
costs, and the weights it held; the tearsheet is rendered again with the validation section.
One row per plot written."""

from typing import Any

import duckdb
import pandas as pd

from quantwarehouse.production import run_params
from quantwarehouse.reports import report_inputs, write_post_analysis, write_tearsheet


def model(dbt: Any, session: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    params = run_params(dbt.config.get("meta"))
    # The tables of sleeve_portfolio's tearsheet: dbt sees only the refs written in a model itself.
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
    if not params.skip_validation:
        tables["backtest"] = dbt.ref("sleeve_backtest").df()
        tables["backtest_metrics"] = dbt.ref("sleeve_backtest_metrics").df()
    inputs = report_inputs(params, tables)
    plots = write_post_analysis(params.run_dir, inputs)
    write_tearsheet(params.run_dir, inputs)
    return plots
