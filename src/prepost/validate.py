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

__all__ = ["fc_recovery", "find_estimates", "network_pairs", "read_network_fc"]


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
    est, tru, rows = {}, {}, []
    for (sub, ses), path in sorted(estimates.items()):
        e = read_network_fc(path)
        t = _truth_fc(truth_paths(truth_dir, sub, ses)["network_fc"])
        est[sub, ses], tru[sub, ses] = e, t
        ok = e.notna()
        rows.append((sub, ses, float((e - t)[ok].mean()),
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
            "change_r": float(np.corrcoef(dE[ok], dT[ok])[0, 1]),
            "change_sd_estimate": float(np.std(dE[ok])),
            "change_sd_truth": float(np.std(dT[ok])),
        })
    return sessions, summary


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
