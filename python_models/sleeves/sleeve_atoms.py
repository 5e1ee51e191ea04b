"""sleeve_atoms (step 3, synthesis): one strategy atom (symbol, direction, sleeve) per selected
symbol, in selection order."""

from typing import Any

import duckdb
import pandas as pd

from quantwarehouse.production import run_params, selected_symbols, wide
from quantwarehouse.sleeves.synthesis import synthesize


def model(dbt: Any, session: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    profile = run_params(dbt.config.get("meta")).profile()
    window = wide(dbt.ref("sleeve_returns_window").df(), "simple_return")
    selected = selected_symbols(dbt.ref("sleeve_selection").df())
    atoms = synthesize(window, selected, profile.direction, profile.name).atoms
    return atoms.assign(atom_order=range(1, len(atoms) + 1))
