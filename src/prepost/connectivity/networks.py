"""Network-level summaries of FC and the tidy per subject/session table of fMRI measures.

All FC summaries take a Fisher-z matrix (``(n, n)``, NaN rows/columns for missing parcels, any
diagonal: it is never used) and the per-parcel network labels. Means are over parcel *pairs*
(``i < j``), NaN-aware; a summary with no finite pair is NaN.

* :func:`network_fc` - the network x network matrix: diagonal = mean within-network FC over
  distinct parcel pairs, off-diagonal = mean FC over all parcel pairs of the two networks.
* :func:`segregation_index` - Chan et al. (2014, PNAS): ``(W - B) / W`` with ``W`` the mean of all
  within-network pairs and ``B`` of all between-network pairs, pooled over networks, after setting
  negative values to zero as in Chan et al.
* :func:`integration` - mean FC between the ``lower`` and ``higher`` network sets of the
  hierarchy (pooled over parcel pairs) and each lower-higher network pair.
* :func:`global_fc` - mean FC over all parcel pairs (global synchrony; lower = desynchronised).
* :func:`global_signal_amplitude` - SD over time of the mean parcel signal, in the units of the
  time series (so compare it between sessions only for identically scaled series).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from prepost.errors import InputError
from prepost.connectivity.atlas import Atlas, validate_hierarchy

__all__ = [
    "TIDY_COLUMNS",
    "network_fc",
    "within_network_fc",
    "segregation_index",
    "integration",
    "global_fc",
    "global_signal_amplitude",
    "tidy_fmri_measures",
]

TIDY_COLUMNS = ["participant_id", "session", "modality", "measure", "region", "value"]


def _prep(z, networks):
    z = np.asarray(z, float)
    networks = np.asarray(networks).astype(str)
    if z.ndim != 2 or z.shape[0] != z.shape[1]:
        raise InputError(None, "fc", "a square (n, n) matrix", f"shape {z.shape}")
    if networks.shape[0] != z.shape[0]:
        raise InputError(None, "networks", f"{z.shape[0]} labels (one per parcel)",
                         networks.shape[0])
    return z, networks


def _pair_mean(z, a, b):
    """Mean of z over pairs i in a, j in b, i != j, each unordered pair once when a == b."""
    block = z[np.ix_(a, b)]
    if np.array_equal(a, b):
        block = block[np.triu_indices(block.shape[0], 1)]
    vals = block[np.isfinite(block)]
    return float(vals.mean()) if vals.size else np.nan


def network_fc(z, networks, order=None):
    """Network x network mean FC (DataFrame; diagonal = within-network, see module doc)."""
    z, networks = _prep(z, networks)
    order = list(dict.fromkeys(networks)) if order is None else list(order)
    idx = {n: np.flatnonzero(networks == n) for n in order}
    out = np.full((len(order), len(order)), np.nan)
    for i, a in enumerate(order):
        for j in range(i, len(order)):
            out[i, j] = out[j, i] = _pair_mean(z, idx[a], idx[order[j]])
    return pd.DataFrame(out, index=order, columns=order)


def within_network_fc(z, networks, order=None):
    """Mean within-network FC per network (Series)."""
    m = network_fc(z, networks, order)
    return pd.Series(np.diag(m.to_numpy()), index=m.index)


def segregation_index(z, networks, negative_to_zero=True):
    """Chan et al. (2014) system segregation ``(W - B) / W`` over all parcel pairs."""
    z, networks = _prep(z, networks)
    iu = np.triu_indices(z.shape[0], 1)
    vals = z[iu]
    if negative_to_zero:
        vals = np.where(vals < 0, 0.0, vals)
    same = networks[iu[0]] == networks[iu[1]]
    ok = np.isfinite(vals)
    if not (ok & same).any() or not (ok & ~same).any():
        return np.nan
    w = vals[ok & same].mean()
    b = vals[ok & ~same].mean()
    return float((w - b) / w) if w != 0 else np.nan


def integration(z, networks, hierarchy=None):
    """Lower-higher integration: ``{'lower-higher': pooled mean, 'A-B': network pair mean, ...}``.

    ``hierarchy`` maps exactly two levels (default ``{'lower': [Vis, SomMot], 'higher':
    [Default, Cont]}``); the first is the lower one.
    """
    z, networks = _prep(z, networks)
    h = validate_hierarchy(hierarchy, list(dict.fromkeys(networks)))
    if len(h) != 2:
        raise InputError(None, "hierarchy", "exactly two levels (lower, higher)", list(h))
    (lo_name, lo), (hi_name, hi) = list(h.items())
    a = np.flatnonzero(np.isin(networks, lo))
    b = np.flatnonzero(np.isin(networks, hi))
    out = {f"{lo_name}-{hi_name}": _pair_mean(z, a, b)}
    for n1 in lo:
        for n2 in hi:
            out[f"{n1}-{n2}"] = _pair_mean(z, np.flatnonzero(networks == n1),
                                           np.flatnonzero(networks == n2))
    return out


def global_fc(z):
    """Mean FC over all distinct parcel pairs (NaN-aware)."""
    z = np.asarray(z, float)
    v = z[np.triu_indices(z.shape[0], 1)]
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else np.nan


def global_signal_amplitude(timeseries):
    """SD (ddof=1) over time of the mean of the available parcel signals."""
    ts = np.asarray(timeseries, float)
    ok = np.isfinite(ts).all(axis=0)
    if not ok.any():
        return np.nan
    return float(np.std(ts[:, ok].mean(axis=1), ddof=1))


# ----------------------------------------------------------------------------------------------
def tidy_fmri_measures(participant_id, session, timeseries, atlas, t_r=None, fc_z=None,
                       hierarchy=None, sample_mask=None, alff_band=(0.01, 0.08),
                       densities=(0.10, 0.15, 0.20), regions=None, gradient=None,
                       measures=("fc", "alff", "graph", "gradient")):
    """Long-format fMRI measures of one subject/session.

    Parameters
    ----------
    participant_id, session : str
    timeseries : array (n_volumes, n_parcels)
        Parcel signals in atlas order (missing parcels all-NaN). Censored volumes included when
        ``sample_mask`` is given (they are then dropped for FC and handled by Lomb-Scargle for
        ALFF).
    atlas : Atlas
    t_r : float or None
        Repetition time (s); needed for ALFF/fALFF (skipped when None).
    fc_z : array (n, n) or None
        Fisher-z FC; computed (Pearson, no shrinkage) from the retained volumes when None.
    hierarchy : dict or None
        Lower/higher network sets (default lower = Vis, SomMot; higher = Default, Cont).
    densities : sequence of float
        Proportional thresholds; graph measures are averaged over them.
    regions : dict or None
        ``{region: name regex}`` for regional graph/ALFF/gradient values; default
        ``{'PCC': 'pCunPCC'}`` when the atlas has such parcels.
    gradient : array (n_parcels,) or None
        This subject's principal gradient already aligned to a group reference (recommended for
        group studies, see :func:`~prepost.connectivity.gradients.align_gradients`). When None the
        subject's own gradient 1 is computed and oriented unimodal (Vis, SomMot) -> transmodal
        (Default), which may swap with gradient 2 in noisy data.
    measures : sequence of {'fc', 'alff', 'graph', 'gradient'}

    Returns
    -------
    DataFrame with columns participant_id, session, modality ('fmri'), measure, region, value.

    Measures: ``fc_within`` (region = network), ``fc_between`` (``A-B`` for every network pair in
    atlas order, e.g. ``SomMot-Default``), ``integration`` (``lower-higher`` and each pair),
    ``segregation``, ``global_fc``, ``gs_amplitude`` (region ``global``), ``alff``/``falff``
    (network means and regions), ``strength``/``eigenvector_centrality``/
    ``participation_coefficient`` (regions and networks; mean over densities), ``modularity``
    (``global``; atlas networks as the partition), ``gradient1_range``/``gradient1_variance``
    (``global``) and ``gradient1_position`` (networks and regions). FC values are Fisher z.
    """
    from prepost.connectivity import alff as _alff
    from prepost.connectivity import fc as _fc
    from prepost.connectivity import graph as _graph
    from prepost.connectivity import gradients as _grad

    if not isinstance(atlas, Atlas):
        raise InputError(None, "atlas", "an Atlas from load_atlas", type(atlas).__name__)
    ts = np.asarray(timeseries, float)
    if ts.ndim != 2 or ts.shape[1] != atlas.n_parcels:
        raise InputError(None, "timeseries", f"(n_volumes, {atlas.n_parcels}) for {atlas.name}",
                         f"shape {ts.shape}")
    nets = atlas.parcel_networks.astype(str)
    order = atlas.networks
    names = atlas.table["name"].astype(str)
    if regions is None:
        regions = {"PCC": "pCunPCC"} if names.str.contains("pCunPCC").any() else {}
    region_sel = {r: names.str.contains(p, regex=True).to_numpy() for r, p in regions.items()}
    kept = ts
    if sample_mask is not None:
        sm = np.asarray(sample_mask)
        kept = ts[sm] if sm.dtype == bool else ts[sm.astype(int)]
    rows = []

    def add(measure, region, value):
        rows.append((participant_id, session, "fmri", measure, region,
                     float(value) if value is not None else np.nan))

    def net_and_region_means(measure, per_parcel):
        per_parcel = np.asarray(per_parcel, float)
        for n in order:
            v = per_parcel[nets == n]
            add(measure, n, np.nanmean(v) if np.isfinite(v).any() else np.nan)
        for r, sel in region_sel.items():
            v = per_parcel[sel]
            add(measure, r, np.nanmean(v) if np.isfinite(v).any() else np.nan)

    need_fc = {"fc", "graph", "gradient"} & set(measures)
    if fc_z is None and need_fc:
        fc_z = _fc.fisher_z(_fc.pearson(kept))
    if "fc" in measures:
        nf = network_fc(fc_z, nets, order)
        for n in order:
            add("fc_within", n, nf.loc[n, n])
        for i, a in enumerate(order):
            for b in order[i + 1:]:
                add("fc_between", f"{a}-{b}", nf.loc[a, b])
        try:
            for k, v in integration(fc_z, nets, hierarchy).items():
                add("integration", k, v)
        except InputError:
            if hierarchy is not None:
                raise  # the default hierarchy may not fit a custom atlas; a configured one must
        add("segregation", "global", segregation_index(fc_z, nets))
        add("global_fc", "global", global_fc(fc_z))
        add("gs_amplitude", "global", global_signal_amplitude(kept))
    if "alff" in measures and t_r is not None:
        a, f = _alff.compute_alff(ts, t_r, alff_band, sample_mask)
        net_and_region_means("alff", a)
        net_and_region_means("falff", f)
    if "graph" in measures:
        W = np.array(fc_z, float)
        np.fill_diagonal(W, 0.0)
        parcels, summary = _graph.graph_measures(W, nets, densities, names, regions)
        means = summary.groupby(["measure", "region"], sort=False)["value"].mean()
        for (m, r), v in means.items():
            add(m, r, v)
    if "gradient" in measures:
        if gradient is None:
            g, _ = _grad.fc_gradients(fc_z, n_components=min(10, atlas.n_parcels - 2))
            g1 = _grad.orient_gradient(g[:, 0], nets)
        else:
            g1 = np.asarray(gradient, float).reshape(-1)
            if g1.shape[0] != atlas.n_parcels:
                raise InputError(None, "gradient", f"{atlas.n_parcels} values", g1.shape[0])
        s = _grad.gradient_summary(g1, nets)
        add("gradient1_range", "global", s["range"])
        add("gradient1_variance", "global", s["variance"])
        net_and_region_means("gradient1_position", g1)
    return pd.DataFrame(rows, columns=TIDY_COLUMNS)
