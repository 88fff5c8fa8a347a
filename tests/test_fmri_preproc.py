"""Tests for prepost.fmri.preproc: dummy scans, slice timing, one-shot MNI resampling,
BOLD reference and BOLD-to-T1w coregistration."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from prepost.errors import InputError
from prepost.fmri.preproc import (
    bold_reference,
    coregister_bold_to_t1w,
    detect_non_steady_state,
    drop_volumes,
    mni_to_t1w_coords_from_ants,
    resample_bold_to_mni,
    slice_timing_correct,
)
from prepost.registration import ants_affine_to_ras, apply_motion, params_to_affine



def _template(voxel):
    """MNI152 template on an isotropic grid of ``voxel`` mm, as a nibabel image."""
    from nilearn import datasets, image

    tpl = datasets.load_mni152_template(resolution=2)
    aff = np.diag([voxel, voxel, voxel, 1.0])
    aff[:3, 3] = [-90.0, -126.0, -72.0]
    shape = tuple(int(s) for s in np.ceil(np.array([182, 218, 182]) / voxel))
    return image.resample_img(tpl, target_affine=aff, target_shape=shape,
                              interpolation="continuous", force_resample=True, copy_header=True)


def _mni_grid(voxel=4.0):
    aff = np.diag([voxel, voxel, voxel, 1.0])
    aff[:3, 3] = [-90.0, -126.0, -72.0]
    shape = tuple(int(s) for s in np.ceil(np.array([182, 218, 182]) / voxel))
    return nib.Nifti1Image(np.zeros(shape, np.uint8), aff)


# ------------------------------------------------------------------------------------------------
def test_slice_timing_fourier_shift():
    tr, n, nz = 2.0, 64, 6
    st = np.array([0.0, 1.0, 0.333, 1.333, 0.667, 1.667])  # interleaved
    t = np.arange(n) * tr
    f = 0.03
    data = np.zeros((2, 2, nz, n), np.float32)
    for k in range(nz):
        data[:, :, k] = 100 + 5 * np.sin(2 * np.pi * f * (t + st[k])) + 0.02 * (t + st[k])
    img = nib.Nifti1Image(data, np.eye(4))
    out = slice_timing_correct(img, st, tr, slice_axis=2, ref=0.5).get_fdata()
    t_ref = st.min() + 0.5 * (st.max() - st.min())
    want = 100 + 5 * np.sin(2 * np.pi * f * (t + t_ref)) + 0.02 * (t + t_ref)
    err = np.abs(out[0, 0] - want[None, :])[:, 4:-4]  # interior, away from the edges
    assert err.max() < 0.05  # 1 % of the amplitude
    before = np.abs(data[0, 0] - want[None, :])[:, 4:-4].max()
    assert before > 0.5
    # the reference slice is unchanged
    with pytest.raises(InputError):
        slice_timing_correct(img, st[:-1], tr)
    with pytest.raises(InputError):
        slice_timing_correct(img, st + 2.0, tr)


def _smooth_volume(shape, seed=0):
    rng = np.random.default_rng(seed)
    v = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    return (1000 + 2000 * v).astype(np.float32)


def test_resample_one_step_matches_two_step():
    # BOLD grid (4 mm), smooth content, 5 volumes with motion
    shape = (24, 28, 22)
    aff = np.diag([4.0, 4.0, 4.0, 1.0])
    aff[:3, 3] = [-46.0, -54.0, -42.0]
    vol = _smooth_volume(shape)
    mot = params_to_affine(np.array([[0, 0, 0, 0, 0, 0], [1.0, -0.5, 0.3, 0.02, 0.0, -0.01],
                                     [-0.7, 0.4, 1.2, 0.0, 0.015, 0.01],
                                     [0.3, 0.3, -0.6, -0.01, 0.01, 0.0],
                                     [2.0, 0.0, 0.0, 0.0, 0.0, 0.03]]))
    # volume t is the reference moved: vol_t(M_t y) = ref(y)  ->  vol_t(x) = ref(M_t^-1 x)
    data = np.stack([ndimage.affine_transform(
        vol, (np.linalg.inv(aff) @ np.linalg.inv(m) @ aff)[:3, :3],
        (np.linalg.inv(aff) @ np.linalg.inv(m) @ aff)[:3, 3], order=3, mode="nearest")
        for m in mot], axis=-1)
    img = nib.Nifti1Image(data, aff)
    coreg = params_to_affine([2.0, -3.0, 1.0, 0.03, -0.02, 0.05])  # T1w -> BOLD ref
    to_mni = params_to_affine([-1.0, 4.0, 2.0, 0.0, 0.04, 0.0])  # MNI -> T1w
    ref = nib.Nifti1Image(np.zeros((20, 24, 18), np.uint8),
                          np.array([[3.5, 0, 0, -35], [0, 3.5, 0, -45], [0, 0, 3.5, -30],
                                    [0, 0, 0, 1]]))
    one = resample_bold_to_mni(img, mot, coreg, to_mni, ref, order=3).get_fdata()
    # explicit two steps: realign onto the BOLD grid, then BOLD ref -> MNI
    realigned = apply_motion(img, mot, order=3).get_fdata()
    q = np.linalg.inv(aff) @ coreg @ to_mni @ ref.affine
    two = np.stack([ndimage.affine_transform(realigned[..., t], q[:3, :3], q[:3, 3],
                                             output_shape=ref.shape, order=3)
                    for t in range(len(mot))], axis=-1)
    inner = ndimage.binary_erosion(np.all(two != 0, axis=-1) & np.all(one != 0, axis=-1),
                                   iterations=2)
    diff = np.abs(one - two)[inner]
    rng_ = np.ptp(vol)
    print(f"one-step vs two-step: median |diff| {np.median(diff) / rng_:.2e}, "
          f"99th pct {np.percentile(diff, 99) / rng_:.2e} of the intensity range")
    assert inner.sum() > 1000
    assert np.percentile(diff, 99) < 0.02 * rng_
    # and every volume matches the reference content in MNI space
    q0 = np.linalg.inv(aff) @ coreg @ to_mni @ ref.affine
    direct = ndimage.affine_transform(vol, q0[:3, :3], q0[:3, 3], output_shape=ref.shape,
                                      order=3)
    for t in range(len(mot)):
        assert np.corrcoef(one[..., t][inner], direct[inner])[0, 1] > 0.999
    # the coordinate-map and callable forms give the same result as the matrix form
    ijk = np.indices(ref.shape).reshape(3, -1)
    mni = (ref.affine[:3, :3] @ ijk + ref.affine[:3, 3:4]).T
    coords = (mni @ to_mni[:3, :3].T + to_mni[:3, 3]).reshape(ref.shape + (3,))
    alt = resample_bold_to_mni(img, mot, coreg, None, ref, mni_to_t1w_coords=coords).get_fdata()
    np.testing.assert_allclose(alt, one, atol=1e-3)
    alt2 = resample_bold_to_mni(img, mot, coreg, lambda p: p @ to_mni[:3, :3].T + to_mni[:3, 3],
                                ref).get_fdata()
    np.testing.assert_allclose(alt2, one, atol=1e-3)
    with pytest.raises(InputError):
        resample_bold_to_mni(img, mot[:-1], coreg, to_mni, ref)


def test_itk_conversion_and_ants_coordinate_map(tmp_path):
    import ants

    # ITK translation (LPS) of (5, -3, 2) mm, fixed -> moving
    tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                    translation=(5.0, -3.0, 2.0))
    path = str(tmp_path / "shift.mat")
    ants.write_transform(tx, path)
    m = ants_affine_to_ras(path)
    np.testing.assert_allclose(m[:3, 3], [-5.0, 3.0, 2.0], atol=1e-9)
    # dense MNI -> T1w map through ants.apply_transforms on coordinate images
    ref = _mni_grid(8.0)
    t1w = nib.Nifti1Image(np.zeros((30, 36, 30), np.float32),
                          np.array([[6.0, 0, 0, -90], [0, 6.0, 0, -110], [0, 0, 6.0, -80],
                                    [0, 0, 0, 1]]))
    coords = mni_to_t1w_coords_from_ants(ref, [path], t1w)
    ijk = np.indices(ref.shape).reshape(3, -1)
    mni = (ref.affine[:3, :3] @ ijk + ref.affine[:3, 3:4]).T.reshape(ref.shape + (3,))
    ok = np.all(np.isfinite(coords), axis=-1)
    assert ok.mean() > 0.9
    np.testing.assert_allclose(coords[ok], mni[ok] + [-5.0, 3.0, 2.0], atol=1e-3)


def test_coregistration_recovers_known_rigid_transform():
    t1 = _template(3.0)
    t1w = t1.get_fdata(dtype=np.float32)
    t1w_brain = nib.Nifti1Image(t1w, t1.affine)
    c_true = params_to_affine([4.0, -3.0, 2.5, np.deg2rad(4), np.deg2rad(-3), np.deg2rad(5)])
    # boldref(C y) = t1w(y)  ->  boldref(x) = t1w(C^-1 x), on a 4 mm BOLD-like grid with a
    # different contrast (dark WM, bright CSF-like edges) and noise
    bold_aff = np.diag([4.0, 4.0, 4.0, 1.0])
    bold_aff[:3, 3] = [-84.0, -120.0, -66.0]
    bshape = (43, 52, 40)
    q = np.linalg.inv(t1.affine) @ np.linalg.inv(c_true) @ bold_aff
    b = ndimage.affine_transform(t1w, q[:3, :3], q[:3, 3], output_shape=bshape, order=1)
    b = np.where(b > 0.05, 1.6 - b, 0.0) * 800
    b += np.random.default_rng(0).normal(0, 10, b.shape)
    bold_ref = nib.Nifti1Image(b.astype(np.float32), bold_aff)
    c_est = coregister_bold_to_t1w(bold_ref, t1w_brain, type_of_transform="Rigid")
    # compare where it matters: displacement of brain points
    ijk = np.argwhere(t1w > 0.3)[::7]
    pts = ijk @ t1.affine[:3, :3].T + t1.affine[:3, 3]
    d = np.linalg.norm(pts @ (c_est - c_true)[:3, :3].T + (c_est - c_true)[:3, 3], axis=1)
    print(f"coregistration error over brain points: mean {d.mean():.2f} mm, max {d.max():.2f}")
    assert d.mean() < 1.0 and d.max() < 2.0



def test_coregistration_on_a_shrunk_fine_t1w():
    """A 1.5 mm T1w against a 4 mm BOLD reference is registered on a 3 mm block-averaged grid
    ('auto'): the known transform is recovered as on the full grid."""
    t1 = _template(1.5)
    t1w = t1.get_fdata(dtype=np.float32)
    c_true = params_to_affine([3.0, -2.0, 2.0, np.deg2rad(3), np.deg2rad(-2), np.deg2rad(4)])
    bold_aff = np.diag([4.0, 4.0, 4.0, 1.0])
    bold_aff[:3, 3] = [-84.0, -120.0, -66.0]
    q = np.linalg.inv(t1.affine) @ np.linalg.inv(c_true) @ bold_aff
    b = ndimage.affine_transform(t1w, q[:3, :3], q[:3, 3], output_shape=(43, 52, 40), order=1)
    b = np.where(b > 0.05, 1.6 - b, 0.0) * 800
    b += np.random.default_rng(0).normal(0, 10, b.shape)
    c_est = coregister_bold_to_t1w(nib.Nifti1Image(b.astype(np.float32), bold_aff),
                                   nib.Nifti1Image(t1w, t1.affine))
    ijk = np.argwhere(t1w > 0.3)[::29]
    pts = ijk @ t1.affine[:3, :3].T + t1.affine[:3, 3]
    d = np.linalg.norm(pts @ (c_est - c_true)[:3, :3].T + (c_est - c_true)[:3, 3], axis=1)
    print(f"coregistration error (shrunk T1w): mean {d.mean():.2f} mm, max {d.max():.2f}")
    assert d.mean() < 1.0 and d.max() < 2.0


# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    from fmri_data import simulated_run

    return simulated_run(tmp_path_factory.mktemp("sim"), n_volumes=40)


def test_non_steady_state_and_drop(simulated):
    img = simulated["img"]
    assert detect_non_steady_state(img) == int(simulated["motion"].non_steady_state.sum()) == 2
    assert detect_non_steady_state(img, n=3) == 3
    with pytest.raises(InputError):
        detect_non_steady_state(img, n=-1)
    out = drop_volumes(img, 2)
    assert out.shape[3] == img.shape[3] - 2
    np.testing.assert_array_equal(np.asarray(out.dataobj[..., 0]), np.asarray(img.dataobj[..., 2]))
    np.testing.assert_allclose(out.affine, img.affine)


def test_resample_simulated_run_to_mni_matches_truth(simulated):
    """Identity coregistration (BOLD and T1w share the simulated native world) and the true
    native -> MNI map: the MNI-space BOLD must line up with the MNI tissue maps the simulator
    drew it from, and true motion must be undone."""
    from prepost import simulate as sim

    img = drop_volumes(simulated["img"], 2)
    true = simulated["motion"][["trans_x", "trans_y", "trans_z", "rot_x", "rot_y",
                                "rot_z"]].to_numpy()[2:]
    # simulator: image_t(x) = ref(S_t x); motion module: vol_t(M_t y) = ref(y) -> M_t = S_t^-1
    mot = np.linalg.inv(np.stack([sim.rigid_matrix(p) for p in true]))
    ref = _mni_grid(4.0)
    pull = np.linalg.inv(simulated["to_mni"])  # MNI -> native (T1w) world
    out = resample_bold_to_mni(img, mot, np.eye(4), pull, ref, order=3).get_fdata()
    static = resample_bold_to_mni(img, None, np.eye(4), pull, ref, order=3).get_fdata()
    expect = sim.mni_maps_on_grid(ref.affine, ref.shape, voxel_mm=4.0)
    base = 1000 * expect["gm"] + 700 * expect["wm"] + 1400 * expect["csf"]
    brain = expect["brain"] > 0.5
    mean = out.mean(-1)
    r = np.corrcoef(mean[brain], base[brain])[0, 1]
    shifted = resample_bold_to_mni(img, mot, params_to_affine([6.0, 0, 0, 0, 0, 0]), pull, ref,
                                   order=1).get_fdata().mean(-1)
    r_bad = np.corrcoef(shifted[brain], base[brain])[0, 1]
    r_mc = [np.corrcoef(out[..., t][brain], base[brain])[0, 1] for t in range(out.shape[3])]
    r_static = [np.corrcoef(static[..., t][brain], base[brain])[0, 1]
                for t in range(out.shape[3])]
    print(f"MNI mean vs truth r = {r:.3f} (6 mm misregistration: {r_bad:.3f}); "
          f"worst-volume r {min(r_mc):.3f} with motion correction, {min(r_static):.3f} without")
    assert r > 0.93 and r > r_bad + 0.3
    assert min(r_mc) > min(r_static)


def test_bold_reference(simulated):
    img = drop_volumes(simulated["img"], 2)
    ref = bold_reference(img, n_volumes=10)
    assert ref.shape == img.shape[:3]
    med = np.median(np.asarray(img.dataobj[..., :10], np.float32), axis=-1)
    brain = med > 300
    assert np.corrcoef(ref.get_fdata()[brain], med[brain])[0, 1] > 0.98


def test_output_names_carry_every_entity_of_the_run():
    from prepost.fmri.stage import fmriprep_paths, output_paths

    space = "MNI152NLin2009aSym"
    p = output_paths("res", space=space, res="3", sub="01", ses="pre", task="rest")
    func = "res/sub-01/ses-pre/func/sub-01_ses-pre_task-rest"
    assert p["preproc"]["bold"] == f"{func}_space-{space}_res-3_desc-preproc_bold.nii.gz"
    assert p["preproc"]["confounds"] == f"{func}_desc-confounds_timeseries.tsv"
    assert p["preproc"]["fd_plot"] == f"{func}_desc-fd_plot.png"
    assert p["denoise"]["qc"] == f"{func}_space-{space}_res-3_desc-denoised_qc.json"
    # one more entity of the run is one more keyword, and lands in every name in BIDS order
    more = output_paths("res", space=space, res="3", sub="01", ses="pre", task="rest",
                        acq="mb4", run="2")
    for group in more.values():
        for path in group.values():
            assert "/sub-01_ses-pre_task-rest_acq-mb4_run-2_" in path
    prep = fmriprep_paths("fp", space=space, res=None, sub="01", ses="pre", task="rest")
    assert str(prep["mask"]) == \
        f"fp/sub-01/ses-pre/func/sub-01_ses-pre_task-rest_space-{space}_desc-brain_mask.nii.gz"
