"""Rigid realignment (prepost.registration) and FD (prepost.fmri.motion) on a synthetic BOLD run
with known motion."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from prepost.errors import InputError
from prepost.fmri.motion import bold_levels, estimate_bold_motion, framewise_displacement
from prepost.registration import (
    affine_to_params,
    apply_motion,
    estimate_motion,
    params_to_affine,
    select_reference,
)

N_VOL = 12
SPIKE = 7
VOXEL = 3.5


def _grid(shape, voxel):
    from nilearn import datasets

    tpl = datasets.load_mni152_template(resolution=2)
    center = tpl.affine[:3, :3] @ ((np.array(tpl.shape) - 1) / 2) + tpl.affine[:3, 3]
    grid = np.diag([voxel, voxel, voxel, 1.0])
    grid[:3, 3] = center - voxel * (np.array(shape) - 1) / 2
    return tpl, grid


def _simulate(params, tsnr=75.0, shape=(53, 63, 51), voxel=VOXEL, seed=1):
    """vol_t(x) = template(M_t^-1 x) (cubic spline) + Gaussian noise at the given tSNR."""
    from nilearn import image

    tpl, grid = _grid(shape, voxel)
    vols = []
    for m in params_to_affine(params):
        res = image.resample_img(tpl, target_affine=np.linalg.inv(m) @ grid, target_shape=shape,
                                 interpolation="continuous", force_resample=True,
                                 copy_header=True)
        vols.append(res.get_fdata(dtype=np.float32))
    data = np.stack(vols, axis=-1)
    if tsnr:
        brain = data[..., 0] > 0.2 * data[..., 0].max()
        sd = data[..., 0][brain].mean() / tsnr
        data += np.random.default_rng(seed).normal(scale=sd, size=data.shape).astype(np.float32)
    return nib.Nifti1Image(data, grid)


def _true_params():
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.normal(size=(N_VOL, 6)), axis=0)
    walk -= walk[0]
    walk /= np.abs(walk).max(axis=0)
    p = walk * np.r_[2.0, 1.5, 2.0, np.deg2rad([2.0, 1.5, 2.0])]
    p[SPIKE] += np.r_[1.5, -1.2, 1.0, np.deg2rad([1.5, -1.0, 1.2])]
    return p  # volume 0 has zero motion


@pytest.fixture(scope="module")
def run():
    params = _true_params()
    return _simulate(params), params


def _rms(a):
    return float(np.sqrt(np.mean(np.square(a))))


# ------------------------------------------------------------------------------------------
def test_params_affine_round_trip():
    rng = np.random.default_rng(3)
    p = np.c_[rng.uniform(-20, 20, (50, 3)), rng.uniform(-1.2, 1.2, (50, 3))]
    for center in [(0, 0, 0), (12.5, -30.0, 8.0)]:
        m = params_to_affine(p, center=center)
        np.testing.assert_allclose(affine_to_params(m, center=center), p, atol=1e-10, rtol=0)
        np.testing.assert_allclose(params_to_affine(affine_to_params(m, center=center),
                                                    center=center), m, atol=1e-10, rtol=0)
        # rigid: orthonormal, det +1
        r = m[:, :3, :3]
        np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(3), r.shape),
                                   atol=1e-12)
        np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    # single vector in -> single out
    assert params_to_affine(p[0]).shape == (4, 4)
    assert affine_to_params(params_to_affine(p[0])).shape == (6,)


def test_parameter_convention():
    # rot_z = +90 deg turns +x into +y (right-handed, about the origin)
    m = params_to_affine([0, 0, 0, 0, 0, np.pi / 2])
    np.testing.assert_allclose(m @ [1, 0, 0, 1], [0, 1, 0, 1], atol=1e-12)
    # rot_x = +90 deg turns +y into +z
    m = params_to_affine([0, 0, 0, np.pi / 2, 0, 0])
    np.testing.assert_allclose(m @ [0, 1, 0, 1], [0, 0, 1, 1], atol=1e-12)
    # composition order R = Rz @ Ry @ Rx, then translation
    a, b, c = 0.1, -0.2, 0.3
    rx = params_to_affine([0, 0, 0, a, 0, 0])
    ry = params_to_affine([0, 0, 0, 0, b, 0])
    rz = params_to_affine([0, 0, 0, 0, 0, c])
    tr = params_to_affine([1, 2, 3, 0, 0, 0])
    np.testing.assert_allclose(params_to_affine([1, 2, 3, a, b, c]), tr @ rz @ ry @ rx,
                               atol=1e-12)
    # a center is a fixed point of a pure rotation
    ctr = np.array([10.0, -20.0, 30.0])
    m = params_to_affine([0, 0, 0, a, b, c], center=ctr)
    np.testing.assert_allclose(m @ np.r_[ctr, 1], np.r_[ctr, 1], atol=1e-12)


def test_recovers_known_motion(run):
    img, truth = run
    params, affines = estimate_motion(img, ref_index=0)
    assert params.shape == (N_VOL, 6) and affines.shape == (N_VOL, 4, 4)
    np.testing.assert_allclose(params, affine_to_params(affines), atol=1e-12)
    np.testing.assert_array_equal(params[0], 0.0)
    err = params - truth
    # measured on this run (3.5 mm voxels, tSNR 75): RMS 0.016 mm / 3.0e-4 rad,
    # max 0.044 mm / 7.4e-4 rad
    assert _rms(err[:, :3]) < 0.04
    assert _rms(err[:, 3:]) < 6e-4
    assert np.abs(err[:, :3]).max() < 0.1
    assert np.abs(err[:, 3:]).max() < 0.0015
    # the spike is found, with the right sign
    assert np.all(np.abs(params[SPIKE] - truth[SPIKE]) < np.r_[0.1, 0.1, 0.1, [0.0015] * 3])



def test_bold_levels_keep_accuracy():
    """A 2.4 mm run is realigned with every 2nd voxel at the fine level: the motion is
    recovered nearly as well as on every voxel (RMS error within 0.01 mm / 2e-4 rad of it, under
    the bounds of the 3.5 mm test); 3 mm runs and coarser keep the default pyramid."""
    from prepost.registration import DEFAULT_LEVELS

    assert bold_levels(3.0) == bold_levels(3.5) == tuple(DEFAULT_LEVELS)
    assert bold_levels(2.4)[-1][1] == 2
    truth = _true_params()
    img = _simulate(truth, shape=(77, 92, 74), voxel=2.4)
    err_default = estimate_motion(img, ref_index=0)[0] - truth
    _, params, _ = estimate_bold_motion(img, 0)  # picks its own reference: compare relative
    ref_index = int(np.flatnonzero(np.all(params == 0, axis=1))[0])
    rel = affine_to_params(params_to_affine(truth) @ np.linalg.inv(params_to_affine(
        truth[ref_index])))
    err = params - rel
    print(f"2.4 mm, BOLD levels: RMS {_rms(err[:, :3]):.4f} mm / {_rms(err[:, 3:]):.2e} rad; "
          f"default {_rms(err_default[:, :3]):.4f} mm / {_rms(err_default[:, 3:]):.2e} rad")
    assert _rms(err[:, :3]) < _rms(err_default[:, :3]) + 0.01
    assert _rms(err[:, 3:]) < _rms(err_default[:, 3:]) + 2e-4
    assert _rms(err[:, :3]) < 0.04 and _rms(err[:, 3:]) < 6e-4
    assert np.abs(err[:, :3]).max() < 0.1 and np.abs(err[:, 3:]).max() < 0.0015


def test_other_reference_and_no_warm_start(run):
    img, truth = run
    ref = 5
    params, affines = estimate_motion(img, ref_index=ref, warm_start=False)
    rel = params_to_affine(truth) @ np.linalg.inv(params_to_affine(truth[ref]))
    err = params - affine_to_params(rel)
    # measured: RMS 0.019 mm / 3.2e-4 rad
    assert _rms(err[:, :3]) < 0.04
    assert _rms(err[:, 3:]) < 6e-4


def test_world_parameters_do_not_depend_on_voxel_order(run):
    # the same run stored left-right flipped (LAS) gives the same world-space parameters
    img, _ = run
    data = np.ascontiguousarray(img.get_fdata(dtype=np.float32)[::-1])
    aff = img.affine.copy()
    aff[:3, 3] = img.affine[:3, :3] @ [img.shape[0] - 1, 0, 0] + img.affine[:3, 3]
    aff[:, 0] *= -1
    flipped = nib.Nifti1Image(data, aff)
    p_ras, _ = estimate_motion(img, ref_index=0)
    p_las, _ = estimate_motion(flipped, ref_index=0)
    np.testing.assert_allclose(p_las, p_ras, atol=1e-6)


def test_default_reference_avoids_spike(run):
    img, _ = run
    ref = select_reference(img)
    assert ref != SPIKE and 0 <= ref < N_VOL
    params, _ = estimate_motion(img)
    np.testing.assert_array_equal(params[ref], 0.0)


def test_identity_motion_gives_zero():
    still = _simulate(np.zeros((4, 6)), tsnr=None)
    params, affines = estimate_motion(still, ref_index=0)
    assert np.abs(params).max() < 1e-6
    noisy = _simulate(np.zeros((4, 6)), tsnr=75.0)
    params, _ = estimate_motion(noisy, ref_index=0)
    # measured: 0.004 mm / 9e-5 rad
    assert np.abs(params[:, :3]).max() < 0.02
    assert np.abs(params[:, 3:]).max() < 3e-4


def test_apply_motion_realigns(run):
    img, truth = run
    _, affines = estimate_motion(img, ref_index=0)
    out = apply_motion(img, affines)
    assert out.shape == img.shape
    np.testing.assert_allclose(out.affine, img.affine)
    data, raw = out.get_fdata(), img.get_fdata()
    core = np.zeros(img.shape[:3], bool)
    core[6:-6, 6:-6, 6:-6] = True
    core &= raw[..., 0] > 0.1 * raw[..., 0].max()
    before = _rms(raw[core, SPIKE] - raw[core, 0])
    after = _rms(data[core, SPIKE] - raw[core, 0])
    assert after < 0.4 * before
    # resampling with the true transforms matches resampling with the estimated ones
    true_out = apply_motion(img, params_to_affine(truth)).get_fdata()
    assert _rms(true_out[core] - data[core]) < 0.1 * before
    # identity affines leave the data unchanged
    same = apply_motion(img, np.tile(np.eye(4), (N_VOL, 1, 1))).get_fdata()
    np.testing.assert_allclose(same, raw, atol=1e-4)


def test_framewise_displacement_matches_nipype(tmp_path, run):
    from nipype.algorithms.confounds import FramewiseDisplacement

    _, truth = run
    fd = framewise_displacement(truth, radius=50.0)
    assert fd.shape == (N_VOL,) and fd[0] == 0.0
    par = tmp_path / "motion.txt"
    np.savetxt(par, truth)
    res = FramewiseDisplacement(in_file=str(par), parameter_source="SPM", radius=50.0,
                                out_file=str(tmp_path / "fd.txt")).run()
    ref = np.loadtxt(res.outputs.out_file, skiprows=1)
    np.testing.assert_allclose(fd[1:], ref, rtol=1e-6, atol=1e-6)
    # hand check of one frame
    d = np.abs(truth[SPIKE] - truth[SPIKE - 1])
    assert fd[SPIKE] == pytest.approx(d[:3].sum() + 50.0 * d[3:].sum())


def test_input_errors(run):
    img, _ = run
    with pytest.raises(InputError):
        estimate_motion(nib.Nifti1Image(np.zeros((5, 5, 5), np.float32), np.eye(4)))
    with pytest.raises(InputError):
        estimate_motion(img, ref_index=N_VOL)
    with pytest.raises(InputError):
        estimate_motion(img, mask=np.ones((3, 3, 3), bool))
    with pytest.raises(InputError):
        apply_motion(img, np.tile(np.eye(4), (N_VOL - 1, 1, 1)))
    with pytest.raises(InputError):
        params_to_affine(np.zeros(5))
    with pytest.raises(InputError):
        framewise_displacement(np.zeros(6))
    bad = img.get_fdata(dtype=np.float32)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(InputError):
        estimate_motion(nib.Nifti1Image(bad, img.affine))
