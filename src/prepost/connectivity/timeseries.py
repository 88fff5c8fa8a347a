"""Parcel time series that keep every atlas label, in atlas order.

nilearn's ``NiftiLabelsMasker`` silently drops labels that have no voxel in the data (nilearn
issue #1871), so column ``j`` of its output is not necessarily parcel ``j`` of the atlas. Here the
coverage of every parcel is computed first, the masker only sees the voxels that carry a usable
signal, and its columns are placed back at their atlas positions: a parcel below
``min_coverage`` is an all-NaN column, reported in the coverage table and in a log message.

Coverage of a parcel = fraction of its voxels (on the grid where the extraction happens) that are
inside ``mask_img`` and have a finite, non-constant time series.

Grid
----
``resampling_target='data'`` (default) resamples the atlas onto the BOLD grid with nearest-neighbour
interpolation (labels are never interpolated); this keeps the BOLD data untouched and is what
nilearn does by default. ``'labels'`` resamples the BOLD image (linear) and the mask (nearest) onto
the atlas grid; with the 1 mm Schaefer files that holds ~7 M voxels per volume, so it is only
practical for atlases near the data's resolution.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import nibabel as nib
import numpy as np
import pandas as pd

from prepost.errors import InputError
from prepost.connectivity.atlas import Atlas

__all__ = [
    "ParcelTimeseries",
    "extract_parcel_timeseries",
]

log = logging.getLogger(__name__)


class ParcelTimeseries(NamedTuple):
    """``timeseries`` (n_volumes, n_parcels) array in atlas order and the ``coverage`` table."""

    timeseries: np.ndarray
    coverage: pd.DataFrame


def extract_parcel_timeseries(img, atlas, mask_img=None, min_coverage=0.5, resampling_target="data",
                              standardize=False, detrend=False, low_pass=None, high_pass=None,
                              t_r=None, confounds=None, sample_mask=None, variance_tol=0.0):
    """Mean signal of every atlas parcel (label image or spheres).

    Parameters
    ----------
    img : 4D niimg
        BOLD data in the atlas space (MNI for the shipped atlases).
    atlas : Atlas
        From :func:`~prepost.connectivity.atlas.load_atlas`.
    mask_img : 3D niimg or None
        Brain/data mask; None uses every voxel with a usable signal.
    min_coverage : float
        Parcels whose coverage is below this fraction are returned as all-NaN columns.
    resampling_target : {'data', 'labels'}
        Grid of the extraction (see module docstring); spheres always use the data grid.
    standardize, detrend, low_pass, high_pass, t_r, confounds, sample_mask
        Passed to the nilearn masker (signal cleaning of the parcel signals; ``sample_mask``
        removes censored volumes, so the output has ``len(sample_mask)`` rows when it is given
        as indices, or its number of True values as a boolean mask).
    variance_tol : float
        A voxel's variance must exceed this to count as covered (default: non-zero).

    Returns
    -------
    ParcelTimeseries
        ``timeseries`` (n_volumes, n_parcels) and ``coverage`` with columns index, name, network,
        n_voxels, n_valid, coverage, kept.
    """
    from nilearn import image

    if not isinstance(atlas, Atlas):
        raise InputError(None, "atlas", "an Atlas from load_atlas", type(atlas).__name__)
    img = image.check_niimg_4d(img)
    if resampling_target not in ("data", "labels"):
        raise InputError(None, "resampling_target", "'data' or 'labels'", repr(resampling_target))
    if atlas.kind == "labels" and resampling_target == "labels":
        ref = atlas.labels_img
        img = image.resample_to_img(img, ref, interpolation="linear", force_resample=True,
                                    copy_header=True)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.shape[3] < 2:
        raise InputError(None, "img", "a 4D image with at least 2 volumes", f"shape {data.shape}")
    finite = np.isfinite(data).all(axis=3)
    clean = np.where(np.isfinite(data), data, 0.0).astype(np.float32)
    valid = finite & (clean.var(axis=3) > variance_tol)
    if mask_img is not None:
        mask = image.resample_to_img(image.check_niimg_3d(mask_img), img, interpolation="nearest",
                                     force_resample=True, copy_header=True)
        valid &= np.asarray(mask.dataobj) > 0
    clean_img = nib.Nifti1Image(clean, img.affine, img.header)
    clean_img.header.set_data_dtype(np.float32)
    kwargs = dict(standardize=standardize, detrend=detrend, low_pass=low_pass,
                  high_pass=high_pass, t_r=t_r)
    if atlas.kind == "labels":
        ts, cov = _labels(clean_img, valid, atlas, min_coverage, kwargs, confounds, sample_mask)
    else:
        ts, cov = _spheres(clean_img, valid, atlas, min_coverage, kwargs, confounds, sample_mask)
    dropped = cov.loc[~cov["kept"], "name"].tolist()
    if dropped:
        log.warning("%d of %d parcels below coverage %.2f (all-NaN columns): %s", len(dropped),
                    len(cov), min_coverage, ", ".join(dropped))
    return ParcelTimeseries(ts, cov)


def _coverage_table(atlas, n_vox, n_valid, min_coverage):
    cov = atlas.table[["index", "name", "network"]].copy()
    cov["n_voxels"] = n_vox.astype(int)
    cov["n_valid"] = n_valid.astype(int)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(n_vox > 0, n_valid / np.maximum(n_vox, 1), 0.0)
    cov["coverage"] = frac
    cov["kept"] = (frac >= min_coverage) & (n_valid > 0)
    return cov


def _labels(img, valid, atlas, min_coverage, kwargs, confounds, sample_mask):
    from nilearn import image
    from nilearn.maskers import NiftiLabelsMasker

    lab_img = image.resample_to_img(atlas.labels_img, img, interpolation="nearest",
                                    force_resample=True, copy_header=True)
    lab = np.rint(np.asarray(lab_img.dataobj)).astype(np.int64)
    if lab.shape != valid.shape:
        raise InputError(None, "img", "a BOLD grid matching the resampled atlas",
                         f"{lab.shape} vs {valid.shape}")
    idx = atlas.table["index"].to_numpy(np.int64)
    size = int(max(lab.max(), idx.max())) + 1
    n_vox = np.bincount(lab.ravel(), minlength=size)[idx]
    n_valid = np.bincount(lab[valid].ravel(), minlength=size)[idx]
    cov = _coverage_table(atlas, n_vox, n_valid, min_coverage)
    kept_idx = idx[cov["kept"].to_numpy()]
    n_out = _n_out(img.shape[3], sample_mask)
    ts = np.full((n_out, len(idx)), np.nan)
    if kept_idx.size == 0:
        return ts, cov
    # Only covered voxels of kept parcels carry a label: the masker then averages usable voxels
    # only, and the mapping of its columns back to atlas positions is by label value.
    lab_kept = np.where(valid & np.isin(lab, kept_idx), lab, 0).astype(np.int32)
    masker = NiftiLabelsMasker(nib.Nifti1Image(lab_kept, img.affine), background_label=0,
                               resampling_target=None, strategy="mean", **kwargs)
    out = masker.fit_transform(img, confounds=confounds, sample_mask=sample_mask)
    ids = [int(v) for k, v in masker.region_ids_.items() if k != "background"]
    pos = {int(v): j for j, v in enumerate(idx)}
    for col, lv in enumerate(ids):
        ts[:, pos[lv]] = out[:, col]
    return ts, cov


def _spheres(img, valid, atlas, min_coverage, kwargs, confounds, sample_mask):
    from nilearn.maskers import NiftiSpheresMasker

    shape = valid.shape
    ijk = np.indices(shape).reshape(3, -1)
    xyz = (img.affine[:3, :3] @ ijk + img.affine[:3, 3:4]).T
    vflat = valid.ravel()
    n = len(atlas.coords)
    n_vox, n_valid = np.zeros(n), np.zeros(n)
    for i, c in enumerate(atlas.coords):
        inside = np.sum((xyz - c) ** 2, axis=1) <= atlas.radius ** 2
        if not inside.any():  # as nilearn: the voxel nearest the centre always belongs
            inside = np.zeros_like(inside)
            inside[np.argmin(np.sum((xyz - c) ** 2, axis=1))] = True
        n_vox[i] = inside.sum()
        n_valid[i] = (inside & vflat).sum()
    cov = _coverage_table(atlas, n_vox, n_valid, min_coverage)
    keep = cov["kept"].to_numpy()
    ts = np.full((_n_out(img.shape[3], sample_mask), n), np.nan)
    if keep.any():
        masker = NiftiSpheresMasker([tuple(c) for c in atlas.coords[keep]], radius=atlas.radius,
                                    mask_img=nib.Nifti1Image(valid.astype(np.uint8), img.affine),
                                    allow_overlap=True, **kwargs)
        ts[:, keep] = masker.fit_transform(img, confounds=confounds, sample_mask=sample_mask)
    return ts, cov


def _n_out(n_volumes, sample_mask):
    if sample_mask is None:
        return n_volumes
    sm = np.asarray(sample_mask)
    return int(sm.sum()) if sm.dtype == bool else int(sm.size)
