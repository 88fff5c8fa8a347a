"""Recovery of the simulated study's planted network FC through the whole chain.

The simulator writes, per session, the true network FC as the workflow measures it: the mean
Fisher z over the parcel pairs of every network pair of the expected parcel correlations, stored
as its ``tanh`` (``network-fc.tsv``, see :func:`prepost.simulate.truth_paths`); the connectivity
stage writes the estimated network FC (mean Fisher z over parcel pairs). :func:`fc_recovery`
scores the estimates against ``arctanh`` of the truth, per session and for the follow-up minus baseline change, with the
figures a user needs to judge whether the chain recovers what was planted:

* per-session bias (mean over network pairs of estimate minus truth) and correlation over pairs;
* bias of the change (per participant, averaged over pairs; its mean, SD and t over participants);
* correlation of estimated and true per-participant changes, pooled over participants and pairs.

Only files are read: the estimators never see the truth.
"""

from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import pandas as pd

from prepost.anat import TEMPLATE
from prepost.simulate import NETWORKS, truth_paths

__all__ = ["expected_verdict", "fc_recovery", "find_estimates", "network_pairs", "planted_change",
           "planted_power", "read_network_fc", "self_check", "session_accuracy", "truth_values"]

# What a finished replicate study is to prepost-validate: its overrides, settings, participants,
# self-check and accuracy. A folder holding these alone (copied to another machine) is read
# back as the study, not run again.
RECORD = {"config": "config.yaml", "settings": "study.yaml", "participants": "participants.tsv",
          "self_check": "self_check.tsv", "accuracy": "accuracy.tsv"}


def record_paths(rep):
    """The files of a replicate's record (:data:`RECORD`) in its folder ``rep``."""
    return {key: Path(rep) / name for key, name in RECORD.items()}


def network_pairs(order=NETWORKS):
    """The unordered network pairs (within-network pairs included) as ``"A-B"`` labels."""
    order = list(order)
    return [f"{a}-{b}" for i, a in enumerate(order) for b in order[i:]]


def read_network_fc(path, order=NETWORKS):
    """Estimated network FC of one session as a Series over :func:`network_pairs`.

    Reads the connectivity stage's ``desc-network_fc.tsv`` (``network_a``, ``network_b``,
    ``fc_z``); a pair missing from the file is NaN.
    """
    df = pd.read_csv(path, sep="\t")
    val = {}
    for a, b, z in zip(df["network_a"].astype(str), df["network_b"].astype(str), df["fc_z"]):
        val[f"{a}-{b}"] = val[f"{b}-{a}"] = float(z)
    return pd.Series([val.get(p, np.nan) for p in network_pairs(order)],
                     index=network_pairs(order), dtype=float)


def _truth_fc(path, order=NETWORKS):
    S = pd.read_csv(path, sep="\t", index_col=0).loc[list(order), list(order)].to_numpy(float)
    iu = np.triu_indices(len(order))
    return pd.Series(np.arctanh(S[iu]), index=network_pairs(order))


def _score(est, tru, baseline, followup):
    """Per-session and change agreement of ``{(participant, session): Series}`` estimates."""
    rows = []
    for key in sorted(est):
        e, t = est[key], tru[key]
        ok = e.notna() & t.notna()
        rows.append((*key, float((e - t)[ok].mean()) if ok.any() else np.nan,
                     float(np.corrcoef(e[ok], t[ok])[0, 1]) if ok.sum() > 2 else np.nan))
    sessions = pd.DataFrame(rows, columns=["participant", "session", "bias", "r"])
    subs = sorted({s for s, _ in est if (s, baseline) in est and (s, followup) in est})
    summary = {"n_participants": len(subs)}
    for ses in (baseline, followup):
        summary[f"bias_{ses}"] = float(sessions.loc[sessions.session == ses, "bias"].mean())
    summary["session_r_mean"] = float(sessions["r"].mean())
    summary["session_r_min"] = float(sessions["r"].min())
    if subs:
        dE = np.array([est[s, followup] - est[s, baseline] for s in subs])
        dT = np.array([tru[s, followup] - tru[s, baseline] for s in subs])
        per = np.nanmean(dE - dT, axis=1)
        sd = float(np.std(per, ddof=1)) if len(subs) > 1 else np.nan
        ok = np.isfinite(dE) & np.isfinite(dT)
        summary.update({
            "change_bias_mean": float(per.mean()),
            "change_bias_sd": sd,
            "change_bias_t": float(per.mean() / sd * np.sqrt(len(subs))) if sd and sd > 0 else np.nan,
            "change_r": float(np.corrcoef(dE[ok], dT[ok])[0, 1]) if ok.sum() > 2 else np.nan,
            "change_sd_estimate": float(np.std(dE[ok])),
            "change_sd_truth": float(np.std(dT[ok])),
        })
    return sessions, summary


def fc_recovery(estimates, truth_dir, baseline="pre", followup="post"):
    """Score estimated network FC against the simulator's truth.

    Parameters
    ----------
    estimates : dict of (str, str) to path-like
        ``(participant label without sub-, session) -> desc-network_fc.tsv`` of each session.
    truth_dir : path-like
        The simulated study's ``truth`` folder.
    baseline, followup : str
        Session labels of the change (follow-up minus baseline).

    Returns
    -------
    sessions : pandas.DataFrame
        One row per session: ``participant``, ``session``, ``bias`` (mean over pairs of estimate
        minus truth, Fisher z), ``r`` (correlation of estimate and truth over pairs).
    summary : dict
        ``n_participants``; ``bias_<session>`` (mean session bias); ``session_r_mean`` and
        ``session_r_min``; ``change_bias_mean``, ``change_bias_sd``, ``change_bias_t`` (over
        participants of their pair-averaged change bias); ``change_r`` (estimated vs true
        changes, pooled over participants and pairs); ``change_sd_estimate`` and
        ``change_sd_truth`` (SD of the per-pair changes).
    """
    est = {k: read_network_fc(p) for k, p in estimates.items()}
    tru = {(sub, ses): _truth_fc(truth_paths(truth_dir, sub, ses)["network_fc"])
           for sub, ses in est}
    return _score(est, tru, baseline, followup)


def find_estimates(results, atlas="Schaefer400", space=TEMPLATE, res="3", task="rest"):
    """``{(participant, session): path}`` of the network FC files under a results folder.

    Paths come from the connectivity stage's name builder; participants and sessions are the
    folders ``sub-*/ses-*`` that hold one.
    """
    from prepost.connectivity.stage import output_paths

    out = {}
    for ses_dir in sorted(Path(results).glob("sub-*/ses-*")):
        sub, ses = ses_dir.parent.name[4:], ses_dir.name[4:]
        path = Path(output_paths(results, space=space, res=res, atlas=atlas, sub=sub, ses=ses,
                                 task=task)["network"])
        if path.exists():
            out[sub, ses] = path
    return out


# ----------------------------------------------------------------------------------------------
# The report's self-check: the statistics stage's tables against the study-level truth table
def _truth_series(truth, measure, region):
    sel = truth[(truth["measure"] == measure) & (truth["region"].astype(str) == str(region))]
    if sel.empty:
        return None
    return sel.set_index(["participant_id", "session"])["value"].astype(float)


def truth_values(truth, measure, region, reference_roi=None):
    """True value of a workflow measure per ``(participant_id, session)``, or None.

    Parameters
    ----------
    truth : pandas.DataFrame
        The simulator's ``truth.tsv`` (:func:`prepost.simulate.truth_summary`).
    measure, region : str
        As the statistics stage names them: ``fc_within`` (network), ``fc_between``
        (``"A-B"``, either order), ``gradient1_range``, ``gradient1_variance`` (``global``) and
        ``gradient1_position`` (network), ``VT_<model>`` (any kinetic model of VT), and
        ``DVR_<model>`` or ``BPND_<model>`` (from VT and ``reference_roi``).
    reference_roi : str or None
        The reference region of DVR and BPND.

    Returns
    -------
    pandas.Series or None
        None when the simulator writes no truth for the measure or region (e.g. ALFF, graph
        measures, a region it does not summarise).
    """
    region = str(region)
    if measure == "fc_within":
        return _truth_series(truth, "fc_within_z", region)
    if measure == "fc_between" and "-" in region:
        a, b = region.split("-", 1)
        found = _truth_series(truth, "fc_between_z", f"{a}-{b}")
        return found if found is not None else _truth_series(truth, "fc_between_z", f"{b}-{a}")
    if measure in ("gradient1_range", "gradient1_variance", "gradient1_position"):
        return _truth_series(truth, measure, region)
    kind = measure.split("_", 1)[0]
    if kind == "VT":
        return _truth_series(truth, "VT", region)
    if kind in ("DVR", "BPND") and reference_roi:
        vt, ref = _truth_series(truth, "VT", region), _truth_series(truth, "VT", reference_roi)
        if vt is None or ref is None:
            return None
        dvr = vt / ref.reindex(vt.index)
        return dvr if kind == "DVR" else dvr - 1.0
    return None


def planted_change(effects, measure, region, baseline_mean=np.nan, changes=None):
    """The change the simulator's ``effects`` plant in a measure, in the measure's units.

    With ``changes`` (``planted_changes`` of the simulator's ``effects.json``: records of
    measure, region, change), a measure it lists takes that group-level change: network FC with
    the hierarchy compression's share, the principal gradient's measures. Otherwise network FC
    changes are Fisher z (``within_default_dz``, ``sommot_default_dz``, ``global_dz`` for every
    other pair); a VT change is its per cent (``pcc_vt_pct`` on top of ``global_vt_pct`` in PCC,
    ``global_vt_pct`` elsewhere in grey matter, none in white matter) times ``baseline_mean``.
    NaN for measures the simulator plants nothing in on purpose (ALFF, DVR): the realised truth,
    where it exists, is what is scored.
    """
    region = str(region)
    for c in changes or ():
        if c["measure"] == measure and (str(c["region"]) == region or (
                measure == "fc_between" and set(str(c["region"]).split("-", 1))
                == set(region.split("-", 1)))):
            return float(c["change"])
    if measure == "fc_within":
        return float(effects["within_default_dz"] if region == "Default" else effects["global_dz"])
    if measure == "fc_between" and "-" in region:
        pair = set(region.split("-", 1))
        return float(effects["sommot_default_dz"] if pair == {"SomMot", "Default"}
                     else effects["global_dz"])
    if measure.split("_", 1)[0] == "VT":
        if region == "centrum_semiovale":
            return 0.0
        g = effects["global_vt_pct"] / 100.0
        pct = (1 + g) * (1 + effects["pcc_vt_pct"] / 100.0) - 1 if region == "PCC" else g
        return float(pct * baseline_mean)
    return np.nan


#: The verdict each hypothesis direction should reach for a planted change of a given sign.
def expected_verdict(direction, planted):
    """Verdict a hypothesis should reach on the simulated study (NaN planted: unknown, '')."""
    if not np.isfinite(planted):
        return ""
    if direction == "none":
        return "supported" if planted == 0 else "not supported"
    if planted == 0:
        return "not supported"
    sign = {"increase": 1, "positive": 1, "decrease": -1, "negative": -1}.get(direction)
    if sign is None:  # 'any'
        return "supported"
    return "supported" if np.sign(planted) == sign else "opposite"


SELF_CHECK_COLUMNS = ["name", "test", "measure", "region", "direction", "planted", "realised",
                      "estimate", "ci_low", "ci_high", "covered", "n", "p", "p_adjusted", "alpha",
                      "verdict", "expected", "agrees", "sd_change", "power", "power_adjusted",
                      "note"]


def planted_power(planted, sd, n, direction, alpha, m=1, p_value="p_perm", simulations=2000,
                  seed=0):
    """Power of a paired test to find a planted change, given the spread the study measured.

    Each simulated study draws ``n`` changes from a normal with mean ``planted`` and SD ``sd``
    (the SD of the participants' estimated changes: the session variability and every
    estimation error of the chain) and is judged by the workflow's test
    (:func:`prepost.stats.power.simulated_pvalues`) with the sign ``direction`` names.

    Returns
    -------
    (float, float)
        Power at ``alpha`` and at ``alpha / m`` (Bonferroni over the ``m`` hypotheses: Holm's
        first step, so a lower bound of the power after Holm's adjustment); NaN without a
        planted change or a direction.
    """
    from prepost.stats.power import simulated_pvalues

    want = {"increase": 1.0, "decrease": -1.0}.get(direction)
    if (want is None or not np.isfinite([planted, sd, alpha]).all() or planted == 0 or sd <= 0
            or n < 3):
        return np.nan, np.nan
    rng = np.random.default_rng(seed)
    p, est = simulated_pvalues(planted + sd * rng.standard_normal((simulations, int(n))),
                               p_value=p_value, seed=seed)
    right = np.sign(est) == want
    return float(np.mean((p < alpha) & right)), float(np.mean((p < alpha / m) & right))


def _modality(group_table, measure):
    m = group_table.loc[group_table["measure"] == measure, "modality"]
    return str(m.iloc[0]) if len(m) else ""


def _true_change(tv, subs, baseline, followup):
    pre = tv.reindex([(s, baseline) for s in subs]).to_numpy()
    return tv.reindex([(s, followup) for s in subs]).to_numpy() - pre, pre


def _crossover_truth(group_table, tv, col, conditions, arm, active, control, contrast):
    """Realised true change of a crossover's condition ``arm`` (or, with ``contrast``, the mean
    contrast active minus control) over the participants the test used, and their true
    baseline mean (of a percent effect): ``(realised, baseline_mean)``."""
    from prepost.stats.group import change_scores

    used = {c: change_scores(group_table, *conditions[c]) for c in
            ((active, control) if contrast else (arm,))}
    ok = None
    for d in used.values():
        v = d[col] if col in d.columns else pd.Series(np.nan, index=d.index)
        fin = set(v.index[np.isfinite(v.to_numpy(float))])
        ok = fin if ok is None else ok & fin
    subs = sorted(ok or ())
    d, pre = _true_change(tv, subs, *conditions[active if contrast else arm])
    if contrast:
        d = d - _true_change(tv, subs, *conditions[control])[0]
    return (float(np.nanmean(d)) if len(d) else np.nan,
            float(np.nanmean(pre)) if len(pre) else np.nan)


def self_check(hypotheses, group_table, truth, effects, baseline="pre", followup="post",
               reference_roi=None, arms=None, active=None, control=None, conditions=None,
               changes=None, p_value="p_perm"):
    """Each hypothesis of the simulated study against what the simulator planted and realised.

    Parameters
    ----------
    hypotheses : pandas.DataFrame
        The statistics stage's ``hypotheses.tsv``.
    group_table : pandas.DataFrame
        The statistics stage's group table (after QC): it decides which participants count.
    truth : pandas.DataFrame
        The simulator's ``truth.tsv``.
    effects : dict
        The planted effects (``effects`` of the simulator's ``effects.json``).
    baseline, followup : str
        Session labels.
    reference_roi : str or None
        Reference region of DVR and BPND (``pet.reference_roi``).
    arms : mapping or None
        ``participant_id -> arm`` of a parallel design (the simulator plants the effects in the
        ``active`` arm only): a paired hypothesis is scored in its arm (``arm`` column of the
        hypotheses), an interaction as the active minus the control arm's change.
    active, control : str or None
        Arm (or condition) labels of a parallel (or crossover) design.
    conditions : mapping or None
        ``condition -> (baseline, followup)`` of a crossover (the simulator plants the effects in
        the active condition's follow-up): a paired hypothesis is scored in its condition, an
        interaction as the mean contrast of the true changes; ``baseline``/``followup`` are
        not used.
    changes : list of dict or None
        The simulator's group-level ``planted_changes`` (see :func:`planted_change`).
    p_value : str
        ``stats.p_value``: the test the power of a planted change is computed with.

    Returns
    -------
    pandas.DataFrame
        One row per hypothesis (:data:`SELF_CHECK_COLUMNS`): ``planted`` (the configured change in
        the estimate's units; 0 for a correlation of a PET with an fMRI change, which the
        simulator draws independently), ``realised`` (the mean true change over the
        participants the test used, or the correlation of their true changes: the session noise
        makes it differ from ``planted``), ``covered`` (the interval holds ``realised``),
        ``expected`` (the verdict the planted change calls for), ``agrees``, and for a paired
        test of a planted change ``sd_change`` (SD of the participants' estimated changes) with
        ``power`` and ``power_adjusted`` (:func:`planted_power` at this n, over all the
        hypotheses): whether a study of this size and noise should find it.
    """
    from prepost.stats.group import change_column, change_scores
    from prepost.stats.parallel import arm_labels

    if conditions:
        baseline, followup = conditions[active]
    delta = change_scores(group_table, baseline, followup)
    rows = []
    for h in hypotheses.itertuples(index=False):
        row = {c: getattr(h, c, np.nan) for c in ("name", "test", "measure", "region", "direction",
                                                   "estimate", "ci_low", "ci_high", "n", "p",
                                                   "p_adjusted", "alpha", "verdict")}
        row.update(planted=np.nan, realised=np.nan, sd_change=np.nan, power=np.nan,
                   power_adjusted=np.nan, note="")
        if h.test in ("paired", "interaction"):
            col, why = change_column(delta, {"measure": h.measure, "region": h.region})
            tv = truth_values(truth, h.measure, h.region, reference_roi)
            if tv is None:
                row["note"] = "the simulator writes no truth of this measure and region"
            elif col is None:
                row["note"] = why
            else:
                subs = delta.index[np.isfinite(delta[col].to_numpy(float))]
                arm_of = arm_labels(arms, subs)
                if conditions:
                    arm = str(getattr(h, "arm", "") or "")
                    arm = active if arm in ("", "nan") or h.test == "interaction" else arm
                    row["realised"], pre = _crossover_truth(group_table, tv, col, conditions, arm,
                                                            active, control,
                                                            h.test == "interaction")
                    row["planted"] = (0.0 if arm == control else
                                      planted_change(effects, h.measure, h.region, pre, changes))
                elif h.test == "paired":
                    arm = str(getattr(h, "arm", "") or "")
                    arm = "" if arm == "nan" else arm
                    if arms is not None and arm:
                        subs = list(subs[arm_of == arm])
                    d, pre = _true_change(tv, subs, baseline, followup)
                    row["realised"] = float(np.nanmean(d))
                    row["planted"] = (0.0 if arms is not None and arm == control else
                                      planted_change(effects, h.measure, h.region,
                                                     np.nanmean(pre), changes))
                    est = delta.loc[subs, col].to_numpy(float)
                    row["sd_change"] = float(np.std(est, ddof=1)) if len(est) > 2 else np.nan
                    row["power"], row["power_adjusted"] = planted_power(
                        row["planted"], row["sd_change"], len(est), h.direction, row["alpha"],
                        m=len(hypotheses), p_value=p_value)
                else:
                    d_a, pre = _true_change(tv, list(subs[arm_of == active]), baseline,
                                            followup)
                    d_c, _ = _true_change(tv, list(subs[arm_of == control]), baseline, followup)
                    row["realised"] = float(np.nanmean(d_a) - np.nanmean(d_c))
                    row["planted"] = planted_change(effects, h.measure, h.region, np.nanmean(pre),
                                                    changes)
        else:
            (mx, my), (rx, ry) = (str(h.measure).split(" ~ "), str(h.region).split(" ~ "))
            mods = {_modality(group_table, mx), _modality(group_table, my)}
            if mods == {"fmri", "pet"}:
                row["planted"] = 0.0
            cx, _ = change_column(delta, {"measure": mx, "region": rx})
            cy, _ = change_column(delta, {"measure": my, "region": ry})
            tx = truth_values(truth, mx, rx, reference_roi)
            ty = truth_values(truth, my, ry, reference_roi)
            if tx is None or ty is None or cx is None or cy is None:
                row["note"] = "no truth of both measures: the planted value is scored alone"
            else:
                ok = np.isfinite(delta[cx].to_numpy(float)) & np.isfinite(delta[cy].to_numpy(float))
                subs = delta.index[ok]
                d = [_true_change(t, subs, baseline, followup)[0] for t in (tx, ty)]
                kind = "spearman" if "spearman" in str(getattr(h, "estimate_label", "")) \
                    else "pearson"
                row["realised"] = float(pd.Series(d[0]).corr(pd.Series(d[1]), method=kind))
        ref = row["realised"] if np.isfinite(row["realised"]) else row["planted"]
        row["covered"] = (bool(row["ci_low"] <= ref <= row["ci_high"])
                          if np.isfinite([ref, row["ci_low"], row["ci_high"]]).all() else None)
        row["expected"] = expected_verdict(row["direction"], row["planted"])
        row["agrees"] = (row["verdict"] == row["expected"]) if row["expected"] else None
        rows.append(row)
    return pd.DataFrame(rows, columns=SELF_CHECK_COLUMNS)


def _session_series(group_table, truth, measures, atlas=None):
    """Estimates and truths of the given (measure, region) labels per (participant, session)."""
    g = group_table
    if atlas is not None and "atlas" in g.columns:
        g = g[g["atlas"].fillna("").astype(str) == atlas]
    est, tru = {}, {}
    labels = [f"{m}:{r}" for m, r in measures]
    for (pid, ses), d in g.groupby(["participant_id", "session"]):
        val = {f"{m}:{r}": v for m, r, v in zip(d["measure"], d["region"].astype(str), d["value"])}
        e = pd.Series([val.get(k, np.nan) for k in labels], index=labels, dtype=float)
        if e.notna().any():
            est[str(pid), str(ses)] = e
    for m, r in measures:
        tv = truth_values(truth, m, r)
        for key in est:
            tru.setdefault(key, pd.Series(np.nan, index=labels, dtype=float))
            if tv is not None and key in tv.index:
                tru[key][f"{m}:{r}"] = tv[key]
    return est, tru


def session_accuracy(group_table, truth, baseline="pre", followup="post"):
    """Per-session and change accuracy of network FC and VT against the truth table.

    Network FC: the 28 network pairs (``fc_within`` and ``fc_between``) of the first atlas that
    has them, scored as :func:`fc_recovery` does; the principal gradient's range and network
    positions of that atlas likewise (its truth: the noise-free parcel signals'). VT: per kinetic model, the regions the
    simulator has a truth for (per cent bias per session; change bias in VT units; the SD of the
    per-session per cent errors, the estimate's own share of the test-retest variability).

    Returns
    -------
    pandas.DataFrame
        One row per scored set: ``measure``, ``atlas``, ``regions`` (how many), and the
        :func:`fc_recovery` summary (``bias_<baseline>``, ``bias_<followup>``,
        ``session_r_min``, ``change_bias_mean``, ``change_bias_t``, ``change_r``...); VT rows
        also have ``bias_pct`` and ``error_sd_pct`` (mean and SD of the per cent errors over
        sessions and regions).
    """
    rows = []
    g = group_table.assign(atlas=group_table.get("atlas", pd.Series("", index=group_table.index))
                           .fillna("").astype(str))
    fc_atlases = [a for a in dict.fromkeys(g.loc[g["measure"] == "fc_within", "atlas"]) if a]
    if fc_atlases:
        nets = [p.split("-", 1) for p in network_pairs()]
        pairs = [("fc_within", a) if a == b else ("fc_between", f"{a}-{b}") for a, b in nets]
        est, tru = _session_series(g, truth, pairs, fc_atlases[0])
        _, summ = _score(est, tru, baseline, followup)
        rows.append({"measure": "network FC (Fisher z)", "atlas": fc_atlases[0],
                     "regions": len(pairs), **summ})
        for m, regions in (("gradient1_range", ["global"]), ("gradient1_position", NETWORKS)):
            if m in set(g["measure"]) and truth_values(truth, m, regions[0]) is not None:
                est, tru = _session_series(g, truth, [(m, r) for r in regions], fc_atlases[0])
                _, summ = _score(est, tru, baseline, followup)
                rows.append({"measure": m, "atlas": fc_atlases[0], "regions": len(regions),
                             **summ})
    for m in sorted(x for x in g["measure"].unique() if str(x).startswith("VT_")):
        regions = [r for r in dict.fromkeys(g.loc[g["measure"] == m, "region"].astype(str))
                   if truth_values(truth, m, r) is not None]
        if not regions:
            continue
        est, tru = _session_series(g, truth, [(m, r) for r in regions])
        _, summ = _score(est, tru, baseline, followup)
        pct = pd.concat([100 * (est[k] - tru[k]) / tru[k] for k in est]).to_numpy(float)
        rows.append({"measure": m, "atlas": "", "regions": len(regions), **summ,
                     "bias_pct": float(np.nanmean(pct)),
                     "error_sd_pct": float(np.nanstd(pct, ddof=1))})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# Replicate studies: power, false-positive rate, bias and interval coverage through the chain
def _se(p, k):
    return float(np.sqrt(p * (1 - p) / k)) if k else np.nan


def _mean_se(values):
    """Mean of the non-missing values and its standard error (SD / sqrt(n))."""
    v = pd.Series(values, dtype=float).dropna()
    return (float(v.mean()) if len(v) else np.nan,
            float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else np.nan)


def summarise_replicates(checks):
    """Operating characteristics of each hypothesis over replicate studies.

    Parameters
    ----------
    checks : pandas.DataFrame
        :func:`self_check` rows of every replicate, with a ``replicate`` column.

    Returns
    -------
    pandas.DataFrame
        One row per hypothesis: ``replicates`` (tested), ``planted``, ``expected``; the shares
        ``supported`` and ``opposite`` (verdicts, after the correction across hypotheses) and
        ``p_below_alpha`` (the unadjusted p): with a planted change ``supported`` is the power,
        with none ``p_below_alpha`` is the false-positive rate of the test; ``as_planted`` (the
        verdict the planted change calls for); ``bias`` (mean of estimate minus realised truth,
        or minus planted where nothing is realised) and ``coverage`` (intervals holding the
        truth). Each share and the bias have a Monte Carlo standard error (``*_se``).
    """
    rows = []
    for name, d in checks.groupby("name", sort=False):
        d = d[d["verdict"] != "not tested"]
        k = len(d)
        truth = d["realised"].where(d["realised"].notna(), d["planted"]).astype(float)
        err = (d["estimate"].astype(float) - truth).dropna()
        cov = d["covered"].dropna().astype(bool)
        judged = d[d["expected"].fillna("") != ""]
        row = {"name": name, "replicates": k,
               "planted": float(d["planted"].astype(float).mean()) if k else np.nan,
               "expected": judged["expected"].iloc[0] if len(judged) else ""}
        for key, hit in (("supported", d["verdict"] == "supported"),
                         ("opposite", d["verdict"] == "opposite"),
                         ("p_below_alpha", d["p"].astype(float) < d["alpha"].astype(float))):
            row[key] = float(hit.mean()) if k else np.nan
            row[f"{key}_se"] = _se(row[key], k)
        agree = (judged["verdict"] == judged["expected"])
        row["as_planted"] = float(agree.mean()) if len(judged) else np.nan
        row["as_planted_se"] = _se(row["as_planted"], len(judged))
        row["bias"], row["bias_se"] = _mean_se(err)
        row["coverage"] = float(cov.mean()) if len(cov) else np.nan
        row["coverage_se"] = _se(row["coverage"], len(cov))
        rows.append(row)
    return pd.DataFrame(rows)


_ACCURACY_STATS = ("session_r_mean", "session_r_min", "change_bias_mean", "change_r",
                   "bias_pct", "error_sd_pct")


def summarise_accuracy(accuracy):
    """Mean accuracy of each scored set over replicate studies.

    Parameters
    ----------
    accuracy : pandas.DataFrame
        :func:`session_accuracy` rows of every replicate, with a ``replicate`` column.

    Returns
    -------
    pandas.DataFrame
        One row per ``measure`` and ``atlas``: ``replicates`` and, for each of the per-session
        correlation (``session_r_mean``, ``session_r_min``), the bias of the change
        (``change_bias_mean``: one study's is the mean over participants and regions), the
        per-participant change correlation (``change_r``) and VT's ``bias_pct`` and
        ``error_sd_pct``, the mean over replicates and its Monte Carlo standard error (``*_se``,
        SD / sqrt(K)). A mean change bias within about 2 SE of 0 is what an unbiased chain gives.
    """
    rows = []
    for (measure, atlas), d in accuracy.groupby(["measure", "atlas"], sort=False, dropna=False):
        row = {"measure": measure, "atlas": atlas, "replicates": int(d["replicate"].nunique())}
        for col in _ACCURACY_STATS:
            row[col], row[f"{col}_se"] = _mean_se(d[col] if col in d else [])
        rows.append(row)
    return pd.DataFrame(rows)


def replicate_accuracy(rep, baseline="pre", followup="post"):
    """:func:`session_accuracy` of a finished replicate, from the statistics tables and truth it
    keeps (``<rep>/accuracy.tsv``, computed once)."""
    from prepost.io import write_tsv
    from prepost.stats.stage import output_paths as stats_paths

    rep = Path(rep)
    path = record_paths(rep)["accuracy"]
    if not path.exists():
        results = rep / "results"
        table = pd.read_csv(stats_paths(results)["table"], sep="\t",
                            dtype={"region": str, "atlas": str, "flag": str})
        truth = pd.read_csv(results / "simulated" / "truth" / "truth.tsv", sep="\t",
                            dtype={"region": str})
        write_tsv(session_accuracy(table, truth, baseline, followup), path)
    acc = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=["n/a", ""],
                      dtype={"atlas": str})
    return acc.assign(atlas=acc["atlas"].fillna(""))


def replicate_config(out_dir, replicate, participants, seed, null=False):
    """The config overrides of one replicate study: its folder, participants and seed.

    The replicate simulates its own study (``bids_dir`` empty) under
    ``<out_dir>/rep-<replicate>``; ``seed + replicate`` seeds it.
    """
    rep = Path(out_dir) / f"rep-{replicate:03d}"
    return rep, {"participants": str(record_paths(rep)["participants"]), "bids_dir": "",
                 "results_dir": str(rep / "results"),
                 "simulate": {"seed": int(seed) + int(replicate), "null_study": bool(null)}}


def _targets(results):
    from prepost.stats.stage import output_paths as stats_paths

    truth = Path(results) / "simulated" / "truth"
    st = stats_paths(results)
    return {"hypotheses": st["hypotheses"], "table": st["table"],
            "truth": str(truth / "truth.tsv"), "effects": str(truth / "effects.json")}


def study_config(snakefile, configfiles=()):
    """The workflow's config as Snakemake merges it: its ``config/config.yaml`` updated by each
    config file in turn (nested keys one by one, lists replaced)."""
    import yaml

    def update(dst, src):
        for k, v in (src or {}).items():
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                update(dst[k], v)
            else:
                dst[k] = v

    cfg = yaml.safe_load((Path(snakefile).parent / "config" / "config.yaml").read_text()) or {}
    for c in configfiles:
        update(cfg, yaml.safe_load(Path(c).read_text()))
    return cfg


def replicate_participants(n, design=None):
    """participants.tsv of a replicate: :func:`prepost.simulate.default_participants`, with the
    arms of a parallel design alternating (active first) in its ``arm_column``, or a
    crossover's orders alternating (active first) in its ``order_column``."""
    from prepost.simulate import default_participants

    table = default_participants(n)
    design = design or {}
    if design.get("type") == "parallel":
        table[design.get("arm_column", "arm")] = [
            design.get("active", "ketamine") if i % 2 == 0 else design.get("control", "placebo")
            for i in range(n)]
    if design.get("type") == "crossover":
        table[design.get("order_column", "order")] = [
            design.get("active", "ketamine") if i % 2 == 0 else design.get("control", "placebo")
            for i in range(n)]
    return table


def _design_arguments(design, parts):
    """The arms (parallel) or condition sessions (crossover) :func:`self_check` scores by."""
    two = {"active": design.get("active"), "control": design.get("control")}
    if design.get("type") == "parallel":
        return {"arms": dict(zip(parts["participant_id"],
                                 parts[design.get("arm_column", "arm")])), **two}
    if design.get("type") == "crossover":
        from prepost.stats.crossover import condition_sessions

        return {"conditions": condition_sessions(design), **two}
    return {}


def replicate_self_check(rep, cfg):
    """:func:`self_check` of a finished replicate study, from the tables it keeps.

    Parameters
    ----------
    rep : path-like
        The replicate's folder (``participants.tsv``, ``results/`` with the statistics tables
        and the simulator's truth).
    cfg : dict
        The study's config (:func:`study_config`): sessions, design, PET reference, p value.
    """
    rep = Path(rep)
    tg = _targets(rep / "results")
    parts = pd.read_csv(record_paths(rep)["participants"], sep="\t", dtype=str)
    design = cfg.get("design") or {}
    eff = json.loads(Path(tg["effects"]).read_text())
    return self_check(pd.read_csv(tg["hypotheses"], sep="\t", dtype={"region": str}),
                      pd.read_csv(tg["table"], sep="\t", dtype={"region": str, "atlas": str,
                                                                "flag": str}),
                      pd.read_csv(tg["truth"], sep="\t", dtype={"region": str}),
                      eff["effects"],
                      cfg["sessions"]["baseline"], cfg["sessions"]["followup"],
                      reference_roi=(cfg.get("pet") or {}).get("reference_roi"),
                      changes=eff.get("planted_changes"),
                      p_value=(cfg.get("stats") or {}).get("p_value", "p_perm"),
                      **_design_arguments(design, parts))


def _first_difference(old, new, path=""):
    """The first key path (dotted) where two parsed configs differ, with both values; None if
    they are equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new), key=str):
            d = _first_difference(old.get(k, "(not set)"), new.get(k, "(not set)"),
                                  f"{path}{k}.")
            if d:
                return d
        return None
    return None if old == new else (path.rstrip("."), old, new)


def replicate_conflict(rep, overrides, participants, cfg):
    """Why an existing replicate folder cannot be continued by this command, or None.

    A study finished or cut short by an earlier command continues only under the settings it
    was run with: its seed and null flag (``config.yaml``), its participants table (the number
    of participants and the design's arms) and the workflow's merged configuration
    (``study.yaml``). Otherwise the tables would mix studies of different settings.

    Parameters
    ----------
    rep : path-like
        The replicate's folder.
    overrides : dict
        :func:`replicate_config`'s overrides of this command.
    participants : pandas.DataFrame
        :func:`replicate_participants` of this command.
    cfg : dict
        :func:`study_config` of this command.
    """
    import yaml

    rec = record_paths(rep)
    fix = ("; continue it with the settings it was run with, or give another OUT_DIR (or "
           "remove the folder to run it anew)")
    if rec["config"].exists():
        old = yaml.safe_load(rec["config"].read_text()) or {}
        d = _first_difference(old.get("simulate"), overrides["simulate"], "simulate.")
        if d:
            return (f"{rep}: this study was run with {d[0]} = {d[1]!r}; this command gives "
                    f"{d[2]!r} (set by --seed and --null){fix}")
    if rec["settings"].exists():  # before the participants: it names a design change
        d = _first_difference(yaml.safe_load(rec["settings"].read_text()),
                              study_settings(cfg))
        if d:
            return (f"{rec['settings']}: this study was run with {d[0] or 'no settings'} = "
                    f"{d[1]!r}; the configuration now gives {d[2]!r} (config/config.yaml and "
                    f"--configfile){fix}")
    if rec["participants"].exists():
        old = pd.read_csv(rec["participants"], sep="\t", dtype=str)
        if not old.equals(participants.astype(str)):
            return (f"{rec['participants']}: this study has {len(old)} participants "
                    f"({', '.join(old.columns)}); this command gives {len(participants)} "
                    f"({', '.join(participants.columns)}; set by --participants and the "
                    f"design's arms){fix}")
    return None


def study_settings(cfg):
    """The merged configuration without what each replicate sets for itself (its participants
    table, dataset and results folders, seed and null flag): what a continued study must
    share with the studies before it (``rep-<i>/study.yaml``)."""
    import copy

    out = copy.deepcopy(cfg)
    for key in ("participants", "bids_dir", "results_dir"):
        out.pop(key, None)
    for key in ("seed", "null_study"):
        (out.get("simulate") or {}).pop(key, None)
    return out


def hold_lock(out_dir):
    """Hold ``OUT_DIR/.lock`` for this process (None when another process holds it).

    The operating system releases it when the process ends however it ends, so a lock found
    held belongs to a running command, and Snakemake locks left in the replicates are stale.
    """
    import fcntl

    f = open(Path(out_dir) / ".lock", "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def run_replicate(rep, overrides, n_participants, snakefile, configfiles=(), cores=2,
                  profile=None, keep=False, extra_args=()):
    """Simulate and analyse one replicate study with Snakemake; write its self-check.

    Returns the :func:`self_check` table (also ``<rep>/self_check.tsv``). An existing
    ``self_check.tsv`` is read, not recomputed: an interrupted run continues where it stopped
    (the caller holds the output folder's lock, :func:`hold_lock`, and stale Snakemake locks
    of the study are removed).
    Unless ``keep``, the replicate's derivatives are removed afterwards except the statistics
    tables and the truth (a default-size study is about 2 GB). ``cores`` None passes no
    ``--cores`` (with a cluster ``profile``, whose jobs setting decides); Snakemake runs in
    ``rep``, so a ``profile`` folder must be given as an absolute path.
    """
    import subprocess
    import sys

    import yaml

    from prepost.io import atomic_path, write_tsv

    rep = Path(rep)
    rec = record_paths(rep)
    done = rec["self_check"]

    def read_done():
        return pd.read_csv(done, sep="\t", keep_default_na=False, na_values=["n/a", ""])

    if done.exists():
        return read_done()
    rep.mkdir(parents=True, exist_ok=True)
    # A study stopped by a kill or a lost session leaves Snakemake's lock behind. The caller
    # holds OUT_DIR's lock (see main), so no other process is running this study: the lock is
    # stale, and the study continues (--rerun-incomplete redoes the jobs it cut short).
    locks = rep / ".snakemake" / "locks"
    if locks.is_dir():
        shutil.rmtree(locks)
    cfg = study_config(snakefile, configfiles)
    design = cfg.get("design") or {}
    parts = replicate_participants(n_participants, design)
    write_tsv(parts, rec["participants"])
    for key, content in (("config", overrides), ("settings", study_settings(cfg))):
        with atomic_path(rec[key]) as tmp:  # read back by replicate_conflict
            tmp.write_text(yaml.safe_dump(content, sort_keys=False))
    tg = _targets(overrides["results_dir"])
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--configfile",
           *[str(c) for c in configfiles], str(rec["config"]),
           *(["--cores", str(cores)] if cores else []), "--rerun-incomplete",
           *(["--profile", str(profile)] if profile else []),
           *extra_args, *tg.values()]
    with open(rep / "snakemake.log", "a") as log:  # a continued study keeps its history
        # the replicate's own working directory: its .snakemake metadata and locks stay in it
        res = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=rep)
    if res.returncode != 0:
        raise RuntimeError(f"replicate {rep.name} failed (exit {res.returncode}); see "
                           f"{rep / 'snakemake.log'}")
    chk = replicate_self_check(rep, cfg)
    results = Path(overrides["results_dir"])
    if not keep:
        for sub in [*results.iterdir(), results / "simulated" / "bids", rep / ".snakemake"]:
            if sub.name not in ("group", "simulated", "logs") and sub.exists():
                shutil.rmtree(sub) if sub.is_dir() else sub.unlink()
    write_tsv(chk, done)
    return read_done()  # as a later call reads it: the summary does not depend on which call


def main(argv=None):
    """Command-line entry point: ``prepost-validate OUT_DIR --replicates K ...``."""
    import argparse

    from prepost.io import write_tsv
    from prepost.simulate import DEFAULTS

    ap = argparse.ArgumentParser(
        prog="prepost-validate",
        description="Run K simulated studies through the whole workflow (planted or null "
                    "effects) and write, per hypothesis, power, false-positive rate, bias and "
                    "interval coverage with Monte Carlo errors, and the chain's accuracy "
                    "(per-session and change bias and correlation) over the studies.")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--replicates", "-k", type=int, required=True, help="number of studies")
    ap.add_argument("--participants", "-n", type=int, default=11)
    ap.add_argument("--null", action="store_true", help="plant no effect (false-positive rates)")
    ap.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                    help="seed of the first replicate; replicate i uses seed + i")
    ap.add_argument("--configfile", nargs="+", default=[], type=Path,
                    help="the study's config files (e.g. sizes, hypotheses); the replicate's "
                         "folder, participants and seed override them")
    ap.add_argument("--snakefile", type=Path, default=Path("Snakefile"))
    ap.add_argument("--cores", type=int,
                    help="cores of the machine (default 2); with --concurrent R, each study "
                         "gets cores / R. With --profile it is passed on only when given (it "
                         "caps every rule's threads, on the cluster too)")
    ap.add_argument("--concurrent", type=int, default=1, metavar="R",
                    help="studies run at once (default 1): on a cluster profile, R studies' "
                         "jobs are submitted together; on one machine, R > 1 fills the cores a "
                         "single study leaves idle while it waits on its chains")
    ap.add_argument("--profile", help="Snakemake profile: a folder (e.g. profiles/slurm) or "
                                      "a profile name Snakemake finds itself")
    ap.add_argument("--keep", action="store_true", help="keep each replicate's derivatives")
    args = ap.parse_args(argv)
    if not args.snakefile.is_file():
        ap.error(f"--snakefile {args.snakefile}: no such file; run from the workflow's folder "
                 "or give the path of its Snakefile")
    for c in args.configfile:
        if not c.is_file():
            ap.error(f"--configfile {c}: no such file")
    if args.replicates < 1 or args.participants < 2:
        ap.error("--replicates must be >= 1 and --participants >= 2")
    if not 1 <= args.concurrent <= args.replicates:
        ap.error(f"--concurrent must be between 1 and --replicates ({args.replicates})")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    lock = hold_lock(args.out_dir)
    if lock is None:
        ap.error(f"{args.out_dir}: another prepost-validate is running on this folder; wait for "
                 "it to end or give another OUT_DIR")
    cores = args.cores if args.profile else max(1, (args.cores or 2) // args.concurrent)
    if args.profile and Path(args.profile).is_dir():  # each study's Snakemake runs in its folder
        args.profile = str(Path(args.profile).resolve())

    cfg = study_config(args.snakefile, args.configfile)
    sessions = cfg.get("sessions") or {}
    parts = replicate_participants(args.participants, cfg.get("design"))
    reps = [replicate_config(args.out_dir.resolve(), i, args.participants, args.seed, args.null)
            for i in range(args.replicates)]
    for rep, over in reps:  # before any study starts
        why = replicate_conflict(rep, over, parts, cfg)
        if why:
            ap.error(why)
    stop = threading.Event()  # after a failure, no new study starts; running ones finish
    finished, written = {}, threading.Lock()

    def write_tables():
        """The tables of the studies finished so far, in replicate order: a run that is still
        going or was cut short has its table, and the last write is the whole run's."""
        done = [finished[i] for i in sorted(finished)]
        allc = pd.concat([c for c, _ in done], ignore_index=True)
        acc = pd.concat([a for _, a in done], ignore_index=True)
        write_tsv(allc, args.out_dir / "replicates.tsv")
        write_tsv(acc, args.out_dir / "accuracy.tsv")
        tables = summarise_replicates(allc), summarise_accuracy(acc)
        write_tsv(tables[0], args.out_dir / "summary.tsv", float_format="%.4g")
        write_tsv(tables[1], args.out_dir / "accuracy_summary.tsv", float_format="%.4g")
        return tables

    def one(i):
        if stop.is_set():
            return None
        rep, over = reps[i]
        tag = {"replicate": i, "seed": over["simulate"]["seed"]}
        try:
            chk = run_replicate(rep, over, args.participants, args.snakefile.resolve(),
                                [c.resolve() for c in args.configfile], cores, args.profile,
                                args.keep)
            acc = replicate_accuracy(rep, sessions.get("baseline", "pre"),
                                     sessions.get("followup", "post"))
            with written:
                finished[i] = chk.assign(**tag), acc.assign(**tag)
                try:
                    write_tables()
                except Exception:
                    del finished[i]  # the tables stay those of the others
                    raise
                n_done = len(finished)
        except Exception:
            stop.set()
            raise
        print(f"replicate {i + 1}/{args.replicates} done ({rep}); {n_done} in "
              f"{args.out_dir / 'summary.tsv'}", flush=True)

    # The studies an earlier command finished are read back first, so the tables hold them
    # whatever happens to the others.
    for i, (rep, _) in enumerate(reps):
        if record_paths(rep)["self_check"].exists():
            one(i)
    # each study is its own Snakemake process: the threads only wait on them
    pool = ThreadPoolExecutor(max_workers=args.concurrent)
    try:
        futures = {i: pool.submit(one, i) for i in range(args.replicates) if i not in finished}
        wait(futures.values())
    except BaseException:  # e.g. Ctrl-C: no study waiting in the queue starts
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    failed = [f.exception() for f in futures.values() if f.exception() is not None]
    if failed:
        tables = f" and in {args.out_dir / 'summary.tsv'}" if finished else ""
        raise RuntimeError("; ".join(str(e) for e in failed) + " (finished replicates are "
                           f"kept{tables}: the same command continues with the others)")
    summ, acc_summ = write_tables()
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(summ.to_string(index=False))
        print(acc_summ.to_string(index=False))


if __name__ == "__main__":
    main()
