"""Paired (baseline vs follow-up) tests on one measure at a time.

The functions here summarise a pre/post change for small samples (n of about 10): the paired
t-test and the Wilcoxon signed-rank test from :mod:`scipy.stats`, an exact sign-flip permutation
test, effect sizes, t and bootstrap confidence intervals, tidy per-group tables with
multiple-comparison correction within families
(:func:`statsmodels.stats.multitest.multipletests`) and a random-intercept linear mixed model
(:class:`statsmodels.regression.mixed_linear_model.MixedLM`).

Every difference is ``post - pre``: a positive mean difference is an increase at follow-up.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from prepost.errors import InputError

__all__ = [
    "sign_flips",
    "sign_flip_pvalue",
    "count_extreme",
    "paired_test",
    "complete_pairs",
    "paired_table",
    "correct",
    "mixed_model",
]

_ALTERNATIVES = ("two-sided", "greater", "less")
_METHODS = ("fdr_bh", "holm", "bonferroni", "fdr_by", "hommel", "sidak", "holm-sidak")


# --------------------------------------------------------------------------------------------
# Sign flips
# --------------------------------------------------------------------------------------------
def sign_flips(n, n_perm=None, max_exact=16, seed=0):
    """Return a matrix of sign flips for a sign-flip permutation test.

    With ``n <= max_exact`` every one of the ``2**n`` flips is returned (row ``k`` holds the
    bits of ``k``: bit ``j`` set means subject ``j`` is flipped, so row 0 is the identity).
    Otherwise ``n_perm`` flips are drawn with :func:`numpy.random.default_rng` seeded by
    ``seed``.

    Parameters
    ----------
    n : int
        Number of subjects (paired differences).
    n_perm : int or None, default=None
        Number of random flips when the test is not exact. None means 10000.
    max_exact : int, default=16
        Largest ``n`` for which all ``2**n`` flips are enumerated.
    seed : int, default=0
        Seed of the random generator (Monte Carlo only).

    Returns
    -------
    flips : numpy.ndarray of int8, shape (n_flips, n)
        Entries are +1 or -1.
    exact : bool
        True when all ``2**n`` flips were enumerated.
    """
    n = int(n)
    if n < 0:
        raise InputError(field="n", expected="a non-negative number of subjects", found=n)
    if n <= max_exact:
        # Bit j of the row index k decides the sign of subject j: (k >> j) & 1.
        k = np.arange(2**n, dtype=np.int64)[:, None]
        bits = (k >> np.arange(n, dtype=np.int64)[None, :]) & 1
        return (1 - 2 * bits).astype(np.int8), True
    if n_perm is None:
        n_perm = 10000
    n_perm = int(n_perm)
    if n_perm < 1:
        raise InputError(field="n_perm", expected="a positive number of permutations", found=n_perm)
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, size=(n_perm, n), dtype=np.int8)
    return (1 - 2 * bits).astype(np.int8), False


def count_extreme(null, observed, alternative):
    """Count null values at least as extreme as ``observed``.

    Uses the same relative tolerance as :func:`scipy.stats.permutation_test` (100 machine
    epsilons of the observed value) so that ties produced by rounding count as ties. With
    ``null`` of shape (m, k) and ``observed`` of shape (k,), counts each column (k tests at once).
    """
    gamma = np.abs(observed) * np.finfo(float).eps * 100
    if alternative == "two-sided":
        hits = np.abs(null) >= np.abs(observed) - gamma
    elif alternative == "greater":
        hits = null >= observed - gamma
    else:
        hits = null <= observed + gamma
    count = np.count_nonzero(hits, axis=0)
    return int(count) if np.ndim(count) == 0 else count


def sign_flip_pvalue(d, n_perm=None, max_exact=16, seed=0, alternative="two-sided"):
    """Sign-flip permutation p-value of the mean of paired differences.

    Under the null hypothesis the differences are symmetric about zero, so each sign is
    exchangeable. With ``n <= max_exact`` all ``2**n`` sign patterns are enumerated and the
    p-value is exact: ``p = #{|mean*| >= |mean|} / 2**n`` (the identity is one of the patterns).
    Otherwise ``n_perm`` random patterns are drawn and ``p = (1 + #) / (1 + n_perm)``.

    Parameters
    ----------
    d : array-like of shape (n,)
        Paired differences (``post - pre``). NaNs are dropped.
    n_perm : int or None, default=None
        Number of random sign patterns when ``n > max_exact``; None means 10000.
    max_exact : int, default=16
        Largest ``n`` for which every sign pattern is enumerated.
    seed : int, default=0
        Seed of the random generator (Monte Carlo only).
    alternative : {'two-sided', 'greater', 'less'}, default='two-sided'
        'greater' tests a positive mean difference.

    Returns
    -------
    p : float
        The permutation p-value (NaN when no difference is left).
    exact : bool
        True when all sign patterns were enumerated.

    Notes
    -----
    The statistic is the mean difference. Under sign flips the raw sum of squares
    ``sum(d**2)`` does not change, so the one-sample t statistic
    ``t = m sqrt(n) / sqrt((sum(d**2) - n m**2) / (n - 1))`` is a strictly increasing, odd
    function of the mean ``m``: the mean and t order every sign pattern identically and give
    the same p-value for every alternative, exactly or with the same random patterns. The mean
    is cheaper and has no 0/0 case.

    With all patterns enumerated the null distribution is symmetric, so the two-sided p-value
    equals :func:`scipy.stats.permutation_test`'s ``2 * min(p_less, p_greater)``.
    """
    if alternative not in _ALTERNATIVES:
        raise InputError(field="alternative", expected=" or ".join(_ALTERNATIVES),
                         found=alternative)
    d = np.asarray(d, dtype=float).ravel()
    d = d[~np.isnan(d)]
    n = d.size
    if n == 0:
        return float("nan"), False
    flips, exact = sign_flips(n, n_perm=n_perm, max_exact=max_exact, seed=seed)
    observed = d.mean()
    # Chunked matrix product: each row of flips gives one permuted mean.
    count = 0
    chunk = max(1, 2**20 // max(n, 1))
    for start in range(0, flips.shape[0], chunk):
        null = (flips[start : start + chunk] @ d) / n
        count += count_extreme(null, observed, alternative)
    if exact:
        return count / flips.shape[0], True
    return (1 + count) / (1 + flips.shape[0]), False


# --------------------------------------------------------------------------------------------
# One paired comparison
# --------------------------------------------------------------------------------------------
_RESULT_KEYS = (
    "n", "n_dropped", "mean_pre", "mean_post", "mean_diff", "pct_change", "sd_diff", "t", "df",
    "p_t", "w", "p_wilcoxon", "wilcoxon_method", "p_perm", "perm_exact", "cohens_dz",
    "hedges_g_av", "ci_t_low", "ci_t_high", "ci_boot_low", "ci_boot_high", "note",
)


def _empty_result(n, n_dropped, note):
    out = {k: float("nan") for k in _RESULT_KEYS}
    out.update(n=int(n), n_dropped=int(n_dropped), perm_exact=False, wilcoxon_method="",
               note=note)
    return out


def paired_test(pre, post, n_perm=10000, n_boot=10000, seed=0, ci=0.95, boot_method="BCa",
                max_exact=16):
    """Summarise and test a paired pre/post change.

    Parameters
    ----------
    pre, post : array-like of shape (n,)
        Baseline and follow-up values of the same subjects, in the same order. A pair with a
        NaN on either side is dropped and counted in ``n_dropped``.
    n_perm : int, default=10000
        Random sign patterns for the permutation test when ``n > max_exact``; 0 skips the
        permutation test (``p_perm`` is NaN).
    n_boot : int, default=10000
        Bootstrap resamples for the confidence interval of the mean difference; 0 skips it.
    seed : int, default=0
        Seed of the permutation and bootstrap generators; results are reproducible.
    ci : float, default=0.95
        Confidence level of both intervals.
    boot_method : {'BCa', 'percentile', 'basic'}, default='BCa'
        Bootstrap interval of :func:`scipy.stats.bootstrap`.
    max_exact : int, default=16
        Largest ``n`` for which the sign-flip test enumerates every pattern.

    Returns
    -------
    result : dict
        ``n``, ``n_dropped``; ``mean_pre``, ``mean_post``, ``mean_diff`` (mean of
        ``post - pre``), ``sd_diff`` (ddof=1); ``pct_change`` =
        ``100 * mean(post - pre) / mean(pre)`` over complete pairs (a change of the group mean,
        not a mean of per-subject percentages; NaN when ``mean(pre) == 0``); ``t``, ``df``,
        ``p_t`` from :func:`scipy.stats.ttest_rel`; ``w``, ``p_wilcoxon`` and
        ``wilcoxon_method`` from :func:`scipy.stats.wilcoxon` (``method='auto'``: exact when
        ``n <= 50`` without zeros or ties); ``p_perm`` and ``perm_exact`` from
        :func:`sign_flip_pvalue`; ``cohens_dz`` = ``mean_diff / sd_diff``; ``hedges_g_av``
        (see Notes); ``ci_t_low``/``ci_t_high`` (t interval of the mean difference) and
        ``ci_boot_low``/``ci_boot_high`` (bootstrap interval); ``note`` lists anything
        unusual ('' when nothing is).

    Notes
    -----
    Hedges' g_av follows Lakens (2013): ``d_av = mean_diff / ((sd_pre + sd_post) / 2)`` and
    ``g_av = d_av * J`` with the small-sample correction ``J = 1 - 3 / (4 * (n - 1) - 1)``
    (``df = n - 1``).

    With fewer than two complete pairs nothing can be tested: every statistic is NaN and
    ``note`` says why; no exception is raised.

    References
    ----------
    Lakens D (2013) Calculating and reporting effect sizes to facilitate cumulative science: a
    practical primer for t-tests and ANOVAs. Front Psychol 4:863.
    """
    pre, post, n_dropped = complete_pairs(pre, post, "pre/post")
    n = pre.size
    if n < 2:
        return _empty_result(n, n_dropped, f"fewer than 2 complete pairs (n={n})")

    d = post - pre
    out = _empty_result(n, n_dropped, "")
    mean_pre, mean_post = pre.mean(), post.mean()
    mean_diff = d.mean()
    sd_diff = d.std(ddof=1)
    out.update(mean_pre=mean_pre, mean_post=mean_post, mean_diff=mean_diff, sd_diff=sd_diff)
    out["pct_change"] = 100.0 * mean_diff / mean_pre if mean_pre != 0 else float("nan")
    notes = ["mean_pre is 0: pct_change undefined"] if mean_pre == 0 else []
    for part in (_t_test(pre, post, ci), _wilcoxon(d)):
        notes += _merge(out, part)
    if n_perm is None or n_perm > 0:
        p_perm, exact = sign_flip_pvalue(d, n_perm=n_perm, max_exact=max_exact, seed=seed)
        out.update(p_perm=p_perm, perm_exact=bool(exact))
    notes += _merge(out, _effect_sizes(pre, post))
    if n_boot and n_boot > 0:
        notes += _merge(out, _bootstrap_ci(d, n_boot, ci, boot_method, seed))
    out["note"] = "; ".join(notes)
    return out


def complete_pairs(a, b, names):
    """Flattened float arrays of the pairs with no NaN on either side.

    Parameters
    ----------
    a, b : array-like of shape (n,)
        Paired values (same subjects, same order).
    names : str
        How the pair is named in the error, e.g. ``"pre/post"``.

    Returns
    -------
    a, b : ndarray
        The complete pairs.
    n_dropped : int
        Pairs left out.
    """
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise InputError(field=names, expected="arrays of the same length",
                         found=f"{a.size} and {b.size}")
    keep = ~(np.isnan(a) | np.isnan(b))
    return a[keep], b[keep], int(np.count_nonzero(~keep))


def _merge(out, part):
    """Add a part's values to ``out``; return its notes."""
    values, notes = part
    out.update(values)
    return notes


def _t_test(pre, post, ci):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_rel(post, pre)
        ci_t = res.confidence_interval(confidence_level=ci)
    values = {"t": float(res.statistic), "df": float(res.df), "p_t": float(res.pvalue),
              "ci_t_low": float(ci_t.low), "ci_t_high": float(ci_t.high)}
    notes = ["all differences equal: t undefined"] if (post - pre).std(ddof=1) == 0 else []
    return values, notes


def _wilcoxon(d):
    if np.all(d == 0):
        return {}, ["all differences are 0: Wilcoxon undefined"]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            wres = stats.wilcoxon(d, method="auto")
    except ValueError as exc:  # e.g. too few non-zero differences
        return {}, [f"wilcoxon failed: {exc}"]
    # scipy's 'auto' picks the exact distribution when n <= 50 and there are no zeros or ties;
    # report which one was used.
    nz = d[d != 0]
    exact_w = nz.size <= 50 and nz.size == d.size and np.unique(np.abs(nz)).size == nz.size
    values = {"w": float(wres.statistic), "p_wilcoxon": float(wres.pvalue),
              "wilcoxon_method": "exact" if exact_w else "approx"}
    return values, [f"wilcoxon: {w.message}" for w in caught]


def _effect_sizes(pre, post):
    """Cohen's d_z and Hedges' g_av (Lakens 2013)."""
    d = post - pre
    n, mean_diff, sd_diff = d.size, d.mean(), d.std(ddof=1)
    values = {"cohens_dz": mean_diff / sd_diff if sd_diff > 0 else float("nan")}
    sd_av = (pre.std(ddof=1) + post.std(ddof=1)) / 2.0
    if sd_av <= 0:
        return values, ["sd_pre and sd_post are 0: g_av undefined"]
    j = 1.0 - 3.0 / (4.0 * (n - 1) - 1.0)
    values["hedges_g_av"] = mean_diff / sd_av * j
    return values, []


def _bootstrap_ci(d, n_boot, ci, boot_method, seed):
    mean_diff = d.mean()
    if d.std(ddof=1) == 0:
        return ({"ci_boot_low": mean_diff, "ci_boot_high": mean_diff},
                ["bootstrap interval degenerate (all differences equal)"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bres = stats.bootstrap((d,), np.mean, n_resamples=int(n_boot), confidence_level=ci,
                               method=boot_method, rng=np.random.default_rng(seed))
    return ({"ci_boot_low": float(bres.confidence_interval.low),
             "ci_boot_high": float(bres.confidence_interval.high)},
            [f"bootstrap: {w.message}" for w in caught])


# --------------------------------------------------------------------------------------------
# Multiple comparisons
# --------------------------------------------------------------------------------------------
def correct(pvals, method="fdr_bh", families=None):
    """Adjust p-values for multiple comparisons, within families, ignoring NaNs.

    Parameters
    ----------
    pvals : array-like or pandas.Series of shape (m,)
        Raw p-values. NaNs stay NaN and are not counted in any family.
    method : str, default='fdr_bh'
        Any method of :func:`statsmodels.stats.multitest.multipletests`, typically 'fdr_bh'
        (Benjamini-Hochberg) or 'holm'.
    families : array-like of shape (m,) or None, default=None
        Family label of each p-value; each family is adjusted on its own. None means a single
        family.

    Returns
    -------
    adjusted : numpy.ndarray or pandas.Series
        Adjusted p-values (a Series with the input's index when ``pvals`` is a Series).
    """
    from statsmodels.stats.multitest import multipletests

    if method not in _METHODS:
        raise InputError(field="method", expected=" or ".join(_METHODS), found=method)
    index = pvals.index if isinstance(pvals, pd.Series) else None
    p = np.asarray(pvals, dtype=float).ravel()
    if np.any((p < 0) | (p > 1)):
        raise InputError(field="pvals", expected="p-values in [0, 1] or NaN",
                         found=f"min {np.nanmin(p)}, max {np.nanmax(p)}")
    out = np.full(p.shape, np.nan)
    if families is None:
        labels = np.zeros(p.size, dtype=int)
    else:
        labels = pd.Series(np.asarray(families, dtype=object)).fillna("<NA>").to_numpy()
        if labels.size != p.size:
            raise InputError(field="families", expected=f"{p.size} family labels",
                             found=labels.size)
    for lab in pd.unique(labels):
        idx = np.flatnonzero((labels == lab) & ~np.isnan(p))
        if idx.size:
            out[idx] = multipletests(p[idx], method=method)[1]
    return pd.Series(out, index=index, name=getattr(pvals, "name", None)) if index is not None \
        else out


# --------------------------------------------------------------------------------------------
# Tidy tables
# --------------------------------------------------------------------------------------------
def paired_table(df, value="value", by=(), session_col="session", baseline="pre",
                 followup="post", subject="participant_id", family=None, method="fdr_bh",
                 p_columns=("p_t", "p_wilcoxon", "p_perm"), **test_kwargs):
    """Apply :func:`paired_test` to every group of a tidy long table and correct p-values.

    Parameters
    ----------
    df : pandas.DataFrame
        Long table, one row per subject, session and group.
    value : str, default='value'
        Column holding the measure.
    by : sequence of str, default=()
        Columns defining the groups (e.g. ``['modality', 'region']``); empty means one group.
    session_col : str, default='session'
        Column holding the session label.
    baseline, followup : str, default='pre', 'post'
        Session labels of the two time points; rows with other sessions are ignored.
    subject : str, default='participant_id'
        Column identifying the subject.
    family : str or sequence of str or None, default=None
        Column(s) of ``by`` whose values define the families of the correction; each family is
        corrected on its own. None puts every group in one family.
    method : str, default='fdr_bh'
        Correction passed to :func:`correct` ('fdr_bh' or 'holm', ...).
    p_columns : sequence of str, default=('p_t', 'p_wilcoxon', 'p_perm')
        Result columns to correct; each gains a ``<column>_<method>`` column.
    **test_kwargs
        Passed to :func:`paired_test` (``n_perm``, ``n_boot``, ``seed``, ``ci``, ...).

    Returns
    -------
    table : pandas.DataFrame
        One row per group: the ``by`` columns, every key of :func:`paired_test`, the
        corrected p-value columns, ``family`` (the family label) and ``correction``.
    """
    by = [by] if isinstance(by, str) else list(by)
    needed = [value, session_col, subject, *by]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise InputError(field=", ".join(missing), expected="columns of the long table",
                         found=list(df.columns))
    fam_cols = [] if family is None else ([family] if isinstance(family, str) else list(family))
    bad = [c for c in fam_cols if c not in by]
    if bad:
        raise InputError(field="family", expected=f"columns among by={by}", found=bad)
    sub = df[df[session_col].isin([baseline, followup])]
    keys = [subject, session_col, *by]
    dup = sub.duplicated(keys, keep=False)
    if dup.any():
        first = sub.loc[dup, keys].iloc[0].to_dict()
        raise InputError(field=", ".join(keys), expected="one row per subject, session and group",
                         found=f"{int(dup.sum())} duplicated rows, e.g. {first}")

    rows = []
    groups = sub.groupby(by, sort=True, dropna=False) if by else [((), sub)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        wide = g.pivot(index=subject, columns=session_col, values=value)
        pre = wide[baseline] if baseline in wide else pd.Series(np.nan, index=wide.index)
        post = wide[followup] if followup in wide else pd.Series(np.nan, index=wide.index)
        res = paired_test(pre.to_numpy(float), post.to_numpy(float), **test_kwargs)
        rows.append({**dict(zip(by, key)), **res})
    table = pd.DataFrame(rows, columns=[*by, *_RESULT_KEYS])
    if fam_cols:
        fam = table[fam_cols].astype(str).agg("/".join, axis=1)
    else:
        fam = pd.Series("all", index=table.index)
    for col in p_columns:
        table[f"{col}_{method}"] = correct(table[col].to_numpy(float), method=method,
                                           families=fam.to_numpy())
    table["family"] = fam.to_numpy()
    table["correction"] = method
    return table


# --------------------------------------------------------------------------------------------
# Mixed model
# --------------------------------------------------------------------------------------------
def mixed_model(df, formula="value ~ session + followup_days", groups="participant_id",
                session_col="session", baseline="pre", ci=0.95, reml=True, references=None):
    """Fit a random-intercept linear mixed model and return its fixed effects as a table.

    Parameters
    ----------
    df : pandas.DataFrame
        Long table, one row per observation.
    formula : str, default='value ~ session + followup_days'
        Fixed-effects formula (patsy syntax) of
        :meth:`statsmodels.regression.mixed_linear_model.MixedLM.from_formula`.
    groups : str, default='participant_id'
        Column whose levels get a random intercept.
    session_col : str or None, default='session'
        Session column; when present it is made categorical with ``baseline`` as the reference
        level so that the session term is the follow-up minus baseline change.
    baseline : str, default='pre'
        Reference session level.
    ci : float, default=0.95
        Confidence level of the Wald intervals.
    reml : bool, default=True
        Fit by restricted maximum likelihood.
    references : mapping or None
        ``column -> reference level`` of further categorical columns (e.g. a crossover's
        ``condition``: the control condition, so the interaction is active minus control).

    Returns
    -------
    table : pandas.DataFrame
        One row per fixed effect: ``term``, ``estimate``, ``se``, ``z``, ``p``, ``ci_low``,
        ``ci_high``, and, repeated on every row, ``converged`` (bool), ``n_obs``, ``n_groups``,
        ``group_var`` (random-intercept variance) and ``note`` (warnings or the error). The
        same fit information is in ``table.attrs['fit']``.

    Notes
    -----
    The fit never raises on numerical trouble: when statsmodels fails or warns that it did not
    converge, ``converged`` is False and ``note`` says why (estimates are NaN when the fit
    failed outright). Rows with missing values in the model's columns are dropped.
    """
    import statsmodels.formula.api as smf
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    if groups not in df.columns:
        raise InputError(field=groups, expected="a grouping column", found=list(df.columns))
    data = df.copy()
    if session_col and session_col in data.columns:
        levels = [baseline] + sorted(set(data[session_col].dropna().astype(str)) - {baseline})
        data[session_col] = pd.Categorical(data[session_col].astype(str), categories=levels)
    for col, ref in dict(references or {}).items():
        if col in data.columns:
            levels = [str(ref)] + sorted(set(data[col].dropna().astype(str)) - {str(ref)})
            data[col] = pd.Categorical(data[col].where(data[col].isna(), data[col].astype(str)),
                                       categories=levels)
    cols = ["term", "estimate", "se", "z", "p", "ci_low", "ci_high", "converged", "n_obs",
            "n_groups", "group_var", "note"]
    notes = []
    converged = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = smf.mixedlm(formula, data, groups=groups, missing="drop")
            result = model.fit(reml=reml)
        conv_warn = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
        notes += [str(w.message) for w in conv_warn]
        converged = bool(getattr(result, "converged", False)) and not conv_warn
        fe = result.fe_params
        conf = result.conf_int(alpha=1 - ci).loc[fe.index]
        table = pd.DataFrame({
            "term": list(fe.index),
            "estimate": fe.to_numpy(),
            "se": result.bse_fe.loc[fe.index].to_numpy(),
            "z": result.tvalues.loc[fe.index].to_numpy(),
            "p": result.pvalues.loc[fe.index].to_numpy(),
            "ci_low": conf.iloc[:, 0].to_numpy(),
            "ci_high": conf.iloc[:, 1].to_numpy(),
        })
        n_obs, n_groups = int(result.nobs), int(len(model.group_labels))
        group_var = float(np.asarray(result.cov_re)[0, 0])
    except Exception as exc:  # noqa: BLE001 - soft failure is the documented contract
        notes.append(f"fit failed: {type(exc).__name__}: {exc}")
        table = pd.DataFrame({"term": [], "estimate": [], "se": [], "z": [], "p": [],
                              "ci_low": [], "ci_high": []})
        n_obs, n_groups, group_var = len(data), int(data[groups].nunique()), float("nan")
    note = "; ".join(dict.fromkeys(notes))
    table["converged"] = converged
    table["n_obs"] = n_obs
    table["n_groups"] = n_groups
    table["group_var"] = group_var
    table["note"] = note
    table = table[cols]
    table.attrs["fit"] = {"converged": converged, "n_obs": n_obs, "n_groups": n_groups,
                          "group_var": group_var, "note": note, "formula": formula}
    return table
