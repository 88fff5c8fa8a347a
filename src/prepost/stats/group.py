"""Group-level tables and statistics of a pre/post study.

The stages upstream write tidy long tables, one row per participant, session and measure:
``participant_id, session, modality, measure, region, value`` and optionally ``flag`` (empty or
``n/a`` when the value is fine, otherwise what went wrong, e.g. a failed kinetic fit). This module

* joins them into one group table with the participants' covariates (:func:`read_tidy`,
  :func:`join_covariates`);
* applies quality-control exclusions and lists each one with its reason (:func:`apply_qc`);
* runs the paired tests per measure and region with corrections within families
  (:func:`paired_statistics`), mixed models (:func:`mixed_models`), the Network-Based Statistic on
  connectivity matrices (:func:`nbs_matrices`; read them with
  :func:`prepost.connectivity.stage.read_relmat`) and correlations of changes
  between modalities (:func:`change_scores`, :func:`multimodal_correlations`).

Every difference is ``followup - baseline``.
"""

from __future__ import annotations

import logging
import operator
import re

import numpy as np
import pandas as pd

from prepost.connectivity.fc import fisher_z
from prepost.bids import read_participants
from prepost.errors import ConfigError, InputError
from prepost.stats.covariates import covariate_terms, formula_term
from prepost.stats import paired as _paired
from prepost.stats.multimodal import change_correlation
from prepost.stats.nbs import nbs_paired, nbs_two_sample

__all__ = [
    "TIDY_COLUMNS",
    "DEFAULT_QC",
    "read_tidy",
    "join_covariates",
    "apply_qc",
    "build_group_table",
    "paired_statistics",
    "formula_variables",
    "check_formula",
    "mixed_models",
    "change_scores",
    "multimodal_correlations",
    "nbs_matrices",
]

log = logging.getLogger("prepost.stats.group")

TIDY_COLUMNS = ["participant_id", "session", "modality", "measure", "region", "value"]
#: Identifying columns of a group-table row: the tidy columns plus ``atlas`` (the parcellation
#: of an fMRI measure; '' for measures without one).
KEY_COLUMNS = ["participant_id", "session", "modality", "atlas", "measure", "region"]
EXCLUSION_COLUMNS = ["participant_id", "session", "modality", "measure", "region", "rule",
                     "value", "reason", "n_rows"]

#: Default QC rules: an fMRI session is excluded when its mean FD is over 0.5 mm, fewer than
#: 240 s survive censoring, or the denoising stage excluded it; flagged rows are dropped.
DEFAULT_QC = {
    "rules": [
        {"measure": "mean_fd", "op": ">", "value": 0.5, "exclude": "fmri"},
        {"measure": "retained_s", "op": "<", "value": 240.0, "exclude": "fmri"},
        {"measure": "excluded", "op": "==", "value": 1, "exclude": "fmri"},
    ],
    "exclude_flagged": True,
}

_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
        "==": operator.eq, "!=": operator.ne}
_MISSING_FLAGS = {"", "n/a", "nan", "none", "ok"}


# --------------------------------------------------------------------------------------------
# Group table
# --------------------------------------------------------------------------------------------
def read_tidy(paths):
    """Concatenate tidy long tables.

    Parameters
    ----------
    paths : sequence of path-like or pandas.DataFrame
        TSV files (or tables) with the columns of :data:`TIDY_COLUMNS` and optionally ``flag``
        and ``atlas``; other columns are ignored.

    Returns
    -------
    table : pandas.DataFrame
        The :data:`TIDY_COLUMNS`, ``atlas`` ('' when absent), ``flag`` ('' when the value is
        fine) and ``source`` (the file name, or ``table<i>`` for an in-memory table), in input
        order. Rows are unique by :data:`KEY_COLUMNS`.
    """
    frames = []
    for i, p in enumerate(paths):
        if isinstance(p, pd.DataFrame):
            df, source, file = p.copy(), f"table{i}", None
        else:
            file = str(p)
            df = pd.read_csv(p, sep="\t", dtype={"participant_id": str, "session": str,
                                                 "modality": str, "measure": str,
                                                 "region": str},
                             keep_default_na=False, na_values=["n/a", "NaN", "nan", ""])
            source = file.rsplit("/", 1)[-1]
        missing = [c for c in TIDY_COLUMNS if c not in df.columns]
        if missing:
            raise InputError(file, ", ".join(missing), "the columns " + ", ".join(TIDY_COLUMNS),
                             list(df.columns))
        for c in ("flag", "atlas"):
            if c not in df.columns:
                df[c] = ""
            df[c] = df[c].fillna("").astype(str).str.strip()
        df["flag"] = df["flag"].fillna("").astype(str).str.strip()
        df.loc[df["flag"].str.lower().isin(_MISSING_FLAGS), "flag"] = ""
        for c in ("participant_id", "session", "modality", "measure", "region"):
            if df[c].isna().any():
                raise InputError(file, c, "no empty values", f"{int(df[c].isna().sum())} empty")
            df[c] = df[c].astype(str)
        df["value"] = pd.to_numeric(df["value"], errors="coerce")
        df["source"] = source
        df.loc[df["atlas"].str.lower().isin(_MISSING_FLAGS), "atlas"] = ""
        frames.append(df[[*TIDY_COLUMNS, "atlas", "flag", "source"]])
    if not frames:
        return pd.DataFrame(columns=[*TIDY_COLUMNS, "atlas", "flag", "source"])
    table = pd.concat(frames, ignore_index=True)
    key = KEY_COLUMNS
    dup = table.duplicated(key, keep=False)
    if dup.any():
        ex = table.loc[dup, key + ["source"]].head(4).to_dict("records")
        raise InputError(None, ", ".join(key), "one row per participant, session, modality, "
                         "atlas, measure and region across all tables", f"{int(dup.sum())} duplicates, "
                         f"e.g. {ex}")
    return table


def join_covariates(table, participants):
    """Add the participants' covariates to every row, named by their formula terms.

    Parameters
    ----------
    table : pandas.DataFrame
        Tidy table (:func:`read_tidy`).
    participants : pandas.DataFrame or path-like
        participants.tsv (read and checked by :func:`prepost.bids.read_participants`):
        ``participant_id`` plus covariate columns of any name; ``n/a`` is missing.

    Returns
    -------
    pandas.DataFrame
        ``table`` with the covariate columns appended (left join on ``participant_id``), each
        under its formula term (:func:`prepost.stats.covariates.covariate_terms`: ``Age`` ->
        ``age``), the name formulas use.

    Raises
    ------
    InputError
        When a participant of the table is not in participants.tsv, two covariates map to the
        same term, or a covariate maps to the name of a tidy column.
    """
    file = None
    if not isinstance(participants, pd.DataFrame):
        file = str(participants)
        participants = read_participants(participants)
    terms = covariate_terms(participants.columns, source=file)
    cov = participants[["participant_id", *terms]].rename(columns=terms)
    unknown = sorted(set(table["participant_id"]) - set(cov["participant_id"]))
    if unknown:
        raise InputError(file, "participant_id", "every participant of the measure tables",
                         f"missing {unknown}")
    return table.merge(cov, on="participant_id", how="left", validate="many_to_one")


def apply_qc(table, rules=None, exclude_flagged=True):
    """Apply quality-control exclusions.

    Parameters
    ----------
    table : pandas.DataFrame
        Tidy table with a ``flag`` column.
    rules : list of dict or None
        Each rule has ``measure`` (a QC measure, matched in any modality), optional ``region``,
        ``op`` (one of ``> >= < <= == !=``), ``value`` and ``exclude`` (the modality whose rows of
        that participant and session are removed, or ``'all'``). None means
        ``DEFAULT_QC['rules']``. The QC rows themselves stay in the table.
    exclude_flagged : bool, default=True
        Remove rows with a non-empty ``flag`` (e.g. a failed fit) and rows whose value is NaN
        with a flag.

    Returns
    -------
    kept : pandas.DataFrame
        The rows that survive.
    exclusions : pandas.DataFrame
        One row per exclusion: ``participant_id``, ``session``, ``modality`` (the modality
        removed), ``measure`` and ``region`` (``'*'`` for a whole session), ``rule``, ``value``
        (the QC value or NaN), ``reason`` (readable) and ``n_rows`` (rows removed).
    """
    rules = DEFAULT_QC["rules"] if rules is None else rules
    drop = pd.Series(False, index=table.index)
    records = []
    for i, rule in enumerate(rules):
        for k in ("measure", "op", "value", "exclude"):
            if k not in rule:
                raise ConfigError(None, f"stats.qc.rules[{i}].{k}", "a value")
        if rule["op"] not in _OPS:
            raise ConfigError(None, f"stats.qc.rules[{i}].op", " ".join(_OPS), rule["op"])
        sel = table["measure"] == rule["measure"]
        if rule.get("region"):
            sel &= table["region"] == str(rule["region"])
        hits = table[sel & _OPS[rule["op"]](table["value"], float(rule["value"]))]
        label = f"{rule['measure']} {rule['op']} {rule['value']:g}" if isinstance(
            rule["value"], (int, float)) else f"{rule['measure']} {rule['op']} {rule['value']}"
        for row in hits.itertuples():
            target = (table["participant_id"] == row.participant_id) & \
                (table["session"] == row.session)
            if rule["exclude"] != "all":
                target &= table["modality"] == rule["exclude"]
            new = target & ~drop
            drop |= target
            records.append({
                "participant_id": row.participant_id, "session": row.session,
                "modality": rule["exclude"], "measure": "*", "region": "*",
                "rule": label, "value": float(row.value),
                "reason": f"QC {row.measure} ({row.region}) = {row.value:g}, rule {label}",
                "n_rows": int(new.sum()),
            })
    if exclude_flagged:
        flagged = (table["flag"] != "") & ~drop
        for idx, row in table[flagged].iterrows():
            records.append({
                "participant_id": row.participant_id, "session": row.session,
                "modality": row.modality, "measure": row.measure, "region": row.region,
                "rule": "flag", "value": row.value, "reason": f"flagged: {row.flag}",
                "n_rows": 1,
            })
        drop |= flagged
    exclusions = pd.DataFrame(records, columns=EXCLUSION_COLUMNS)
    kept = table[~drop].reset_index(drop=True)
    log.info("QC: %d of %d rows excluded (%d exclusion records)", int(drop.sum()), len(table),
             len(exclusions))
    return kept, exclusions


def build_group_table(paths, participants, rules=None, exclude_flagged=True, sessions=None):
    """Read, join covariates and apply QC: ``(group_table, exclusions)``.

    ``sessions`` (baseline, follow-up) restricts the table to those two sessions.
    """
    table = read_tidy(paths)
    if sessions is not None:
        other = sorted(set(table["session"]) - set(sessions))
        if other:
            log.info("ignoring rows of sessions %s (not %s)", other, list(sessions))
        table = table[table["session"].isin(sessions)].reset_index(drop=True)
    table = join_covariates(table, participants)
    return apply_qc(table, rules=rules, exclude_flagged=exclude_flagged)


# --------------------------------------------------------------------------------------------
# Paired statistics
# --------------------------------------------------------------------------------------------
def paired_statistics(table, baseline="pre", followup="post", family=("modality", "measure"),
                      corrections=("fdr_bh", "holm"), modalities=None,
                      p_columns=("p_t", "p_wilcoxon", "p_perm"), arms=None, conditions=None,
                      **test_kwargs):
    """Paired tests per modality, measure and region with corrections within families.

    Parameters
    ----------
    table : pandas.DataFrame
        Group table (:func:`build_group_table`).
    baseline, followup : str
        Session labels.
    family : sequence of str
        Columns among ``modality``, ``measure``, ``region`` whose values define a family of the
        multiple-comparison corrections.
    corrections : sequence of str
        Methods of :func:`prepost.stats.paired.correct`; each adds ``<p>_<method>`` columns.
    modalities : sequence of str or None
        Modalities to test; None tests every modality.
    p_columns : sequence of str
        p-value columns to correct.
    arms : mapping or None
        ``participant_id -> arm`` of a parallel design: each arm is tested on its own (an
        ``arm`` column; families never mix arms). None tests every participant together.
    conditions : mapping or None
        ``condition -> (baseline, followup)`` of a crossover design: each condition's change is
        tested on its own (its label in the ``arm`` column; families never mix conditions), and
        ``baseline``/``followup`` are not used.
    **test_kwargs
        Passed to :func:`prepost.stats.paired.paired_test` (n_perm, n_boot, seed, ci, ...).

    Returns
    -------
    pandas.DataFrame
        One row per modality, atlas, measure and region: every column of
        :func:`prepost.stats.paired.paired_table` (``n``, ``n_dropped`` incomplete pairs,
        effect sizes, intervals, p-values) plus the corrected p-values of each method.
    """
    if conditions is not None:
        frames = []
        for cond, (pre, post) in conditions.items():
            f = paired_statistics(table, pre, post, family=family, corrections=corrections,
                                  modalities=modalities, p_columns=p_columns, **test_kwargs)
            f.insert(0, "arm", cond)
            f["family"] = cond + "/" + f["family"].astype(str)  # as a parallel design's arms
            frames.append(f)
        return pd.concat(frames, ignore_index=True)
    by = ["modality", "atlas", "measure", "region"]
    data = _with_atlas(table)
    data = data if modalities is None else data[data["modality"].isin(modalities)]
    # families never mix parcellations (nor arms)
    family = list(dict.fromkeys(["atlas", *family])) if family else ["atlas"]
    if arms is not None:
        arm = {str(k): str(v) for k, v in dict(arms).items()}
        data = data.assign(arm=data["participant_id"].astype(str).map(arm))
        data = data[data["arm"].notna()]
        by, family = ["arm", *by], ["arm", *family]
    corrections = list(corrections)
    if not corrections:
        raise ConfigError(None, "stats.paired.corrections", "at least one method")
    out = None
    for method in corrections:
        t = _paired.paired_table(data, by=by, baseline=baseline, followup=followup,
                                 family=family, method=method,
                                 p_columns=p_columns, **test_kwargs)
        if out is None:
            out = t.drop(columns=["correction"])
        else:
            for col in p_columns:
                out[f"{col}_{method}"] = t[f"{col}_{method}"].to_numpy()
    out["corrections"] = ",".join(corrections)
    return out


# --------------------------------------------------------------------------------------------
# Mixed models
# --------------------------------------------------------------------------------------------
_FORMULA_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FORMULA_FUNCS = {"C", "I", "np", "log", "exp", "center", "standardize", "scale", "Treatment",
                  "Sum", "poly", "bs", "cr"}


def formula_variables(formula):
    """Names of the data columns a patsy formula refers to (functions are left out)."""
    names = []
    for m in _FORMULA_WORD.finditer(formula):
        word = m.group(0)
        rest = formula[m.end():].lstrip()
        if word in _FORMULA_FUNCS or rest.startswith("(") or rest.startswith("."):
            continue
        if formula[:m.start()].rstrip().endswith("."):
            continue
        if word not in names:
            names.append(word)
    return names


def check_formula(formula, columns, terms=None):
    """Raise :class:`ConfigError` unless every variable of ``formula`` is in ``columns``.

    ``terms`` (participants.tsv column -> formula term, :func:`covariate_terms`) lets the
    message name the term of a column written as in the file (``Age`` -> ``age``).
    """
    if "~" not in formula:
        raise ConfigError(None, "stats.mixed.formula", "a formula 'value ~ session + ...'",
                          formula)
    lhs = formula.split("~", 1)[0].strip()
    if lhs != "value":
        raise ConfigError(None, "stats.mixed.formula", "'value' on the left-hand side", lhs)
    missing = [v for v in formula_variables(formula) if v not in set(columns)]
    if missing:
        by_term = {formula_term(c): t for c, t in (terms or {}).items()}
        hints = [f"{v!r} is written {by_term[formula_term(v)]!r}" for v in missing
                 if formula_term(v) in by_term]
        raise ConfigError(None, "stats.mixed.formula",
                          "variables among value, session and the formula terms of the "
                          f"participants.tsv columns {sorted(set(columns) - {'value', 'session'})}"
                          + (f" ({'; '.join(hints)})" if hints else ""), f"unknown {missing}")


def mixed_models(table, measures, formula="value ~ session", baseline="pre", ci=0.95,
                 reml=True, references=None):
    """Random-intercept mixed model per modality, measure and region of ``measures``.

    Parameters
    ----------
    table : pandas.DataFrame
        Group table.
    measures : sequence of str
        Measure names; every region of each is modelled. Names absent from the table are
        skipped (logged).
    formula : str
        Fixed effects (patsy), e.g. ``'value ~ session + followup_days + age'``.
    references : mapping or None
        ``column -> reference level`` of other categorical columns (a crossover's
        ``condition`` and ``timepoint``), passed to :func:`prepost.stats.paired.mixed_model`.

    Returns
    -------
    pandas.DataFrame
        ``modality``, ``measure``, ``region``, ``formula`` and the columns of
        :func:`prepost.stats.paired.mixed_model`, one row per fixed effect.
    """
    frames = []
    table = _with_atlas(table)
    for measure in measures:
        sub = table[table["measure"] == measure]
        if sub.empty:
            log.info("mixed model: measure %r not in the group table, skipped", measure)
            continue
        for (modality, atlas, region), g in sub.groupby(["modality", "atlas", "region"],
                                                        sort=True):
            res = _paired.mixed_model(g, formula=formula, baseline=baseline, ci=ci, reml=reml,
                                      references=references)
            res.insert(0, "formula", formula)
            res.insert(0, "region", region)
            res.insert(0, "measure", measure)
            res.insert(0, "atlas", atlas)
            res.insert(0, "modality", modality)
            frames.append(res)
    cols = ["modality", "atlas", "measure", "region", "formula", "term", "estimate", "se", "z", "p",
            "ci_low", "ci_high", "converged", "n_obs", "n_groups", "group_var", "note"]
    if not frames:
        return pd.DataFrame(columns=cols)
    return pd.concat(frames, ignore_index=True)[cols]


# --------------------------------------------------------------------------------------------
# Multimodal
# --------------------------------------------------------------------------------------------
def _with_atlas(table):
    if "atlas" in table.columns:
        return table.assign(atlas=table["atlas"].fillna("").astype(str))
    return table.assign(atlas="")


def change_scores(table, baseline="pre", followup="post", kind="difference"):
    """Per-participant change of every measure and region.

    Returns a wide table indexed by participant with columns ``(measure, region, atlas)``
    holding ``followup - baseline`` (``kind='difference'``) or
    ``100 * (followup - baseline) / baseline`` (``kind='percent'``). A participant with one
    session missing gets NaN. Look a column up with :func:`change_column`.
    """
    sub = _with_atlas(table[table["session"].isin([baseline, followup])])
    wide = sub.pivot_table(index="participant_id",
                           columns=["measure", "region", "atlas", "session"],
                           values="value", aggfunc="first", dropna=True)
    pre = wide.xs(baseline, axis=1, level="session") if baseline in \
        wide.columns.get_level_values("session") else None
    post = wide.xs(followup, axis=1, level="session") if followup in \
        wide.columns.get_level_values("session") else None
    if pre is None or post is None:
        return pd.DataFrame(index=wide.index)
    pre, post = pre.align(post, join="outer")
    if kind == "percent":
        return 100.0 * (post - pre) / pre
    if kind != "difference":
        raise ConfigError(None, "stats.multimodal.change", "difference or percent", kind)
    return post - pre


def _pair_label(spec):
    atlas = f", {spec['atlas']}" if spec.get("atlas") else ""
    return f"{spec['measure']}({spec['region']}{atlas})"


def change_column(delta, spec):
    """Column of :func:`change_scores` for ``{'measure', 'region'[, 'atlas']}``.

    Returns ``(column, None)``, or ``(None, reason)`` when no column or several (one per
    atlas: give ``atlas``) match.
    """
    if delta.columns.nlevels < 3:
        return None, f"not in the group table: {_pair_label(spec)}"
    cols = [c for c in delta.columns if c[0] == spec["measure"] and str(c[1]) == str(
        spec["region"]) and (not spec.get("atlas") or c[2] == spec["atlas"])]
    if not cols:
        return None, f"not in the group table: {_pair_label(spec)}"
    if len(cols) > 1:
        return None, (f"{_pair_label(spec)} exists for atlases {[c[2] for c in cols]}; "
                      "give 'atlas'")
    return cols[0], None


def multimodal_correlations(table, pairs, methods=("spearman", "pearson"), baseline="pre",
                            followup="post", change="difference", correction="fdr_bh",
                            **corr_kwargs):
    """Correlations of changes between configured pairs of measures.

    Parameters
    ----------
    table : pandas.DataFrame
        Group table.
    pairs : list of dict
        Each ``{'x': {'measure', 'region'}, 'y': {'measure', 'region'}}`` with an optional
        ``name``.
    methods : sequence of {'spearman', 'pearson'}
        Coefficients; each pair gets one row per method.
    change : {'difference', 'percent'}
        Change score (see :func:`change_scores`).
    correction : str
        Applied to ``p_perm`` and ``p_analytic`` across pairs, separately per method.
    **corr_kwargs
        Passed to :func:`prepost.stats.multimodal.change_correlation` (n_perm, seed,
        max_exact, alternative).

    Returns
    -------
    pandas.DataFrame
        ``name``, ``x``, ``y``, ``method``, ``n``, ``n_dropped``, ``r``, ``p_analytic``,
        ``p_perm``, ``perm_exact``, ``note``, the corrected p-values; a pair whose measure is
        absent gets NaN and a note.
    """
    delta = change_scores(table, baseline, followup, kind=change)
    rows = []
    for i, pair in enumerate(pairs):
        x, y = pair["x"], pair["y"]
        name = pair.get("name") or f"{_pair_label(x)} ~ {_pair_label(y)}"
        found = {k: change_column(delta, s) for k, s in (("x", x), ("y", y))}
        cols = {k: c for k, (c, _) in found.items()}
        missing = [why for _, why in found.values() if why]
        for method in methods:
            base = {"name": name, "x": _pair_label(x), "y": _pair_label(y), "method": method,
                    "change": change}
            if missing:
                rows.append({**base, "n": 0, "n_dropped": 0, "r": np.nan, "p_analytic": np.nan,
                             "p_perm": np.nan, "perm_exact": False,
                             "note": "; ".join(missing)})
                continue
            res = change_correlation(delta[cols["x"]].to_numpy(float),
                                     delta[cols["y"]].to_numpy(float), method=method,
                                     **corr_kwargs)
            res.pop("method", None)
            rows.append({**base, **res})
    cols = ["name", "x", "y", "method", "change", "n", "n_dropped", "r", "p_analytic", "p_perm",
            "perm_exact", "note"]
    out = pd.DataFrame(rows, columns=cols)
    for col in ("p_analytic", "p_perm"):
        out[f"{col}_{correction}"] = _paired.correct(out[col].to_numpy(float),
                                                     method=correction,
                                                     families=out["method"].to_numpy())
    return out


# --------------------------------------------------------------------------------------------
# Network-Based Statistic on connectivity matrices
# --------------------------------------------------------------------------------------------
def nbs_matrices(pre, post, labels=None, thresh=3.0, tail="both", size="extent", n_perm=5000,
                 max_exact=16, seed=0, active=None, control=None):
    """Paired NBS of Fisher-z matrices, dropping parcels missing in any matrix; or, with
    ``active``, the NBS of the session x arm interaction (the active arm's changes against the
    control arm's, :func:`prepost.stats.nbs.nbs_two_sample`).

    Parameters
    ----------
    pre, post : array-like of shape (n_subjects, n_nodes, n_nodes)
        Pearson correlation matrices (not yet Fisher-transformed) of the same subjects in the
        same order.
    labels : sequence of str or None
        Parcel labels.
    thresh, tail, size, n_perm, max_exact, seed
        See :func:`prepost.stats.nbs.nbs_paired`.
    active : array-like of bool or None
        Per subject, True in the active arm and False in the control arm: the edge statistic is
        Welch's t of the change, active minus control, and the null comes from relabelings of
        the arms (``n_perm`` random ones where there are more than 20,000).
    control : (array-like, array-like) or None
        A crossover's control-condition baseline and follow-up matrices of the same subjects:
        the edge statistic is the paired t of the contrast of changes (``post - pre`` minus
        the control's), with sign flips of the contrast.

    Returns
    -------
    summary : dict
        Settings, ``n_subjects``, ``exact``, ``n_perm``, ``dropped_parcels``, and per component
        its ``size``, ``p``, ``n_edges``, ``n_nodes`` (with ``active``: also ``n_active`` and
        ``n_control``); with fewer than 2 participants (per arm) nothing is tested and ``note``
        says so.
    edges : pandas.DataFrame
        ``component``, ``parcel_i``, ``parcel_j``, ``t``, ``p`` per supra-threshold edge.
    t : pandas.DataFrame
        Full edge t matrix (NaN rows/columns for dropped parcels).
    """
    # the diagonal (self-connections) is set to 0 below, once missing parcels are dropped
    zp, zq = fisher_z(pre), fisher_z(post)
    zc = None if control is None else [fisher_z(m) for m in control]
    n_nodes = zp.shape[1]
    labels = [str(i) for i in range(n_nodes)] if labels is None else [str(x) for x in labels]
    arm = None if active is None else np.asarray(active, dtype=bool)
    arms = {} if arm is None else {"n_active": int(arm.sum()), "n_control": int((~arm).sum())}
    too_few = zp.shape[0] < 2 if arm is None else min(arms.values()) < 2
    if too_few:
        # nothing to test; the outputs still exist and say why
        summary = {"n_subjects": int(zp.shape[0]), "n_parcels": int(n_nodes),
                   "dropped_parcels": [], "thresh": float(thresh), "tail": tail, "size": size,
                   "exact": False, "n_perm": 0, "components": [], "null_quantile_95": None,
                   **arms,
                   "note": (f"fewer than 2 participants with both sessions (n={zp.shape[0]})"
                            if arm is None else "fewer than 2 participants with both sessions "
                            f"in an arm ({arms['n_active']} active, {arms['n_control']} "
                            "control)")}
        return (summary, pd.DataFrame(columns=["component", "parcel_i", "parcel_j", "t", "p"]),
                pd.DataFrame(np.full((n_nodes, n_nodes), np.nan), index=labels, columns=labels))
    off = ~np.eye(n_nodes, dtype=bool)
    # missing edges per parcel pair over subjects and sessions; drop the parcel with the most
    # missing edges until none is left (a parcel missing in one matrix does not take the
    # others with it)
    nan = np.zeros((n_nodes, n_nodes), dtype=bool)
    for Z in [zp, zq, *(zc or [])]:
        nan |= (~np.isfinite(Z)).any(axis=0)
    nan &= off
    bad = np.zeros(n_nodes, dtype=bool)
    while nan[np.ix_(~bad, ~bad)].any():
        counts = np.where(bad, -1, nan[:, ~bad].sum(axis=1))
        bad[int(np.argmax(counts))] = True
    keep = np.flatnonzero(~bad)
    idx = np.ix_(np.arange(zp.shape[0]), keep, keep)
    A, B = zp[idx], zq[idx]
    if zc is not None:
        # the contrast (B - A) - (D - C) as the paired difference of (D - C, B - A)
        A, B = zc[1][idx] - zc[0][idx], B - A
    for Z in (A, B):
        Z[:, np.arange(keep.size), np.arange(keep.size)] = 0.0
    if arm is None:
        res = nbs_paired(A, B, thresh=thresh, tail=tail, size=size, n_perm=n_perm,
                         max_exact=max_exact, seed=seed)
    else:
        res = nbs_two_sample((B - A)[arm], (B - A)[~arm], thresh=thresh, tail=tail, size=size,
                             n_perm=n_perm, seed=seed)
    kl = [labels[k] for k in keep]
    comps, rows = [], []
    for c, (e, s, p) in enumerate(zip(res.components, res.sizes, res.pvals), start=1):
        nodes = np.unique(e)
        comps.append({"component": c, "size": float(s), "p": float(p), "n_edges": int(len(e)),
                      "n_nodes": int(nodes.size)})
        for i, j in e:
            rows.append({"component": c, "parcel_i": kl[i], "parcel_j": kl[j],
                         "t": float(res.t[i, j]), "p": float(p)})
    t_full = np.full((n_nodes, n_nodes), np.nan)
    t_full[np.ix_(keep, keep)] = res.t
    summary = {"n_subjects": int(zp.shape[0]), "n_parcels": int(n_nodes),
               "dropped_parcels": [labels[k] for k in np.flatnonzero(bad)],
               "thresh": float(thresh), "tail": tail, "size": size, "exact": bool(res.exact),
               "n_perm": int(res.n_perm), "components": comps, **arms,
               "null_quantile_95": float(np.quantile(res.null, 0.95)) if res.null.size else None}
    edges = pd.DataFrame(rows, columns=["component", "parcel_i", "parcel_j", "t", "p"])
    return summary, edges, pd.DataFrame(t_full, index=labels, columns=labels)
