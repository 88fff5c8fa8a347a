"""Functional connectivity matrices from parcel time series, aware of all-NaN parcels.

Every function takes ``(n_volumes, n_parcels)`` arrays whose missing parcels are all-NaN columns
(see :mod:`prepost.connectivity.timeseries`) and returns ``(n_parcels, n_parcels)`` matrices of
constant size: the rows and columns of a missing parcel are NaN. A parcel counts as missing when
any of its values is non-finite or it is constant.

Estimators
----------
* ``correlation``: Pearson, no shrinkage (nilearn ``ConnectivityMeasure`` with sklearn's
  ``EmpiricalCovariance``; identical to ``np.corrcoef``). Diagonal 1.
* ``partial correlation``: ``-P_ij / sqrt(P_ii P_jj)`` with ``P`` the inverse of the empirical
  covariance. Needs more volumes than parcels unless a shrinkage ``cov_estimator`` (e.g.
  ``sklearn.covariance.LedoitWolf()``) is passed. Diagonal 1.
* ``tangent``: group-level, :func:`fit_tangent` (Varoquaux et al. 2010): each subject's
  covariance is projected onto the tangent space at the group geometric mean.
* :func:`fisher_z`: ``arctanh(r)``; the diagonal is set to NaN by default (``arctanh(1)`` is
  infinite and self-connections are not FC), or 0 with ``diagonal=0``.
"""

from __future__ import annotations

import numpy as np

from prepost.errors import InputError

__all__ = [
    "KINDS",
    "valid_parcels",
    "connectivity_matrix",
    "pearson",
    "partial_correlation",
    "fit_tangent",
    "fisher_z",
    "upper_triangle",
]

KINDS = ("correlation", "partial correlation", "covariance")


def valid_parcels(timeseries):
    """Boolean mask of parcels with a finite, non-constant time series."""
    ts = np.asarray(timeseries, float)
    if ts.ndim != 2:
        raise InputError(None, "timeseries", "a 2D (n_volumes, n_parcels) array",
                         f"shape {ts.shape}")
    finite = np.isfinite(ts).all(axis=0)
    with np.errstate(invalid="ignore"):
        sd = np.where(finite, np.nanstd(np.where(finite, ts, 0.0), axis=0), 0.0)
    return finite & (sd > 0)


def _embed(sub, keep):
    n = keep.size
    out = np.full(sub.shape[:-2] + (n, n), np.nan)
    ix = np.flatnonzero(keep)
    out[..., ix[:, None], ix[None, :]] = sub
    return out


def _estimator(cov_estimator):
    from sklearn.covariance import EmpiricalCovariance

    return EmpiricalCovariance(store_precision=False) if cov_estimator is None else cov_estimator


def connectivity_matrix(timeseries, kind="correlation", cov_estimator=None):
    """One subject's FC matrix.

    Parameters
    ----------
    timeseries : array (n_volumes, n_parcels)
        Parcel signals; all-NaN columns are missing parcels.
    kind : {'correlation', 'partial correlation', 'covariance'}
    cov_estimator : sklearn covariance estimator or None
        None = ``EmpiricalCovariance`` (no shrinkage).

    Returns
    -------
    ndarray (n_parcels, n_parcels)
    """
    from nilearn.connectome import ConnectivityMeasure

    if kind not in KINDS:
        raise InputError(None, "kind", f"one of {KINDS} (tangent: use fit_tangent)", repr(kind))
    ts = np.asarray(timeseries, float)
    keep = valid_parcels(ts)
    n_keep = int(keep.sum())
    if n_keep < 2:
        raise InputError(None, "timeseries", "at least 2 parcels with a usable signal",
                         f"{n_keep}")
    if kind == "partial correlation" and cov_estimator is None and ts.shape[0] <= n_keep:
        raise InputError(None, "timeseries", "more volumes than parcels for an unshrunk partial "
                         "correlation (or pass a shrinkage cov_estimator)",
                         f"{ts.shape[0]} volumes, {n_keep} parcels")
    cm = ConnectivityMeasure(kind=kind, cov_estimator=_estimator(cov_estimator), standardize=False)
    mat = cm.fit_transform([ts[:, keep]])[0]
    if kind != "covariance":
        np.fill_diagonal(mat, 1.0)
    return _embed(mat, keep)


def pearson(timeseries):
    """Pearson correlation matrix (no shrinkage), NaN rows/columns for missing parcels."""
    return connectivity_matrix(timeseries, "correlation")


def partial_correlation(timeseries, cov_estimator=None):
    """Partial correlation from the inverse covariance, NaN rows/columns for missing parcels."""
    return connectivity_matrix(timeseries, "partial correlation", cov_estimator=cov_estimator)


def fit_tangent(timeseries_list, cov_estimator=None):
    """Tangent-space FC fitted on a group.

    Parameters
    ----------
    timeseries_list : list of arrays (n_volumes_i, n_parcels)
        One array per subject/session, same parcels.
    cov_estimator : sklearn covariance estimator or None
        None = ``EmpiricalCovariance`` (every subject needs more volumes than parcels); pass
        ``LedoitWolf()`` for short runs.

    Returns
    -------
    matrices : ndarray (n_subjects, n_parcels, n_parcels)
        Tangent vectors (symmetric matrices; zero when a subject equals the group mean).
    group_mean : ndarray (n_parcels, n_parcels)
        Geometric (Riemannian) mean covariance of the group.

    Parcels missing in any subject are NaN in every output, because the tangent space is defined
    at one group mean over a common set of parcels.
    """
    from nilearn.connectome import ConnectivityMeasure

    if len(timeseries_list) < 2:
        raise InputError(None, "timeseries_list", "at least 2 subjects for a tangent fit",
                         len(timeseries_list))
    ts_list = [np.asarray(t, float) for t in timeseries_list]
    n = {t.shape[1] for t in ts_list}
    if len(n) != 1:
        raise InputError(None, "timeseries_list", "the same number of parcels in every subject",
                         sorted(n))
    keep = np.logical_and.reduce([valid_parcels(t) for t in ts_list])
    if keep.sum() < 2:
        raise InputError(None, "timeseries_list", "at least 2 parcels usable in every subject",
                         int(keep.sum()))
    if cov_estimator is None:
        short = [t.shape[0] for t in ts_list if t.shape[0] <= keep.sum()]
        if short:
            raise InputError(None, "timeseries_list", "more volumes than parcels in every subject "
                             "for an unshrunk tangent fit (or pass a shrinkage cov_estimator)",
                             f"runs of {short} volumes for {int(keep.sum())} parcels")
    cm = ConnectivityMeasure(kind="tangent", cov_estimator=_estimator(cov_estimator),
                             standardize=False)
    mats = cm.fit_transform([t[:, keep] for t in ts_list])
    return _embed(np.asarray(mats), keep), _embed(np.asarray(cm.mean_), keep)


def fisher_z(r, diagonal=np.nan, clip=1 - 1e-7):
    """Fisher z = arctanh(r), elementwise, NaN-preserving: the package's one Fisher transform.

    Parameters
    ----------
    r : array (..., n, n) or any array of correlations
    diagonal : float or None
        Value written on the diagonal of square matrices (default NaN: self-connections are not
        FC; 0 is the other common choice, e.g. for graph weights). ``None`` keeps arctanh of the
        clipped diagonal, so that a back-transformed group mean (``tanh``) keeps unit diagonals.
    clip : float
        |r| is clipped to this before arctanh so that r = ±1 stays finite.

    Returns
    -------
    ndarray
        Same shape as ``r``.
    """
    r = np.asarray(r, float)
    z = np.arctanh(np.clip(r, -clip, clip))
    if diagonal is not None and r.ndim >= 2 and r.shape[-1] == r.shape[-2]:
        i = np.arange(r.shape[-1])
        z[..., i, i] = diagonal
    return z


def upper_triangle(mat, k=1):
    """Values above the diagonal (vectorised edges) of a square matrix."""
    mat = np.asarray(mat)
    return mat[np.triu_indices(mat.shape[-1], k=k)]
