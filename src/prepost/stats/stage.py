"""The statistics stage of the workflow as plain functions: its file names, the group table
reader and the Network-Based Statistic on the connectivity stage's Pearson matrices.

The group outputs live under ``<results>/group`` (:func:`output_paths`); NBS outputs are named
from the ``atlas`` and ``meas`` entities, e.g. ``group/nbs/atlas-Schaefer400_meas-pearson_nbs.json``.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

from prepost.connectivity.fc import fisher_z
from prepost.connectivity.stage import read_relmat
from prepost.errors import InputError
from prepost.paths import derivative
from prepost.stats.group import nbs_matrices

__all__ = [
    "GROUP_TABLES",
    "output_paths",
    "nbs_output_paths",
    "log_paths",
    "read_group_table",
    "read_paired",
    "fmri_excluded_participants",
    "load_nbs_matrices",
    "mean_relmat",
    "nbs_stage",
]

log = logging.getLogger(__name__)

#: The stage's group tables: output key -> file suffix under ``<results>/group``.
GROUP_TABLES = {"table": "group_table", "exclusions": "exclusions", "covariates": "covariates",
                "paired": "paired", "mixed": "mixed", "multimodal": "multimodal",
                "hypotheses": "hypotheses", "interaction": "interaction", "power": "power",
                "power_n": "power_n"}


def output_paths(results, interaction=False):
    """The group tables of the statistics stage.

    Parameters
    ----------
    results : str or path-like
        Derivatives root.
    interaction : bool
        A parallel or crossover design: the session x arm (or condition) table
        (``interaction``) is one of them.

    Returns
    -------
    dict of str
        ``table`` (group_table.tsv), ``exclusions``, ``covariates`` (how each participants.tsv
        column is named in the group table and formulas), ``paired``, ``mixed``,
        ``multimodal``, ``hypotheses``, ``interaction`` (parallel and crossover designs: the
        session x arm or condition tests), ``power`` (power curves of a replication) and ``power_n`` (the n each
        hypothesis needs), all TSV files in ``<results>/group``.
    """
    return {k: derivative(f"{results}/group", suffix, ".tsv") for k, suffix in GROUP_TABLES.items()
            if interaction or k != "interaction"}


def nbs_output_paths(results, *, atlas, baseline, followup, meas="pearson", interaction=False):
    """The files of one NBS test (rule stats_nbs; with ``interaction``, stats_nbs_interaction).

    Parameters
    ----------
    results : str or path-like
        Derivatives root.
    atlas : str
        Atlas label (or the wildcard ``"{atlas}"``).
    baseline, followup : str
        Session labels; the group-mean matrices carry them as ``ses-``.
    meas : str
        Connectivity measure of the matrices.
    interaction : bool
        The session x arm NBS of a parallel design (``desc-interaction``): ``summary``,
        ``edges`` and ``t`` only.

    Returns
    -------
    dict of str
        ``summary`` (JSON), ``edges``, ``t`` (edge t matrix), ``mean_baseline`` and
        ``mean_followup`` (group-mean matrices) in ``<results>/group/nbs``.
    """
    def nbs(suffix, ext, **entities):
        return derivative(f"{results}/group", suffix, ext, datatype="nbs", atlas=atlas, meas=meas,
                          **entities)

    if interaction:
        return {"summary": nbs("nbs", ".json", desc="interaction"),
                "edges": nbs("edges", ".tsv", desc="interaction"),
                "t": nbs("relmat", ".tsv", stat="t", desc="interaction")}
    return {"summary": nbs("nbs", ".json"), "edges": nbs("edges", ".tsv", desc="nbs"),
            "t": nbs("relmat", ".tsv", stat="t"),
            "mean_baseline": nbs("relmat", ".tsv", ses=baseline, desc="mean"),
            "mean_followup": nbs("relmat", ".tsv", ses=followup, desc="mean")}


def log_paths(results, step):
    """``{"log": ..., "benchmark": ...}`` of the statistics job ``step`` (e.g. ``paired``)."""
    return {"log": f"{results}/logs/stats/{step}.log",
            "benchmark": f"{results}/benchmarks/stats/{step}.tsv"}


def read_group_table(path):
    """The group table (:func:`prepost.stats.group.build_group_table`) written by the stage."""
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=["n/a"],
                       dtype={"participant_id": str, "session": str, "modality": str,
                              "measure": str, "region": str, "flag": str})


def read_paired(path):
    """The paired-test table (:func:`prepost.stats.group.paired_statistics`) written by the stage."""
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False,
                       dtype={"region": str})


def fmri_excluded_participants(exclusions):
    """Participants with a whole fMRI session excluded by QC (``measure == '*'``).

    Parameters
    ----------
    exclusions : path-like or pandas.DataFrame
        The exclusions table of :func:`prepost.stats.group.apply_qc`.

    Returns
    -------
    list of str
        Sorted participant IDs.
    """
    exc = exclusions if isinstance(exclusions, pd.DataFrame) else pd.read_csv(
        exclusions, sep="\t", keep_default_na=False)
    whole = exc[(exc["measure"] == "*") & exc["modality"].isin(["fmri", "all"])]
    return sorted(set(whole["participant_id"]))


def load_nbs_matrices(baseline, followup, subjects, left_out=(), control=()):
    """Paired Pearson matrices of the participants kept for NBS.

    A participant in ``left_out`` (QC exclusions) or with a matrix without any off-diagonal value
    (a run excluded upstream) is left out.

    Parameters
    ----------
    baseline, followup : sequence of path-like
        Relationship matrices (:func:`prepost.connectivity.stage.read_relmat`), one per subject
        in the order of ``subjects``.
    subjects : sequence of str
        Participant IDs.
    left_out : sequence of str
        Participants to leave out.
    control : (sequence, sequence) or ()
        A crossover's control-condition baseline and follow-up matrices (same order); a
        participant needs all four.

    Returns
    -------
    pre, post : ndarray (n_kept, n_parcels, n_parcels)
    labels : list of str
        Parcel labels, the same in every matrix.
    kept : list of str
        Participants of ``pre`` and ``post``, in order.
    dropped : list of str
        Every participant left out, sorted.
    control : tuple of ndarray
        The control condition's baseline and follow-up matrices of ``kept`` (empty without
        ``control``).
    """
    dropped = set(left_out)
    labels = list(read_relmat(baseline[0]).index.astype(str))
    series = [list(baseline), list(followup), *[list(c) for c in control]]
    stacks, kept = [[] for _ in series], []
    off = ~np.eye(len(labels), dtype=bool)
    for k, sub in enumerate(subjects):
        if sub in dropped:
            continue
        mats = []
        for files in series:
            m = read_relmat(files[k])
            if list(m.index.astype(str)) != labels:
                raise InputError(files[k], "node", f"the parcels of {baseline[0]}")
            mats.append(m.to_numpy())
        if not all(np.isfinite(m[off]).any() for m in mats):
            log.info("NBS: leaving out %s (a matrix with no values)", sub)
            dropped.add(sub)
            continue
        for stack, m in zip(stacks, mats):
            stack.append(m)
        kept.append(sub)
    shape = (0, len(labels), len(labels))
    stacks = [np.stack(x) if x else np.empty(shape) for x in stacks]
    return stacks[0], stacks[1], labels, kept, sorted(dropped), tuple(stacks[2:])


def mean_relmat(matrices, labels):
    """Group-mean correlation matrix: tanh of the mean Fisher z, NaN-aware.

    The diagonal keeps arctanh of its clipped values, so a mean of unit diagonals stays 1 (to
    within the clip); with no matrix every value is NaN.
    """
    n = len(labels)
    if len(matrices):
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an edge missing in every matrix
            mz = np.nanmean(fisher_z(matrices, diagonal=None), axis=0)
    else:
        mz = np.full((n, n), np.nan)
    mean = pd.DataFrame(np.tanh(mz), index=labels, columns=labels)
    mean.index.name = "parcel"
    return mean


def nbs_stage(baseline, followup, subjects, exclusions, *, atlas, sessions, thresh, tail, size,
              n_perm, max_exact, seed, arms=None, active=None, control=()):
    """The NBS of one atlas: paired t of Fisher z, follow-up minus baseline; with ``arms``, the
    session x arm interaction (Welch t of the change, active minus control arm); with
    ``control``, a crossover's session x condition interaction (paired t of the contrast of
    changes, active minus control condition).

    Parameters
    ----------
    baseline, followup : sequence of path-like
        Pearson relationship matrices per subject (order of ``subjects``).
    subjects : sequence of str
        Participant IDs.
    exclusions : path-like or pandas.DataFrame
        QC exclusions; participants with an fMRI session excluded are left out.
    atlas : str
        Atlas label, recorded in the summary.
    sessions : (str, str)
        Baseline and follow-up labels.
    thresh, tail, size, n_perm, max_exact, seed
        See :func:`prepost.stats.nbs.nbs_paired`.
    arms : mapping or None
        ``participant_id -> arm`` of a parallel design: the interaction is tested.
    active : str or None
        The active arm's label (the others are the control arm).
    control : (sequence, sequence) or ()
        A crossover's control-condition baseline and follow-up matrices (order of
        ``subjects``); ``baseline`` and ``followup`` are then the active condition's.

    Returns
    -------
    dict
        ``summary`` (dict for JSON), ``edges`` and ``t`` (DataFrames), ``mean_baseline`` and
        ``mean_followup`` (group-mean matrices, DataFrames indexed by parcel).
    """
    qc_out = fmri_excluded_participants(exclusions)
    if qc_out:
        log.info("NBS: leaving out %s (an fMRI session excluded by QC)", qc_out)
    pre, post, labels, kept, dropped, ctl = load_nbs_matrices(baseline, followup, subjects,
                                                              qc_out, control)
    in_active = None if arms is None else [arms[s] == active for s in kept]
    summary, edges, t = nbs_matrices(pre, post, labels, thresh=thresh, tail=tail, size=size,
                                     n_perm=n_perm, max_exact=max_exact, seed=seed,
                                     active=in_active, control=ctl or None)
    summary.update(atlas=atlas, participants=kept, left_out=dropped, baseline=sessions[0],
                   followup=sessions[1],
                   statistic="Welch t of the change in Fisher z (arctanh) of Pearson r, "
                   f"followup - baseline, arm {active} minus the control arm" if arms is not None
                   else "paired t of the contrast of changes in Fisher z (arctanh) of Pearson r, "
                   f"(followup - baseline) of condition {active} minus the control condition's"
                   if control else
                   "paired t of Fisher z (arctanh) of Pearson r, followup - baseline")
    if arms is not None:
        summary["arms"] = {s: arms[s] for s in kept}
    t.index.name = "parcel"
    return {"summary": summary, "edges": edges, "t": t,
            "mean_baseline": mean_relmat(pre, labels), "mean_followup": mean_relmat(post, labels)}
