"""Pre-optimization analysis of a sleeve's atoms: correlation clusters, antifragility, regime caps.

Definitions (DOMAIN.md "Pre-optimization analysis"):

- **Correlation distance** `d_ij = sqrt((1 - rho_ij) / 2)`, rho the Pearson correlation of daily
  returns over the window: 0 for perfectly correlated series, 1 for perfectly anti-correlated
  ones. A pair whose correlation is undefined (a constant series) counts as uncorrelated (rho 0).
- **Clusters**: scipy hierarchical clustering of that distance with the profile's linkage, cut
  where the merge distance exceeds `distance_threshold` (fcluster, criterion "distance"). Labels
  are numbered 1, 2, ... in the order clusters first appear in the dendrogram's leaf order.
- **Antifragility** of an atom: the adjusted Fisher-Pearson skewness of its returns and the mean
  of its returns at or above their 95th percentile (numpy linear interpolation), each min-max
  scaled across the sleeve's atoms to [0, 1] (0.5 for all when every atom has the same value),
  averaged, and multiplied by `min(N / 252, 1)` with N the atom's number of returns, so that a
  short history cannot look antifragile.
- **Regime caps**: an atom is in a high-volatility regime when its volatility over the last
  `window_days` returns exceeds the `quantile` of its own rolling `window_days` volatility over the
  window; its weight is then capped at `high_vol_cap`, otherwise at `max_weight`. When the caps
  add up to less than 1 (no long-only portfolio could meet them), every cap below 1/N is raised
  to 1/N, and the raise is recorded.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from quantwarehouse.sleeves.profiles import ClusterSettings, Profile, RegimeSettings

DAYS_PER_YEAR = 365
TAIL_QUANTILE = 0.95
FULL_SAMPLE_DAYS = 252  # DOMAIN.md: the sample-size factor reaches 1 at 252 returns


@dataclass(frozen=True)
class Clusters:
    labels: pd.Series  # cluster number per column, in the input's column order
    linkage: np.ndarray  # scipy linkage matrix over `labels.index` (empty for < 2 columns)
    leaf_order: list[str]  # columns in dendrogram leaf order


@dataclass(frozen=True)
class PreOptResult:
    clusters: pd.DataFrame  # atom, cluster, leaf_position
    antifragility: pd.DataFrame  # atom, skew, tail_mean, observations, scaled parts, antifragility
    caps: pd.Series  # weight cap per atom
    regimes: pd.DataFrame  # atom, recent_vol, vol_threshold, high_vol, cap, cap_raised
    linkage: np.ndarray  # for the cluster map (rows over `atoms`)
    atoms: list[str]
    correlation: pd.DataFrame


def correlation_matrix(returns: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation of the columns; undefined pairs as 0, the diagonal as 1.

    Over the days where both columns have a return (all days, in a healthy window).
    """
    values = returns.to_numpy(dtype="float64")
    if np.isnan(values).any():
        rho = returns.corr().to_numpy(copy=True)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):  # a constant column: undefined
            rho = np.corrcoef(values, rowvar=False).reshape(values.shape[1], values.shape[1])
    rho = np.nan_to_num(rho, nan=0.0)
    np.fill_diagonal(rho, 1.0)
    return pd.DataFrame(rho, index=returns.columns, columns=returns.columns)


def correlation_distance(returns: pd.DataFrame) -> pd.DataFrame:
    """sqrt((1 - rho) / 2), clipped to [0, 1] against rounding."""
    return np.sqrt(((1.0 - correlation_matrix(returns)) / 2.0).clip(0.0, 1.0))


def correlation_clusters(returns: pd.DataFrame, settings: ClusterSettings) -> Clusters:
    """Hierarchical clusters of the columns (module docstring: distance, cut, numbering)."""
    columns = list(returns.columns)
    if len(columns) < 2:
        labels = pd.Series(1, index=pd.Index(columns), dtype="int64")
        return Clusters(labels, np.empty((0, 4)), columns)
    distance = correlation_distance(returns).to_numpy()
    link = hierarchy.linkage(squareform(distance, checks=False), method=settings.linkage)
    raw = hierarchy.fcluster(link, t=settings.distance_threshold, criterion="distance")
    leaves = hierarchy.leaves_list(link)
    renumber: dict[int, int] = {}
    for leaf in leaves:
        renumber.setdefault(raw[leaf], len(renumber) + 1)
    labels = pd.Series([renumber[label] for label in raw], index=pd.Index(columns), dtype="int64")
    return Clusters(labels, link, [columns[leaf] for leaf in leaves])


def _min_max(values: pd.Series) -> pd.Series:
    low, high = values.min(), values.max()
    if not high > low:
        return pd.Series(0.5, index=values.index)
    return (values - low) / (high - low)


def _tail_mean(column: pd.Series) -> float:
    values = column.dropna().to_numpy()
    if values.size == 0:
        return float("nan")
    return float(values[values >= np.quantile(values, TAIL_QUANTILE)].mean())


def antifragility(returns: pd.DataFrame) -> pd.DataFrame:
    """Antifragility score per column (module docstring)."""
    skew = returns.skew()
    tail = returns.apply(_tail_mean)
    observations = returns.count()
    skew_scaled, tail_scaled = _min_max(skew), _min_max(tail)
    factor = np.minimum(observations / FULL_SAMPLE_DAYS, 1.0)
    return pd.DataFrame(
        {
            "atom": returns.columns,
            "skew": skew.to_numpy(),
            "tail_mean": tail.to_numpy(),
            "observations": observations.to_numpy(),
            "skew_scaled": skew_scaled.to_numpy(),
            "tail_scaled": tail_scaled.to_numpy(),
            "sample_factor": factor.to_numpy(),
            "antifragility": ((skew_scaled + tail_scaled) / 2 * factor).to_numpy(),
        }
    )


def regime_caps(returns: pd.DataFrame, settings: RegimeSettings) -> pd.DataFrame:
    """Per-atom regime and weight cap (module docstring); volatilities annualised with 365."""
    rolling = returns.rolling(settings.window_days).std().to_numpy()
    return caps_from_volatility(rolling, list(returns.columns), settings)


def caps_from_volatility(
    rolling: np.ndarray, atoms: list[str], settings: RegimeSettings
) -> pd.DataFrame:
    """Regime caps from the atoms' rolling volatility over the window (days x atoms)."""
    recent = rolling[-1] if len(rolling) else np.full(len(atoms), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a window shorter than window_days
        threshold = np.nanquantile(rolling, settings.quantile, axis=0)
    high_vol = recent > threshold
    caps = np.where(high_vol, settings.high_vol_cap, settings.max_weight)
    raised = np.zeros(len(caps), dtype=bool)
    if len(caps) and caps.sum() < 1.0:
        equal = 1.0 / len(caps)
        raised = caps < equal
        caps = np.maximum(caps, equal)
    annualise = np.sqrt(DAYS_PER_YEAR)
    return pd.DataFrame(
        {
            "atom": atoms,
            "recent_vol": recent * annualise,
            "vol_threshold": threshold * annualise,
            "high_vol": high_vol,
            "cap": caps,
            "cap_raised": raised,
        }
    )


def preopt_analysis(atom_returns: pd.DataFrame, profile: Profile | None = None) -> PreOptResult:
    """Clusters, antifragility and regime caps of the atoms (profile settings, or the defaults)."""
    cluster_settings = profile.clusters if profile else ClusterSettings()
    regime_settings = profile.regime if profile else RegimeSettings()
    clusters = correlation_clusters(atom_returns, cluster_settings)
    position = {atom: i for i, atom in enumerate(clusters.leaf_order)}
    regimes = regime_caps(atom_returns, regime_settings)
    return PreOptResult(
        clusters=pd.DataFrame(
            {
                "atom": clusters.labels.index,
                "cluster": clusters.labels.to_numpy(),
                "leaf_position": [position[atom] for atom in clusters.labels.index],
            }
        ),
        antifragility=antifragility(atom_returns),
        caps=pd.Series(regimes["cap"].to_numpy(), index=regimes["atom"], name="cap"),
        regimes=regimes,
        linkage=clusters.linkage,
        atoms=list(atom_returns.columns),
        correlation=correlation_matrix(atom_returns),
    )
