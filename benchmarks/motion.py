"""Benchmark: rigid BOLD realignment, ``prepost.registration.estimate_motion`` vs antspyx
``ants.motion_correction``.

A synthetic run is built from nilearn's MNI152 template (2 mm) resampled, with cubic splines, to a
67x79x64 grid of 2.75 mm voxels under known per-volume rigid transforms (random-walk translations
up to ~2 mm and rotations up to ~2 degrees, plus a one-volume spike), with Gaussian noise
(tSNR 75). Both methods register every volume to the same reference volume (index 0) and are
scored against the true reference-to-volume transforms.

Usage::

    python benchmarks/motion.py [--volumes 40] [--repeats 5] [--threads 1]

Errors reported: RMS over non-reference volumes of the translation components (mm) and rotation
components (rad) of ``affine_to_params``, and the RMS displacement error (mm) of brain voxels
(``|M_est y - M_true y|`` over a brain mask).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def _set_threads(n):
    for var in ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS",
                "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def simulate_run(n_vol=40, seed=0, tsnr=75.0, shape=(67, 79, 64), voxel=2.75, spike=True):
    """Synthetic 4D BOLD with known motion.

    Returns
    -------
    img : nibabel.Nifti1Image
    params : ndarray (T, 6)
        True parameters (reference = volume 0 has identity motion).
    affines : ndarray (T, 4, 4)
        True reference-to-volume world matrices (``vol_t(M_t y) = template(y)``).
    brain : ndarray of bool
        Brain mask on the output grid (for displacement errors).
    """
    import nibabel as nib
    import numpy as np
    from nilearn import datasets, image

    from prepost.registration import params_to_affine

    tpl = datasets.load_mni152_template(resolution=2)
    center = tpl.affine[:3, :3] @ ((np.array(tpl.shape) - 1) / 2) + tpl.affine[:3, 3]
    grid = np.diag([voxel, voxel, voxel, 1.0])
    grid[:3, 3] = center - voxel * (np.array(shape) - 1) / 2

    rng = np.random.default_rng(seed)
    steps = rng.normal(size=(n_vol, 6))
    steps[0] = 0
    walk = np.cumsum(steps, axis=0)
    walk /= np.abs(walk).max(axis=0) + 1e-12
    params = walk * np.r_[2.0, 2.0, 2.0, np.deg2rad([2.0, 2.0, 2.0])] * rng.uniform(0.5, 1, 6)
    if spike and n_vol > 4:
        params[n_vol // 2 + 1] += np.r_[1.5, -1.2, 1.0, np.deg2rad([1.5, -1.0, 1.2])]
    affines = params_to_affine(params)

    vols = []
    for m in affines:
        # vol_t(x) = template(M_t^-1 x): sample the template at M_t^-1 @ grid @ voxel
        res = image.resample_img(tpl, target_affine=np.linalg.inv(m) @ grid, target_shape=shape,
                                 interpolation="continuous", force_resample=True,
                                 copy_header=True)
        vols.append(res.get_fdata(dtype=np.float32))
    data = np.stack(vols, axis=-1)
    brain = data[..., 0] > 0.2 * data[..., 0].max()
    sd = data[..., 0][brain].mean() / tsnr
    data += np.random.default_rng(seed + 1).normal(scale=sd, size=data.shape).astype(np.float32)
    return nib.Nifti1Image(data, grid), params, affines, brain


def ants_world_affines(transform_lists):
    """Convert antspyx motion_correction transforms to RAS reference-to-volume 4x4 matrices.

    ITK transforms map fixed-space (here reference) physical points to moving-space points in
    LPS; the matrix is read off by transforming the origin and the unit vectors and conjugated
    with diag(-1, -1, 1) to get RAS.
    """
    import ants
    import numpy as np

    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    out = []
    for tl in transform_lists:
        if tl == "NA":
            out.append(np.eye(4))
            continue
        m = np.eye(4)
        for f in tl:  # ants applies the list last-to-first; a rigid run yields one file
            tx = ants.read_transform(f)
            o = np.array(tx.apply_to_point((0.0, 0.0, 0.0)))
            lin = np.stack([np.array(tx.apply_to_point(tuple(e))) - o for e in np.eye(3)], 1)
            t = np.eye(4)
            t[:3, :3] = lin
            t[:3, 3] = o
            m = m @ t
        out.append(flip @ m @ flip)
    return np.array(out)


def errors(est, truth, ref_index, brain, grid_affine):
    import numpy as np

    from prepost.registration import affine_to_params

    rel = truth @ np.linalg.inv(truth[ref_index])
    keep = np.arange(len(truth)) != ref_index
    pe = affine_to_params(est[keep]) - affine_to_params(rel[keep])
    vox = np.argwhere(brain)
    pts = np.c_[vox, np.ones(len(vox))] @ grid_affine.T
    d = np.einsum("tij,nj->tni", est[keep] - rel[keep], pts)[..., :3]
    return (float(np.sqrt((pe[:, :3] ** 2).mean())), float(np.sqrt((pe[:, 3:] ** 2).mean())),
            float(np.sqrt((d ** 2).sum(-1).mean())))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volumes", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for ITK/BLAS (default 1: the machine is shared)")
    ap.add_argument("--skip-ants", action="store_true")
    args = ap.parse_args(argv)
    _set_threads(args.threads)

    import nibabel as nib
    import numpy as np

    from prepost.registration import estimate_motion

    img, _, truth, brain = simulate_run(args.volumes)
    ref = 0
    print(f"run: {img.shape} voxels {img.header.get_zooms()[:3]}, reference volume {ref}, "
          f"threads {args.threads}")
    rows = []

    times, est = [], None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        _, est = estimate_motion(img, ref_index=ref)
        times.append(time.perf_counter() - t0)
    ours = float(np.median(times)) / img.shape[3]
    rows.append(("prepost estimate_motion", ours, *errors(est, truth, ref, brain, img.affine)))

    if not args.skip_ants:
        import ants

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "bold.nii.gz")
            nib.save(img, path)
            aimg = ants.image_read(path)
            fixed = ants.slice_image(aimg, axis=3, idx=ref)
            t0 = time.perf_counter()
            res = ants.motion_correction(aimg, fixed=fixed, type_of_transform="Rigid")
            t_ants = (time.perf_counter() - t0) / img.shape[3]
            est_ants = ants_world_affines(res["motion_parameters"])
        rows.append(("ants.motion_correction Rigid", t_ants,
                     *errors(est_ants, truth, ref, brain, img.affine)))

    print(f"{'method':30s} {'s/volume':>9s} {'RMS trans mm':>13s} {'RMS rot rad':>12s} "
          f"{'RMS disp mm':>12s}")
    for name, t, et, er, ed in rows:
        print(f"{name:30s} {t:9.4f} {et:13.4f} {er:12.6f} {ed:12.4f}")
    if len(rows) == 2:
        print(f"speed ratio (ants / prepost): {rows[1][1] / rows[0][1]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
