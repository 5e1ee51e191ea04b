"""Directional sign test: every atom's returns are exactly what its direction says they must be.

Checks, each failure an error finding naming the atom:

- the atom table and the atom return columns name the same atoms, once each;
- the direction is LONG or SHORT and the symbol has raw returns;
- LONG atoms equal the raw returns exactly, SHORT atoms equal `-clip(raw, upper=1.0)` exactly,
  on the same dates, missing values in the same places (the finding says when a SHORT atom holds
  the raw returns, i.e. was never inverted, or a LONG atom holds inverted ones);
- with weights (after optimization): every weight is >= 0, because the optimizer holds SHORT
  atoms as long positions in their inverted stream, and every weighted column is a known atom.

PASS means no error finding. The result is a JSON-able dict (`directional_sign_test*.json`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from quantwarehouse.sleeves.jsonable import day_text
from quantwarehouse.sleeves.synthesis import DIRECTIONS, short_returns

RULE = "LONG atom = raw; SHORT atom = -clip(raw, upper=1.0); optimizer weights >= 0"


def _finding(atom: str, check: str, message: str, **details: Any) -> dict[str, Any]:
    return {"atom": atom, "check": check, "severity": "error", "message": message, **details}


def _same(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Element-wise exact equality, two missing values counting as equal."""
    return (left == right) | (np.isnan(left) & np.isnan(right))


def _compare(atom: str, direction: str, actual: pd.Series, raw: pd.Series) -> list[dict[str, Any]]:
    if not actual.index.equals(raw.index):
        return [_finding(atom, "dates", "the atom's dates differ from the raw returns' dates")]
    expected = raw if direction == "LONG" else short_returns(raw)
    got, want = actual.to_numpy(dtype="float64"), expected.to_numpy(dtype="float64")
    ok = _same(got, want)
    if ok.all():
        return []
    bad = np.flatnonzero(~ok)
    diagnosis = "values differ from the rule"
    if direction == "SHORT" and _same(got, raw.to_numpy(dtype="float64")).all():
        diagnosis = "SHORT atom holds the raw returns: it was not inverted"
    elif direction == "LONG" and _same(got, short_returns(raw).to_numpy(dtype="float64")).all():
        diagnosis = "LONG atom holds inverted returns"
    return [
        _finding(
            atom,
            "returns",
            f"{diagnosis} on {bad.size} of {got.size} days",
            direction=direction,
            bad_days=int(bad.size),
            first_bad_date=day_text(actual.index[bad[0]]),
            max_abs_difference=float(np.nanmax(np.abs(got[bad] - want[bad]), initial=0.0)),
        )
    ]


def _check_atoms(atom_returns: pd.DataFrame, atoms: pd.DataFrame) -> list[dict[str, Any]]:
    findings = []
    for atom in atoms["atom"][atoms["atom"].duplicated()]:
        findings.append(_finding(atom, "atom_table", "listed more than once in the atom table"))
    for atom in atom_returns.columns[atom_returns.columns.duplicated()]:
        findings.append(_finding(atom, "atom_returns", "more than one return column"))
    for atom in sorted(set(atoms["atom"]) - set(atom_returns.columns)):
        findings.append(_finding(atom, "atom_returns", "in the atom table but has no returns"))
    for atom in sorted(set(atom_returns.columns) - set(atoms["atom"])):
        findings.append(_finding(atom, "atom_table", "has returns but is not in the atom table"))
    return findings


def _check_weights(weights: pd.DataFrame, atoms: pd.DataFrame) -> list[dict[str, Any]]:
    findings = []
    known = set(atoms["atom"])
    for atom, row in weights.iterrows():
        if atom not in known:
            findings.append(_finding(atom, "weights", "weighted but not in the atom table"))
        for method, weight in row.items():
            if not weight >= 0:  # a missing weight is an error too
                message = f"{method} weight {float(weight):g} is not >= 0"
                findings.append(_finding(atom, "weights", message, method=str(method)))
    return findings


def sign_test(
    atom_returns: pd.DataFrame,
    raw_returns: pd.DataFrame,
    atoms: pd.DataFrame,
    weights: pd.DataFrame | pd.Series | None = None,
) -> dict[str, Any]:
    """Run every check (module docstring); `weights`: atom x method (or one Series), optional."""
    findings = _check_atoms(atom_returns, atoms)
    for row in atoms.drop_duplicates("atom").itertuples(index=False):
        if row.direction not in DIRECTIONS:
            findings.append(_finding(row.atom, "direction", f"unknown direction {row.direction!r}"))
        elif row.symbol not in raw_returns.columns:
            findings.append(_finding(row.atom, "raw_returns", f"no raw returns for {row.symbol}"))
        elif row.atom in atom_returns.columns and not atom_returns.columns.duplicated().any():
            findings += _compare(
                row.atom, row.direction, atom_returns[row.atom], raw_returns[row.symbol]
            )
    if weights is not None:
        frame = weights.to_frame() if isinstance(weights, pd.Series) else weights
        findings += _check_weights(frame, atoms)
    directions = atoms["direction"].value_counts()
    return {
        "status": "FAIL" if any(f["severity"] == "error" for f in findings) else "PASS",
        "rule": RULE,
        "checked_atoms": int(atoms["atom"].nunique()),
        "long_atoms": int(directions.get("LONG", 0)),
        "short_atoms": int(directions.get("SHORT", 0)),
        "checked_weights": weights is not None,
        "findings": findings,
    }
