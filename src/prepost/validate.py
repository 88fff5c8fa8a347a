"""Recovery of the simulated study's planted network FC through the whole chain.

The simulator writes, per session, the expected parcel-pair correlation of every network pair
(``network-fc.tsv``, see :func:`prepost.simulate.truth_paths`); the connectivity stage writes the
estimated network FC (mean Fisher z over parcel pairs). :func:`fc_recovery` scores the estimates
against ``arctanh`` of the truth, per session and for the follow-up minus baseline change, with the
figures a user needs to judge whether the chain recovers what was planted:

* per-session bias (mean over network pairs of estimate minus truth) and correlation over pairs;
* bias of the change (per participant, averaged over pairs; its mean, SD and t over participants);
* correlation of estimated and true per-participant changes, pooled over participants and pairs.

Only files are read: the estimators never see the truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from prepost.anat import TEMPLATE
from prepost.simulate import NETWORKS, truth_paths

__all__ = ["expected_verdict", "fc_recovery", "find_estimates", "network_pairs", "planted_change",
           "read_network_fc", "self_check", "session_accuracy", "truth_values"]


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
        (``"A-B"``, either order), ``VT_<model>`` (any kinetic model of VT), and ``DVR_<model>`` or
        ``BPND_<model>`` (from VT and ``reference_roi``).
    reference_roi : str or None
        The reference region of DVR and BPND.

    Returns
    -------
    pandas.Series or None
        None when the simulator writes no truth for the measure or region (e.g. ALFF, gradients,
        a region it does not summarise).
    """
    region = str(region)
    if measure == "fc_within":
        return _truth_series(truth, "fc_within_z", region)
    if measure == "fc_between" and "-" in region:
        a, b = region.split("-", 1)
        found = _truth_series(truth, "fc_between_z", f"{a}-{b}")
        return found if found is not None else _truth_series(truth, "fc_between_z", f"{b}-{a}")
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


def planted_change(effects, measure, region, baseline_mean=np.nan):
    """The change the simulator's ``effects`` plant in a measure, in the measure's units.

    Network FC changes are Fisher z (``within_default_dz``, ``sommot_default_dz``, ``global_dz``
    for every other pair); a VT change is its per cent (``pcc_vt_pct`` on top of
    ``global_vt_pct`` in PCC, ``global_vt_pct`` elsewhere in grey matter, none in white matter)
    times ``baseline_mean``. NaN for measures the simulator plants nothing in on purpose (ALFF,
    gradients, DVR): the realised truth, where it exists, is what is scored.
    """
    region = str(region)
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
                      "estimate", "ci_low", "ci_high", "covered", "n", "verdict", "expected",
                      "agrees", "note"]


def _modality(group_table, measure):
    m = group_table.loc[group_table["measure"] == measure, "modality"]
    return str(m.iloc[0]) if len(m) else ""


def self_check(hypotheses, group_table, truth, effects, baseline="pre", followup="post",
               reference_roi=None):
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

    Returns
    -------
    pandas.DataFrame
        One row per hypothesis (:data:`SELF_CHECK_COLUMNS`): ``planted`` (the configured change in
        the estimate's units; 0 for a correlation of a PET with an fMRI change, which the
        simulator draws independently), ``realised`` (the mean true change over the
        participants the test used, or the correlation of their true changes: the session noise
        makes it differ from ``planted``), ``covered`` (the interval holds ``realised``),
        ``expected`` (the verdict the planted change calls for) and ``agrees``.
    """
    from prepost.stats.group import change_column, change_scores

    delta = change_scores(group_table, baseline, followup)
    rows = []
    for h in hypotheses.itertuples(index=False):
        row = {c: getattr(h, c, np.nan) for c in ("name", "test", "measure", "region", "direction",
                                                   "estimate", "ci_low", "ci_high", "n",
                                                   "verdict")}
        row.update(planted=np.nan, realised=np.nan, note="")
        if h.test == "paired":
            col, why = change_column(delta, {"measure": h.measure, "region": h.region})
            tv = truth_values(truth, h.measure, h.region, reference_roi)
            if tv is None:
                row["note"] = "the simulator writes no truth of this measure and region"
            elif col is None:
                row["note"] = why
            else:
                subs = delta.index[np.isfinite(delta[col].to_numpy(float))]
                pre = tv.reindex([(s, baseline) for s in subs]).to_numpy()
                post = tv.reindex([(s, followup) for s in subs]).to_numpy()
                row["realised"] = float(np.nanmean(post - pre))
                row["planted"] = planted_change(effects, h.measure, h.region, np.nanmean(pre))
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
                d = [t.reindex([(s, followup) for s in subs]).to_numpy()
                     - t.reindex([(s, baseline) for s in subs]).to_numpy() for t in (tx, ty)]
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
    has them, scored as :func:`fc_recovery` does. VT: per kinetic model, the regions the
    simulator has a truth for (per cent bias per session; change bias in VT units).

    Returns
    -------
    pandas.DataFrame
        One row per scored set: ``measure``, ``atlas``, ``regions`` (how many), and the
        :func:`fc_recovery` summary (``bias_<baseline>``, ``bias_<followup>``,
        ``session_r_min``, ``change_bias_mean``, ``change_bias_t``, ``change_r``...); VT rows
        also have ``bias_pct`` (mean per cent bias over sessions and regions).
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
    for m in sorted(x for x in g["measure"].unique() if str(x).startswith("VT_")):
        regions = [r for r in dict.fromkeys(g.loc[g["measure"] == m, "region"].astype(str))
                   if truth_values(truth, m, r) is not None]
        if not regions:
            continue
        est, tru = _session_series(g, truth, [(m, r) for r in regions])
        _, summ = _score(est, tru, baseline, followup)
        pct = [100 * np.nanmean((est[k] - tru[k]) / tru[k]) for k in est]
        rows.append({"measure": m, "atlas": "", "regions": len(regions), **summ,
                     "bias_pct": float(np.nanmean(pct))})
    return pd.DataFrame(rows)
