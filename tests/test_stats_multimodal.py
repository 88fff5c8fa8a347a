"""Tests of prepost.stats.multimodal against scipy and brute-force enumeration."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from prepost.errors import InputError
from prepost.stats.multimodal import change_correlation, change_correlations


def _brute(x, y, method, alternative):
    f = (lambda a, b: stats.spearmanr(a, b).statistic) if method == "spearman" else \
        (lambda a, b: stats.pearsonr(a, b).statistic)
    obs = f(x, y)
    null = np.array([f(x, y[list(p)]) for p in itertools.permutations(range(len(y)))])
    tol = 1e-12
    if alternative == "two-sided":
        return np.mean(np.abs(null) >= abs(obs) - tol)
    if alternative == "greater":
        return np.mean(null >= obs - tol)
    return np.mean(null <= obs + tol)


def _data(n, seed=0, rho=0.6):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, rho * x + rng.normal(size=n)


@pytest.mark.parametrize("method", ["spearman", "pearson"])
def test_r_and_analytic_p_match_scipy(method):
    x, y = _data(11)
    r = change_correlation(x, y, method=method, n_perm=2000)
    ref = stats.spearmanr(x, y) if method == "spearman" else stats.pearsonr(x, y)
    assert r["r"] == pytest.approx(ref.statistic, rel=1e-12)
    assert r["p_analytic"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert r["n"] == 11 and not r["perm_exact"]


@pytest.mark.parametrize("method", ["spearman", "pearson"])
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_exact_permutation_p_matches_enumeration(method, alternative):
    x, y = _data(7, seed=1)
    r = change_correlation(x, y, method=method, alternative=alternative)
    assert r["perm_exact"]
    assert r["p_perm"] == pytest.approx(_brute(x, y, method, alternative), abs=1e-12)


def test_exact_permutation_with_ties():
    x = np.array([1.0, 2, 2, 3, 4, 5, 5])
    y = np.array([0.5, 1.0, 3.0, 2.0, 2.0, 6.0, 4.0])
    r = change_correlation(x, y, method="spearman")
    assert r["p_perm"] == pytest.approx(_brute(x, y, "spearman", "two-sided"), abs=1e-12)


def test_agrees_with_scipy_permutation_test():
    x, y = _data(7, seed=2)
    # Spearman without ties: the permutation null is symmetric, so |rho| and scipy's
    # 2 * min(one-sided) coincide.
    ref = stats.permutation_test((y,), lambda yy: stats.spearmanr(x, yy).statistic,
                                 permutation_type="pairings", n_resamples=np.inf)
    assert change_correlation(x, y)["p_perm"] == pytest.approx(ref.pvalue, abs=1e-12)
    ref_g = stats.permutation_test((y,), lambda yy: stats.pearsonr(x, yy).statistic,
                                   permutation_type="pairings", n_resamples=np.inf,
                                   alternative="greater")
    ours_g = change_correlation(x, y, method="pearson", alternative="greater")
    assert ours_g["p_perm"] == pytest.approx(ref_g.pvalue, abs=1e-12)


def test_monte_carlo_seeded_and_close_to_analytic_null():
    x, y = _data(12, seed=3, rho=0.0)
    a = change_correlation(x, y, method="pearson", n_perm=20000, seed=1)
    b = change_correlation(x, y, method="pearson", n_perm=20000, seed=1)
    assert a == b and not a["perm_exact"]
    # For normal data the permutation and analytic p-values are close.
    assert abs(a["p_perm"] - a["p_analytic"]) < 0.03


def test_nan_pairs_and_degenerate_inputs():
    x = np.array([1.0, 2, np.nan, 4, 5, 6])
    y = np.array([2.0, 1, 3, np.nan, 6, 5])
    r = change_correlation(x, y)
    assert r["n"] == 4 and r["n_dropped"] == 2
    ref = stats.spearmanr([1, 2, 5, 6], [2, 1, 6, 5])
    assert r["r"] == pytest.approx(ref.statistic)
    r2 = change_correlation([1, 2], [3, 4])
    assert np.isnan(r2["p_perm"]) and "fewer than 3" in r2["note"]
    r3 = change_correlation([1, 1, 1, 1], [1, 2, 3, 4])
    assert np.isnan(r3["r"]) and r3["note"]
    with pytest.raises(InputError):
        change_correlation([1, 2, 3], [1, 2])
    with pytest.raises(InputError):
        change_correlation([1, 2, 3], [1, 2, 3], method="kendall")


def test_change_correlations_table_and_fdr():
    rng = np.random.default_rng(4)
    idx = [f"sub-{i:02d}" for i in range(10)]
    X = pd.DataFrame(rng.normal(size=(10, 3)), index=idx, columns=["a", "b", "c"])
    Y = pd.DataFrame(rng.normal(size=(10, 2)), index=idx, columns=["net1", "net2"])
    Y["net1"] = X["a"] * 2 + rng.normal(scale=0.3, size=10)
    Y = Y.drop(index="sub-03")
    tab = change_correlations(X, Y, n_perm=2000, seed=0)
    assert len(tab) == 6
    assert set(tab["n"]) == {9} and set(tab["n_dropped"]) == {1}
    np.testing.assert_allclose(tab["p_perm_fdr_bh"],
                               multipletests(tab["p_perm"], method="fdr_bh")[1])
    np.testing.assert_allclose(tab["p_analytic_fdr_bh"],
                               multipletests(tab["p_analytic"], method="fdr_bh")[1])
    top = tab.sort_values("p_perm").iloc[0]
    assert (top["x"], top["y"]) == ("a", "net1") and top["p_perm_fdr_bh"] < 0.05
    fam = change_correlations(X, Y, n_perm=2000, family="x")
    sub = fam[fam.x == "b"]
    np.testing.assert_allclose(sub["p_perm_fdr_bh"],
                               multipletests(sub["p_perm"], method="fdr_bh")[1])
