"""sleeve_atom_returns (step 3, synthesis): each atom's return stream over the window beside the
raw return it was made from (LONG: raw; SHORT: -clip(raw, upper=1.0))."""

from typing import Any

import duckdb
import pandas as pd

from quantwarehouse.production import (
    inject_sign_error,
    long,
    run_params,
    selected_symbols,
    wide,
)
from quantwarehouse.sleeves.synthesis import synthesize


def model(dbt: Any, session: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    params = run_params(dbt.config.get("meta"))
    profile = params.profile()
    window = wide(dbt.ref("sleeve_returns_window").df(), "simple_return")
    selected = selected_symbols(dbt.ref("sleeve_selection").df())
    synthesized = synthesize(window, selected, profile.direction, profile.name)
    returns = synthesized.returns
    if params.inject_sign_error:
        returns = inject_sign_error(returns, synthesized.atoms, window, params.inject_sign_error)
    atoms = synthesized.atoms.set_index("atom")
    rows = long(returns, "atom_return", key="atom")
    rows["symbol"] = rows["atom"].map(atoms["symbol"])
    rows["direction"] = rows["atom"].map(atoms["direction"])
    raw = long(window, "raw_return")
    return rows.merge(raw, on=["bar_date", "symbol"], how="left")[
        ["bar_date", "atom", "symbol", "direction", "raw_return", "atom_return"]
    ]
