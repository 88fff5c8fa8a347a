"""The image gate (prepost.image): checks, data in memory, and the nibabel <-> ANTs bridge."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from prepost.errors import InputError
from prepost.image import FWHM_TO_SIGMA, from_ants, load_img, to_ants


def _write(tmp_path, name, data, affine=None):
    path = tmp_path / name
    nib.Nifti1Image(data, np.eye(4) if affine is None else affine).to_filename(path)
    return path


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected_naming_the_file(tmp_path, bad):
    data = np.ones((4, 5, 6), np.float32)
    data[1, 2, 3] = bad
    path = _write(tmp_path, "bad_T1w.nii.gz", data)
    with pytest.raises(InputError, match="bad_T1w.nii.gz") as err:
        load_img(path, field="T1w")
    assert "1 NaN/inf voxels" in str(err.value) and "T1w" in str(err.value)


def test_dimensionality_is_checked(tmp_path):
    three = _write(tmp_path, "three.nii.gz", np.ones((4, 5, 6), np.float32))
    four = _write(tmp_path, "four.nii.gz", np.ones((4, 5, 6, 3), np.float32))
    assert load_img(three, ndim=3).shape == (4, 5, 6)
    assert load_img(four, ndim=4).shape == (4, 5, 6, 3)
    assert load_img(three).ndim == 3 and load_img(four).ndim == 4  # ndim=None: 3D or 4D
    with pytest.raises(InputError, match=r"four.nii.gz.*a 3D image"):
        load_img(four, ndim=3)
    with pytest.raises(InputError, match=r"three.nii.gz.*a 4D image"):
        load_img(three, ndim=4)
    one = _write(tmp_path, "one.nii.gz", np.ones((4, 5, 6, 1), np.float32))
    assert load_img(one, ndim=4).shape == (4, 5, 6, 1)  # a one-volume series stays 4D
    assert load_img(one, ndim=3).shape == (4, 5, 6) and load_img(one).shape == (4, 5, 6)
    with pytest.raises(InputError, match="missing.nii.gz"):
        load_img(tmp_path / "missing.nii.gz")
    with pytest.raises(InputError, match="NIfTI"):
        load_img(np.ones((2, 2, 2)))


def test_zero_filled_volumes_are_rejected_on_request():
    data = np.ones((3, 3, 3, 4), np.float32)
    data[..., 2] = 0
    img = nib.Nifti1Image(data, np.eye(4))
    assert load_img(img, ndim=4) is img  # in-memory input with nothing to change: as is
    with pytest.raises(InputError, match="first at index 2"):
        load_img(img, ndim=4, check_empty_volumes=True)


def test_loaded_images_are_held_in_memory_with_their_file_name(tmp_path):
    """Per-volume reads must not go back to the gzipped file (each one decompresses from its
    start); the file name stays for error messages."""
    rng = np.random.default_rng(0)
    data = rng.integers(1, 1000, size=(6, 7, 5, 12)).astype(np.int16)
    path = tmp_path / "bold.nii.gz"
    src = nib.Nifti1Image(data, np.diag([3.0, 3.0, 3.0, 1.0]))
    src.header.set_slope_inter(0.5, 10.0)
    src.to_filename(path)
    img = load_img(path, ndim=4)
    assert isinstance(img.dataobj, np.ndarray)
    assert img.get_filename() == str(path)
    expected = nib.load(path).get_fdata()
    np.testing.assert_allclose(img.get_fdata(), expected, rtol=1e-6)  # scaling applied once
    np.testing.assert_allclose(np.asarray(img.dataobj[..., 5]), expected[..., 5], rtol=1e-6)
    # a 4D image with a trailing singleton axis loads as 3D, also in memory
    nib.Nifti1Image(data[..., :1], np.eye(4)).to_filename(tmp_path / "one.nii.gz")
    one = load_img(tmp_path / "one.nii.gz", ndim=3)
    assert one.shape == (6, 7, 5) and isinstance(one.dataobj, np.ndarray)


def _oblique_affine():
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([-2.0, 2.5, 3.0])  # x flipped (radiological) and oblique
    aff[:3, 3] = [91.25, -126.5, -72.0]
    return aff


@pytest.mark.parametrize("shape", [(7, 8, 9), (7, 8, 9, 4)])
def test_ants_round_trip_keeps_affine_and_data_exactly(shape):
    rng = np.random.default_rng(1)
    data = rng.normal(size=shape).astype(np.float32)
    img = nib.Nifti1Image(data, _oblique_affine())
    if len(shape) == 4:
        img.header.set_zooms((2.0, 2.5, 3.0, 1.5))
    aimg = to_ants(img)
    back = from_ants(aimg)
    np.testing.assert_array_equal(np.asarray(back.dataobj), data)
    np.testing.assert_allclose(back.affine, img.affine, rtol=0, atol=1e-12)
    if len(shape) == 4:
        assert back.header.get_zooms()[3] == 1.5


def test_ants_sees_the_world_in_lps():
    """A voxel's world position in ANTs is the nibabel one with x and y negated."""
    import ants

    img = nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), _oblique_affine())
    aimg = to_ants(img)
    ras = img.affine[:3, 3]
    np.testing.assert_allclose(aimg.origin, [-ras[0], -ras[1], ras[2]], atol=1e-12)
    np.testing.assert_allclose(aimg.spacing, [2.0, 2.5, 3.0], atol=1e-12)
    ijk = np.array([2.0, 1.0, 3.0])
    lps = np.asarray(ants.transform_index_to_physical_point(aimg, (2, 1, 3)))
    expected = img.affine[:3, :3] @ ijk + ras
    np.testing.assert_allclose(lps, [-expected[0], -expected[1], expected[2]], atol=1e-9)


def test_sheared_affine_is_rejected():
    aff = np.eye(4)
    aff[0, 1] = 0.5
    with pytest.raises(InputError, match="shear"):
        to_ants(nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), aff))


def test_fwhm_to_sigma():
    # a Gaussian of sigma s falls to half its peak at +-FWHM/2
    sigma = FWHM_TO_SIGMA * 1.0
    assert np.exp(-0.5 * (0.5 / sigma) ** 2) == pytest.approx(0.5, abs=1e-12)


_REGISTER_TWICE = """
import json
import numpy as np
from nilearn.datasets import load_mni152_template
from prepost.image import set_itk_threads, to_ants
from prepost.registration import params_to_affine, register_rigid_ants
set_itk_threads(1)
t1 = load_mni152_template(resolution=3)
fixed = to_ants(t1)  # the first ANTs image of the process
moved = t1.__class__(t1.get_fdata().astype(np.float32),
                     params_to_affine([2.0, -1.0, 1.5, 0.03, -0.02, 0.04]) @ t1.affine)
mats = [register_rigid_ants(fixed, to_ants(moved), seed=1, n_threads=1)["fixed_to_moving"]
        for _ in range(2)]
print(json.dumps(mats[0].tolist())); print(json.dumps(mats[1].tolist()))
"""


def test_rigid_registration_leaves_no_transform_files_behind(tmp_path, monkeypatch):
    """Without an outprefix the transform files go to a folder removed on return (ANTs' default
    left a tmp*GenericAffine.mat in the temporary folder per call); with one they are kept."""
    import tempfile

    from nilearn.datasets import load_mni152_template

    from prepost.image import to_ants
    from prepost.registration import params_to_affine, register_rigid_ants

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    t1 = load_mni152_template(resolution=4)
    moved = nib.Nifti1Image(t1.get_fdata().astype(np.float32),
                            params_to_affine([2.0, -1.0, 1.5, 0.0, 0.0, 0.0]) @ t1.affine)
    reg = register_rigid_ants(to_ants(t1), to_ants(moved), seed=1, n_threads=1)
    assert list(tmp_path.iterdir()) == [] and "fwdtransforms" not in reg
    # the translation is recovered (its sign depends on the direction of the map)
    assert np.allclose(np.abs(reg["fixed_to_moving"][:3, 3]), [2.0, 1.0, 1.5], atol=0.3)
    kept = register_rigid_ants(to_ants(t1), to_ants(moved), seed=1, n_threads=1,
                               outprefix=str(tmp_path / "keep_"))
    assert [str(f) for f in kept["fwdtransforms"]] == [str(tmp_path / "keep_0GenericAffine.mat")]
    assert (tmp_path / "keep_0GenericAffine.mat").exists()


def test_registration_is_bit_identical_once_the_thread_count_is_set_first():
    # ITK takes its thread count from the first image a process makes: set later, a rigid
    # registration used two threads and differed by ~0.01 mm from run to run
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("ITK_")}
    runs = [subprocess.run([sys.executable, "-c", _REGISTER_TWICE], capture_output=True,
                           text=True, check=True, env=env).stdout.split("\n")
            for _ in range(2)]
    mats = [line for run in runs for line in run if line]
    assert len(mats) == 4 and len(set(mats)) == 1, mats
    shift = np.array(json.loads(mats[0]))[:3, 3]
    assert np.abs(shift).max() > 0.5  # it did register: the planted pose is not the identity
