"""Parallel-arm designs: the session x arm interaction as a two-sample test of change scores.

In a parallel design every participant belongs to one arm (e.g. ketamine or placebo) and is
scanned at baseline and follow-up. The effect of the intervention is the difference between the
arms' mean changes, ``mean(post - pre | active) - mean(post - pre | control)``: the session x arm
interaction of ``value ~ session * arm``. For each measure and region this module gives

* a permutation test of the arm labels, studentized (the statistic permuted is Welch's t of the
  difference, which keeps the false-positive rate when arm sizes and variances differ, where the
  raw difference does not): every relabeling when there are at most ``max_exact`` of them
  (``C(n_active + n_control, n_active)``; the p-value is exact), else ``n_perm`` random ones,
  counted as ``(1 + extreme) / (1 + n_perm)``;
* Welch's t-test (:func:`scipy.stats.ttest_ind` with ``equal_var=False``) with its interval of
  the difference, and the Mann-Whitney U test (:func:`scipy.stats.mannwhitneyu`; a test of
  stochastic equality, not of equal means when the arms' spreads differ);
* Hedges' g (pooled SD, small-sample correction) with the Hedges & Olkin large-sample interval;
* the arms' own mean changes.

Tables are corrected within families as the paired tests are
(:func:`prepost.stats.paired.correct`). The p-values keep the names the paired table uses, so
``stats.p_value`` picks the same kind of test in both designs: ``p_perm`` (permutation), ``p_t``
(Welch t) and ``p_wilcoxon`` (the rank test of each design: Mann-Whitney here).
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

from prepost.errors import ConfigError, InputError, ValidationReport
from prepost.stats.paired import count_extreme, correct

__all__ = ["ARM_P_COLUMNS", "participant_arms", "column_labels", "arm_labels", "relabelings",
           "arm_test", "interaction_table", "correct_within_families"]

#: p-value columns of the interaction table (corrected within families).
ARM_P_COLUMNS = ("p_t", "p_wilcoxon", "p_perm")

_COLUMNS = ["n_active", "n_control", "mean_change_active", "mean_change_control", "diff",
            "se_diff", "t", "df", "p_t", "ci_t_low", "ci_t_high", "u", "p_wilcoxon", "p_perm",
            "perm_exact", "n_relabelings", "hedges_g", "g_ci_low", "g_ci_high", "note"]


def participant_arms(participants, path, arm_column, active, control, min_per_arm=2):
    """Each participant's arm from participants.tsv, checked when the DAG is built.

    Parameters
    ----------
    participants : pandas.DataFrame
        participants.tsv as :func:`prepost.bids.read_participants` returns it.
    path : path-like
        The file (for the messages).
    arm_column : str
        The column naming each participant's arm (``design.arm_column``).
    active, control : str
        The two arm labels (``design.active``, ``design.control``).
    min_per_arm : int
        Fewest participants an arm may have.

    Returns
    -------
    dict
        ``participant_id -> arm``.

    Raises
    ------
    ConfigError
        The two labels are equal, or the column is missing (naming the columns there are).
    ValidationReport
        Every line whose arm is missing or another label, and arms with too few participants.
    """
    if str(active) == str(control):
        raise ConfigError(None, "design.control", f"a label other than design.active "
                          f"({active!r})", repr(control))
    return column_labels(
        participants, path, arm_column, (str(active), str(control)),
        role="a participants.tsv column naming each participant's arm (design.arm_column)",
        expected=f"{active!r} or {control!r} (design.active / design.control)",
        too_few=lambda arm, n: f"expected at least {min_per_arm} participants in arm {arm!r}, "
                               f"found {n}", minimum=min_per_arm)


def column_labels(participants, path, column, labels, *, role, expected, too_few, minimum):
    """A design's participants.tsv column: each participant's label, every line checked.

    Parameters
    ----------
    participants : pandas.DataFrame
        participants.tsv as :func:`prepost.bids.read_participants` returns it.
    path : path-like
        The file (for the messages).
    column : str
        The column to read.
    labels : sequence of str
        The labels a line may hold.
    role : str
        What the column is, for a missing column's message.
    expected : str
        What a line should hold, for a wrong line's message.
    too_few : callable
        ``(label, count) -> message`` of a label with fewer than ``minimum`` participants (the
        first such label is reported, once every line is right).
    minimum : int
        Fewest participants a label may have.

    Returns
    -------
    dict
        ``participant_id -> label``.

    Raises
    ------
    ConfigError
        The column is missing (naming the columns there are).
    ValidationReport
        Every wrong or missing line, or the first label with too few participants.
    """
    if column not in participants.columns:
        raise ConfigError(path, column, role,
                          f"columns {[c for c in participants.columns if c != 'label']}")
    out, problems = {}, []
    for line, (pid, value) in enumerate(zip(participants["participant_id"],
                                            participants[column]), start=2):
        label = "" if pd.isna(value) else str(value).strip()
        if label not in labels:
            problems.append(f"{path}: line {line} ({pid}), column '{column}': expected "
                            f"{expected}, found {label or 'n/a'!r}")
        out[str(pid)] = label
    for label in labels:
        n = sum(v == label for v in out.values())
        if not problems and n < minimum:
            problems.append(f"{path}: column '{column}': {too_few(label, n)}")
    if problems:
        raise ValidationReport(problems)
    return out


def arm_labels(arms, ids):
    """Each of ``ids``'s arm from a ``participant_id -> arm`` mapping (NaN where it has none),
    IDs and labels compared as text."""
    arm = pd.Series({str(k): str(v) for k, v in dict(arms or {}).items()}, dtype=object)
    return arm.reindex(pd.Index(ids).astype(str)).to_numpy()


@functools.lru_cache(maxsize=16)
def _all_relabelings(n_active, n):
    masks = np.zeros((math.comb(n, n_active), n), dtype=np.float64)
    for i, idx in enumerate(itertools.combinations(range(n), n_active)):
        masks[i, list(idx)] = 1.0
    masks.flags.writeable = False
    return masks


def relabelings(n_active, n_control, n_perm=10000, max_exact=20000, seed=0):
    """Masks (0/1) of the active arm under relabelings of ``n_active + n_control`` units.

    Returns ``(masks (m, n), exact)``. With at most ``max_exact`` distinct relabelings all are
    enumerated (the observed one, the first ``n_active`` units, included); otherwise the observed
    labeling followed by ``n_perm`` random ones.
    """
    n = n_active + n_control
    if n_active < 1 or n_control < 1:
        raise InputError(field="arms", expected="at least one unit in each arm",
                         found=f"{n_active} active, {n_control} control")
    if math.comb(n, n_active) <= max_exact:
        return _all_relabelings(n_active, n), True
    rng = np.random.default_rng(seed)
    masks = np.zeros((int(n_perm) + 1, n))
    masks[0, :n_active] = 1.0
    pick = np.argsort(rng.random((int(n_perm), n)), axis=1)[:, :n_active]
    np.put_along_axis(masks[1:], pick, 1.0, axis=1)
    return masks, False


def _welch_t(masks, x, n_a, n_c):
    """Welch t of every relabeling (rows of ``masks``) of the pooled values ``x``: shape (n,),
    or (n, k) for k samples at once (then one column of t per sample)."""
    x = x - x.mean(axis=0)  # centred: the sums of squares below lose no precision
    s_a, q_a = masks @ x, masks @ (x * x)
    s_c, q_c = x.sum(axis=0) - s_a, (x * x).sum(axis=0) - q_a
    m_a, m_c = s_a / n_a, s_c / n_c
    v_a = np.maximum(q_a - n_a * m_a**2, 0.0) / (n_a - 1)
    v_c = np.maximum(q_c - n_c * m_c**2, 0.0) / (n_c - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (m_a - m_c) / np.sqrt(v_a / n_a + v_c / n_c)


def _hedges_g(a, c, ci):
    n1, n2 = len(a), len(c)
    sp = np.sqrt(((n1 - 1) * np.var(a, ddof=1) + (n2 - 1) * np.var(c, ddof=1)) / (n1 + n2 - 2))
    if not np.isfinite(sp) or sp == 0:
        return np.nan, np.nan, np.nan
    df = n1 + n2 - 2
    j = math.exp(math.lgamma(df / 2) - math.log(math.sqrt(df / 2)) - math.lgamma((df - 1) / 2))
    g = j * (np.mean(a) - np.mean(c)) / sp
    se = np.sqrt((n1 + n2) / (n1 * n2) + g**2 / (2 * (n1 + n2)))
    z = stats.norm.ppf(0.5 + ci / 2)
    return float(g), float(g - z * se), float(g + z * se)


def arm_test(active, control, n_perm=10000, max_exact=20000, seed=0, ci=0.95):
    """Compare the change scores of two arms.

    Parameters
    ----------
    active, control : array-like
        Per-participant change scores (follow-up minus baseline) of each arm; NaNs are dropped.
    n_perm : int
        Random relabelings when there are more than ``max_exact``.
    max_exact : int
        Largest number of relabelings enumerated exactly.
    seed : int
        Seed of the random relabelings.
    ci : float
        Confidence level of the Welch and Hedges' g intervals.

    Returns
    -------
    dict
        ``n_active``, ``n_control``, the arms' mean changes, ``diff`` (active minus control),
        Welch's ``se_diff``, ``t``, ``df``, ``p_t`` and interval, Mann-Whitney ``u`` and
        ``p_wilcoxon``, ``p_perm`` (``perm_exact``, ``n_relabelings``), ``hedges_g`` with its
        interval, and a ``note`` when a test cannot be computed (fewer than 2 per arm).
    """
    a = np.asarray(active, float)
    c = np.asarray(control, float)
    a, c = a[np.isfinite(a)], c[np.isfinite(c)]
    out = dict.fromkeys(_COLUMNS, np.nan)
    out.update(n_active=len(a), n_control=len(c), note="", perm_exact=False)
    if len(a):
        out["mean_change_active"] = float(a.mean())
    if len(c):
        out["mean_change_control"] = float(c.mean())
    if len(a) < 2 or len(c) < 2:
        out["note"] = f"fewer than 2 participants in an arm ({len(a)} active, {len(c)} control)"
        return out
    diff = float(a.mean() - c.mean())
    va, vc = np.var(a, ddof=1) / len(a), np.var(c, ddof=1) / len(c)
    se = float(np.sqrt(va + vc))
    out.update(diff=diff, se_diff=se)
    if se > 0:
        res = stats.ttest_ind(a, c, equal_var=False)
        df = float((va + vc) ** 2 / (va**2 / (len(a) - 1) + vc**2 / (len(c) - 1)))
        q = stats.t.ppf(0.5 + ci / 2, df)
        out.update(t=float(res.statistic), df=df, p_t=float(res.pvalue), ci_t_low=diff - q * se,
                   ci_t_high=diff + q * se)
    mw = stats.mannwhitneyu(a, c, alternative="two-sided")
    out.update(u=float(mw.statistic), p_wilcoxon=float(mw.pvalue))
    # Studentized permutation test (Janssen 1997): permuting Welch's t, not the raw difference,
    # keeps the false-positive rate with unequal arm sizes and variances.
    masks, exact = relabelings(len(a), len(c), n_perm=n_perm, max_exact=max_exact, seed=seed)
    pooled = np.concatenate([a, c])
    null = _welch_t(masks, pooled, len(a), len(c))
    obs = _welch_t(np.r_[np.ones(len(a)), np.zeros(len(c))][None], pooled, len(a), len(c))[0]
    if np.isfinite(obs):
        # the observed labeling is among the relabelings (row 0 of a random set): exact, or
        # (1 + extreme others) / (1 + n_perm)
        out["p_perm"] = count_extreme(np.nan_to_num(null, nan=0.0), obs, "two-sided") / len(null)
    out.update(perm_exact=exact, n_relabelings=len(null))
    g, lo, hi = _hedges_g(a, c, ci)
    out.update(hedges_g=g, g_ci_low=lo, g_ci_high=hi)
    return out


def interaction_table(table, arms, active, control, baseline="pre", followup="post",
                      family=("modality", "measure"), corrections=("fdr_bh", "holm"),
                      modalities=None, **test_kwargs):
    """The session x arm interaction of every measure and region.

    Parameters
    ----------
    table : pandas.DataFrame
        Group table (:func:`prepost.stats.group.build_group_table`).
    arms : mapping
        ``participant_id -> arm`` label; participants of other arms are left out.
    active, control : str
        Arm labels; the difference is active minus control.
    baseline, followup : str
        Session labels.
    family : sequence of str
        Columns among ``modality``, ``measure``, ``region`` that define a correction family
        (never mixing atlases).
    corrections : sequence of str
        Methods of :func:`prepost.stats.paired.correct`; each adds ``<p>_<method>`` columns.
    modalities : sequence of str or None
        Modalities to test; None tests every modality but ``qc``.
    **test_kwargs
        Passed to :func:`arm_test` (``n_perm``, ``max_exact``, ``seed``, ``ci``).

    Returns
    -------
    pandas.DataFrame
        One row per modality, atlas, measure and region with the :func:`arm_test` columns,
        ``mean_pre`` (baseline mean of the tested participants, for equivalence margins), the
        corrected p-values, ``family`` and ``corrections``.
    """
    from prepost.stats.group import _with_atlas, change_scores

    corrections = list(corrections)
    if not corrections:
        raise ConfigError(None, "stats.paired.corrections", "at least one method")
    data = _with_atlas(table)
    data = data[data["modality"] != "qc"] if modalities is None else \
        data[data["modality"].isin(modalities)]
    modality = data.groupby(["measure", "region", "atlas"])["modality"].first()
    delta = change_scores(data, baseline, followup)
    pre = data[data["session"] == baseline].pivot_table(
        index="participant_id", columns=["measure", "region", "atlas"], values="value",
        aggfunc="first").reindex(index=delta.index)
    arm = arm_labels(arms, delta.index)
    rows = []
    for col in delta.columns:
        measure, region, atlas = col
        v = delta[col].to_numpy(float)
        res = arm_test(v[arm == active], v[arm == control], **test_kwargs)
        used = np.isin(arm, [active, control]) & np.isfinite(v)
        base = pre[col].to_numpy(float)[used] if col in pre.columns else np.array([])
        rows.append({"modality": modality.get(col, ""), "atlas": atlas, "measure": measure,
                     "region": region, **res,
                     "mean_pre": float(np.nanmean(base)) if np.isfinite(base).any() else np.nan})
    out = pd.DataFrame(rows, columns=["modality", "atlas", "measure", "region", *_COLUMNS,
                                      "mean_pre"])
    return correct_within_families(out, family, corrections)


def correct_within_families(out, family, corrections):
    """Correct an interaction table's p-values (:data:`ARM_P_COLUMNS`) within families of
    ``family`` columns (never mixing atlases); adds ``<p>_<method>``, ``family`` and
    ``corrections``, sorted by modality, atlas, measure and region."""
    if out.empty:
        return out.assign(family="", corrections=",".join(corrections))
    family = list(dict.fromkeys(["atlas", *family]))
    fam = out[family].astype(str).agg("/".join, axis=1)
    for method in corrections:
        for p in ARM_P_COLUMNS:
            out[f"{p}_{method}"] = correct(out[p], method=method, families=fam).to_numpy()
    out["family"] = fam
    out["corrections"] = ",".join(corrections)
    return out.sort_values(["modality", "atlas", "measure", "region"]).reset_index(drop=True)
