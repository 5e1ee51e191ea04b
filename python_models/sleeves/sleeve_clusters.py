"""sleeve_clusters (step 5, pre-optimization): per atom, its correlation cluster and dendrogram
position, antifragility and regime cap (the caps the optimizers respect)."""

from typing import Any

import duckdb
import pandas as pd

from quantwarehouse.production import atom_matrix, run_params
from quantwarehouse.sleeves.preopt import preopt_analysis


def model(dbt: Any, session: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    profile = run_params(dbt.config.get("meta")).profile()
    atoms = dbt.ref("sleeve_atoms").df()
    atom_returns = dbt.ref("sleeve_atom_returns").df()
    result = preopt_analysis(atom_matrix(atoms, atom_returns), profile)
    table = (
        pd.DataFrame({"atom": result.atoms, "atom_index": range(len(result.atoms))})
        .merge(result.clusters, on="atom")
        .merge(result.antifragility, on="atom")
        .merge(result.regimes, on="atom")
    )
    return table
