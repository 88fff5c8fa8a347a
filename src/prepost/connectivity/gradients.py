"""Connectivity gradients: diffusion-map embedding of an FC matrix (BrainSpace defaults) and
Procrustes alignment to a group reference.

BrainSpace is not used because it requires VTK (~0.8 GB); its defaults are reproduced here:

1. **Sparsity** (``brainspace.gradient.utils.dominant_set``): each row keeps its
   ``k = int(n * (1 - sparsity))`` largest entries (default sparsity 0.9, i.e. the top 10 %), the
   rest are set to 0; the kept set is per row, so the matrix is no longer symmetric.
2. **Kernel** ``normalized_angle``: ``1 - arccos(cos_sim(row_i, row_j)) / pi`` between the
   sparsified rows (cosine similarity clipped to [-1, 1]); negatives set to 0.
3. **Diffusion map** (Coifman & Lafon 2006) with ``alpha = 0.5``: ``L = D^-a K D^-a``,
   ``P = D_L^-1 L``; the right eigenvectors of ``P`` are divided by the first (constant) one,
   eigenvalues are divided by the first, the first pair is dropped, and with
   ``diffusion_time = 0`` eigenvalues are rescaled to ``lambda / (1 - lambda)`` (multi-scale) and
   multiply their eigenvectors. Each component's sign makes its largest-magnitude entry positive.

Difference: BrainSpace calls ``scipy.sparse.linalg.eigsh`` on the non-symmetric ``P``; here the
eigenvectors of ``P`` are obtained exactly from the symmetric conjugate
``D_L^-1/2 L D_L^-1/2`` (dense ``numpy.linalg.eigh``, a few ms for 400 parcels).

Missing parcels (NaN rows) are dropped before the embedding and re-inserted as NaN rows.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import orthogonal_procrustes

from prepost.errors import InputError

__all__ = [
    "sparsify_rows",
    "affinity_matrix",
    "diffusion_map",
    "fc_gradients",
    "procrustes_align",
    "align_gradients",
    "orient_gradient",
    "gradient_summary",
]


def _check_square(fc):
    fc = np.asarray(fc, float)
    if fc.ndim != 2 or fc.shape[0] != fc.shape[1]:
        raise InputError(None, "fc", "a square (n, n) matrix", f"shape {fc.shape}")
    return fc


def sparsify_rows(x, sparsity=0.9):
    """Keep the top ``int(n_cols * (1 - sparsity))`` entries of each row, zero the rest."""
    x = np.asarray(x, float)
    if not 0 <= sparsity < 1:
        raise InputError(None, "sparsity", "a fraction in [0, 1)", sparsity)
    if sparsity == 0:
        return x.copy()
    k = int(x.shape[1] * (1 - sparsity))
    if k <= 0:
        raise InputError(None, "sparsity", f"a value leaving at least one entry of {x.shape[1]} "
                         "per row", sparsity)
    idx = np.argpartition(x, x.shape[1] - k, axis=1)[:, -k:]
    out = np.zeros_like(x)
    rows = np.arange(x.shape[0])[:, None]
    out[rows, idx] = x[rows, idx]
    return out


def affinity_matrix(fc, sparsity=0.9, kernel="normalized_angle"):
    """Row-sparsified FC turned into a non-negative affinity (see module docstring).

    ``kernel``: ``'normalized_angle'`` (default), ``'cosine'`` or None (sparsified FC only).
    Non-finite diagonal entries (e.g. Fisher z with a NaN diagonal) are set to 0 first.
    """
    x = _check_square(fc).copy()
    d = np.diag(x).copy()
    np.fill_diagonal(x, np.where(np.isfinite(d), d, 0.0))
    if not np.isfinite(x).all():
        raise InputError(None, "fc", "a finite matrix (drop missing parcels first)")
    x = sparsify_rows(x, sparsity)
    if kernel in ("cosine", "normalized_angle"):
        norm = np.linalg.norm(x, axis=1)
        norm[norm == 0] = 1.0
        xn = x / norm[:, None]
        cs = np.clip(xn @ xn.T, -1.0, 1.0)
        a = cs if kernel == "cosine" else 1.0 - np.arccos(cs) / np.pi
    elif kernel is None:
        a = x
    else:
        raise InputError(None, "kernel", "'normalized_angle', 'cosine' or None", repr(kernel))
    a = np.where(a < 0, 0.0, a)
    return a


def diffusion_map(affinity, n_components=10, alpha=0.5, diffusion_time=0):
    """Diffusion-map embedding of a non-negative symmetric affinity.

    Returns ``(embedding (n, n_components), lambdas (n_components,))``; lambdas are the
    rescaled eigenvalues (``l / (1 - l)`` for ``diffusion_time = 0``, ``l ** t`` otherwise).
    """
    A = _check_square(affinity)
    A = (A + A.T) / 2
    if (A < 0).any():
        raise InputError(None, "affinity", "non-negative values")
    n = A.shape[0]
    if n_components >= n:
        raise InputError(None, "n_components", f"fewer than {n} (the number of nodes)",
                         n_components)
    if alpha > 0:
        d = A.sum(axis=1)
        if (d <= 0).any():
            raise InputError(None, "affinity", "no isolated node (zero row)")
        d = d ** -alpha
        A = d[:, None] * A * d[None, :]
    dl = A.sum(axis=1)
    s = 1.0 / np.sqrt(dl)
    M = s[:, None] * A * s[None, :]  # symmetric conjugate of P = D_L^-1 A
    w, u = np.linalg.eigh(M)
    w, u = w[::-1][: n_components + 1], u[:, ::-1][:, : n_components + 1]
    psi = s[:, None] * u  # right eigenvectors of P
    psi = psi / psi[:, [0]]
    w = w / w[0]
    w, psi = w[1:], psi[:, 1:]
    if diffusion_time <= 0:
        lam = w / (1 - w)
    else:
        lam = w ** diffusion_time
    emb = psi * lam[None, :]
    emb *= np.sign(emb[np.abs(emb).argmax(axis=0), np.arange(emb.shape[1])])
    return emb, lam


def fc_gradients(fc, n_components=10, sparsity=0.9, kernel="normalized_angle", alpha=0.5,
                 diffusion_time=0):
    """Gradients of an FC matrix; NaN rows (missing parcels) are dropped and re-inserted.

    Returns ``(gradients (n_parcels, n_components), lambdas)``.
    """
    fc = _check_square(fc)
    off = fc.copy()
    np.fill_diagonal(off, np.nan)
    ok = ~np.isnan(off).all(axis=1)  # missing parcel = whole row NaN
    sub_off = off[np.ix_(ok, ok)]
    np.fill_diagonal(sub_off, 0.0)
    if not np.isfinite(sub_off).all():
        raise InputError(None, "fc", "NaN only in whole rows/columns of missing parcels")
    sub = fc[np.ix_(ok, ok)]
    emb, lam = diffusion_map(affinity_matrix(sub, sparsity, kernel), n_components, alpha,
                             diffusion_time)
    out = np.full((fc.shape[0], emb.shape[1]), np.nan)
    out[ok] = emb
    return out, lam


def procrustes_align(source, target):
    """Rotate/reflect ``source`` (n, c) onto ``target`` (n, c) by orthogonal Procrustes.

    Rows that are not finite in both are ignored for the fit and stay NaN in the output.
    """
    source, target = np.asarray(source, float), np.asarray(target, float)
    if source.shape != target.shape:
        raise InputError(None, "source", f"the reference's shape {target.shape}", source.shape)
    ok = np.isfinite(source).all(axis=1) & np.isfinite(target).all(axis=1)
    R, _ = orthogonal_procrustes(source[ok], target[ok])
    out = source @ R
    out[~np.isfinite(source).all(axis=1)] = np.nan
    return out


def align_gradients(gradients, reference=None, n_iter=10, tol=1e-5):
    """Align a list of (n, c) gradient sets.

    With ``reference`` given: plain orthogonal Procrustes of each set to it. Without: generalised
    Procrustes as BrainSpace's ``ProcrustesAlignment`` - start from the first set, align all,
    take their (NaN-aware) mean as the new reference, repeat until it changes by less than
    ``tol`` (relative) or ``n_iter`` times. Returns ``(aligned list, reference)``.
    """
    gradients = [np.asarray(g, float) for g in gradients]
    if not gradients:
        raise InputError(None, "gradients", "at least one gradient set")
    if reference is not None:
        ref = np.asarray(reference, float)
        return [procrustes_align(g, ref) for g in gradients], ref
    ref = gradients[0]
    aligned = gradients
    for _ in range(max(int(n_iter), 1)):
        aligned = [procrustes_align(g, ref) for g in gradients]
        new = np.nanmean(np.stack(aligned), axis=0)
        change = np.nanmean((new - ref) ** 2) / max(np.nanmean(ref**2), 1e-300)
        ref = new
        if change < tol:
            break
    return aligned, ref


def orient_gradient(g, networks, positive=("Default",), negative=("Vis", "SomMot")):
    """Flip a 1-D gradient so that the ``positive`` networks lie above the ``negative`` ones
    (the principal gradient runs from unimodal to transmodal cortex)."""
    g = np.asarray(g, float)
    networks = np.asarray(networks)
    hi = np.nanmean(g[np.isin(networks, positive)])
    lo = np.nanmean(g[np.isin(networks, negative)])
    return -g if np.isfinite(hi - lo) and hi < lo else g


def gradient_summary(g, networks):
    """Range, variance and each network's mean position along a 1-D gradient (NaN-aware)."""
    g = np.asarray(g, float)
    networks = np.asarray(networks)
    ok = np.isfinite(g)
    out = {"range": float(np.ptp(g[ok])) if ok.any() else np.nan,
           "variance": float(np.var(g[ok])) if ok.any() else np.nan, "position": {}}
    for net in dict.fromkeys(networks):
        sel = (networks == net) & ok
        out["position"][str(net)] = float(g[sel].mean()) if sel.any() else np.nan
    return out
