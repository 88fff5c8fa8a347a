"""Crossover designs: every participant receives both conditions, each scanned before and after.

In a crossover study (e.g. ketamine and placebo on two visits, in a counterbalanced order) each
participant has four sessions, declared in config as condition x timepoint
(``design.sessions: {ketamine: {baseline: preKET, followup: postKET}, placebo: {...}}``), and the
order of the conditions in a participants.tsv column. The effect of the intervention is the
within-participant contrast of changes

    d_i = (post - pre | active)_i - (post - pre | control)_i,

the session x condition interaction. For each measure and region this module tests ``d`` with the
paired machinery of :mod:`prepost.stats.paired` (exact sign flips of ``d`` up to
``max_exact`` participants, else random ones; the t-test and the Wilcoxon signed-rank test;
Cohen's d_z; t and bootstrap intervals). A period effect on the change cancels from the mean
contrast only when the orders are balanced, so the table also gives the contrast's mean in each
order and their average (the period-adjusted estimate of the classical two-period analysis;
Hills & Armitage 1979), and the group table carries ``condition``, ``timepoint`` and ``period``
columns for mixed models such as ``value ~ timepoint * condition + period``.

Tables are corrected within families as the paired tests are; the p-values keep the names of the
paired table (``p_perm``, ``p_t``, ``p_wilcoxon``), so ``stats.p_value`` picks the same kind of
test in every design.

References
----------
Hills M, Armitage P (1979) The two-period cross-over clinical trial. Br J Clin Pharmacol 8:7-20.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from prepost.errors import ConfigError
from prepost.stats.paired import paired_test
from prepost.stats.parallel import column_labels, correct_within_families

__all__ = ["CONDITION_COLUMNS", "condition_sessions", "participant_orders", "annotate",
           "contrast_test", "contrast_table"]

#: Columns a crossover design adds to the group table.
CONDITION_COLUMNS = ("condition", "timepoint", "period")
#: The two timepoint levels of the ``timepoint`` column (the reference level first).
TIMEPOINTS = ("baseline", "followup")

_COLUMNS = ["n", "n_dropped", "mean_change_active", "mean_change_control", "diff", "sd_diff",
            "t", "df", "p_t", "ci_t_low", "ci_t_high", "w", "p_wilcoxon", "p_perm",
            "perm_exact", "cohens_dz", "ci_boot_low", "ci_boot_high", "n_active_first",
            "n_control_first", "diff_active_first", "diff_control_first", "diff_period_adjusted",
            "note"]


def condition_sessions(design):
    """The baseline and follow-up session of each condition of a crossover ``design``.

    Parameters
    ----------
    design : mapping
        ``config['design']`` with ``active``, ``control`` and ``sessions``
        (``{condition: {baseline, followup}}``).

    Returns
    -------
    dict
        ``condition -> (baseline, followup)``, the active condition first.

    Raises
    ------
    ConfigError
        ``design.sessions`` does not name exactly the two conditions, or a session label is used
        twice.
    """
    active, control = str(design["active"]), str(design["control"])
    if active == control:
        raise ConfigError(None, "design.control", f"a label other than design.active "
                          f"({active!r})", repr(control))
    given = dict(design.get("sessions") or {})
    if set(given) != {active, control}:
        raise ConfigError(None, "design.sessions", f"one entry per condition, {active!r} and "
                          f"{control!r} (design.active, design.control), each "
                          "{baseline: <ses>, followup: <ses>}", sorted(given) or "none")
    out = {c: (str(given[c]["baseline"]), str(given[c]["followup"])) for c in (active, control)}
    labels = [s for pair in out.values() for s in pair]
    if len(set(labels)) != len(labels):
        raise ConfigError(None, "design.sessions", "four different session labels", labels)
    return out


def participant_orders(participants, path, order_column, active, control, min_per_order=1):
    """The condition each participant received first, from participants.tsv, checked when the
    DAG is built.

    Parameters
    ----------
    participants : pandas.DataFrame
        participants.tsv as :func:`prepost.bids.read_participants` returns it.
    path : path-like
        The file (for the messages).
    order_column : str
        The column naming the condition given first (``design.order_column``).
    active, control : str
        The condition labels.
    min_per_order : int
        Fewest participants each order may have (1: the period term of a mixed model is
        estimable only when both orders occur).

    Returns
    -------
    dict
        ``participant_id -> condition given first``.

    Raises
    ------
    ConfigError
        The column is missing (naming the columns there are).
    ValidationReport
        Every line whose order is missing or another label, and an order nobody has.
    """
    return column_labels(
        participants, path, order_column, (str(active), str(control)),
        role="a participants.tsv column naming the condition each participant received first "
             "(design.order_column)",
        expected=f"the condition given first, {active!r} or {control!r} (design.active / "
                 "design.control)",
        too_few=lambda cond, n: f"expected at least {min_per_order} participant(s) receiving "
                                f"{cond!r} first (the period effect is confounded with the "
                                f"condition otherwise), found {n}", minimum=min_per_order)


def annotate(table, sessions, orders):
    """Add ``condition``, ``timepoint`` and ``period`` to a crossover group table.

    Parameters
    ----------
    table : pandas.DataFrame
        Group table with a ``session`` column.
    sessions : mapping
        ``condition -> (baseline, followup)`` (:func:`condition_sessions`).
    orders : mapping
        ``participant_id -> condition given first`` (:func:`participant_orders`).

    Returns
    -------
    pandas.DataFrame
        ``table`` with ``condition``, ``timepoint`` (``baseline``/``followup``) and ``period``
        (1 for the condition given first, 2 for the other; NaN for a participant without an
        order).
    """
    cond = {s: c for c, pair in sessions.items() for s in pair}
    when = {s: TIMEPOINTS[i] for pair in sessions.values() for i, s in enumerate(pair)}
    ses = table["session"].astype(str)
    first = table["participant_id"].astype(str).map({str(k): str(v) for k, v in orders.items()})
    out = table.assign(condition=ses.map(cond), timepoint=ses.map(when))
    period = np.where(first.isna(), np.nan, np.where(out["condition"] == first, 1.0, 2.0))
    return out.assign(period=period)


def contrast_test(active, control, first=None, active_label="active", **test_kwargs):
    """Test one measure's contrast of changes, active minus control, within participants.

    Parameters
    ----------
    active, control : array-like of shape (n,)
        Per-participant changes (follow-up minus baseline) under each condition, same
        participants in the same order; a participant with a NaN on either side is dropped.
    first : array-like of shape (n,) or None
        The condition each participant received first, for the per-order means.
    active_label : str
        The active condition's label in ``first``.
    **test_kwargs
        Passed to :func:`prepost.stats.paired.paired_test` (``n_perm``, ``n_boot``, ``seed``,
        ``ci``, ``max_exact``).

    Returns
    -------
    dict
        ``n``, ``n_dropped``, the conditions' mean changes, ``diff`` (mean contrast), ``sd_diff``,
        ``t``/``df``/``p_t`` and the t interval, ``w``/``p_wilcoxon``, ``p_perm`` (sign flips of
        the contrast; ``perm_exact``), ``cohens_dz``, the bootstrap interval, the mean contrast
        among those receiving the active (``diff_active_first``) and the control condition first,
        their average ``diff_period_adjusted``, and ``note``.
    """
    a, c = np.asarray(active, float), np.asarray(control, float)
    # paired_test of (control change, active change) tests active - control
    res = paired_test(c, a, **test_kwargs)
    out = {"n": res["n"], "n_dropped": res["n_dropped"], "mean_change_active": res["mean_post"],
           "mean_change_control": res["mean_pre"], "diff": res["mean_diff"],
           **{k: res[k] for k in ("sd_diff", "t", "df", "p_t", "ci_t_low", "ci_t_high", "w",
                                  "p_wilcoxon", "p_perm", "perm_exact", "cohens_dz",
                                  "ci_boot_low", "ci_boot_high", "note")}}
    d = a - c
    ok = np.isfinite(d)
    if first is None:
        order = np.full(d.shape, "", dtype=object)
    else:
        order = np.asarray(first, dtype=object).astype(str)
    means = {}
    for key, sel in (("active_first", order == str(active_label)),
                     ("control_first", (order != str(active_label)) & (order != "")
                      & (order != "nan"))):
        n = int((sel & ok).sum())
        out[f"n_{key}"] = n
        means[key] = float(d[sel & ok].mean()) if n else np.nan
        out[f"diff_{key}"] = means[key]
    out["diff_period_adjusted"] = float(np.mean(list(means.values()))) \
        if all(np.isfinite(v) for v in means.values()) else np.nan
    return out


def contrast_table(table, sessions, active, control, orders=None,
                   family=("modality", "measure"), corrections=("fdr_bh", "holm"),
                   modalities=None, **test_kwargs):
    """The session x condition interaction of every measure and region of a crossover study.

    Parameters
    ----------
    table : pandas.DataFrame
        Group table (:func:`prepost.stats.group.build_group_table`) with every participant's
        four sessions.
    sessions : mapping
        ``condition -> (baseline, followup)`` (:func:`condition_sessions`).
    active, control : str
        Condition labels; the contrast is active minus control.
    orders : mapping or None
        ``participant_id -> condition given first`` (per-order means; None leaves them NaN).
    family : sequence of str
        Columns among ``modality``, ``measure``, ``region`` that define a correction family
        (never mixing atlases).
    corrections : sequence of str
        Methods of :func:`prepost.stats.paired.correct`; each adds ``<p>_<method>`` columns.
    modalities : sequence of str or None
        Modalities to test; None tests every modality but ``qc``.
    **test_kwargs
        Passed to :func:`contrast_test`.

    Returns
    -------
    pandas.DataFrame
        One row per modality, atlas, measure and region with the :func:`contrast_test` columns,
        ``mean_pre`` (the active condition's baseline mean, for equivalence margins), the
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
    d_act = change_scores(data, *sessions[active])
    d_ctl = change_scores(data, *sessions[control])
    d_act, d_ctl = d_act.align(d_ctl, join="outer")
    pre = data[data["session"] == sessions[active][0]].pivot_table(
        index="participant_id", columns=["measure", "region", "atlas"], values="value",
        aggfunc="first").reindex(index=d_act.index)
    first = pd.Series({str(k): str(v) for k, v in dict(orders or {}).items()}, dtype=object)
    first = first.reindex(d_act.index.astype(str)).to_numpy() if len(first) else None
    rows = []
    for col in d_act.columns:
        measure, region, atlas = col
        a, c = d_act[col].to_numpy(float), d_ctl[col].to_numpy(float)
        res = contrast_test(a, c, first=first, active_label=active, **test_kwargs)
        used = np.isfinite(a) & np.isfinite(c)
        base = pre[col].to_numpy(float)[used] if col in pre.columns else np.array([])
        rows.append({"modality": modality.get(col, ""), "atlas": atlas, "measure": measure,
                     "region": region, **res,
                     "mean_pre": float(np.nanmean(base)) if np.isfinite(base).any() else np.nan})
    out = pd.DataFrame(rows, columns=["modality", "atlas", "measure", "region", *_COLUMNS,
                                      "mean_pre"])
    return correct_within_families(out, family, corrections)
