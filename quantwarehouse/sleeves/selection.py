"""Aggregation (strict health) and HTR selection (hierarchical threshold relaxation).

**Strict health**: the window is every calendar day of the `lookback_days` ending on the as-of
date (the last day of the returns, unless given). A candidate with any missing return in it (no
bar that day, not yet listed, or absent from the returns altogether) is unhealthy.

**Measures** over a healthy candidate's window returns r_1..r_T:

- *Entropy*: normalized permutation entropy of order 3 (Bandt & Pompe): each run of three
  consecutive returns is mapped to the order pattern of its values (ties ranked by position), p_k
  is the share of the T - 2 runs with pattern k, and H = -sum p_k ln p_k / ln 3! lies in [0, 1]:
  0 for a monotone series, 1 when all six patterns are equally frequent (noise). High entropy
  means no exploitable structure; candidates above `entropy_cap` are vetoed.
- *Efficiency*: Kaufman's efficiency ratio of the log price, ER = |sum l_t| / sum |l_t| with
  l_t = ln(1 + r_t): net move over path length, 1 for a straight line, near 0 for a random walk
  (0 for a flat one). Candidates below `efficiency_floor` are vetoed. The *signed* efficiency
  (sum l_t / sum |l_t|, times -1 for SHORT) says how cleanly the asset moved the sleeve's way.
- *Score* (the ranking): the rating as of the selection date, times -1 for SHORT (the most
  bearish first); ties (ratings are means of a few votes) are broken by the signed efficiency,
  then by symbol.

**Vetoes**: hard (strict) vetoes are missing metadata (no row, or a null history or rating),
unhealthy, and a history shorter than `min_history_days`; threshold vetoes are entropy above the
cap and efficiency below the floor.

**HTR**: stages run in order and the first that brings the selection to `target_count` ends it
(the target is a minimum: stages 1-3 keep everything they pick; stage 4 stops at the target).
Picks accumulate: a later stage only adds.

1. Strict: per correlation cluster (preopt.correlation_clusters over the healthy candidates), the
   best `per_cluster` candidates with no veto.
2. Relaxed: the same with the entropy cap x1.2 (at most 1.0) and the efficiency floor x0.8.
3. Every cluster still without a pick gets its best member with no hard veto (thresholds ignored).
4. Global ranking: first candidates with no hard veto, then, only if still short, those vetoed
   for missing metadata or a short history. Unhealthy candidates are never selected: their
   returns have holes no optimizer can use (strict health is absolute).

One sleeve has one direction, so "per cluster and direction" is per cluster here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from quantwarehouse.sleeves.preopt import correlation_clusters
from quantwarehouse.sleeves.profiles import Profile

PATTERN_ORDER = 3
ENTROPY_RELAX = 1.2
EFFICIENCY_RELAX = 0.8
METADATA_COLUMNS = ("symbol", "history_days")


@dataclass(frozen=True)
class AggregationResult:
    returns_window: pd.DataFrame  # every calendar day of the window x candidates
    health: pd.DataFrame  # symbol, healthy, missing_bars, first_missing, reason


@dataclass(frozen=True)
class SelectionResult:
    selected: list[str]
    decisions: pd.DataFrame  # symbol, kept, stage, reason, veto, cluster, score, measures
    stage_ended: int
    stage_reason: str
    stage_counts: dict[int, int]  # selection size after each stage that ran


@dataclass(frozen=True)
class WindowMeasures:
    """Selection measures per symbol over one window (signed efficiency not direction-adjusted)."""

    entropy: pd.Series
    efficiency: pd.Series
    signed_efficiency: pd.Series


@dataclass(frozen=True)
class Thresholds:
    entropy_cap: float
    efficiency_floor: float

    def relaxed(self) -> Thresholds:
        return Thresholds(
            min(self.entropy_cap * ENTROPY_RELAX, 1.0), self.efficiency_floor * EFFICIENCY_RELAX
        )


def window_days(end: date | pd.Timestamp, lookback_days: int) -> pd.DatetimeIndex:
    """The `lookback_days` calendar days ending on `end`."""
    last = pd.Timestamp(end).normalize()
    return pd.date_range(last - timedelta(days=lookback_days - 1), last, freq="D")


def _health_reason(missing: int, first_missing: pd.Timestamp | None, known: bool) -> str:
    if not known:
        return "unhealthy: no returns for this symbol"
    if missing:
        return f"unhealthy: {missing} missing bar(s) in the window, first {first_missing:%Y-%m-%d}"
    return "healthy"


def health_table(window: pd.DataFrame, known: set[str]) -> pd.DataFrame:
    """Strict health of each column of a calendar-day window."""
    holes = np.isnan(window.to_numpy(dtype="float64"))
    counts = holes.sum(axis=0)
    first = window.index[holes.argmax(axis=0)] if len(window) else []
    symbols = list(window.columns)
    listed = [symbol in known for symbol in symbols]
    return pd.DataFrame(
        {
            "symbol": symbols,
            "healthy": (counts == 0) & np.array(listed, dtype=bool),
            "missing_bars": counts,
            "first_missing": [day if n else None for day, n in zip(first, counts, strict=True)],
            "reason": [
                _health_reason(int(n), day, ok)
                for n, day, ok in zip(counts, first, listed, strict=True)
            ],
        }
    )


def aggregate(
    candidates: list[str],
    returns: pd.DataFrame,
    lookback_days: int,
    as_of: date | pd.Timestamp | None = None,
) -> AggregationResult:
    """The candidates' returns over the window (index date, columns symbol) and strict health."""
    symbols = list(dict.fromkeys(candidates))
    dated = returns.set_axis(pd.DatetimeIndex(pd.to_datetime(returns.index)), axis=0)
    end = as_of if as_of is not None else dated.index.max()
    window = dated.reindex(index=window_days(end, lookback_days), columns=symbols)
    return AggregationResult(window, health_table(window, set(returns.columns)))


# Order patterns of three values as codes r0 + 3 r1 + 9 r2 of their ranks: the 3! = 6 of them.
PATTERN_CODES = tuple(sorted(a + 3 * b + 9 * c for a, b, c in itertools.permutations(range(3))))


def pattern_codes(values: np.ndarray) -> np.ndarray:
    """The order-pattern code of each run of three consecutive rows (T - 2 x N)."""
    runs = sliding_window_view(values, PATTERN_ORDER, axis=0)  # (T - 2, N, 3)
    ranks = np.argsort(np.argsort(runs, axis=-1, kind="stable"), axis=-1, kind="stable")
    return (ranks * PATTERN_ORDER ** np.arange(PATTERN_ORDER)).sum(axis=-1)


def entropy_from_counts(counts: np.ndarray, runs: int) -> np.ndarray:
    """Normalized entropy of pattern counts (6 x N) over `runs` runs of three."""
    shares = counts / runs
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(shares > 0, -shares * np.log(shares), 0.0)
    return terms.sum(axis=0) / np.log(len(PATTERN_CODES))


def permutation_entropy(returns: pd.DataFrame) -> pd.Series:
    """Normalized permutation entropy of order 3 per column (module docstring); NaN with holes."""
    values = returns.to_numpy(dtype="float64")
    if len(values) < PATTERN_ORDER or values.shape[1] == 0:
        return pd.Series(np.nan, index=returns.columns)
    codes = pattern_codes(values)
    counts = np.stack([(codes == code).sum(axis=0) for code in PATTERN_CODES])
    entropy = entropy_from_counts(counts, len(codes))
    entropy[np.isnan(values).any(axis=0)] = np.nan
    return pd.Series(entropy, index=returns.columns)


def efficiency_ratio(returns: pd.DataFrame, signed: bool = False) -> pd.Series:
    """Kaufman efficiency ratio of the log price per column (module docstring)."""
    logs = np.log1p(returns)
    path = logs.abs().sum(skipna=False)
    net = logs.sum(skipna=False)
    ratio = (net if signed else net.abs()) / path.where(path > 0)
    return ratio.where(path != 0, 0.0).where(path.notna())


def window_measures(window: pd.DataFrame) -> WindowMeasures:
    return WindowMeasures(
        permutation_entropy(window),
        efficiency_ratio(window),
        efficiency_ratio(window, signed=True),
    )


def metadata_as_of(
    features: pd.DataFrame, as_of: date | pd.Timestamp, rating_field: str
) -> pd.DataFrame:
    """Selection metadata from the features matrix as of a date (rows after it are not read).

    history_days: calendar days from the symbol's first row to `as_of`, both included; the rating
    is the row of `as_of` itself (null when the symbol has no row that day).
    """
    day = pd.Timestamp(as_of).normalize()
    dates = pd.to_datetime(features["bar_date"])
    known = features.loc[dates <= day, ["symbol", rating_field]].assign(
        bar_date=dates[dates <= day]
    )
    first = known.groupby("symbol")["bar_date"].min()
    today = known.loc[known["bar_date"] == day].set_index("symbol")[rating_field]
    return pd.DataFrame(
        {
            "symbol": first.index,
            "history_days": (day - first).dt.days.to_numpy() + 1,
            rating_field: today.reindex(first.index).to_numpy(),
        }
    )


Row = dict[str, Any]


def _metadata_rows(metadata: pd.DataFrame, rating_field: str) -> dict[str, tuple[float, float]]:
    """symbol -> (history_days, rating); the last row wins where a symbol repeats."""
    missing_columns = [c for c in (*METADATA_COLUMNS, rating_field) if c not in metadata]
    if missing_columns:
        raise ValueError(f"metadata has no column {', '.join(missing_columns)}")
    history = metadata["history_days"].to_numpy(dtype="float64")
    rating = metadata[rating_field].to_numpy(dtype="float64")
    return dict(zip(metadata["symbol"], zip(history, rating, strict=True), strict=True))


def _metadata_veto(row: tuple[float, float] | None, rating_field: str) -> str:
    if row is None:
        return "missing metadata: no row"
    names = ("history_days", rating_field)
    nulls = [name for name, value in zip(names, row, strict=True) if math.isnan(value)]
    return f"missing metadata: null {', '.join(nulls)}" if nulls else ""


def _descending(value: float) -> tuple[bool, float]:
    """A sort key part: larger values first, a missing value last."""
    return (True, 0.0) if math.isnan(value) else (False, -value)


def _ranking_key(item: tuple[str, Row]) -> tuple[bool, float, bool, float, str]:
    """Score descending, then signed efficiency descending, then symbol."""
    symbol, row = item
    return (*_descending(row["score"]), *_descending(row["signed_efficiency"]), symbol)


def candidate_rows(
    window_returns: pd.DataFrame,
    health: pd.DataFrame,
    metadata: pd.DataFrame,
    profile: Profile,
    measures: WindowMeasures | None = None,
) -> dict[str, Row]:
    """One row per candidate, best first: health, metadata, measures, score, cluster, vetoes.

    `measures` (over at least the healthy candidates) may come precomputed, as in the backtest.
    """
    meta = _metadata_rows(metadata, profile.rating_field)
    symbols = health["symbol"].tolist()
    healthy = dict(zip(symbols, health["healthy"].astype(bool), strict=True))
    window = window_returns[[s for s in symbols if healthy[s]]]
    sign = 1.0 if profile.direction == "LONG" else -1.0
    measures = measures or window_measures(window)
    entropy, efficiency, signed = (
        m.reindex(window.columns).to_dict()
        for m in (measures.entropy, measures.efficiency, measures.signed_efficiency)
    )
    clusters = correlation_clusters(window, profile.clusters).labels.to_dict()
    minimum = profile.selection.min_history_days
    nan = float("nan")
    rows: dict[str, Row] = {}
    for symbol, reason in zip(symbols, health["reason"], strict=True):
        history, rating = meta.get(symbol, (nan, nan))
        rows[symbol] = {
            "healthy": healthy[symbol],
            "health": reason,
            "history_days": history,
            "score": sign * rating,
            "signed_efficiency": sign * signed.get(symbol, nan),
            "entropy": entropy.get(symbol, nan),
            "efficiency": efficiency.get(symbol, nan),
            "cluster": clusters.get(symbol),
            "metadata_veto": _metadata_veto(meta.get(symbol), profile.rating_field),
            "history_veto": f"history {history:.0f} days < min_history_days {minimum}"
            if history < minimum
            else "",
        }
    ranked = dict(sorted(rows.items(), key=_ranking_key))
    for rank, row in enumerate(ranked.values(), start=1):
        row["global_rank"] = rank
        row["hard_veto"] = hard_veto(row)
    return ranked


def hard_veto(row: Row) -> str:
    """Strict vetoes of one candidate, joined ('' when none)."""
    parts = [row["metadata_veto"], row["history_veto"]]
    if not row["healthy"]:
        parts.insert(0, row["health"])
    return "; ".join(p for p in parts if p)


def threshold_veto(row: Row, thresholds: Thresholds) -> str:
    parts = []
    if row["entropy"] > thresholds.entropy_cap:
        parts.append(f"entropy {row['entropy']:.3f} > cap {thresholds.entropy_cap:.3f}")
    if row["efficiency"] < thresholds.efficiency_floor:
        parts.append(
            f"efficiency {row['efficiency']:.3f} < floor {thresholds.efficiency_floor:.3f}"
        )
    return "; ".join(parts)


class _Picks:
    """The growing selection over candidates in ranking order: symbol -> (stage, why)."""

    def __init__(self, rows: dict[str, Row]) -> None:
        self.rows = rows
        self.chosen: dict[str, tuple[int, str]] = {}
        self.members: dict[int, list[str]] = {}
        for symbol, row in rows.items():
            if row["cluster"] is not None:
                self.members.setdefault(row["cluster"], []).append(symbol)
        self.members = dict(sorted(self.members.items()))
        self.count = dict.fromkeys(self.members, 0)

    def add(self, symbol: str, stage: int, why: str) -> None:
        self.chosen[symbol] = (stage, why)
        cluster = self.rows[symbol]["cluster"]
        if cluster is not None:
            self.count[cluster] += 1

    def per_cluster(self, eligible: Callable[[Row], bool], stage: int, per_cluster: int) -> None:
        for cluster, members in self.members.items():
            for position, symbol in enumerate(members, start=1):
                if self.count[cluster] >= per_cluster:
                    break
                if symbol not in self.chosen and eligible(self.rows[symbol]):
                    why = f"rank {position} of {len(members)} in cluster {cluster}"
                    self.add(symbol, stage, why)

    def empty_clusters(self, stage: int) -> None:
        for cluster, members in self.members.items():
            usable = [s for s in members if not self.rows[s]["hard_veto"]]
            if not self.count[cluster] and usable:
                self.add(usable[0], stage, f"best member of cluster {cluster}, which had no pick")

    def global_fill(
        self, usable: Callable[[Row], bool], stage: int, target: int, note: str
    ) -> None:
        for symbol, row in self.rows.items():
            if len(self.chosen) >= target:
                return
            if symbol not in self.chosen and usable(row):
                self.add(symbol, stage, f"global rank {row['global_rank']}{note}")


def _unpicked_reason(row: Row, stage_ended: int, thresholds: Thresholds, per: int) -> str:
    if row["hard_veto"]:
        return f"vetoed: {row['hard_veto']}"
    if stage_ended == 4:
        return f"not needed: the target was met before global rank {row['global_rank']}"
    veto = threshold_veto(row, thresholds)
    if veto:
        return f"vetoed: {veto}"
    return f"outranked in cluster {row['cluster']} (per_cluster {per})"


def _stage_reason(
    counts: dict[int, int], labels: dict[int, str], target: int, unhealthy: int
) -> str:
    steps = "; ".join(f"stage {s} ({labels[s]}): {n} selected" for s, n in counts.items())
    last, total = max(counts), counts[max(counts)]
    if total >= target:
        return f"{steps}. Ended at stage {last}: {total} >= target {target}"
    return (
        f"{steps}. Ended at stage 4 short of the target: {total} < {target} "
        f"(universe exhausted; {unhealthy} unhealthy candidate(s) are never selected)"
    )


def _stage_labels(strict: Thresholds, relaxed: Thresholds) -> dict[int, str]:
    return {
        1: f"strict: entropy cap {strict.entropy_cap:.3f}, "
        f"efficiency floor {strict.efficiency_floor:.3f}",
        2: f"relaxed: entropy cap {relaxed.entropy_cap:.3f}, "
        f"efficiency floor {relaxed.efficiency_floor:.3f}",
        3: "best member of each cluster without a pick",
        4: "global ranking, then vetoes other than health ignored",
    }


def select_htr(
    window_returns: pd.DataFrame,
    health: pd.DataFrame,
    metadata: pd.DataFrame,
    profile: Profile,
    measures: WindowMeasures | None = None,
) -> SelectionResult:
    """HTR selection in up to four stages (module docstring), with a decision per candidate.

    `metadata` has one row per symbol with `symbol`, `history_days` and the profile's rating
    field (e.g. from `metadata_as_of`); extra columns are ignored.
    """
    settings = profile.selection
    rows = candidate_rows(window_returns, health, metadata, profile, measures)
    strict = Thresholds(settings.entropy_cap, settings.efficiency_floor)
    relaxed = strict.relaxed()
    picks = _Picks(rows)

    target = settings.target_count

    def run(stage: int) -> None:
        if stage in (1, 2):
            thresholds = strict if stage == 1 else relaxed
            picks.per_cluster(
                lambda row: not row["hard_veto"] and not threshold_veto(row, thresholds),
                stage,
                settings.per_cluster,
            )
        elif stage == 3:
            picks.empty_clusters(stage)
        else:
            picks.global_fill(lambda row: not row["hard_veto"], stage, target, "")
            picks.global_fill(lambda row: row["healthy"], stage, target, ", veto ignored")

    counts: dict[int, int] = {}
    for stage in (1, 2, 3, 4):
        run(stage)
        counts[stage] = len(picks.chosen)
        if counts[stage] >= target:
            break
    stage_ended = max(counts)
    in_force = strict if stage_ended == 1 else relaxed
    unhealthy = sum(1 for row in rows.values() if not row["healthy"])
    return SelectionResult(
        selected=list(picks.chosen),
        decisions=_decisions(rows, picks, stage_ended, in_force, settings.per_cluster),
        stage_ended=stage_ended,
        stage_reason=_stage_reason(counts, _stage_labels(strict, relaxed), target, unhealthy),
        stage_counts=counts,
    )


DECISION_MEASURES = (
    "cluster",
    "global_rank",
    "score",
    "signed_efficiency",
    "entropy",
    "efficiency",
    "history_days",
    "healthy",
)


def _decisions(
    rows: dict[str, Row], picks: _Picks, stage_ended: int, thresholds: Thresholds, per: int
) -> pd.DataFrame:
    records = []
    for symbol, row in rows.items():
        kept = symbol in picks.chosen
        stage, why = picks.chosen.get(symbol, (None, ""))
        vetoes = (row["hard_veto"], threshold_veto(row, thresholds))
        records.append(
            {
                "symbol": symbol,
                "kept": kept,
                "stage": stage,
                "reason": f"kept at stage {stage}: {why}"
                if kept
                else _unpicked_reason(row, stage_ended, thresholds, per),
                "veto": "; ".join(v for v in vetoes if v),
                **{name: row[name] for name in DECISION_MEASURES},
            }
        )
    columns = ["symbol", "kept", "stage", "reason", "veto", *DECISION_MEASURES]
    decisions = pd.DataFrame(records, columns=columns)
    decisions["stage"] = decisions["stage"].astype("Int64")
    decisions["cluster"] = decisions["cluster"].astype("Int64")
    decisions["healthy"] = decisions["healthy"].astype(bool)
    return decisions
