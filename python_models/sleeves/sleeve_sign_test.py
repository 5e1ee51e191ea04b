"""sleeve_sign_test (step 7): the directional sign test after optimization: the atoms' returns
again, and every optimizer weight >= 0 (SHORT atoms are held long in their inverted stream);
written to directional_sign_test.json; with the gate on, a violation fails the run."""

from typing import Any

import duckdb
import pandas as pd

from quantwarehouse.production import atom_matrix, gate_sign_test, run_params, wide
from quantwarehouse.sleeves.sign_test import sign_test


def model(dbt: Any, session: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    params = run_params(dbt.config.get("meta"))
    atoms = dbt.ref("sleeve_atoms").df()
    atom_returns = atom_matrix(atoms, dbt.ref("sleeve_atom_returns").df())
    raw = wide(dbt.ref("sleeve_returns_window").df(), "simple_return")
    weights = dbt.ref("sleeve_weights").df()
    weights = weights[weights["gate_passed"]].pivot(index="atom", columns="method", values="weight")
    result = sign_test(atom_returns, raw, atoms, weights)
    return gate_sign_test(params, result, "post_opt", "directional_sign_test.json")
