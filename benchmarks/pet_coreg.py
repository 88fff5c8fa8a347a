"""Benchmark: PET -> T1w coregistration at real size, on the T1w grid vs on a shrunk T1w grid.

One simulated session at real size (T1w 1 mm, PET 2 mm, the default 31 frames; simulated once into
``--study`` when that folder has no ``bids/``). The summed late frames (``pet.coreg.window_s``'s
default, 1200 s to the scan end, no motion correction) are registered to the T1w skull-stripped
with the simulator's true brain mask, by :func:`prepost.pet.preproc.coregister_pet_to_t1w`:

* ``t1w-grid``: ``fixed_shrink=1``, the registration on the 1 mm T1w grid (the method before);
* ``shrunk``: ``fixed_shrink='auto'`` (the default), the T1w block-averaged to the PET's voxel
  size (2 mm) before registering.

Both run interleaved ``--repeats`` times on one ITK thread; printed are the median wall seconds of
each, their ratio, and each one's error against the simulator's true pose: the mean and maximum
displacement (mm) of the brain's voxels between the recovered and the true T1w -> PET matrix. The
true pose of the summed image is the duration-weighted mean pose of its frames (the simulator's
``geometry`` and ``pet-motion`` truth), which the frames' own motion (about 1 mm) blurs.

Usage::

    python benchmarks/pet_coreg.py [--study /tmp/prepost-bench-pet-coreg] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

REAL_SIZE = {"anat": {"voxel_mm": 1.0}, "bold": {"voxel_mm": 2.4, "n_volumes": 300},
             "pet": {"voxel_mm": 2.0}}
PARTICIPANT, SESSION = "01", "pre"
WINDOW_S = (1200.0, None)


def study_paths(study):
    """Simulate the real-size session if needed; return its BIDS and truth paths."""
    from prepost import simulate as sim

    study = Path(study)
    if not (study / "bids").is_dir():
        t0 = time.perf_counter()
        sim.simulate_subject(study / "bids", study / "truth", PARTICIPANT,
                             sessions=(SESSION, "post"), params=REAL_SIZE)
        print(f"simulated {study} in {time.perf_counter() - t0:.0f} s")
    return (sim.bids_paths(study / "bids", PARTICIPANT, SESSION),
            sim.truth_paths(study / "truth", PARTICIPANT, SESSION))


def true_t1w_to_pet(tp, frame_start_s, frame_duration_s):
    """True T1w -> summed-PET matrix (RAS mm): the frames' duration-weighted mean pose.

    The simulator's frame ``f`` is ``ref(S_f x)`` with ``ref`` the PET before motion, so a T1w
    point ``y`` sits at ``inv(S_f) inv(pet_to_mni) t1w_to_mni y`` in frame ``f``.
    """
    import pandas as pd

    from prepost import registration
    from prepost import simulate as sim

    geo = json.loads(Path(tp["geometry"]).read_text())
    base = np.linalg.inv(np.asarray(geo["pet_to_mni"])) @ np.asarray(geo["t1w_to_mni"])
    motion = pd.read_csv(tp["pet_motion"], sep="\t")
    sel = frame_start_s >= WINDOW_S[0]
    w = frame_duration_s[sel] / frame_duration_s[sel].sum()
    inv = np.array([np.linalg.inv(sim.rigid_matrix(r)) for r in
                    motion[list(registration.PARAM_NAMES)].to_numpy()[sel]])
    mean = registration.params_to_affine(registration.affine_to_params(inv).T @ w)
    return mean @ base


def displacement_mm(a, b, pts):
    """Mean and max distance (mm) between the images of ``pts`` (4, N) under two matrices."""
    d = np.linalg.norm(((a - b) @ pts)[:3], axis=0)
    return float(d.mean()), float(d.max())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--study", default="/tmp/prepost-bench-pet-coreg")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import nibabel as nib

    from prepost import simulate as sim
    from prepost.pet import preproc

    print(f"cores: {os.cpu_count()}")
    bp, tp = study_paths(args.study)
    meta = json.loads(Path(bp["pet_json"]).read_text())
    fs, fd = np.array(meta["FrameTimesStart"]), np.array(meta["FrameDuration"])
    t1 = nib.load(bp["t1w"])
    pet = nib.load(bp["pet"])
    geo = json.loads(Path(tp["geometry"]).read_text())
    warp = sim.Warp.from_truth(tp) if Path(tp["warp"]).is_file() else None
    brain = sim.mni_maps_on_grid(t1.affine, t1.shape, np.asarray(geo["t1w_to_mni"]),
                                 keys=("brain",), warp=warp)["brain"] > 0.5
    mask = nib.Nifti1Image(brain.astype(np.uint8), t1.affine)
    summed = preproc.summed_image(pet, fs, fd, window_s=WINDOW_S)
    print(f"T1w {t1.shape} at {t1.header.get_zooms()[0]:.1f} mm, PET {pet.shape} at "
          f"{pet.header.get_zooms()[0]:.1f} mm")
    truth = true_t1w_to_pet(tp, fs, fd)
    ijk = np.argwhere(brain)[::20]
    pts = np.c_[ijk @ t1.affine[:3, :3].T + t1.affine[:3, 3], np.ones(len(ijk))].T

    methods = {"t1w-grid": 1, "shrunk": "auto"}
    times = {k: [] for k in methods}
    errors = {}
    for _ in range(args.repeats):
        for name, shrink in methods.items():
            t0 = time.perf_counter()
            reg = preproc.coregister_pet_to_t1w(summed, t1, t1w_mask_img=mask, fixed_shrink=shrink)
            times[name].append(time.perf_counter() - t0)
            errors[name] = (*displacement_mm(reg["t1w_to_pet"], truth, pts),
                            reg["qc"]["mutual_information"], reg["t1w_to_pet"])
    med = {k: statistics.median(v) for k, v in times.items()}
    for name in methods:
        mean, mx, mi, _ = errors[name]
        print(f"{name:9s} median {med[name]:6.1f} s over {args.repeats} "
              f"({', '.join(f'{t:.1f}' for t in times[name])}); error vs truth: mean "
              f"{mean:.2f} mm, max {mx:.2f} mm over the brain; Mattes MI {mi:.4f}")
    diff = displacement_mm(errors["shrunk"][3], errors["t1w-grid"][3], pts)
    print(f"ratio t1w-grid / shrunk: {med['t1w-grid'] / med['shrunk']:.2f}x; the two transforms "
          f"differ by {diff[0]:.2f} mm mean, {diff[1]:.2f} mm max over the brain")


if __name__ == "__main__":
    main()
