"""Paired Network-Based Statistic (NBS) for pre/post connectivity matrices.

The NBS (Zalesky et al., 2010) controls the family-wise error rate over the edges of a
connectivity matrix at the level of connected components: each edge gets a paired t statistic,
edges above a primary threshold form a graph, and the size of each connected component is
compared with the null distribution of the largest component size.

In a paired design the null hypothesis is that each subject's difference matrix
(``post - pre``) is symmetric about zero, so the sign of a whole difference matrix is
exchangeable: a permutation multiplies subject ``i``'s matrix by ``s_i`` in ``{-1, +1}``. With
``n <= 16`` subjects every one of the ``2**n`` sign patterns is enumerated and the p-values are
exact; otherwise random sign patterns are drawn.

This is written here rather than taken from bctpy (:func:`bct.nbs_bct`) because bctpy draws
random permutations only and loops over edges in Python (about half a second per permutation
at 200 nodes); for the same sign patterns the component sizes, the null distribution and the
p-values are identical (``p = #{null >= size} / n_perm``, the observed statistic is not added to
the null), see :func:`bct_sign_flips`.

References
----------
Zalesky A, Fornito A, Bullmore ET (2010) Network-based statistic: identifying differences in
brain networks. NeuroImage 53:1197-1207.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from prepost.errors import InputError
from prepost.stats.paired import sign_flips

__all__ = ["NBSResult", "nbs_paired", "nbs_two_sample", "bct_sign_flips", "paired_edge_t"]

_TAILS = ("both", "right", "left")
_SIZES = ("extent", "intensity")


@dataclass
class NBSResult:
    """Result of :func:`nbs_paired`.

    Attributes
    ----------
    t : numpy.ndarray, shape (n_nodes, n_nodes)
        Signed paired t statistic of ``post - pre`` per edge (symmetric, zero diagonal).
    components : list of numpy.ndarray, each of shape (n_edges_k, 2)
        Edges ``(i, j)`` with ``i < j`` of each supra-threshold component, largest first.
    nodes : list of numpy.ndarray
        Nodes of each component.
    sizes : numpy.ndarray, shape (n_components,)
        Size of each component: number of edges ('extent') or sum of
        ``stat - thresh`` over its edges ('intensity').
    pvals : numpy.ndarray, shape (n_components,)
        FWER-corrected p-value of each component.
    null : numpy.ndarray, shape (n_perm,)
        Largest component size under each sign pattern (0 when no edge passes).
    adj : numpy.ndarray of int, shape (n_nodes, n_nodes)
        Component label (1-based, in the order of ``components``) of each supra-threshold
        edge, 0 elsewhere.
    n_perm : int
        Number of sign patterns in the null.
    exact : bool
        True when all ``2**n`` sign patterns were enumerated.
    thresh, tail, size : float, str, str
        The settings used.
    """

    t: np.ndarray
    components: list = field(default_factory=list)
    nodes: list = field(default_factory=list)
    sizes: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pvals: np.ndarray = field(default_factory=lambda: np.zeros(0))
    null: np.ndarray = field(default_factory=lambda: np.zeros(0))
    adj: np.ndarray | None = None
    n_perm: int = 0
    exact: bool = False
    thresh: float = float("nan")
    tail: str = "both"
    size: str = "extent"


def bct_sign_flips(n_perm, n_subjects, seed):
    """Sign patterns drawn exactly as :func:`bct.nbs_bct` (bctpy) draws them when ``paired``.

    bctpy draws, for each permutation in turn, ``np.sign(0.5 - rng.rand(1, n_subjects))`` from
    ``np.random.RandomState(seed)``; drawing all rows at once consumes the same stream in the
    same order.

    Parameters
    ----------
    n_perm : int
        Number of permutations (bctpy's ``k``).
    n_subjects : int
        Number of subjects.
    seed : int
        bctpy's ``seed``.

    Returns
    -------
    flips : numpy.ndarray of int8, shape (n_perm, n_subjects)
        Pass it as ``flips`` to :func:`nbs_paired` to reproduce bctpy's null distribution.
    """
    rng = np.random.RandomState(seed)
    return np.sign(0.5 - rng.rand(int(n_perm), int(n_subjects))).astype(np.int8)


def _differences(X_pre, X_post):
    X_pre = np.asarray(X_pre, dtype=float)
    if X_post is None:
        D = X_pre
    else:
        X_post = np.asarray(X_post, dtype=float)
        if X_post.shape != X_pre.shape:
            raise InputError(field="X_pre/X_post", expected="arrays of the same shape",
                             found=f"{X_pre.shape} and {X_post.shape}")
        D = X_post - X_pre
    if D.ndim != 3 or D.shape[1] != D.shape[2]:
        raise InputError(field="X", expected="an array of shape (n_subjects, n_nodes, n_nodes)",
                         found=D.shape)
    if D.shape[0] < 2:
        raise InputError(field="X", expected="at least 2 subjects", found=D.shape[0])
    iu = np.triu_indices(D.shape[1], 1)
    upper = D[:, iu[0], iu[1]]
    lower = D.transpose(0, 2, 1)[:, iu[0], iu[1]]
    if not np.all(np.isfinite(upper)):
        raise InputError(field="X", expected="finite off-diagonal values (no NaN or inf)")
    if not np.allclose(upper, lower, rtol=1e-7, atol=1e-10):
        raise InputError(field="X", expected="symmetric matrices")
    return np.ascontiguousarray(upper), iu


def _t_from_sums(S, ss, n):
    """Paired t from the sum ``S`` and raw sum of squares ``ss`` of the differences.

    Same arithmetic as bctpy's ``ttest_paired_stat_only`` so that thresholding agrees:
    ``t = mean / sqrt((ss - S**2 / n) / (n - 1)) * sqrt(n)``. An edge with zero variance
    gets t = 0 when its mean is 0 and +/-inf otherwise.
    """
    css = ss - S * S / n
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (S / n) / np.sqrt(css / (n - 1)) * np.sqrt(n)
    bad = ~(css > 0)
    if np.any(bad):
        t = np.where(bad, np.sign(S) * np.inf, t)
        t = np.where(bad & (S == 0), 0.0, t)
    return t


def paired_edge_t(X_pre, X_post=None):
    """Paired t statistic of ``post - pre`` at every edge.

    Parameters
    ----------
    X_pre : array-like of shape (n_subjects, n_nodes, n_nodes)
        Baseline matrices, or the differences ``post - pre`` when ``X_post`` is None.
    X_post : array-like of shape (n_subjects, n_nodes, n_nodes) or None
        Follow-up matrices.

    Returns
    -------
    t : numpy.ndarray of shape (n_nodes, n_nodes)
        Symmetric, zero diagonal; equals :func:`scipy.stats.ttest_rel` ``(post, pre)`` per edge.
    """
    D, iu = _differences(X_pre, X_post)
    n = D.shape[0]
    t = _t_from_sums(D.sum(axis=0), np.einsum("ij,ij->j", D, D), n)
    n_nodes = int(np.asarray(X_pre).shape[1])
    out = np.zeros((n_nodes, n_nodes))
    out[iu] = t
    return out + out.T


def _tail_stat(t, tail):
    if tail == "both":
        return np.abs(t)
    if tail == "right":
        return t
    return -t


def _max_component_sizes(stat, thresh, rows, cols, n_nodes, size):
    """Largest component size of each row of ``stat`` (shape (P, E)).

    All P graphs are stacked into one block-diagonal graph of ``P * n_nodes`` nodes (graph p
    uses nodes ``p * n_nodes ...``), so a single call of
    :func:`scipy.sparse.csgraph.connected_components` labels the components of every
    permutation; edge counts (or intensities) per component come from one ``bincount``.
    """
    P = stat.shape[0]
    pidx, eidx = np.nonzero(stat > thresh)
    out = np.zeros(P)
    if pidx.size == 0:
        return out
    offset = pidx * n_nodes
    r = rows[eidx] + offset
    c = cols[eidx] + offset
    graph = csr_matrix((np.ones(r.size, dtype=np.int8), (r, c)), shape=(P * n_nodes,) * 2)
    n_comp, labels = connected_components(graph, directed=False)
    lab = labels[r]
    if size == "extent":
        comp_size = np.bincount(lab, minlength=n_comp).astype(float)
    else:
        comp_size = np.bincount(lab, weights=stat[pidx, eidx] - thresh, minlength=n_comp)
    comp_perm = np.empty(n_comp, dtype=np.int64)
    comp_perm[labels] = np.arange(P * n_nodes) // n_nodes
    np.maximum.at(out, comp_perm, comp_size)
    return out


def nbs_paired(X_pre, X_post=None, thresh=3.0, tail="both", size="extent", n_perm=5000,
               max_exact=16, seed=0, flips=None, include_observed=False, chunk_size=None):
    """Paired edge-wise Network-Based Statistic with sign-flip permutations.

    Parameters
    ----------
    X_pre : array-like of shape (n_subjects, n_nodes, n_nodes)
        Baseline connectivity matrices (e.g. Fisher z), symmetric; or, when ``X_post`` is None,
        the differences ``post - pre``.
    X_post : array-like of shape (n_subjects, n_nodes, n_nodes) or None, default=None
        Follow-up matrices of the same subjects in the same order.
    thresh : float, default=3.0
        Primary threshold on the edge statistic; an edge is supra-threshold when its statistic
        is strictly greater than ``thresh`` (as in bctpy).
    tail : {'both', 'right', 'left'}, default='both'
        Statistic thresholded: ``|t|``, ``t`` (increase at follow-up) or ``-t`` (decrease).
    size : {'extent', 'intensity'}, default='extent'
        Component size: number of edges, or the sum of ``stat - thresh`` over its edges.
    n_perm : int, default=5000
        Number of random sign patterns when ``n_subjects > max_exact``.
    max_exact : int, default=16
        Largest number of subjects for which all ``2**n`` sign patterns are enumerated.
    seed : int, default=0
        Seed of the random sign patterns (Monte Carlo only).
    flips : array-like of shape (n_perm, n_subjects) or None, default=None
        Explicit sign patterns (+1/-1) to use instead, e.g. from :func:`bct_sign_flips`.
    include_observed : bool, default=False
        With random patterns, count the observed data in the null:
        ``p = (1 + #{null >= size}) / (1 + n_perm)``. The default is bctpy's
        ``p = #{null >= size} / n_perm``, which can be 0. Ignored when exact (the identity
        pattern is already part of the enumeration).
    chunk_size : int or None, default=None
        Sign patterns processed at once; None keeps each block of t values near 32 MB.

    Returns
    -------
    result : NBSResult
        Components, sizes, FWER p-values, null distribution and the t matrix.

    Notes
    -----
    The t statistics of all patterns in a chunk come from one matrix product
    ``flips @ D`` (patterns x subjects times subjects x edges), which gives the sum of the
    flipped differences; the raw sum of squares ``sum(d**2)`` of each edge is unchanged by the
    flips, so only the sum (hence the mean and the centred sum of squares) is recomputed.
    With ``tail='both'`` and exact enumeration, a pattern and its negation give the same
    ``|t|``, so only half of the patterns are evaluated.
    """
    _check_settings(tail, size)
    D, iu = _differences(X_pre, X_post)
    n = D.shape[0]
    ss = np.einsum("ij,ij->j", D, D)
    F, exact, half = _sign_patterns(flips, n, n_perm, max_exact, seed, tail)
    res = _nbs(_t_from_sums(D.sum(axis=0), ss, n), iu, int(np.asarray(X_pre).shape[1]), F,
               lambda Fc: _t_from_sums(Fc @ D, ss, n), thresh, tail, size, chunk_size)
    if half:
        res.null = np.concatenate([res.null, res.null[::-1]])
    return _finish(res, exact, include_observed and not exact)


def nbs_two_sample(D_active, D_control, thresh=3.0, tail="both", size="extent", n_perm=5000,
                   max_relabelings=20000, seed=0, chunk_size=None):
    """Network-Based Statistic of a difference between two groups (e.g. the session x arm
    interaction of a parallel design: the change matrices of the active arm against the control
    arm's).

    Each edge gets Welch's t of ``mean(D_active) - mean(D_control)``; the null distribution of
    the largest supra-threshold component comes from relabelings of the groups
    (:func:`prepost.stats.parallel.relabelings`: all of them when there are at most
    ``max_relabelings``, otherwise the observed labeling and ``n_perm`` random ones), and
    ``p = #{null >= size} / #relabelings`` with the observed labeling among them. Welch's t
    (studentized, as :func:`prepost.stats.parallel.arm_test` permutes it) keeps the
    false-positive rate when the groups' sizes and variances differ.

    Parameters
    ----------
    D_active, D_control : array-like of shape (n_group, n_nodes, n_nodes)
        Symmetric matrices of each group (e.g. follow-up minus baseline Fisher z).
    thresh, tail, size, chunk_size
        As :func:`nbs_paired`; ``tail='right'`` looks for edges where the active group is
        higher.
    n_perm : int
        Random relabelings when the exact set is larger than ``max_relabelings``.
    max_relabelings : int
        Largest number of relabelings enumerated.
    seed : int
        Seed of the random relabelings.

    Returns
    -------
    NBSResult
        ``t`` holds Welch's t per edge; ``exact`` is True when every relabeling was used.
    """
    from prepost.stats.parallel import _welch_t, relabelings

    _check_settings(tail, size)
    A, iu = _differences(D_active, None)
    C, _ = _differences(D_control, None)
    if A.shape[1] != C.shape[1]:
        raise InputError(field="D_control", expected=f"matrices of {np.asarray(D_active).shape[1]}"
                         " nodes, as D_active", found=np.asarray(D_control).shape)
    na, nc = A.shape[0], C.shape[0]
    D = np.concatenate([A, C])

    def welch(M):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.nan_to_num(_welch_t(M, D, na, nc), nan=0.0)

    masks, exact = relabelings(na, nc, n_perm=n_perm, max_exact=max_relabelings, seed=seed)
    res = _nbs(welch(np.r_[np.ones(na), np.zeros(nc)][None])[0], iu,
               int(np.asarray(D_active).shape[1]), masks, welch, thresh, tail, size, chunk_size)
    # the observed labeling is one of the relabelings: p >= 1 / #relabelings
    return _finish(res, exact, include_observed=False)


def _check_settings(tail, size):
    if tail not in _TAILS:
        raise InputError(field="tail", expected=" or ".join(_TAILS), found=tail)
    if size not in _SIZES:
        raise InputError(field="size", expected=" or ".join(_SIZES), found=size)


def _nbs(t_obs, iu, n_nodes, patterns, edge_t, thresh, tail, size, chunk_size):
    """Observed components of the edge statistic ``t_obs`` and the null of largest component
    sizes, one per row of ``patterns`` (``edge_t(rows of patterns)`` gives their edge t)."""
    rows, cols = iu[0].astype(np.int64), iu[1].astype(np.int64)
    t_mat = np.zeros((n_nodes, n_nodes))
    t_mat[rows, cols] = t_obs
    comps, comp_nodes, sizes, adj = _observed_components(_tail_stat(t_obs, tail), thresh, rows,
                                                         cols, n_nodes, size)
    if chunk_size is None:
        chunk_size = max(1, int(4_000_000 // max(rows.size, 1)))
    null = np.empty(len(patterns))
    for start in range(0, len(patterns), chunk_size):
        chunk = patterns[start : start + chunk_size]
        null[start : start + len(chunk)] = _max_component_sizes(
            _tail_stat(edge_t(chunk), tail), thresh, rows, cols, n_nodes, size)
    return NBSResult(t=t_mat + t_mat.T, components=comps, nodes=comp_nodes, sizes=sizes,
                     null=null, adj=adj, thresh=float(thresh), tail=tail, size=size)


def _finish(res, exact, include_observed):
    """Component p-values from the null; the null's length is the number of patterns."""
    res.pvals = _component_pvalues(res.sizes, res.null, res.size, include_observed)
    res.n_perm, res.exact = int(res.null.size), bool(exact)
    return res


def _observed_components(stat_obs, thresh, rows, cols, n_nodes, size):
    """Supra-threshold components of the observed statistic, largest first.

    Returns ``(edges per component, nodes per component, sizes, adjacency of component
    labels)``; ties in size are ordered by their first node.
    """
    supra = np.flatnonzero(stat_obs > thresh)
    comps, comp_nodes, sizes = [], [], []
    if supra.size:
        g = csr_matrix((np.ones(supra.size, dtype=np.int8), (rows[supra], cols[supra])),
                       shape=(n_nodes, n_nodes))
        _, labels = connected_components(g, directed=False)
        lab = labels[rows[supra]]
        for c in np.unique(lab):
            e = supra[lab == c]
            comps.append(np.column_stack([rows[e], cols[e]]))
            comp_nodes.append(np.flatnonzero(labels == c))
            sizes.append(float(e.size) if size == "extent"
                         else float(np.sum(stat_obs[e] - thresh)))
        order = sorted(range(len(sizes)), key=lambda k: (-sizes[k], comp_nodes[k][0]))
        comps = [comps[k] for k in order]
        comp_nodes = [comp_nodes[k] for k in order]
        sizes = [sizes[k] for k in order]
    adj = np.zeros((n_nodes, n_nodes), dtype=np.int64)
    for k, e in enumerate(comps, start=1):
        adj[e[:, 0], e[:, 1]] = k
        adj[e[:, 1], e[:, 0]] = k
    return comps, comp_nodes, np.asarray(sizes, dtype=float), adj


def _sign_patterns(flips, n, n_perm, max_exact, seed, tail):
    """``(patterns as floats, exact, half)``: ``half`` when only half of an exact enumeration is
    evaluated and the null must be mirrored."""
    if flips is not None:
        F = np.asarray(flips)
        if F.ndim != 2 or F.shape[1] != n or not np.all(np.abs(F) == 1):
            raise InputError(field="flips", expected=f"an array of +1/-1 of shape (n_perm, {n})",
                             found=F.shape)
        return F.astype(float), False, False
    F, exact = sign_flips(n, n_perm=n_perm, max_exact=max_exact, seed=seed)
    half = exact and tail == "both"
    if half:
        # Row k and row 2**n - 1 - k are negations of each other; |t| is the same, so only
        # the first half (subject n-1 unflipped) is evaluated.
        F = F[: F.shape[0] // 2]
    return F.astype(float), exact, half


def _component_pvalues(sizes, null, size, include_observed):
    """FWER p-value of each component size against the null of largest sizes."""
    # Integer sizes compare exactly; intensities get scipy.stats.permutation_test's tolerance.
    gamma = sizes * (np.finfo(float).eps * 100) if size == "intensity" else np.zeros_like(sizes)
    counts = np.array([np.count_nonzero(null >= s - g) for s, g in zip(sizes, gamma)], dtype=float)
    if include_observed:
        return (1 + counts) / (1 + null.size)
    return counts / null.size
