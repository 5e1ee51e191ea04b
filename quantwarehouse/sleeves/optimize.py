"""Atom weights: riskfolio-lib HRP, minimum variance and maximum Sharpe, and equal weight.

Every method is long-only with weights summing to 1 (SHORT atoms are long positions in their
inverted stream) and, except equal weight, within the per-atom caps (regime caps):

- `hrp`: riskfolio `HCPortfolio`, model HRP, risk measure MV (variance). Distance sqrt((1 - rho)
  / 2) of the profile's codependence (pearson, spearman or kendall correlation); scipy linkage
  of the profile's method; leaf order: scipy's optimal leaf ordering when `leaf_order` is true,
  else the linkage's own leaf order (`leaves_list`). Recursive bisection splits the ordered list
  into halves (Lopez de Prado's original), each half weighted by inverse-variance inside and by
  1 - its variance share across. Caps go in as `w_max` (riskfolio clips and redistributes).
- `min_variance`: riskfolio `Portfolio`, Classic model, MV, objective MinRisk, sample mean and
  covariance; caps as linear constraints w_i <= cap_i.
- `max_sharpe`: the same with objective Sharpe and a risk-free rate of 0.
- `equal_weight`: 1/N, the uncapped baseline.
- One atom gets weight 1 from every method.

**Stable-sum gate**: a method's weights are rejected, never divided by, when the solver found
none, when any is not finite or below -1e-9, or when they sum to within 1e-6 of zero. Passing
weights have solver noise below 0 set to 0 and are scaled to sum 1. When the primary method is
rejected the run falls back to `hrp`, then `equal_weight`, and the records say so. With the gate
off (`gates.stable_sum: false`) a rejected primary stops the run instead (StableSumError).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from typing import Any

import numpy as np
import pandas as pd

from quantwarehouse.sleeves.profiles import HrpSettings, Profile

SUM_TOLERANCE = 1e-6
NEGATIVE_TOLERANCE = 1e-9
FALLBACK_CHAIN = ("hrp", "equal_weight")


class StableSumError(RuntimeError):
    """The primary optimizer's weights failed the stable-sum gate and fallback is off."""


@dataclass(frozen=True)
class GateRecord:
    method: str
    passed: bool
    reason: str
    raw_sum: float | None
    notes: str = ""  # what the solver said (no solution, reduced accuracy)


@dataclass(frozen=True)
class OptimizationResult:
    weights: pd.DataFrame  # atom x method, every method that passed the gate
    settings: dict[str, Any]  # per method: library, model, distance, linkage, leaf order...
    gates: list[dict[str, Any]]  # one GateRecord per method tried, in order
    chosen_method: str  # the primary optimizer, or the fallback that replaced it
    fallback_used: bool
    fallback_reason: str

    @property
    def final_weights(self) -> pd.Series:
        return self.weights[self.chosen_method]


@dataclass
class SolverNotes:
    """What riskfolio printed, and the solver's accuracy warnings, kept for the gate record."""

    printed: str = ""
    warnings: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "; ".join(n for n in [self.printed.strip(), *self.warnings] if n)


MATMUL_WARNING = r"\s*This use of ``\*`` has resulted in matrix multiplication"
INACCURATE_WARNING = "Solution may be inaccurate"


@contextlib.contextmanager
def quiet_riskfolio() -> Iterator[SolverNotes]:
    """Silence what riskfolio-lib 7.4 emits that we understand; keep the useful part as notes.

    - It builds cvxpy expressions with `*` for matrix products, and cvxpy 1.x warns about that
      style (a UserWarning and a CvxpyDeprecationWarning per use): the product computed is the
      intended one, so these are dropped.
    - cvxpy warns "Solution may be inaccurate" when a solver stops at reduced accuracy, and
      riskfolio prints a line when a problem has no solution: both go into the gate record.
    Any other warning is passed on unchanged.
    """
    notes = SolverNotes()
    printed = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed):
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message=MATMUL_WARNING)
        yield notes
    notes.printed = printed.getvalue()
    for warning in caught:
        message = str(warning.message).strip()
        if message.startswith(INACCURATE_WARNING):
            notes.warnings.append(message.split(".")[0])
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )


def stable_sum_gate(method: str, raw: pd.Series | None, notes: str = "") -> GateRecord:
    """Accept or reject one method's raw weights (module docstring); never divides."""
    record = _gate(method, raw)
    return dataclasses.replace(record, notes=notes) if notes else record


def _gate(method: str, raw: pd.Series | None) -> GateRecord:
    if raw is None:
        return GateRecord(method, False, "the solver returned no weights", None)
    values = raw.to_numpy(dtype="float64")
    if not np.isfinite(values).all():
        return GateRecord(method, False, "weights are not all finite", None)
    total = float(values.sum())
    if (values < -NEGATIVE_TOLERANCE).any():
        return GateRecord(method, False, f"negative weight {values.min():.3g}", total)
    if abs(total) <= SUM_TOLERANCE:
        return GateRecord(method, False, f"weights sum to {total:.3g}, within 1e-6 of 0", total)
    return GateRecord(method, True, "ok", total)


def normalized(raw: pd.Series) -> pd.Series:
    """Weights that passed the gate: solver noise below 0 set to 0, scaled to sum 1."""
    clipped = raw.clip(lower=0.0)
    return clipped / clipped.sum()


def hrp_raw(returns: pd.DataFrame, caps: pd.Series, settings: HrpSettings) -> pd.Series | None:
    import riskfolio as rp

    portfolio = rp.HCPortfolio(returns=returns, w_max=caps if (caps < 1).any() else None)
    weights = portfolio.optimization(
        model="HRP",
        codependence=settings.codependence,
        rm="MV",
        rf=0,
        linkage=settings.linkage,
        leaf_order=settings.leaf_order,
    )
    return None if weights is None else weights["weights"]


def _classic_raw(returns: pd.DataFrame, caps: pd.Series, objective: str) -> pd.Series | None:
    import riskfolio as rp

    portfolio = rp.Portfolio(returns=returns)
    portfolio.assets_stats(method_mu="hist", method_cov="hist")
    if (caps < 1).any():
        portfolio.ainequality = np.eye(len(caps))
        portfolio.binequality = caps.to_numpy().reshape(-1, 1)
    weights = portfolio.optimization(model="Classic", rm="MV", obj=objective, rf=0, hist=True)
    return None if weights is None else weights["weights"]


def min_variance_raw(returns: pd.DataFrame, caps: pd.Series) -> pd.Series | None:
    return _classic_raw(returns, caps, "MinRisk")


def max_sharpe_raw(returns: pd.DataFrame, caps: pd.Series) -> pd.Series | None:
    return _classic_raw(returns, caps, "Sharpe")


def equal_weight_raw(returns: pd.DataFrame) -> pd.Series:
    return pd.Series(1.0 / returns.shape[1], index=returns.columns)


def _solvers(profile: Profile) -> dict[str, Callable[[pd.DataFrame, pd.Series], pd.Series | None]]:
    return {
        "hrp": lambda r, c: hrp_raw(r, c, profile.hrp),
        "min_variance": min_variance_raw,
        "max_sharpe": max_sharpe_raw,
        "equal_weight": lambda r, c: equal_weight_raw(r),
    }


@functools.cache
def _riskfolio_version() -> str:
    return version("riskfolio-lib")


def method_settings(method: str, profile: Profile) -> dict[str, Any]:
    """What each method computed, stated (libraries differ on these: DOMAIN.md)."""
    library = f"riskfolio-lib {_riskfolio_version()}"
    if method == "hrp":
        order = (
            "optimal leaf ordering (scipy linkage optimal_ordering=True)"
            if profile.hrp.leaf_order
            else "linkage leaf order (scipy leaves_list, no reordering)"
        )
        return {
            "library": library,
            "model": "HRP",
            "risk_measure": "MV (variance)",
            "covariance": "sample",
            **asdict(profile.hrp),
            "distance": "sqrt((1 - rho) / 2)",
            "leaf_order_rule": order,
            "bisection": "halves of the ordered list (Lopez de Prado)",
        }
    if method in ("min_variance", "max_sharpe"):
        objective = "MinRisk" if method == "min_variance" else "Sharpe"
        return {
            "library": library,
            "model": "Classic",
            "risk_measure": "MV (variance)",
            "objective": objective,
            "mean_and_covariance": "sample (hist)",
            "rf": 0.0,
        }
    return {"rule": "1/N, no caps (baseline)"}


def _check_inputs(atom_returns: pd.DataFrame, caps: pd.Series) -> None:
    if atom_returns.shape[1] == 0:
        raise ValueError("no atoms to optimize")
    holes = atom_returns.columns[atom_returns.isna().any()].tolist()
    if holes:
        raise ValueError(
            f"atom returns with missing values cannot be optimized: {', '.join(holes)}"
        )
    if caps.sum() < 1 - SUM_TOLERANCE:
        raise ValueError(f"weight caps sum to {caps.sum():.4g} < 1: no long-only portfolio fits")


def _run_method(
    method: str, atom_returns: pd.DataFrame, caps: pd.Series, profile: Profile
) -> tuple[GateRecord, pd.Series | None]:
    if atom_returns.shape[1] == 1:
        raw: pd.Series | None = pd.Series(1.0, index=atom_returns.columns)
        return stable_sum_gate(method, raw), raw
    with quiet_riskfolio() as notes:
        raw = _solvers(profile)[method](atom_returns, caps)
    return stable_sum_gate(method, raw, notes.text()), raw


def _because(record: GateRecord) -> str:
    return f"{record.reason} ({record.notes})" if record.notes else record.reason


def optimize(
    atom_returns: pd.DataFrame,
    profile: Profile,
    caps: pd.Series | None = None,
    methods: tuple[str, ...] | None = None,
) -> OptimizationResult:
    """Weights of every method (default: the profile's optimizers), gated, with fallback."""
    caps = (caps if caps is not None else pd.Series(dtype="float64")).reindex(
        atom_returns.columns, fill_value=1.0
    )
    _check_inputs(atom_returns, caps)
    primary = profile.primary_optimizer
    chain = [primary, *(m for m in FALLBACK_CHAIN if m != primary)]
    if not profile.gates.stable_sum:
        chain = [primary]
    records: dict[str, GateRecord] = {}
    weights: dict[str, pd.Series] = {}

    def run(method: str) -> None:
        record, raw = _run_method(method, atom_returns, caps, profile)
        records[method] = record
        if record.passed and raw is not None:
            weights[method] = normalized(raw)

    for method in methods or profile.optimizers:
        run(method)
    chosen = None
    for method in chain:
        if method not in records:
            run(method)
        if method in weights:
            chosen = method
            break
    if chosen is None:
        what = "no fallback passed" if profile.gates.stable_sum else "gates.stable_sum is off"
        raise StableSumError(
            f"{primary}: weights rejected by the stable-sum gate "
            f"({_because(records[primary])}); {what}"
        )
    fallback_reason = (
        ""
        if chosen == primary
        else f"{primary} rejected: {_because(records[primary])}; used {chosen}"
    )
    return OptimizationResult(
        weights=pd.DataFrame(weights).reindex(atom_returns.columns),
        settings={
            **{m: method_settings(m, profile) for m in records},
            "constraints": {
                "long_only": True,
                "budget": 1.0,
                "caps": {atom: float(cap) for atom, cap in caps.items() if cap < 1},
            },
            "stable_sum_gate": {
                "enabled": profile.gates.stable_sum,
                "tolerance": SUM_TOLERANCE,
                "fallback_chain": chain,
            },
        },
        gates=[asdict(r) for r in records.values()],
        chosen_method=chosen,
        fallback_used=chosen != primary,
        fallback_reason=fallback_reason,
    )
