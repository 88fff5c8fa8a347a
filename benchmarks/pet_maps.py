"""Time the voxel-wise parametric maps on a 2 mm MNI brain (goal: <= 30 s for Logan VT).

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
    fs, fd = sim.frame_timing(sim.DEFAULTS["pet"]["frames"])
    inp = {"feng": [400.0, 8.0, 2.5, -4.0, -0.25, -0.015], "delay_min": 0.25,
           "parent_fraction_hill": [0.15, 1.8, 12.0], "blood_plasma_ratio": 0.9}
    rng = np.random.default_rng(0)
    vt = np.where(m, rng.uniform(4, 25, m.shape), 0.0)
    k1 = 0.25
    grid = np.linspace(3, 26, 24)
    curves = np.stack([sim.one_tcm_frames(inp, k1, k1 / v, 0.05, fs, fd) for v in grid])
    idx = np.clip(np.searchsorted(grid, vt), 0, len(grid) - 1)
    data = curves[idx].astype(np.float32)
    data *= (1 + 0.05 * rng.standard_normal(data.shape)).astype(np.float32)
    img = nib.Nifti1Image(data, mask.affine)
    img.header.set_xyzt_units("mm", "sec")
    cpf, _ = sim.input_functions(inp)
    t = np.arange(0, fs[-1] + fd[-1] + 1, 1.0)
    t0 = time.perf_counter()
    out, _ = tacs.voxelwise_logan_vt(img, fs, fd, t, cpf(t / 60), mask_img=mask)
    t1 = time.perf_counter()
    s = tacs.voxelwise_suvr(img, fs, fd, reference_tac=curves[0], mask_img=mask)
    t2 = time.perf_counter()
    v = out.get_fdata()[m]
    print(f"grid {m.shape}, {int(m.sum())} brain voxels, {len(fs)} frames")
    print(f"voxelwise_logan_vt: {t1 - t0:.2f} s (finite {np.isfinite(v).mean():.3f}, median VT {np.nanmedian(v):.2f})")
    print(f"voxelwise_suvr:     {t2 - t1:.2f} s (median {np.nanmedian(s.get_fdata()[m]):.2f})")


if __name__ == "__main__":
    main()
