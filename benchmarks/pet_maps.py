"""Time the voxel-wise parametric maps on a 2 mm MNI brain (goal: <= 30 s per map).

Plasma Logan VT, SUVR and basis-function SRTM BPND (vectorised over voxels) on a noisy 1TCM
brain; SRTM is compared with the regional NLS fit of :func:`prepost.pet.kinetics.srtm` looped
over a sample of voxels (extrapolated to the brain).

Usage: python benchmarks/pet_maps.py
"""

import time

import nibabel as nib
import numpy as np
from nilearn import datasets

from prepost import simulate as sim
from prepost.pet import tacs


def main():
    mask = datasets.load_mni152_brain_mask(resolution=2)
    m = mask.get_fdata() > 0.5
    frame_start_s, frame_duration_s = sim.frame_timing(sim.DEFAULTS["pet"]["frames"])
    inp = {"feng": [400.0, 8.0, 2.5, -4.0, -0.25, -0.015], "delay_min": 0.25,
           "parent_fraction_hill": [0.15, 1.8, 12.0], "blood_plasma_ratio": 0.9}
    rng = np.random.default_rng(0)
    vt = np.where(m, rng.uniform(4, 25, m.shape), 0.0)
    k1 = 0.25
    grid = np.linspace(3, 26, 24)
    curves = np.stack([sim.one_tcm_frames(inp, k1, k1 / v, 0.05, frame_start_s, frame_duration_s) for v in grid])
    idx = np.clip(np.searchsorted(grid, vt), 0, len(grid) - 1)
    data = curves[idx].astype(np.float32)
    data *= (1 + 0.05 * rng.standard_normal(data.shape)).astype(np.float32)
    img = nib.Nifti1Image(data, mask.affine)
    img.header.set_xyzt_units("mm", "sec")
    cpf, _ = sim.input_functions(inp)
    t = np.arange(0, frame_start_s[-1] + frame_duration_s[-1] + 1, 1.0)
    t0 = time.perf_counter()
    out, _ = tacs.voxelwise_logan_vt(img, frame_start_s, frame_duration_s, t, cpf(t / 60), mask_img=mask)
    t1 = time.perf_counter()
    ref = sim.one_tcm_frames(inp, 0.12, 0.12 / 5.0, 0.05, frame_start_s, frame_duration_s)
    s = tacs.voxelwise_suvr(img, frame_start_s, frame_duration_s, reference_tac=ref, mask_img=mask)
    t2 = time.perf_counter()
    bp, _, _ = tacs.voxelwise_srtm_bpnd(img, frame_start_s, frame_duration_s, ref, mask_img=mask)
    t3 = time.perf_counter()
    from prepost.pet import kinetics

    sample = np.flatnonzero(m.ravel())[:: max(int(m.sum()) // 100, 1)][:100]
    flat = data.reshape(-1, len(frame_start_s))
    t4 = time.perf_counter()
    for i in sample:
        kinetics.srtm(flat[i], ref, frame_start_s, frame_duration_s)
    per_voxel = (time.perf_counter() - t4) / len(sample)
    v = out.get_fdata()[m]
    print(f"grid {m.shape}, {int(m.sum())} brain voxels, {len(frame_start_s)} frames")
    print(f"voxelwise_logan_vt: {t1 - t0:.2f} s (finite {np.isfinite(v).mean():.3f}, median VT {np.nanmedian(v):.2f})")
    print(f"voxelwise_suvr:     {t2 - t1:.2f} s (median {np.nanmedian(s.get_fdata()[m]):.2f})")
    b = bp.get_fdata()[m]
    true_bp = grid[idx][m] / 5.0 - 1  # reference VT 5 (1TCM target and reference)
    err = np.nanmedian(np.abs(b - true_bp))
    print(f"voxelwise_srtm_bpnd: {t3 - t2:.2f} s (median |BPND error| {err:.3f}, true BPND "
          f"{true_bp.min():.2f}-{true_bp.max():.2f}, 5 % frame noise)")
    print(f"kinetics.srtm per voxel: {per_voxel * 1e3:.1f} ms -> {per_voxel * m.sum():.0f} s for the "
          f"brain ({per_voxel * m.sum() / (t3 - t2):.0f}x slower)")


if __name__ == "__main__":
    main()
