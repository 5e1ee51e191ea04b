"""Sleeve production library: pure functions over pandas frames (no I/O but profile files).

The pipeline of one sleeve (DOMAIN.md "Alpha production"), in call order:

    profile = load_profile("binance_spot_rating_all_long")
    agg = aggregate(candidates, returns, profile.lookback_days)          # strict health
    sel = select_htr(agg.returns_window, agg.health, metadata, profile)  # HTR, 4 stages
    atoms = synthesize(agg.returns_window, sel.selected, profile.direction, profile.name)
    pre = sign_test(atoms.returns, agg.returns_window, atoms.atoms)      # before optimization
    analysis = preopt_analysis(atoms.returns, profile)                   # clusters, caps
    opt = optimize(atoms.returns, profile, analysis.caps)                # gated weights
    post = sign_test(atoms.returns, agg.returns_window, atoms.atoms, opt.weights)
    bt = walk_forward(features, returns, profile, start, end)
    figures = performance_metrics(bt.daily_returns)

`riskfolio` is imported only when an optimizer runs (it takes seconds to import).
"""

from quantwarehouse.sleeves.audit import AuditTrail, environment_info, frame_hash, verify_audit
from quantwarehouse.sleeves.backtest import BacktestResult, walk_forward
from quantwarehouse.sleeves.metrics import performance_metrics
from quantwarehouse.sleeves.optimize import OptimizationResult, StableSumError, optimize
from quantwarehouse.sleeves.preopt import PreOptResult, preopt_analysis
from quantwarehouse.sleeves.profiles import Profile, available_profiles, load_profile
from quantwarehouse.sleeves.selection import (
    AggregationResult,
    SelectionResult,
    aggregate,
    metadata_as_of,
    select_htr,
)
from quantwarehouse.sleeves.sign_test import sign_test
from quantwarehouse.sleeves.synthesis import AtomReturns, atom_id, synthesize

__all__ = [
    "AggregationResult",
    "AtomReturns",
    "AuditTrail",
    "BacktestResult",
    "OptimizationResult",
    "PreOptResult",
    "Profile",
    "SelectionResult",
    "StableSumError",
    "aggregate",
    "atom_id",
    "available_profiles",
    "environment_info",
    "frame_hash",
    "load_profile",
    "metadata_as_of",
    "optimize",
    "performance_metrics",
    "preopt_analysis",
    "select_htr",
    "sign_test",
    "synthesize",
    "verify_audit",
    "walk_forward",
]
