"""Weighted graph measures of FC matrices: thresholding, strength, eigenvector centrality,
participation coefficient and modularity, per parcel and for named regions.

The measures are short closed forms on dense (n, n) arrays and are written here with numpy
(networkx and bctpy work node by node or on their own graph objects, and bctpy pins old numpy
behaviour); the tests check them against networkx/bctpy. Louvain community detection, which is
not a closed form, is delegated to networkx (:func:`louvain_partition`).

Missing parcels (NaN rows/columns) are isolated nodes of the graph and get NaN measures.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from prepost.errors import InputError

__all__ = [
    "DEFAULT_DENSITIES",
    "DEFAULT_REGIONS",
    "valid_nodes",
    "proportional_threshold",
    "strength",
    "eigenvector_centrality",
    "participation_coefficient",
    "modularity",
    "louvain_partition",
    "graph_measures",
]

DEFAULT_DENSITIES = (0.05, 0.10, 0.15, 0.20)
DEFAULT_REGIONS = {"PCC": "pCunPCC"}


def _square(W):
    W = np.asarray(W, float)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise InputError(None, "matrix", "a square (n, n) connectivity matrix", f"shape {W.shape}")
    return W


def valid_nodes(W):
    """Nodes whose row has at least one finite off-diagonal value."""
    W = _square(W)
    off = W.copy()
    np.fill_diagonal(off, np.nan)
    return np.isfinite(off).any(axis=1)


def proportional_threshold(W, density):
    """Keep the strongest ``density`` fraction of edges among the positive ones.

    The number of kept edges is ``round(density * m)`` with ``m = n_valid (n_valid - 1) / 2``
    counted over valid (non-NaN) nodes, taken in decreasing weight among the positive edges only
    (so fewer are kept when fewer are positive). As ``bct.threshold_proportional`` when the top
    edges are positive; ties at the cut-off are broken by position. The result is symmetric with a
    zero diagonal and zeros for NaN entries.
    """
    W = _square(W)
    if not 0 < density <= 1:
        raise InputError(None, "density", "a fraction in (0, 1]", density)
    n = W.shape[0]
    keep = valid_nodes(W)
    nv = int(keep.sum())
    iu = np.triu_indices(n, 1)
    w = np.nan_to_num((W + W.T)[iu] / 2, nan=0.0)
    k = int(round(density * nv * (nv - 1) / 2))
    order = np.argsort(-w, kind="stable")
    chosen = order[:k]
    chosen = chosen[w[chosen] > 0]
    out = np.zeros_like(W)
    out[iu[0][chosen], iu[1][chosen]] = w[chosen]
    return out + out.T


def strength(A):
    """Node strength: sum of edge weights."""
    return _square(A).sum(axis=1)


def eigenvector_centrality(A):
    """Leading eigenvector of a non-negative symmetric matrix, unit Euclidean norm, positive.

    Same normalisation as ``networkx.eigenvector_centrality_numpy``. On a disconnected graph the
    leading eigenvector lives on the component with the largest eigenvalue (others get ~0).
    """
    A = _square(A)
    w, v = np.linalg.eigh((A + A.T) / 2)
    vec = v[:, -1]
    vec = vec * np.sign(vec.sum()) if vec.sum() != 0 else np.abs(vec)
    return np.abs(vec) / np.linalg.norm(vec)


def participation_coefficient(A, partition):
    """Guimerà & Amaral participation coefficient ``1 - sum_s (k_is / k_i)^2``.

    ``partition`` is one module label per node (e.g. the atlas networks). Nodes with zero strength
    get 0, as in ``bct.participation_coef``.
    """
    A = _square(A)
    labels, codes = np.unique(np.asarray(partition), return_inverse=True)
    onehot = np.zeros((len(codes), len(labels)))
    onehot[np.arange(len(codes)), codes] = 1
    k = A.sum(axis=1)
    kis = A @ onehot
    with np.errstate(invalid="ignore", divide="ignore"):
        p = 1 - ((kis / k[:, None]) ** 2).sum(axis=1)
    return np.where(k > 0, p, 0.0)


def modularity(A, partition, resolution=1.0):
    """Newman's weighted modularity Q of a given partition.

    ``Q = 1/(2m) sum_ij [A_ij - gamma k_i k_j / (2m)] delta(c_i, c_j)``, as
    ``networkx.community.modularity`` (self-loops should be zero).
    """
    A = _square(A)
    labels, codes = np.unique(np.asarray(partition), return_inverse=True)
    two_m = A.sum()
    if two_m <= 0:
        return np.nan
    k = A.sum(axis=1)
    q = 0.0
    for c in range(len(labels)):
        sel = codes == c
        q += A[np.ix_(sel, sel)].sum() - resolution * k[sel].sum() ** 2 / two_m
    return q / two_m


def louvain_partition(A, resolution=1.0, seed=0):
    """Louvain communities (networkx) as one integer label per node, and their modularity."""
    import networkx as nx

    A = _square(A)
    G = nx.from_numpy_array(A)
    comms = nx.community.louvain_communities(G, weight="weight", resolution=resolution, seed=seed)
    labels = np.empty(A.shape[0], int)
    for i, c in enumerate(comms):
        labels[list(c)] = i
    return labels, modularity(A, labels, resolution)


def graph_measures(W, networks, densities=DEFAULT_DENSITIES, names=None, regions=None,
                   louvain=False, seed=0):
    """Per-parcel and per-region graph measures over a list of proportional thresholds.

    Parameters
    ----------
    W : array (n, n)
        FC matrix (e.g. Fisher z); NaN rows for missing parcels.
    networks : array-like (n,)
        Partition for the participation coefficient and the modularity.
    densities : sequence of float
        Proportional thresholds (fraction of edges kept).
    names : array-like (n,) or None
        Parcel names, used by ``regions``.
    regions : dict or None
        ``{region: regex}`` over ``names``, e.g. ``{'PCC': 'pCunPCC'}``; region values are the
        mean over the matching parcels.
    louvain : bool
        Also run Louvain (networkx) and report its Q.

    Returns
    -------
    parcels : DataFrame
        Columns density, parcel (index 0..n-1), network, strength, eigenvector_centrality,
        participation_coefficient.
    summary : DataFrame
        Columns density, measure, region, value: the region means of each node measure
        (regions + every network) and the global ``modularity`` (and ``louvain_modularity``).
    """
    W = _square(W)
    networks = np.asarray(networks)
    if networks.shape[0] != W.shape[0]:
        raise InputError(None, "networks", f"{W.shape[0]} labels (one per parcel)",
                         networks.shape[0])
    ok = valid_nodes(W)
    region_masks = {}
    if regions:
        if names is None:
            raise InputError(None, "names", "parcel names to match regions against")
        names = pd.Series(np.asarray(names, dtype=str))
        region_masks = {r: names.str.contains(p, regex=True).to_numpy() for r, p in regions.items()}
    for net in dict.fromkeys(networks):
        region_masks.setdefault(str(net), networks == net)
    prow, srow = [], []
    node_measures = ("strength", "eigenvector_centrality", "participation_coefficient")
    for d in densities:
        A = proportional_threshold(W, d)
        Av = A[np.ix_(ok, ok)]
        vals = {m: np.full(W.shape[0], np.nan) for m in node_measures}
        vals["strength"][ok] = strength(Av)
        vals["eigenvector_centrality"][ok] = eigenvector_centrality(Av)
        vals["participation_coefficient"][ok] = participation_coefficient(Av, networks[ok])
        prow.append(pd.DataFrame({"density": d, "parcel": np.arange(W.shape[0]),
                                  "network": networks, **vals}))
        for m in node_measures:
            for r, sel in region_masks.items():
                v = vals[m][sel]
                srow.append((d, m, r, float(np.nanmean(v)) if np.isfinite(v).any() else np.nan))
        srow.append((d, "modularity", "global", float(modularity(Av, networks[ok]))))
        if louvain:
            srow.append((d, "louvain_modularity", "global", float(louvain_partition(Av, seed=seed)[1])))
    return (pd.concat(prow, ignore_index=True),
            pd.DataFrame(srow, columns=["density", "measure", "region", "value"]))
