"""Statistics of the tables: mean ± std over runs, and paired differences with t-intervals.

A cell of a table is the mean over its runs (every predefined fold, times every seed). Whether the
proposed method's gain over a baseline is larger than the run-to-run noise is answered by pairing:
the two methods ran on the same (fold, seed) pairs, so the per-pair difference removes what a fold
or a seed does to both, and its mean gets a Student t confidence interval over the pairs
(`paired_difference`, checked against scipy.stats in the tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95


def mean_std(values, ddof: int = 0) -> tuple[float, float]:
    """Mean and standard deviation; std is NaN when ddof leaves no degree of freedom."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    std = float(np.std(arr, ddof=ddof)) if arr.size > ddof else math.nan
    return float(np.mean(arr)), std


@dataclass(frozen=True)
class PairedDifference:
    """mean(a - b) over n matched pairs, with its two-sided t confidence interval [low, high]."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float = CONFIDENCE

    def text(self) -> str:
        """'+4.2 [+1.0, +7.4] (n = 5)', or 'n/a (n = 1)' without a spread to estimate."""
        if self.n < 2 or math.isnan(self.low):
            return f"{self.mean:+.1f} [n/a] (n = {self.n})" if self.n else "n/a (no pairs)"
        return f"{self.mean:+.1f} [{self.low:+.1f}, {self.high:+.1f}] (n = {self.n})"


def paired_difference(a: dict, b: dict, confidence: float = CONFIDENCE) -> PairedDifference:
    """Paired difference of two cells' values, each {(fold, seed): value}: only the pairs both have.

    The interval is mean ± t_{(1+c)/2, n-1} · s / sqrt(n), s the sample standard deviation of the
    differences (ddof = 1): the textbook paired t-interval.
    """
    from scipy import stats

    keys = sorted(set(a) & set(b))
    diffs = np.asarray([a[k] - b[k] for k in keys], dtype=np.float64)
    n = int(diffs.size)
    if n == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0, confidence)
    mean = float(diffs.mean())
    if n < 2:
        return PairedDifference(mean, math.nan, math.nan, n, confidence)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * float(diffs.std(ddof=1)) / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, n, confidence)
