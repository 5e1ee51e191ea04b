"""What a sleeve run shows a person: the tearsheet, weights.csv, the post-analysis plots, INDEX.md.

- `tearsheet.html`: one self-contained page (plots embedded as PNG data, no external file or
  script): title, key figures as cards, equity curve and drawdown, weights per optimizer, the
  cluster map, then tables (portfolio, optimizers, method comparison, sign tests, selection,
  candidates). In-sample figures hold each method's weights fixed (rebalanced daily) over the
  lookback window the weights were estimated on; the validation section, when the walk-forward
  backtest ran and the post-analysis rendered the page again, is out of sample and net of costs.
- `weights.csv`: one row per atom, every optimizer's weight side by side, `weight` = the method in
  use.
- `plots/*.png` (post-analysis).
- `INDEX.md`: the run's profile and run id, how each step ended, and what every file is.

Figures use quantwarehouse.sleeves.metrics (365-day years). Files are written atomically.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from quantwarehouse.production import (
    RunParams,
    atom_matrix,
    linkage_matrix,
    stage_detail,
    write_atomically,
)
from quantwarehouse.sleeves.metrics import performance_metrics
from quantwarehouse.sleeves.profiles import Profile

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TEARSHEET_FILE = "tearsheet.html"
WEIGHTS_FILE = "weights.csv"
PLOTS_DIR = "plots"
INDEX_FILE = "INDEX.md"
# What each file of a run directory is (INDEX.md); files not listed are shown without a note.
ARTIFACTS: dict[str, str] = {
    TEARSHEET_FILE: "the tearsheet: key figures, plots and tables (open in a browser)",
    WEIGHTS_FILE: "weights per atom, every optimizer side by side; `weight` is the one in use",
    "candidates.json": "the scanner's candidates as of the features date, with strict health",
    "selection.json": "HTR selection: selected symbols, the stage that ended it and why",
    "directional_sign_test_pre_opt.json": "directional sign test of the atoms, before optimizing",
    "directional_sign_test.json": "directional sign test after optimization (returns, weights)",
    "optimization.json": "optimizer settings, stable-sum gate records, fallback",
    "validation.json": "walk-forward backtest: period, rebalance records",
    "validation_metrics.json": "walk-forward backtest metrics (net of costs, 365-day years)",
    "backtest_weights.csv": "weights set at each rebalance of the walk-forward backtest",
    "run_manifest.json": "the run's stages with status, start, end and error",
    "audit.jsonl": "hash-chained audit trail (verify: orchestrate.py audit verify <run dir>)",
    "run.duckdb": "the run's tables (sleeve_*), one per model; the warehouse is not in it",
    "production.log": "the run's log",
}
METHOD_LABELS = {
    "hrp": "HRP",
    "min_variance": "Min variance",
    "max_sharpe": "Max Sharpe",
    "equal_weight": "Equal weight",
}
PALETTE = ("#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2")


# -- inputs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Validation:
    ledger: pd.DataFrame  # sleeve_backtest, by bar_date
    metrics: dict[str, float | None]  # sleeve_backtest_metrics


@dataclass(frozen=True)
class ReportInputs:
    """The run tables a report is made of (sleeve_* models), as frames."""

    run_id: str
    profile: Profile
    as_of: date
    candidates: pd.DataFrame
    selection: pd.DataFrame
    atoms: pd.DataFrame  # in synthesis order
    atom_returns: pd.DataFrame  # date x atom
    clusters: pd.DataFrame
    linkage: np.ndarray
    weights: pd.DataFrame  # long: method, atom, weight, gate columns
    optimizers: pd.DataFrame
    sign_tests: pd.DataFrame
    validation: Validation | None = None

    @property
    def chosen_method(self) -> str:
        return str(self.optimizers.loc[self.optimizers["is_chosen"], "method"].iloc[0])

    def weights_matrix(self) -> pd.DataFrame:
        """atom x method of the methods that passed the stable-sum gate, in the run's order."""
        passed = self.weights[self.weights["gate_passed"]]
        matrix = passed.pivot(index="atom", columns="method", values="weight")
        methods = [m for m in self.optimizers["method"] if m in matrix.columns]
        return matrix.reindex(index=self.atoms["atom"], columns=methods)

    def in_sample_returns(self) -> pd.DataFrame:
        """Daily returns (date x method) of each method's weights held fixed over the window."""
        matrix = self.weights_matrix()
        returns = self.atom_returns[matrix.index]
        return pd.DataFrame(
            {m: returns.to_numpy() @ matrix[m].to_numpy() for m in matrix.columns},
            index=returns.index,
        )


def report_inputs(params: RunParams, tables: Mapping[str, pd.DataFrame]) -> ReportInputs:
    """ReportInputs from the run tables by short name (see the sleeve_portfolio model)."""
    atoms = tables["atoms"].sort_values("atom_order").reset_index(drop=True)
    atom_returns = atom_matrix(atoms, tables["atom_returns"])
    validation = None
    if "backtest" in tables:
        ledger = tables["backtest"].sort_values("bar_date").reset_index(drop=True)
        metrics = dict(
            zip(
                tables["backtest_metrics"]["metric"],
                tables["backtest_metrics"]["value"],
                strict=True,
            )
        )
        validation = Validation(ledger, {k: _finite_or_none(v) for k, v in metrics.items()})
    return ReportInputs(
        run_id=params.run_id,
        profile=params.profile(),
        as_of=pd.Timestamp(tables["candidates"]["as_of"].iloc[0]).date(),
        candidates=tables["candidates"].sort_values("scan_rank").reset_index(drop=True),
        selection=tables["selection"],
        atoms=atoms,
        atom_returns=atom_returns,
        clusters=tables["clusters"],
        linkage=linkage_matrix(tables["linkage"]),
        weights=tables["weights"],
        optimizers=tables["optimizers"].sort_values("method_order").reset_index(drop=True),
        sign_tests=pd.concat([tables["sign_test_pre_opt"], tables["sign_test"]], ignore_index=True),
        validation=validation,
    )


def _finite_or_none(value: Any) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


# -- tables and files ----------------------------------------------------------------------------


def portfolio_table(inputs: ReportInputs) -> pd.DataFrame:
    """The portfolio (table sleeve_portfolio): each atom with the weight of the method in use."""
    method = inputs.chosen_method
    weights = inputs.weights_matrix()[method]
    table = inputs.atoms[["atom", "symbol", "direction", "sleeve"]].copy()
    table["method"] = method
    table["weight"] = table["atom"].map(weights).astype("float64")
    caps = inputs.clusters.set_index("atom")
    table["cap"] = table["atom"].map(caps["cap"])
    table["cluster"] = table["atom"].map(caps["cluster"]).astype("Int64")
    return table


def write_weights_csv(run_dir: Path, inputs: ReportInputs) -> Path:
    table = portfolio_table(inputs).drop(columns=["method"])
    matrix = inputs.weights_matrix()
    for method in matrix.columns:
        table[method] = table["atom"].map(matrix[method])
    path = run_dir / WEIGHTS_FILE
    write_atomically(path, table.to_csv(index=False, float_format="%.10g"))
    return path


# -- plots ---------------------------------------------------------------------------------------


def _figure(rows: int = 1, height: float = 3.2, **kwargs: Any) -> tuple[Figure, Any]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(rows, 1, figsize=(9.5, height * rows), **kwargs)
    return figure, axes


def _png(figure: Figure) -> bytes:
    from matplotlib import pyplot

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", facecolor="white")
    pyplot.close(figure)
    return buffer.getvalue()


def _style(axis: Any, title: str) -> None:
    axis.set_title(title, loc="left", fontsize=11, fontweight="bold", color="#1f2937")
    axis.grid(True, color="#e5e7eb", linewidth=0.8)
    axis.spines[["top", "right"]].set_visible(False)
    axis.tick_params(labelsize=8, colors="#4b5563")


def equity_drawdown_png(returns: pd.DataFrame, title: str) -> bytes:
    """Equity curves (from 1) and drawdowns of each column of daily returns."""
    figure, (top, bottom) = _figure(2, 2.8, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    for i, column in enumerate(returns.columns):
        equity = (1.0 + returns[column].fillna(0.0)).cumprod()
        drawdown = equity / equity.cummax().clip(lower=1.0) - 1.0
        label = METHOD_LABELS.get(str(column), str(column))
        color = PALETTE[i % len(PALETTE)]
        top.plot(equity.index, equity.to_numpy(), label=label, color=color, linewidth=1.6)
        bottom.plot(drawdown.index, drawdown.to_numpy() * 100, color=color, linewidth=1.2)
        bottom.fill_between(drawdown.index, drawdown.to_numpy() * 100, 0, color=color, alpha=0.08)
    _style(top, f"{title}: equity (start = 1)")
    _style(bottom, "Drawdown (%)")
    top.legend(fontsize=8, frameon=False, ncols=min(len(returns.columns), 4))
    return _png(figure)


def weights_png(matrix: pd.DataFrame, symbols: pd.Series) -> bytes:
    """Horizontal bars: each atom's weight under each method."""
    height = max(2.5, 0.32 * len(matrix) * max(len(matrix.columns), 1) / 2 + 1)
    figure, axis = _figure(1, height)
    bar = 0.8 / max(len(matrix.columns), 1)
    positions = np.arange(len(matrix))
    for i, method in enumerate(matrix.columns):
        axis.barh(
            positions + i * bar,
            matrix[method].fillna(0.0).to_numpy() * 100,
            height=bar,
            label=METHOD_LABELS.get(method, method),
            color=PALETTE[i % len(PALETTE)],
        )
    axis.set_yticks(positions + bar * (len(matrix.columns) - 1) / 2)
    axis.set_yticklabels(symbols.to_numpy(), fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("weight (%)", fontsize=8)
    _style(axis, "Weights by optimizer")
    axis.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=4)
    return _png(figure)


def cluster_map_png(inputs: ReportInputs) -> bytes:
    """Dendrogram of the correlation clusters over the heatmap of correlations, in leaf order."""
    from scipy.cluster import hierarchy

    labels = inputs.atoms["symbol"].tolist()
    correlation = inputs.atom_returns.corr().fillna(0.0)
    figure, (top, bottom) = _figure(2, 3.0, gridspec_kw={"height_ratios": [1, 2]})
    if len(inputs.linkage):
        tree = hierarchy.dendrogram(
            inputs.linkage,
            labels=labels,
            ax=top,
            color_threshold=0,
            above_threshold_color="#2563eb",
        )
        order = [labels.index(label) for label in tree["ivl"]]
        threshold = inputs.profile.clusters.distance_threshold
        top.axhline(threshold, color="#dc2626", linestyle="--", linewidth=1)
        top.text(0, threshold, f" cut {threshold:g}", color="#dc2626", fontsize=8, va="bottom")
    else:
        order = list(range(len(labels)))
        top.text(0.5, 0.5, "one atom: no clustering", ha="center", transform=top.transAxes)
    _style(top, "Cluster map: distance sqrt((1 - rho) / 2)")
    ordered = correlation.to_numpy()[np.ix_(order, order)]
    image = bottom.imshow(ordered, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    bottom.set_xticks(range(len(order)), [labels[i] for i in order], rotation=90, fontsize=7)
    bottom.set_yticks(range(len(order)), [labels[i] for i in order], fontsize=7)
    figure.colorbar(image, ax=bottom, fraction=0.03, label="correlation")
    bottom.set_title("Correlation of atom returns (leaf order)", loc="left", fontsize=10)
    return _png(figure)


def atom_paths_png(inputs: ReportInputs) -> bytes:
    figure, axis = _figure(1, 3.6)
    for i, atom in enumerate(inputs.atom_returns.columns):
        path = (1.0 + inputs.atom_returns[atom].fillna(0.0)).cumprod()
        symbol = inputs.atoms.set_index("atom").at[atom, "symbol"]
        axis.plot(
            path.index, path.to_numpy(), color=PALETTE[i % len(PALETTE)], linewidth=1, label=symbol
        )
    _style(axis, "Atoms over the window: growth of 1 in each atom's own stream")
    if len(inputs.atom_returns.columns) <= 12:
        axis.legend(fontsize=7, frameon=False, ncols=4)
    return _png(figure)


def backtest_equity_png(validation: Validation) -> bytes:
    ledger = validation.ledger.set_index(pd.to_datetime(validation.ledger["bar_date"]))
    net = ledger[["net_return"]].rename(columns={"net_return": "net of costs"})
    return equity_drawdown_png(net, "Walk-forward backtest")


def turnover_png(validation: Validation) -> bytes:
    rebalances = validation.ledger[validation.ledger["is_rebalance"]]
    figure, axis = _figure(1, 3.0)
    dates = pd.to_datetime(rebalances["bar_date"])
    axis.bar(
        dates,
        rebalances["turnover"].to_numpy() * 100,
        width=3,
        color="#2563eb",
        label="turnover (%)",
    )
    axis.plot(
        dates,
        rebalances["cost"].to_numpy() * 10_000,
        color="#dc2626",
        marker=".",
        linewidth=1,
        label="cost (bps of equity)",
    )
    _style(axis, "Backtest turnover and costs at each rebalance")
    axis.legend(fontsize=8, frameon=False)
    return _png(figure)


def weights_history_png(run_dir: Path) -> bytes | None:
    path = run_dir / "backtest_weights.csv"
    if not path.exists():
        return None
    history = pd.read_csv(path, index_col=0, parse_dates=True)
    figure, axis = _figure(1, 3.4)
    if history.shape[1]:
        symbols = [str(c).split(":", 1)[0] for c in history.columns]
        axis.stackplot(history.index, history.T.to_numpy() * 100, labels=symbols, step="post")
        if history.shape[1] <= 12:
            axis.legend(fontsize=7, frameon=False, ncols=4, loc="upper left")
    axis.set_ylabel("weight (%)", fontsize=8)
    _style(axis, "Backtest weights set at each rebalance")
    return _png(figure)


def write_post_analysis(run_dir: Path, inputs: ReportInputs) -> pd.DataFrame:
    """Write the post-analysis plots; one row per plot (table sleeve_post_analysis)."""
    plots: list[tuple[str, str, Callable[[], bytes | None]]] = [
        ("cluster_map", "Correlation clusters and heatmap", lambda: cluster_map_png(inputs)),
        ("atom_paths", "Atoms over the lookback window", lambda: atom_paths_png(inputs)),
    ]
    if inputs.validation is not None:
        plots += [
            (
                "backtest_equity",
                "Walk-forward equity and drawdown (net of costs)",
                lambda: backtest_equity_png(inputs.validation),
            ),
            (
                "backtest_turnover",
                "Turnover and costs per rebalance",
                lambda: turnover_png(inputs.validation),
            ),
            (
                "backtest_weights",
                "Weights held in the backtest",
                lambda: weights_history_png(run_dir),
            ),
        ]
    rows = []
    for name, title, draw in plots:
        data = draw()
        if data is None:
            continue
        relative = f"{PLOTS_DIR}/{name}.png"
        write_atomically(run_dir / relative, data)
        rows.append({"plot": name, "file": relative, "title": title, "bytes": len(data)})
    return pd.DataFrame(rows, columns=["plot", "file", "title", "bytes"])


# -- the tearsheet -------------------------------------------------------------------------------

CSS = """
:root { --ink: #111827; --muted: #6b7280; --line: #e5e7eb; --card: #f9fafb; --accent: #2563eb; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.5 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: var(--ink); background: #fff; }
header { padding: 28px 40px 20px; background: linear-gradient(120deg, #1e3a8a, #2563eb);
         color: #fff; }
header h1 { margin: 0 0 4px; font-size: 26px; font-weight: 650; }
header p { margin: 2px 0; opacity: .9; }
.tag { display: inline-block; padding: 1px 9px; margin-right: 6px; border-radius: 999px;
       font-size: 12px; font-weight: 600; background: rgba(255,255,255,.18); }
main { padding: 24px 40px 48px; max-width: 1200px; }
h2 { font-size: 18px; margin: 34px 0 12px; padding-bottom: 6px;
     border-bottom: 2px solid var(--line); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 12px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
        padding: 12px 14px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
               letter-spacing: .04em; }
.card .value { font-size: 22px; font-weight: 650; margin-top: 2px; }
.card .note { color: var(--muted); font-size: 12px; }
.good { color: #15803d; } .bad { color: #b91c1c; } .warn { color: #b45309; }
.plot { margin: 12px 0 4px; border: 1px solid var(--line); border-radius: 10px; padding: 8px;
        background: #fff; }
.plot img { width: 100%; height: auto; display: block; }
.caption { color: var(--muted); font-size: 12px; margin: 0 0 18px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 16px; font-size: 13px; }
th { text-align: left; font-weight: 600; color: #374151; background: var(--card); }
th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:hover td { background: #f3f4f6; }
footer { color: var(--muted); font-size: 12px; padding: 0 40px 30px; }
"""

PERCENT_METRICS = ("total_return", "cagr", "volatility", "max_drawdown", "hit_rate")


def _fmt(value: Any, kind: str = "num") -> str:
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if value is None or (isinstance(value, float) and not np.isfinite(value)) or value is pd.NA:
        return "–"
    if kind == "pct":
        return f"{float(value) * 100:.2f} %"
    if kind == "int":
        return f"{int(value)}"
    if kind == "num":
        return f"{float(value):.2f}"
    return html.escape(str(value))


def _card(label: str, value: str, note: str = "", tone: str = "") -> str:
    tone_class = f" {tone}" if tone else ""
    note_html = f'<div class="note">{html.escape(note)}</div>' if note else ""
    return (
        f'<div class="card"><div class="label">{html.escape(label)}</div>'
        f'<div class="value{tone_class}">{value}</div>{note_html}</div>'
    )


def _metric_cards(figures: Mapping[str, Any], note: str) -> list[str]:
    sharpe = figures.get("sharpe")
    return [
        _card("CAGR", _fmt(figures.get("cagr"), "pct"), note, _tone(figures.get("cagr"))),
        _card("Volatility", _fmt(figures.get("volatility"), "pct"), "annualized, 365 days"),
        _card("Sharpe", _fmt(sharpe), "rf = 0", _tone(sharpe)),
        _card("Sortino", _fmt(figures.get("sortino")), "target 0"),
        _card("Max drawdown", _fmt(figures.get("max_drawdown"), "pct"), "", "bad"),
        _card("Calmar", _fmt(figures.get("calmar"))),
        _card("Hit rate", _fmt(figures.get("hit_rate"), "pct"), "days with r > 0"),
    ]


def _tone(value: Any) -> str:
    if value is None:
        return ""
    return "good" if float(value) > 0 else "bad"


def _image(data: bytes, alt: str, caption: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return (
        f'<div class="plot"><img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'
        f'</div><p class="caption">{html.escape(caption)}</p>'
    )


def _table(frame: pd.DataFrame, formats: Mapping[str, str] | None = None) -> str:
    formats = formats or {}
    head = "".join(f"<th>{html.escape(str(c).replace('_', ' '))}</th>" for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, record, strict=True):
            kind = formats.get(column, "text")
            css = ' class="num"' if kind in ("pct", "num", "int") else ""
            cells.append(f"<td{css}>{_fmt(value, kind)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _method_comparison(inputs: ReportInputs) -> pd.DataFrame:
    rows = []
    for method, returns in inputs.in_sample_returns().items():
        figures = performance_metrics(returns)
        rows.append(
            {
                "method": METHOD_LABELS.get(method, method),
                "in use": "yes" if method == inputs.chosen_method else "",
                **{k: figures[k] for k in ("cagr", "volatility", "sharpe", "max_drawdown")},
            }
        )
    return pd.DataFrame(rows)


def _sign_test_cards(inputs: ReportInputs) -> list[str]:
    cards = []
    for row in inputs.sign_tests.itertuples(index=False):
        label = "Sign test, before opt." if row.check_name == "pre_opt" else "Sign test, after opt."
        gate = "gate on" if row.gate_enabled else "gate off"
        tone = "good" if row.status == "PASS" else "bad"
        cards.append(_card(label, row.status, f"{row.checked_atoms} atoms, {gate}", tone))
    return cards


def _portfolio_cards(inputs: ReportInputs) -> list[str]:
    chosen = inputs.optimizers[inputs.optimizers["is_chosen"]].iloc[0]
    selection = inputs.selection
    kept = int(selection["kept"].sum())
    fallback = "fallback from the primary" if bool(chosen["fallback_used"]) else "primary"
    return [
        _card(
            "Optimizer",
            METHOD_LABELS.get(chosen["method"], chosen["method"]),
            fallback,
            "warn" if bool(chosen["fallback_used"]) else "",
        ),
        _card("Atoms", str(len(inputs.atoms)), f"{inputs.profile.direction} sleeve"),
        _card(
            "Candidates",
            str(len(inputs.candidates)),
            f"{int(inputs.candidates['healthy'].sum())} healthy",
        ),
        _card("Selected", str(kept), f"HTR stage {int(selection['stage_ended'].iloc[0])}"),
        *_sign_test_cards(inputs),
    ]


def _validation_section(inputs: ReportInputs) -> str:
    validation = inputs.validation
    if validation is None:
        return ""
    ledger = validation.ledger.set_index(pd.to_datetime(validation.ledger["bar_date"]))
    figures = validation.metrics
    first, last = ledger.index.min(), ledger.index.max()
    cards = _metric_cards(figures, "out of sample, net")
    cards += [
        _card(
            "Rebalances",
            _fmt(figures.get("rebalances"), "int"),
            f"every {inputs.profile.rebalance_days} days",
        ),
        _card("Turnover", _fmt(figures.get("total_turnover"), "pct"), "sum over rebalances"),
        _card(
            "Costs",
            _fmt(figures.get("total_cost"), "pct"),
            f"{inputs.profile.cost_bps:g} bps per unit turnover",
        ),
    ]
    plot = backtest_equity_png(validation)
    return (
        "<h2>Validation: walk-forward backtest</h2>"
        f'<div class="cards">{"".join(cards)}</div>'
        + _image(
            plot,
            "backtest equity",
            f"{first:%Y-%m-%d} to {last:%Y-%m-%d}: at each rebalance the universe is the symbols "
            "passing the profile's rating filter in the features matrix as of that day; net of "
            "costs.",
        )
    )


def render_tearsheet(inputs: ReportInputs) -> str:
    """The tearsheet page (module docstring)."""
    profile = inputs.profile
    method = inputs.chosen_method
    in_sample = inputs.in_sample_returns()
    figures = performance_metrics(in_sample[method])
    matrix = inputs.weights_matrix()
    symbols = inputs.atoms.set_index("atom")["symbol"].reindex(matrix.index)
    portfolio = portfolio_table(inputs).sort_values("weight", ascending=False)
    optimizers = inputs.optimizers.assign(
        method=lambda t: t["method"].map(lambda m: METHOD_LABELS.get(m, m))
    )[
        [
            "method",
            "is_primary",
            "is_chosen",
            "gate_passed",
            "gate_reason",
            "weight_sum",
            "max_weight",
            "atoms_held",
        ]
    ]
    selection = inputs.selection.sort_values(["kept", "global_rank"], ascending=[False, True])
    window = in_sample.index
    hrp = profile.hrp
    header = (
        f"<header><h1>{html.escape(profile.name)}</h1>"
        f"<p>{html.escape(profile.description)}</p>"
        f'<p><span class="tag">{profile.direction}</span>'
        f'<span class="tag">as of {inputs.as_of}</span>'
        f'<span class="tag">run {html.escape(inputs.run_id)}</span>'
        f'<span class="tag">scanner {html.escape(profile.scanner)}</span></p></header>'
    )
    body = [
        "<h2>Key figures (in sample, method in use)</h2>",
        f'<div class="cards">{"".join(_metric_cards(figures, METHOD_LABELS.get(method, method)))}'
        "</div>",
        "<h2>Portfolio</h2>",
        f'<div class="cards">{"".join(_portfolio_cards(inputs))}</div>',
        _validation_section(inputs),
        "<h2>Equity curve and drawdown</h2>",
        _image(
            equity_drawdown_png(in_sample, "In sample"),
            "equity curve",
            f"Each method's weights held fixed over the lookback window "
            f"({window.min():%Y-%m-%d} to {window.max():%Y-%m-%d}, {len(window)} days) they were "
            "estimated on: in sample, before costs.",
        ),
        "<h2>Weights</h2>",
        _image(
            weights_png(matrix, symbols),
            "weights",
            "Long-only weights summing to 1 per "
            "method; SHORT atoms are held long in their inverted return stream.",
        ),
        _table(
            portfolio[["symbol", "direction", "weight", "cap", "cluster", "atom"]],
            {"weight": "pct", "cap": "pct", "cluster": "int"},
        ),
        "<h2>Clusters</h2>",
        _image(
            cluster_map_png(inputs),
            "cluster map",
            f"{profile.clusters.linkage} linkage, cut at distance "
            f"{profile.clusters.distance_threshold:g}.",
        ),
        "<h2>Optimizers</h2>",
        _table(optimizers, {"weight_sum": "num", "max_weight": "pct", "atoms_held": "int"}),
        _table(
            _method_comparison(inputs),
            {"cagr": "pct", "volatility": "pct", "sharpe": "num", "max_drawdown": "pct"},
        ),
        f'<p class="caption">HRP: {hrp.codependence} codependence, {hrp.linkage} linkage, '
        f"optimal leaf order {'on' if hrp.leaf_order else 'off'}; caps from the regime analysis; "
        "stable-sum gate: weights summing to within 1e-6 of 0 are rejected, never divided by "
        "(optimization.json).</p>",
        "<h2>Directional sign test</h2>",
        _table(
            inputs.sign_tests[
                [
                    "check_name",
                    "status",
                    "gate_enabled",
                    "checked_atoms",
                    "long_atoms",
                    "short_atoms",
                    "error_findings",
                    "failing_atoms",
                ]
            ]
        ),
        "<h2>Selection (HTR)</h2>",
        f'<p class="caption">{html.escape(str(inputs.selection["stage_reason"].iloc[0]))}</p>',
        _table(
            selection[
                [
                    "symbol",
                    "kept",
                    "stage",
                    "global_rank",
                    "score",
                    "entropy",
                    "efficiency",
                    "cluster",
                    "reason",
                ]
            ],
            {
                "stage": "int",
                "global_rank": "int",
                "score": "num",
                "entropy": "num",
                "efficiency": "num",
                "cluster": "int",
            },
        ),
        "<h2>Candidates</h2>",
        _table(
            inputs.candidates[
                [
                    "scan_rank",
                    "symbol",
                    "rating",
                    "traded_value",
                    "volatility",
                    "healthy",
                    "missing_bars",
                    "health_reason",
                ]
            ],
            {
                "scan_rank": "int",
                "rating": "num",
                "traded_value": "num",
                "volatility": "pct",
                "missing_bars": "int",
            },
        ),
    ]
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(profile.name)} tearsheet ({html.escape(inputs.run_id)})</title>"
        f"<style>{CSS}</style></head><body>{header}<main>{''.join(body)}</main>"
        f"<footer>quantwarehouse sleeve run {html.escape(inputs.run_id)}, generated {generated}. "
        "Years are 365 days (crypto trades every day).</footer></body></html>"
    )


def write_tearsheet(run_dir: Path, inputs: ReportInputs) -> Path:
    path = run_dir / TEARSHEET_FILE
    write_atomically(path, render_tearsheet(inputs))
    return path


# -- INDEX.md ------------------------------------------------------------------------------------


def write_index(run_dir: Path, manifest: Mapping[str, Any]) -> Path:
    """INDEX.md: the resolved profile and run id, each step's end, and every file of the run."""
    status = manifest["status"]
    if manifest.get("failed_step"):
        status = f"failed at step `{manifest['failed_step']}`: {manifest.get('error')}"
    lines = [
        f"# Sleeve run `{manifest['run_id']}`",
        "",
        f"- Profile: **{manifest['profile']}**",
        f"- Run id: `{manifest['run_id']}`",
        f"- Status: {status}",
        f"- Started: {manifest['created_at']}; finished: {manifest.get('finished_at') or '-'}",
        f"- Warehouse (read-only): `{manifest['warehouse']}`",
        "",
        "## Steps",
        "",
        "| # | step | status | seconds | detail |",
        "|---|---|---|---|---|",
    ]
    for number, stage in enumerate(manifest["stages"], start=1):
        seconds = f"{stage['seconds']:.1f}" if stage.get("seconds") is not None else ""
        detail = stage_detail(stage).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {number} | {stage['name']} | {stage['status']} | {seconds} | {detail} |")
    lines += ["", "## Files", ""]
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(run_dir).as_posix()
        if relative.startswith("dbt/") or relative == INDEX_FILE:
            continue
        note = ARTIFACTS.get(relative) or ARTIFACTS.get(path.name, "")
        if relative.endswith(".yml") and "/" not in relative:
            note = "the profile as it was when the run started (the models read this copy)"
        lines.append(f"- [{relative}]({relative})" + (f": {note}" if note else ""))
    lines += ["", "dbt's compiled models and logs of this run are under `dbt/`.", ""]
    path = run_dir / INDEX_FILE
    write_atomically(path, "\n".join(lines))
    return path
