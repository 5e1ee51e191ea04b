"""sleeve_cluster_linkage (step 5, pre-optimization): the hierarchical clustering's merges (the
scipy linkage matrix over the atoms in `sleeve_clusters.atom_index` order), for the cluster map."""

from typing import Any

import duckdb
import pandas as pd

from quantwarehouse.production import linkage_rows, ordered_atoms, run_params, wide
from quantwarehouse.sleeves.preopt import preopt_analysis


def model(dbt: Any, session: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    profile = run_params(dbt.config.get("meta")).profile()
    atoms = dbt.ref("sleeve_atoms").df()
    atom_returns = dbt.ref("sleeve_atom_returns").df()
    atom_returns = wide(atom_returns, "atom_return", key="atom")[ordered_atoms(atoms)]
    result = preopt_analysis(atom_returns, profile)
    return linkage_rows(result.linkage, result.atoms)
