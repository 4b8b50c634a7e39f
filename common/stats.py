"""Paired-comparison statistics over questions: bootstrap intervals, a sign-flip test, the detectable
difference. Pure functions on arrays, below every stage."""
from __future__ import annotations

from math import sqrt

import numpy as np


def bootstrap_ci(values, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one value per question), seeded."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan")
    means = np.random.default_rng(seed).choice(v, size=(resamples, len(v))).mean(axis=1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))


def sign_flip_p(diffs, resamples: int = 20000, seed: int = 0) -> float:
    """Two-sided paired permutation p-value of mean(diffs) = 0: each question's difference keeps or flips
    its sign at random (exact over all 2^m sign patterns of the m non-zero differences when m <= 16,
    else ``resamples`` random patterns)."""
    d = np.asarray(diffs, dtype=float)
    d = d[d != 0]
    if len(d) == 0:
        return 1.0
    observed = abs(d.sum())
    if len(d) <= 16:
        signs = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)
        return float(np.mean(np.abs(signs @ d) >= observed - 1e-12))
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(resamples, len(d)))
    # Monte Carlo: the observed pattern counts as one of the draws, so p is never 0
    return float((np.sum(np.abs(signs @ d) >= observed - 1e-12) + 1) / (resamples + 1))


def detectable_difference(diffs, z_alpha: float = 1.96, z_power: float = 0.8416) -> float:
    """The smallest mean paired difference a two-sided 5% test detects with 80% power, at the spread
    of ``diffs`` (one per question): (z_alpha + z_power) * sd / sqrt(n)."""
    d = np.asarray(diffs, dtype=float)
    return float((z_alpha + z_power) * d.std(ddof=1) / sqrt(len(d))) if len(d) > 1 else float("nan")


def auroc(scores, positive) -> float | None:
    """Area under the ROC curve of ``scores`` for telling ``positive`` (bool) items from the rest: the
    probability that a random positive scores above a random negative, ties counting half (Mann-Whitney
    U / (n+ n-), from midranks); None when either class is empty."""
    s, pos = np.asarray(scores, dtype=float), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # midrank of each distinct value: first rank + (count - 1) / 2
    ranks = (first + (counts + 1) / 2)[inverse]
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def cluster_bootstrap_ci(groups: list, statistic, resamples: int = 2000, seed: int = 0,
                         level: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of ``statistic(list of groups)`` resampling whole groups (traces,
    whose segments are not independent) with replacement, seeded; resamples where the statistic is
    None (a class missing) are left out; (None, None) when none is left."""
    rng = np.random.default_rng(seed)
    values = [statistic([groups[i] for i in rng.integers(0, len(groups), len(groups))]) for _ in range(resamples)]
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return float(np.quantile(values, (1 - level) / 2)), float(np.quantile(values, (1 + level) / 2))
