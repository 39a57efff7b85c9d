"""Paired differences and their t-intervals, against scipy.stats and a case worked by hand."""

import math

import numpy as np
import pytest
from scipy import stats

from csr.stats import mean_std, paired_difference


def test_interval_matches_scipy_on_random_pairs():
    rng = np.random.default_rng(3)
    for n in (2, 3, 5, 10, 30):
        a = {(fold, 0): v for fold, v in enumerate(rng.normal(80, 5, n))}
        b = {(fold, 0): v for fold, v in enumerate(rng.normal(75, 5, n))}
        diffs = np.array([a[k] - b[k] for k in sorted(a)])
        got = paired_difference(a, b)
        low, high = stats.t.interval(0.95, n - 1, loc=diffs.mean(), scale=stats.sem(diffs))
        assert got.n == n and got.mean == pytest.approx(diffs.mean())
        assert (got.low, got.high) == (pytest.approx(low), pytest.approx(high))
        # The interval excludes 0 exactly when the paired t-test rejects at 5 %.
        assert (got.low > 0 or got.high < 0) == (stats.ttest_rel(list(a.values()), list(b.values())).pvalue < 0.05)


def test_a_hand_computed_case():
    # Differences 1, 2, 3: mean 2, sample std 1, t(0.975, 2) = 4.302653: 2 ± 4.302653 / sqrt(3).
    a = {(1, 0): 11.0, (2, 0): 12.0, (3, 0): 13.0}
    b = {(1, 0): 10.0, (2, 0): 10.0, (3, 0): 10.0}
    got = paired_difference(a, b)
    half = 4.302653 / math.sqrt(3)
    assert got.mean == 2.0
    assert (got.low, got.high) == (pytest.approx(2 - half, abs=1e-5), pytest.approx(2 + half, abs=1e-5))
    assert got.text() == "+2.0 [-0.5, +4.5] (n = 3)"


def test_only_pairs_both_cells_ran_are_used():
    a = {(1, 0): 90.0, (2, 0): 80.0, (1, 1): 70.0}
    b = {(1, 0): 85.0, (2, 0): 85.0}  # (1, 1) has no partner
    got = paired_difference(a, b)
    assert got.n == 2 and got.mean == 0.0
    assert paired_difference(a, {(1, 0): 80.0}).text() == "+10.0 [n/a] (n = 1)"
    assert paired_difference(a, {}).text() == "n/a (no pairs)"


def test_mean_std_population_and_sample():
    assert mean_std([1, 2, 3, 4]) == (2.5, pytest.approx(np.std([1, 2, 3, 4])))
    assert mean_std([1, 2, 3, 4], ddof=1)[1] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert math.isnan(mean_std([5], ddof=1)[1]) and math.isnan(mean_std([])[0])
