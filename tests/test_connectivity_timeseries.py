"""Parcel time series keep every atlas label in order; poorly covered parcels are NaN columns."""

import logging

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn import image

from prepost.connectivity.atlas import Atlas, load_atlas
from prepost.connectivity.fc import fisher_z, pearson
from prepost.connectivity.timeseries import extract_parcel_timeseries
from prepost.errors import InputError


@pytest.fixture(scope="module")
def schaefer_on_4mm():
    atlas = load_atlas("Schaefer400")
    lab = image.resample_img(atlas.labels_img, target_affine=np.diag([4.0, 4.0, 4.0]),
                             interpolation="nearest", force_resample=True, copy_header=True)
    return atlas, lab, np.asarray(lab.dataobj).astype(int)


def _image(labels, affine, signals, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    data = signals[:, labels].transpose(1, 2, 3, 0)
    data = data + noise * rng.standard_normal(data.shape)
    data[labels == 0] = 0.0
    return data.astype(np.float32)


def test_labels_keep_order_and_nan_uncovered_parcels(schaefer_on_4mm, caplog):
    atlas, lab, L = schaefer_on_4mm
    rng = np.random.default_rng(1)
    T = 40
    sig = rng.standard_normal((T, 401))
    data = _image(L, lab.affine, sig)
    data[L == 7] = 0.0                    # parcel 7: no signal at all
    data[L == 9] = np.nan                 # parcel 9: NaN voxels
    # parcel 12: keep only ~30 % of its voxels inside the mask
    mask = L > 0
    vox12 = np.argwhere(L == 12)
    for v in vox12[: int(0.7 * len(vox12))]:
        mask[tuple(v)] = False
    # parcel 20: 80 % covered -> kept, averaged over covered voxels only
    vox20 = np.argwhere(L == 20)
    for v in vox20[: int(0.2 * len(vox20))]:
        mask[tuple(v)] = False
    img = nib.Nifti1Image(data, lab.affine)
    with caplog.at_level(logging.WARNING, logger="prepost.connectivity.timeseries"):
        ts, cov = extract_parcel_timeseries(img, atlas, mask_img=nib.Nifti1Image(
            mask.astype(np.uint8), lab.affine), min_coverage=0.5)
    assert ts.shape == (T, 400)
    dead = {7, 9, 12}
    nan_cols = set(np.flatnonzero(np.isnan(ts).all(axis=0)) + 1)
    assert nan_cols == dead
    assert set(cov.loc[~cov.kept, "index"]) == dead
    assert cov.loc[cov["index"] == 12, "coverage"].item() == pytest.approx(0.3, abs=0.05)
    assert cov.loc[cov["index"] == 20, "coverage"].item() == pytest.approx(0.8, abs=0.05)
    for name in cov.loc[~cov.kept, "name"]:
        assert name in caplog.text
    ok = ~np.isnan(ts).all(axis=0)
    # each kept column is its own parcel's signal (order preserved after re-insertion)
    r = [np.corrcoef(ts[:, j], sig[:, j + 1])[0, 1] for j in np.flatnonzero(ok)]
    assert min(r) > 0.99
    fc = pearson(ts)
    assert fc.shape == (400, 400)
    assert np.isnan(fc[6]).all() and np.isnan(fc[:, 8]).all()
    assert np.isfinite(fisher_z(fc)[np.ix_(ok, ok)][np.triu_indices(ok.sum(), 1)]).all()


def test_min_coverage_threshold_and_bad_input(schaefer_on_4mm):
    atlas, lab, L = schaefer_on_4mm
    sig = np.random.default_rng(2).standard_normal((10, 401))
    data = _image(L, lab.affine, sig)
    mask = L > 0
    vox = np.argwhere(L == 30)
    for v in vox[: int(0.6 * len(vox))]:
        mask[tuple(v)] = False
    img = nib.Nifti1Image(data, lab.affine)
    m = nib.Nifti1Image(mask.astype(np.uint8), lab.affine)
    ts_lo, _ = extract_parcel_timeseries(img, atlas, mask_img=m, min_coverage=0.3)
    ts_hi, _ = extract_parcel_timeseries(img, atlas, mask_img=m, min_coverage=0.5)
    assert np.isfinite(ts_lo[:, 29]).all() and np.isnan(ts_hi[:, 29]).all()
    with pytest.raises(InputError):
        extract_parcel_timeseries(img, "Schaefer400")


def test_spheres_with_coverage():
    rng = np.random.default_rng(3)
    T = 30
    shape = (20, 20, 20)
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    data = rng.standard_normal(shape + (T,)).astype(np.float32)
    centres = np.array([[15.0, 15.0, 15.0], [45.0, 30.0, 30.0], [57.0, 57.0, 57.0]])
    data[17:, 17:, 17:] = 0.0  # third sphere (at the corner) mostly constant
    table = pd.DataFrame({"index": [1, 2, 3], "name": ["a", "b", "c"],
                          "network": ["X", "Y", "X"], "hemi": ["L", "R", "R"]})
    atlas = Atlas("spheres", table, coords=centres, radius=6.0)
    ts, cov = extract_parcel_timeseries(nib.Nifti1Image(data, aff), atlas)
    assert ts.shape == (T, 3)
    assert list(cov.kept) == [True, True, False]
    assert np.isnan(ts[:, 2]).all()
    # sphere 1: mean over voxels within 6 mm of (15, 15, 15) = voxel (5, 5, 5)
    ijk = np.indices(shape).reshape(3, -1).T * 3.0
    inside = np.sum((ijk - centres[0]) ** 2, axis=1) <= 36
    expect = data.reshape(-1, T)[inside].mean(axis=0)
    assert np.allclose(ts[:, 0], expect, atol=1e-5)
