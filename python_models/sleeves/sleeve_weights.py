"""sleeve_weights (step 6, optimization): every optimizer's weight per atom (HRP, minimum
variance, maximum Sharpe, equal weight, as the profile lists them), within the regime caps, with
the stable-sum gate's verdict per method and the method the portfolio uses (the primary, or the
fallback that replaced it); settings and gate records also go to optimization.json."""

from typing import Any

import duckdb
import pandas as pd

from quantwarehouse.production import atom_matrix, run_params, write_artifact_json
from quantwarehouse.sleeves.optimize import optimize


def model(dbt: Any, session: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    params = run_params(dbt.config.get("meta"))
    profile = params.profile()
    atom_table = dbt.ref("sleeve_atoms").df()
    atom_returns = atom_matrix(atom_table, dbt.ref("sleeve_atom_returns").df())
    caps = dbt.ref("sleeve_clusters").df().set_index("atom")["cap"]
    atoms = list(atom_returns.columns)
    result = optimize(atom_returns, profile, caps)
    write_artifact_json(
        params,
        "optimization.json",
        {
            "run_id": params.run_id,
            "profile": profile.name,
            "primary_optimizer": profile.primary_optimizer,
            "chosen_method": result.chosen_method,
            "fallback_used": result.fallback_used,
            "fallback_reason": result.fallback_reason,
            "gates": result.gates,
            "settings": result.settings,
        },
    )
    rows = []
    for order, gate in enumerate(result.gates, start=1):
        method = gate["method"]
        for atom in atoms:
            weight = result.weights.at[atom, method] if gate["passed"] else None
            rows.append(
                {
                    "method": method,
                    "atom": atom,
                    "weight": weight,
                    "cap": float(caps[atom]),
                    "method_order": order,
                    "gate_passed": gate["passed"],
                    "gate_reason": gate["reason"],
                    "raw_sum": gate["raw_sum"],
                    "is_primary": method == profile.primary_optimizer,
                    "is_chosen": method == result.chosen_method,
                }
            )
    return pd.DataFrame(rows).astype({"weight": "float64", "raw_sum": "float64"})
