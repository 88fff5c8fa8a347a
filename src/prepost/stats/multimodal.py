"""Association of changes between modalities (e.g. change in PET binding vs change in
connectivity) across subjects.

With about ten subjects, analytic correlation p-values rest on assumptions that cannot be
checked, so :func:`change_correlation` also gives a permutation p-value: exact over all ``n!``
pairings when ``n`` is small, seeded Monte Carlo otherwise. :func:`change_correlations` runs it
for every pair of measures of two tables and adjusts p-values with
:func:`prepost.stats.paired.correct`.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from prepost.errors import InputError
from prepost.stats.paired import count_extreme, complete_pairs, correct

__all__ = ["change_correlation", "change_correlations"]

_METHODS = ("spearman", "pearson")
_ALTERNATIVES = ("two-sided", "greater", "less")


def _permutations(n, n_perm, max_exact, seed):
    """Row-wise permutations of ``range(n)``: all ``n!`` when ``n <= max_exact``, else random."""
    if n <= max_exact:
        return np.array(list(itertools.permutations(range(n))), dtype=np.int64), True
    rng = np.random.default_rng(seed)
    idx = np.tile(np.arange(n, dtype=np.int64), (int(n_perm), 1))
    return rng.permuted(idx, axis=1), False


def change_correlation(delta_x, delta_y, method="spearman", n_perm=10000, seed=0, max_exact=8,
                       alternative="two-sided"):
    """Correlation of two per-subject changes with analytic and permutation p-values.

    Parameters
    ----------
    delta_x, delta_y : array-like of shape (n,)
        Changes (``post - pre``) of two measures for the same subjects, in the same order.
        Pairs with a NaN on either side are dropped.
    method : {'spearman', 'pearson'}, default='spearman'
        Correlation coefficient.
    n_perm : int, default=10000
        Random permutations when ``n > max_exact``.
    seed : int, default=0
        Seed of the random permutations (Monte Carlo only).
    max_exact : int, default=8
        Largest ``n`` for which all ``n!`` permutations are enumerated (8! = 40320).
    alternative : {'two-sided', 'greater', 'less'}, default='two-sided'
        'greater' tests a positive association.

    Returns
    -------
    result : dict
        ``n``, ``n_dropped``, ``method``, ``r``; ``p_analytic`` from
        :func:`scipy.stats.spearmanr` or :func:`scipy.stats.pearsonr`; ``p_perm`` and
        ``perm_exact``; ``note`` ('' when nothing is unusual).

    Notes
    -----
    The permutation null pairs ``x`` with every permutation of ``y``. Spearman's rho is the
    Pearson correlation of the ranks (ties get average ranks) and permuting ``y`` permutes its
    ranks, so both coefficients are computed as one matrix product of the permuted, centred
    ``y`` with the centred ``x`` (written here for speed: scipy would evaluate the statistic
    once per permutation). Exact: ``p = #{|r*| >= |r|} / n!``; Monte Carlo:
    ``p = (1 + #) / (1 + n_perm)``. Ties within rounding are counted with the tolerance of
    :func:`scipy.stats.permutation_test`.
    """
    if method not in _METHODS:
        raise InputError(field="method", expected=" or ".join(_METHODS), found=method)
    if alternative not in _ALTERNATIVES:
        raise InputError(field="alternative", expected=" or ".join(_ALTERNATIVES),
                         found=alternative)
    x, y, n_dropped = complete_pairs(delta_x, delta_y, "delta_x/delta_y")
    n = x.size
    out = {"n": n, "n_dropped": n_dropped, "method": method, "r": float("nan"),
           "p_analytic": float("nan"), "p_perm": float("nan"), "perm_exact": False, "note": ""}
    if n < 3:
        out["note"] = f"fewer than 3 complete pairs (n={n})"
        return out
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        out["note"] = "a measure is constant: correlation undefined"
        return out

    func = stats.spearmanr if method == "spearman" else stats.pearsonr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = func(x, y, alternative=alternative)
    out["r"], out["p_analytic"] = float(res.statistic), float(res.pvalue)

    if method == "spearman":
        x, y = stats.rankdata(x), stats.rankdata(y)
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt(np.dot(xc, xc) * np.dot(yc, yc))
    r_obs = np.dot(xc, yc) / denom
    perms, exact = _permutations(n, n_perm, max_exact, seed)
    count = 0
    chunk = max(1, 2**21 // n)
    for start in range(0, perms.shape[0], chunk):
        r_null = yc[perms[start : start + chunk]] @ xc / denom
        count += count_extreme(r_null, r_obs, alternative)
    total = perms.shape[0]
    out["p_perm"] = count / total if exact else (1 + count) / (1 + total)
    out["perm_exact"] = bool(exact)
    return out


def change_correlations(X, Y, method="spearman", n_perm=10000, seed=0, max_exact=8,
                        alternative="two-sided", correction="fdr_bh", family=None):
    """:func:`change_correlation` for every pair of columns of two tables, with correction.

    Parameters
    ----------
    X, Y : pandas.DataFrame
        Changes per subject (rows, indexed by subject) and measure (columns), e.g. regional
        change in binding and change in network connectivity. Rows are aligned on the index;
        subjects missing from one table count as dropped pairs.
    method, n_perm, seed, max_exact, alternative
        See :func:`change_correlation`.
    correction : str, default='fdr_bh'
        Method of :func:`prepost.stats.paired.correct` applied to ``p_analytic`` and
        ``p_perm``.
    family : {None, 'x', 'y'}, default=None
        None corrects across all pairs; 'x' (or 'y') corrects within each column of ``X``
        (or ``Y``).

    Returns
    -------
    table : pandas.DataFrame
        One row per pair: ``x``, ``y``, the keys of :func:`change_correlation`,
        ``p_analytic_<correction>`` and ``p_perm_<correction>``.
    """
    if not isinstance(X, pd.DataFrame) or not isinstance(Y, pd.DataFrame):
        raise InputError(field="X/Y", expected="pandas DataFrames (subjects x measures)")
    if family not in (None, "x", "y"):
        raise InputError(field="family", expected="None, 'x' or 'y'", found=family)
    index = X.index.union(Y.index)
    Xa, Ya = X.reindex(index), Y.reindex(index)
    rows = []
    for cx in Xa.columns:
        for cy in Ya.columns:
            res = change_correlation(Xa[cx].to_numpy(float), Ya[cy].to_numpy(float),
                                     method=method, n_perm=n_perm, seed=seed,
                                     max_exact=max_exact, alternative=alternative)
            rows.append({"x": cx, "y": cy, **res})
    table = pd.DataFrame(rows)
    fam = None if family is None else table[family].astype(str).to_numpy()
    for col in ("p_analytic", "p_perm"):
        table[f"{col}_{correction}"] = correct(table[col].to_numpy(float), method=correction,
                                               families=fam)
    return table

