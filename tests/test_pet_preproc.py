"""PET preprocessing: summed images, frame motion correction against the simulator's truth,
coregistration with a known offset, ANTs transform conventions."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from pet_data import SMALL, simulated_session
from runner import AFFINE_ANATOMY

from prepost import registration
from prepost import simulate as sim
from prepost.errors import InputError
from prepost.pet import preproc


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    s = simulated_session(tmp_path_factory.mktemp("petsim"))
    return {**s, "fs": s["frame_start_s"], "fd": s["frame_duration_s"]}


def test_summed_image_is_duration_weighted(study):
    pet, fs, fd = study["pet"], study["fs"], study["fd"]
    img = preproc.summed_image(pet, fs, fd, window_s=(1200, None))
    sel = fs >= 1200
    data = pet.get_fdata()
    expected = (data[..., sel] * fd[sel]).sum(-1) / fd[sel].sum()
    np.testing.assert_allclose(img.get_fdata(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="window"):
        preproc.summed_image(pet, fs, fd, window_s=(1e6, 2e6))
    with pytest.raises(InputError, match="FrameTimesStart"):
        preproc.summed_image(pet, fs[:-1], fd[:-1])


def _displacement_rms(a, b, pts):
    return np.sqrt((((a - b) @ pts)[:3] ** 2).sum(0).mean())


def test_frame_motion_recovers_truth(study):
    pet, fs, fd = study["pet"], study["fs"], study["fd"]
    corr, table = preproc.frame_motion_correct(pet, fs, fd, min_start_s=120)
    assert corr.shape == pet.shape
    assert list(table.columns[:8]) == ["frame_start", "frame_duration", *preproc.PARAM_NAMES]
    sel = np.flatnonzero(fs >= 120)
    assert table.corrected.to_numpy()[sel].all() and not table.corrected.to_numpy()[: sel[0]].any()
    # early frames copy the first corrected frame
    np.testing.assert_allclose(table.loc[: sel[0], list(preproc.PARAM_NAMES)].to_numpy(),
                               np.tile(table.loc[sel[0], list(preproc.PARAM_NAMES)].to_numpy(float), (sel[0] + 1, 1)))
    est = preproc.params_to_affine(table[list(preproc.PARAM_NAMES)].to_numpy())
    # simulator convention: frame(x) = ref(M x); ours: frame(M' y) = ref'(y) -> M' = inv(M) @ P
    truth = np.array([np.linalg.inv(sim.rigid_matrix(r)) for r in study["motion"][list(preproc.PARAM_NAMES)].to_numpy()])
    P = preproc.params_to_affine(preproc.affine_to_params(
        np.array([np.linalg.inv(truth[i]) @ est[i] for i in sel])).mean(0))
    data = pet.get_fdata()[..., -1]
    ijk = np.argwhere(data > 0.3 * np.percentile(data, 99))[::5]
    pts = np.c_[ijk @ pet.affine[:3, :3].T + pet.affine[:3, 3], np.ones(len(ijk))].T
    err = np.array([_displacement_rms(est[i], truth[i] @ P, pts) for i in sel])
    size = np.array([_displacement_rms(truth[i], np.eye(4), pts) for i in sel])
    # measured: mean error ~0.07 mm, max ~0.15 mm for ~1 mm true motion
    assert size.mean() > 0.5
    assert err.mean() < 0.2 and err.max() < 0.4
    # correction reduces the mismatch between the last frames and the reference
    raw = pet.get_fdata()[..., sel]
    cor = corr.get_fdata()[..., sel]
    w = fd[sel] / fd[sel].sum()
    ref_raw, ref_cor = raw @ w, cor @ w
    m = ref_cor > 0.3 * np.percentile(ref_cor, 99)
    def mis(x, r):
        return np.mean([np.corrcoef(x[..., k][m], r[m])[0, 1] for k in range(x.shape[-1] - 8, x.shape[-1])])
    assert mis(cor, ref_cor) >= mis(raw, ref_raw)


def test_frame_motion_bad_inputs(study):
    pet, fs, fd = study["pet"], study["fs"], study["fd"]
    with pytest.raises(InputError, match="min_start_s"):
        preproc.frame_motion_correct(pet, fs, fd, min_start_s=1e6)
    with pytest.raises(InputError, match="method"):
        preproc.frame_motion_correct(pet, fs, fd, method="flirt")


def test_ants_affine_conventions(tmp_path):
    M = sim.rigid_matrix([3, -2, 5, 0.1, -0.05, 0.2])
    M2 = sim.rigid_matrix([-1, 4, 2, 0.0, 0.1, -0.1])
    fa = registration.write_ants_affine(M, tmp_path / "a.mat")
    fb = registration.write_ants_affine(M2, tmp_path / "b.mat")
    np.testing.assert_allclose(registration.ants_affine_to_ras(fa), M, atol=1e-6)
    np.testing.assert_allclose(registration.compose_ants_affines([fa, fb]), M2 @ M, atol=1e-6)
    rng = np.random.default_rng(0)
    from scipy import ndimage
    vol = ndimage.gaussian_filter(rng.random((40, 44, 38)), 3).astype(np.float32)
    aff = np.diag([3.0, 3.0, 3.0, 1.0]); aff[:3, 3] = [-60, -66, -57]
    img = nib.Nifti1Image(vol, aff)
    a = preproc.apply_ants_transforms(img, img, [fa, fb]).get_fdata()
    b = preproc.resample_to_grid(img, img, M2 @ M).get_fdata()
    inner = (slice(8, -8),) * 3
    assert np.abs(a - b)[inner].max() < 1e-3 * np.abs(vol).max()


def test_coregistration_known_offset(study):
    pet, fs, fd, t1 = study["pet"], study["fs"], study["fd"], study["t1w"]
    s = preproc.summed_image(pet, fs, fd, window_s=(1200, None))
    r1 = preproc.coregister_pet_to_t1w(s, t1)
    R = sim.rigid_matrix([6.0, -4.0, 3.0, 0.05, -0.03, 0.08])  # ~5 deg, ~8 mm
    moved = nib.Nifti1Image(s.get_fdata(dtype=np.float32), R @ s.affine)
    r2 = preproc.coregister_pet_to_t1w(moved, t1)
    assert r1["qc"]["mutual_information"] < r1["qc"]["mutual_information_init"]
    assert len(r1["fwd_transforms"]) == 1 and r1["fwd_transforms"][0].endswith(".mat")
    np.testing.assert_allclose(r1["pet_to_t1w"] @ r1["t1w_to_pet"], np.eye(4), atol=1e-9)
    t1d = t1.get_fdata()
    ijk = np.argwhere(t1d > np.percentile(t1d, 80))[::10]
    pts = np.c_[ijk @ t1.affine[:3, :3].T + t1.affine[:3, 3], np.ones(len(ijk))].T
    # measured 0.06 mm RMS over the head
    assert _displacement_rms(r2["t1w_to_pet"], R @ r1["t1w_to_pet"], pts) < 0.5


@pytest.fixture(scope="module")
def fine_t1w(tmp_path_factory):
    """One session with a T1w twice as fine as its PET (2 mm vs 4 mm, as 1 mm vs 2 mm at real
    size), its summed late frames, the true brain mask and the true T1w -> summed-PET matrix."""
    import json

    root = tmp_path_factory.mktemp("petfine")
    sim.simulate_subject(root / "bids", root / "truth", "01", sessions=("pre",),
                         params={**SMALL, "anat": {"voxel_mm": 2.0, **AFFINE_ANATOMY}})
    bp, tp = sim.bids_paths(root / "bids", "01", "pre"), sim.truth_paths(root / "truth", "01", "pre")
    meta = json.loads(bp["pet_json"].read_text())
    fs, fd = np.array(meta["FrameTimesStart"]), np.array(meta["FrameDuration"])
    t1 = nib.load(bp["t1w"])
    geo = json.loads(tp["geometry"].read_text())
    brain = sim.mni_maps_on_grid(t1.affine, t1.shape, np.asarray(geo["t1w_to_mni"]),
                                 keys=("brain",))["brain"] > 0.5
    # the summed frames' true pose: their duration-weighted mean (simulator: frame = ref(S_f x))
    sel = fs >= 1200
    motion = pd.read_csv(tp["pet_motion"], sep="\t")[list(preproc.PARAM_NAMES)].to_numpy()[sel]
    inv = np.array([np.linalg.inv(sim.rigid_matrix(r)) for r in motion])
    mean = preproc.params_to_affine(preproc.affine_to_params(inv).T @ (fd[sel] / fd[sel].sum()))
    truth = mean @ np.linalg.inv(np.asarray(geo["pet_to_mni"])) @ np.asarray(geo["t1w_to_mni"])
    ijk = np.argwhere(brain)
    pts = np.c_[ijk @ t1.affine[:3, :3].T + t1.affine[:3, 3], np.ones(len(ijk))].T
    return {"t1w": t1, "mask": nib.Nifti1Image(brain.astype(np.uint8), t1.affine), "truth": truth,
            "pts": pts, "summed": preproc.summed_image(nib.load(bp["pet"]), fs, fd,
                                                       window_s=(1200, None))}


def test_coregistration_on_shrunk_t1w_recovers_truth(fine_t1w):
    """Registering to the T1w block-averaged to the PET's voxel size ('auto') is as accurate
    against the simulator's true pose as registering on the T1w grid."""
    d = fine_t1w
    err = {}
    for shrink in (1, "auto"):
        reg = preproc.coregister_pet_to_t1w(d["summed"], d["t1w"], t1w_mask_img=d["mask"],
                                            fixed_shrink=shrink)
        dist = np.linalg.norm(((reg["t1w_to_pet"] - d["truth"]) @ d["pts"])[:3], axis=0)
        err[shrink] = dist.mean()
        assert reg["pet_in_t1w"].shape == d["t1w"].shape
        np.testing.assert_allclose(reg["pet_in_t1w"].affine, d["t1w"].affine, atol=1e-4)
        assert reg["qc"]["mutual_information"] < reg["qc"]["mutual_information_init"]
        assert reg["qc"]["dice_brain"] > 0.9
    # measured: 0.24 mm (T1w grid) and 0.20-0.26 mm (shrunk) mean error over the brain, for a
    # pose of ~10 mm / several degrees between the scans; the PET's frames move ~1 mm
    assert err[1] < 0.5 and err["auto"] < 0.5


def test_shrink_image_keeps_world_positions():
    import ants

    rng = np.random.default_rng(1)
    vol = rng.random((11, 12, 9)).astype(np.float32)
    direction = sim.rigid_matrix([0, 0, 0, 0.1, 0.2, -0.3])[:3, :3]
    img = ants.from_numpy(vol, origin=(4.0, -3.0, 2.0), spacing=(1.0, 1.0, 1.5),
                          direction=direction)
    small = registration.shrink_image(img, 2)
    assert small.shape == (5, 6, 4)
    np.testing.assert_allclose(small.spacing, (2.0, 2.0, 3.0))
    np.testing.assert_allclose(small.numpy()[1, 2, 3], vol[2:4, 4:6, 6:8].mean(), rtol=1e-5)
    # the block's centre: the mean of its voxels' physical points
    centre = np.mean([img.origin + direction @ (np.array(ijk) * img.spacing)
                      for ijk in np.ndindex(2, 2, 2)], axis=0) + direction @ (
        np.array([2, 4, 6]) * img.spacing)
    np.testing.assert_allclose(small.origin + direction @ (np.array([1, 2, 3]) * small.spacing),
                               centre, atol=1e-5)
    assert registration.shrink_image(img, 1) is img
    t1 = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))
    pet = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    pet3 = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.diag([3.0, 3.0, 3.0, 1.0]))
    assert registration.shrink_factor_for(t1, pet) == 2
    assert registration.shrink_factor_for(pet, pet3) == 1
    with pytest.raises(InputError, match="factor"):
        registration.shrink_image(img, 0)


def test_transform_list_with_a_warp_is_applied_as_written(tmp_path):
    """An ``[affine.mat, warp]`` list (anat's MNI -> T1w transforms, the affine already inverted)
    is applied as it is: antspyx alone would invert the affine of such a list."""
    import ants

    img = nib.Nifti1Image(np.zeros((24, 24, 24), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    data = np.zeros(img.shape, np.float32)
    data[8:12, 10:14, 9:13] = 1.0
    moving = nib.Nifti1Image(data, img.affine)
    shift = np.eye(4)
    shift[:3, 3] = [4.0, 0.0, 0.0]  # reference point x -> moving point x + 4 mm
    mat = registration.write_ants_affine(shift, tmp_path / "shift.mat")
    zero = ants.from_numpy(np.zeros((24, 24, 24, 3), np.float32), origin=[0.0, 0.0, 0.0],
                           spacing=[2.0, 2.0, 2.0], has_components=True)
    warp = str(tmp_path / "zero_warp.nii.gz")
    ants.image_write(zero, warp)
    out = preproc.apply_ants_transforms(moving, img, [mat, warp], interpolation="nearestNeighbor")
    want = preproc.apply_ants_transforms(moving, img, [mat], interpolation="nearestNeighbor")
    np.testing.assert_allclose(np.asarray(out.dataobj), np.asarray(want.dataobj))
    # the block moves 4 mm (2 voxels) towards lower x on the reference grid
    np.testing.assert_allclose(np.asarray(out.dataobj)[6:10, 10:14, 9:13], 1.0)


@pytest.mark.parametrize("shape", [(5, 4, 3), (5, 4, 3, 1)])
def test_a_single_frame_passes_motion_correction_unchanged(shape):
    """A static one-frame PET (3D or one volume): nothing to align, the image comes out as a
    one-frame 4D image with zero motion."""
    from prepost.pet import stage

    data = np.random.default_rng(0).uniform(1, 5, shape).astype(np.float32)
    out, table, summary = stage.motion_step(nib.Nifti1Image(data, np.eye(4)), [0.0], [1200.0],
                                            min_start_s=120.0, method="gn", fwhm_mm=10.0)
    assert out.shape == (5, 4, 3, 1)
    np.testing.assert_array_equal(np.asarray(out.dataobj)[..., 0], data.reshape(5, 4, 3))
    assert len(table) == 1 and float(table[list(preproc.PARAM_NAMES)].abs().to_numpy().max()) == 0
    assert summary["frames_corrected"] == 0 and summary["max_fd_mm"] == 0.0
