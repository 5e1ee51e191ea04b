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

`riskfolio` is imported only when an optimizer runs (it takes seconds to import), and the
functions live in their modules (audit, backtest, metrics, optimize, preopt, profiles, selection,
sign_test, synthesis).

The package imports nothing itself: a command that needs one step pays only for that module.
"""
