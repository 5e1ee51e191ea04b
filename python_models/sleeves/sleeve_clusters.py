"""sleeve_clusters (step 5, pre-optimization): per atom, its correlation cluster and dendrogram
position, antifragility and regime cap (the caps the optimizers respect)."""

from typing import Any

import duckdb
import pandas as pd

from quantwarehouse.production import ordered_atoms, run_params, wide
from quantwarehouse.sleeves.preopt import preopt_analysis


def model(dbt: Any, session: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    profile = run_params(dbt.config.get("meta")).profile()
    atoms = dbt.ref("sleeve_atoms").df()
    atom_returns = dbt.ref("sleeve_atom_returns").df()
    atom_returns = wide(atom_returns, "atom_return", key="atom")[ordered_atoms(atoms)]
    result = preopt_analysis(atom_returns, profile)
    table = (
        pd.DataFrame({"atom": result.atoms, "atom_index": range(len(result.atoms))})
        .merge(result.clusters, on="atom")
        .merge(result.antifragility, on="atom")
        .merge(result.regimes, on="atom")
    )
    return table
