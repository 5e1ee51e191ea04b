"""sleeve_cluster_linkage (step 5, pre-optimization): the hierarchical clustering's merges (the
scipy linkage matrix over the atoms in `sleeve_clusters.atom_index` order), for the cluster map."""

from typing import Any

import duckdb
import pandas as pd

from quantwarehouse.production import atom_matrix, linkage_rows, run_params
from quantwarehouse.sleeves.preopt import preopt_analysis


def model(dbt: Any, session: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    profile = run_params(dbt.config.get("meta")).profile()
    atoms = dbt.ref("sleeve_atoms").df()
    atom_returns = dbt.ref("sleeve_atom_returns").df()
    result = preopt_analysis(atom_matrix(atoms, atom_returns), profile)
    return linkage_rows(result.linkage, result.atoms)
