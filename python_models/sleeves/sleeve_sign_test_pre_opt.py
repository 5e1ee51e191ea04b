"""sleeve_sign_test_pre_opt (step 4): the directional sign test of the atoms before optimization,
also written to directional_sign_test_pre_opt.json; with the profile's sign-test gate on, a
violation fails this model (and so the run), naming the atoms."""

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
    result = sign_test(atom_returns, raw, atoms)
    return gate_sign_test(params, result, "pre_opt", "directional_sign_test_pre_opt.json")
