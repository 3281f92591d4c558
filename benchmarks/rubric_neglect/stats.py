"""Paired statistics by seed: exact Wilcoxon signed-rank (full enumeration of the sign flips, mid-ranks for ties),
paired t-test, percentile bootstrap CI of the mean difference, Holm's step-down adjustment and the paired t-test's
minimal detectable effect."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np


def wilcoxon_exact(d: Sequence[float]) -> float:
    """Two-sided exact p-value of the Wilcoxon signed-rank test on paired differences `d` (zeros dropped,
    Wilcoxon's convention; ties get mid-ranks and the null distribution is enumerated over all 2^n sign flips, so
    it stays exact with ties). NaN when no difference is non-zero. Raises ValueError for n > 20 (2^n too many)."""
    x = np.asarray([v for v in d if v != 0], dtype=float)
    n = x.size
    if n == 0:
        return math.nan
    if n > 20:
        raise ValueError(f"d: exact enumeration limited to 20 non-zero differences, got {n}")
    ranks = _midranks(np.abs(x))
    obs = ranks[x > 0].sum()
    centre = ranks.sum() / 2
    stats = np.array([sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product((0, 1), repeat=n)])
    return float(np.mean(np.abs(stats - centre) >= abs(obs - centre) - 1e-9))


def _midranks(a: np.ndarray) -> np.ndarray:
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(a.size)
    ranks[order] = np.arange(1, a.size + 1)
    for v in np.unique(a):
        tie = a == v
        ranks[tie] = ranks[tie].mean()
    return ranks


def paired_t(d: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test (one-sample t on the differences); NaN when n < 2 or sd = 0."""
    from scipy import stats

    x = np.asarray(d, dtype=float)
    if x.size < 2 or x.std(ddof=1) == 0:
        return math.nan
    return float(stats.ttest_1samp(x, 0.0).pvalue)


def bootstrap_ci(d: Sequence[float], level: float = 0.95, n_resamples: int = 10_000, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `d` (resampling seeds with replacement, fixed RNG `seed`)."""
    x = np.asarray(d, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan)
    means = np.random.default_rng(seed).choice(x, size=(n_resamples, x.size), replace=True).mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm step-down adjusted p-values (NaN stays NaN and does not count in the family)."""
    valid = sorted((p, k) for k, p in pvalues.items() if not math.isnan(p))
    m = len(valid)
    out = {k: math.nan for k in pvalues}
    running = 0.0
    for i, (p, k) in enumerate(valid):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


def paired_summary(a: dict[int, float], b: dict[int, float], seed: int = 0) -> dict:
    """Paired comparison a - b over the seeds both have: n, mean difference, wins / losses / ties, exact Wilcoxon
    and paired-t p-values, 95 % bootstrap CI, and the SD of the differences."""
    seeds = sorted(set(a) & set(b))
    d = [a[s] - b[s] for s in seeds]
    lo, hi = bootstrap_ci(d, seed=seed)
    return {"n": len(d), "seeds": seeds, "mean_diff": float(np.mean(d)) if d else math.nan,
            "sd_diff": float(np.std(d, ddof=1)) if len(d) > 1 else math.nan,
            "wins": sum(x > 0 for x in d), "losses": sum(x < 0 for x in d), "ties": sum(x == 0 for x in d),
            "wilcoxon_p": wilcoxon_exact(d), "ttest_p": paired_t(d), "ci95": [lo, hi]}


def t_mde(n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true mean difference, in units of the SD of the paired differences, that a two-sided paired
    t-test with n pairs detects with probability `power` at level `alpha` (noncentral t, solved by bisection).
    NaN for n < 2."""
    from scipy import stats

    if n < 2:
        return math.nan
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)

    def pw(delta: float) -> float:
        nc = delta * math.sqrt(n)
        return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))

    lo, hi = 0.0, 50.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if pw(mid) < power else (lo, mid)
    return hi


def wilcoxon_floor(n: int) -> float:
    """Smallest two-sided exact Wilcoxon p-value possible with n non-zero differences: 2 / 2^n."""
    return 2.0 / 2 ** n
