"""Benchmark: BOLD preprocessing (rule ``fmri_preproc``) and denoising (rule ``fmri_denoise``) of
one real-size simulated session, step by step, the previous code against the current one.

A session is simulated at the real size of the README (T1w 1 mm, BOLD 2.4 mm x 300 volumes) and
its T1w processed by :func:`prepost.anat.process_t1w` once (both kept in ``--work`` and reused).
Then, in the same process and interleaved (old, new, old, new ...; median over ``--repeats``):

* realignment: ``estimate_motion`` of the volume-scaled run as a C-ordered array (before) and
  as :func:`prepost.fmri.motion.estimate_bold_motion` gives it (volume-major); error = RMS
  displacement of head voxels against the simulator's motion;
* coregistration: ANTs rigid on the 1 mm T1w (``fixed_shrink=1``, before) and on the T1w
  block-averaged to the BOLD voxel size (``'auto'``); error = displacement of brain points
  against the truth (the simulator draws BOLD and T1w in one world: the identity);
* resampling to MNI (3 mm): the previous loop (kept below) and
  :func:`prepost.fmri.preproc.resample_bold_to_mni`; max |difference| between them;
* standardised DVARS: nipype ``ComputeDVARS`` (before) and
  :func:`prepost.fmri.confounds.std_dvars`; max |difference|.

First the whole rule's work (:func:`prepost.fmri.stage.preprocess_bold`) and the denoising
(:func:`prepost.fmri.stage.denoise_run`) run each in a child process, which reports its time
and peak resident memory (the children start before the comparison, while this process is
small: the peak of a child counts its parent's memory at the fork).

Usage::

    python benchmarks/fmri_preproc.py [--work /tmp/prepost_bench_fmri] [--repeats 1]

Timings are noisy on a shared machine: compare the ratios, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZE = {"anat": {"voxel_mm": 1.0}, "bold": {"voxel_mm": 2.4, "n_volumes": 300},
        "pet": {"voxel_mm": 2.0}}


def prepare(work):
    """Simulated session and its processed T1w (reused when present)."""
    from prepost import anat
    from prepost.simulate import simulate_study

    study = work / "study"
    bold = study / "bids/sub-01/ses-pre/func/sub-01_ses-pre_task-rest_bold.nii.gz"
    if not bold.is_file():
        t0 = time.perf_counter()
        simulate_study(study, participants=1, sessions=("pre",), params=SIZE)
        print(f"simulated in {time.perf_counter() - t0:.0f} s", flush=True)
    out = anat.output_paths(work / "deriv", sub="01", ses="pre")
    if not Path(out["sidecar"]).is_file():
        for p in out.values():
            Path(p).parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        res = anat.process_t1w(study / "bids/sub-01/ses-pre/anat/sub-01_ses-pre_T1w.nii.gz",
                               transform_paths=out, space="MNI152NLin2009cAsym",
                               template_resolution=2, transform="SyN", bias_correction=True,
                               refine=False, n_threads=1, seed=1)
        anat.write_outputs(res, out)
        print(f"anat in {time.perf_counter() - t0:.0f} s", flush=True)
    truth = study / "truth/sub-01/sub-01_ses-pre_task-rest_motion.tsv"
    return bold, out, truth


def old_resample(img, mot, coreg, ref, coords, order=3, cval=0.0):
    """The previous resampling loop (per volume, mode 'constant', point-major output)."""
    import numpy as np
    from scipy import ndimage

    out_shape = tuple(ref.shape[:3])
    n_vol = img.shape[3]
    pts = coords.reshape(-1, 3)
    valid = np.all(np.isfinite(pts), axis=1)
    pts = pts[valid]
    bref = pts @ coreg[:3, :3].T + coreg[:3, 3]
    bref_h = np.concatenate([bref, np.ones((len(bref), 1))], axis=1).T
    ainv = np.linalg.inv(np.asarray(img.affine, float))
    out = np.full((int(np.prod(out_shape)), n_vol), cval, dtype=np.float32)
    for t in range(n_vol):
        vol = np.asarray(img.dataobj[..., t], dtype=np.float64)
        vol = ndimage.spline_filter(vol, order=order, mode="mirror")
        ijk = (ainv @ mot[t])[:3] @ bref_h
        out[valid, t] = ndimage.map_coordinates(vol, ijk, order=order, mode="constant",
                                                cval=cval, prefilter=False)
    return out.reshape(out_shape + (n_vol,))


def _timed(fn):
    t0 = time.perf_counter()
    res = fn()
    return time.perf_counter() - t0, res


def step_benchmarks(bold, anat_out, truth, repeats):
    import nibabel as nib
    import numpy as np
    import pandas as pd

    from prepost import anat
    from prepost.fmri import motion, preproc, stage
    from prepost.fmri.confounds import std_dvars
    from prepost.image import load_img
    from prepost.registration import estimate_motion, params_to_affine, select_reference

    img = load_img(bold, ndim=4)
    tru = pd.read_csv(truth, sep="\t")
    n_dummy = int(tru["non_steady_state"].sum())
    t_true = params_to_affine(tru[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y",
                                   "rot_z"]].to_numpy())
    rows = []

    def record(step, old_t, new_t, acc_old, acc_new, unit):
        rows.append({"step": step, "old_s": np.median(old_t), "new_s": np.median(new_t),
                     "speed-up": np.median(old_t) / np.median(new_t),
                     "error_old": acc_old, "error_new": acc_new, "error": unit})
        print(f"{step:15s} old {np.median(old_t):6.1f} s  new {np.median(new_t):6.1f} s  "
              f"x{np.median(old_t) / np.median(new_t):4.1f}   error old {acc_old:.4g}, "
              f"new {acc_new:.4g} ({unit})", flush=True)

    # --- realignment
    ref_index = n_dummy + select_reference(img.slicer[..., n_dummy:])
    head = np.asarray(img.dataobj[..., ref_index], float)
    pts = np.argwhere(head > head.mean())[::20]
    pts = np.c_[pts @ img.affine[:3, :3].T + img.affine[:3, 3], np.ones(len(pts))]
    # the simulator's matrices map volume-t world to the head's world: reference -> volume t
    rel = np.linalg.inv(t_true) @ t_true[ref_index]

    def motion_error(aff):
        d = np.einsum("tij,nj->tni", aff - rel, pts)[..., :3]
        return float(np.sqrt((d ** 2).sum(-1).mean()))

    old_t, new_t = [], []
    for _ in range(repeats):
        scaled = motion.scale_to_steady_state(img, n_dummy)
        c_order = nib.Nifti1Image(np.ascontiguousarray(np.asarray(scaled.dataobj)),
                                  scaled.affine)
        del scaled
        t, (_, aff_old) = _timed(lambda: estimate_motion(c_order, ref_index))
        old_t.append(t)
        del c_order
        t, (_, _, aff_new) = _timed(lambda: motion.estimate_bold_motion(img, n_dummy))
        new_t.append(t)
    record("realignment", old_t, new_t, motion_error(aff_old), motion_error(aff_new),
           "RMS head displacement vs truth, mm")

    # --- coregistration
    boldref = preproc.bold_reference(img, n_volumes=20, skip=n_dummy, motion_affines=aff_new)
    t1 = anat.load_t1w(anat_out["preproc"])
    mask = np.asarray(load_img(anat_out["brain_mask"], ndim=3).dataobj) > 0
    brain = nib.Nifti1Image(t1.get_fdata(dtype=np.float32) * mask, t1.affine)
    bp = np.argwhere(mask)[::50]
    bp = np.c_[bp @ t1.affine[:3, :3].T + t1.affine[:3, 3], np.ones(len(bp))]

    def coreg_error(c):
        return float(np.linalg.norm(((c - np.eye(4)) @ bp.T)[:3], axis=0).mean())

    old_t, new_t = [], []
    for _ in range(repeats):
        t, c_old = _timed(lambda: preproc.coregister_bold_to_t1w(boldref, brain, fixed_shrink=1))
        old_t.append(t)
        t, c_new = _timed(lambda: preproc.coregister_bold_to_t1w(boldref, brain))
        new_t.append(t)
    record("coregistration", old_t, new_t, coreg_error(c_old), coreg_error(c_new),
           "mean brain displacement vs truth, mm")

    # --- resampling to MNI
    xfm = anat.load_transforms(anat_out["sidecar"])
    ref = anat.mni_reference(3)
    coords = preproc.mni_to_t1w_coords_from_ants(ref, xfm["forward"], t1)
    coords[~stage._head_roi(ref)] = np.nan
    old_t, new_t = [], []
    for _ in range(repeats):
        t, a = _timed(lambda: old_resample(img, aff_new, c_new, ref, coords))
        old_t.append(t)
        t, b = _timed(lambda: preproc.resample_bold_to_mni(
            img, aff_new, c_new, reference_img=ref, mni_to_t1w_coords=coords, order=3))
        new_t.append(t)
        b = np.asarray(b.dataobj)
    diff = float(np.abs(a - b).max())
    record("resampling", old_t, new_t, 0.0, diff, "max |new - old|, intensity")

    # --- standardised DVARS
    from nipype.algorithms.confounds import compute_dvars

    brain_mni = np.asarray(b).min(axis=3) > 0
    with tempfile.TemporaryDirectory() as tmp:
        nib.Nifti1Image(b, ref.affine).to_filename(f"{tmp}/bold.nii")
        nib.Nifti1Image(brain_mni.astype(np.uint8), ref.affine).to_filename(f"{tmp}/mask.nii")
        del a
        old_t, new_t = [], []
        for _ in range(repeats):
            t, d_old = _timed(lambda: compute_dvars(f"{tmp}/bold.nii", f"{tmp}/mask.nii",
                                                    remove_zerovariance=True, variance_tol=1e-7))
            old_t.append(t)
            t, d_new = _timed(lambda: std_dvars(b, brain_mni))
            new_t.append(t)
    record("std DVARS", old_t, new_t, 0.0,
           float(np.abs(np.round(d_old[0], 6) - d_new[0]).max()), "max |new - nipype|")
    return rows


CHILD = r"""
import json, resource, sys, time
from prepost import io
from prepost.fmri import stage
a = json.loads(sys.argv[1])
t0 = time.perf_counter()
if a["step"] == "preproc":
    res = stage.preprocess_bold(a["bold"], a["t1w"], a["mask"], a["probseg"], a["xfm"],
        t_r=2.0, dummy_scans="auto", slice_timing_correction=True, resolution_mm=3,
        acompcor_variance=0.5, fd_threshold=0.5, dvars_threshold=1.5, seed=1, n_threads=1)
    secs = res["qc"]["seconds"]
    io.write_nifti(res["bold"], a["out"] + "_bold.nii.gz")
    io.write_nifti(res["mask"], a["out"] + "_mask.nii.gz")
    from prepost.fmri import confounds as fconf
    fconf.write_confounds(res["confounds"], res["metadata"], a["out"] + "_confounds.tsv")
else:
    img, qc = stage.denoise_run(a["out"] + "_bold.nii.gz", a["out"] + "_mask.nii.gz",
        a["out"] + "_confounds.tsv", strategy="default", gsr=False, fd_threshold=0.5,
        dvars_threshold=None, min_segment=5, low_pass=0.08, high_pass=0.01,
        smoothing_fwhm=None, min_retained_s=240, extra_qc={})
    io.write_nifti(img, a["out"] + "_denoised.nii.gz")
    secs = {}
secs["wall"] = time.perf_counter() - t0
secs["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(secs))
"""


def whole_rules(bold, anat_out, work):
    args = {"bold": str(bold), "t1w": anat_out["preproc"], "mask": anat_out["brain_mask"],
            "probseg": {k: anat_out[k] for k in ("GM", "WM", "CSF")},
            "xfm": anat_out["sidecar"], "out": str(work / "bench")}
    for step in ("preproc", "denoise"):
        res = subprocess.run([sys.executable, "-c", CHILD, json.dumps({**args, "step": step})],
                             check=True, capture_output=True, text=True)
        secs = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"fmri_{step}: {secs['wall']:.1f} s, peak memory {secs['peak_mb']:.0f} MB"
              + (f", steps {json.dumps({k: v for k, v in secs.items() if k not in ('wall', 'peak_mb')})}"
                 if step == "preproc" else ""), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(),
                                                   "prepost_bench_fmri"))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--skip-steps", action="store_true", help="only the whole rules")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"cores: {os.cpu_count()}", flush=True)
    bold, anat_out, truth = prepare(work)
    # the rules first: a child's peak resident memory starts from its parent's at the fork
    whole_rules(bold, anat_out, work)
    if not a.skip_steps:
        step_benchmarks(bold, anat_out, truth, a.repeats)
        print(f"peak memory of the step comparison: "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
