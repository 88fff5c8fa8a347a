"""Benchmark: T1w processing per session, prepost.anat defaults vs antspyx's default 'SyN'.

For every T1w of a simulated study (``python -m prepost.simulate`` output: ``bids/`` and
``truth/``), the true brain and GM maps on the T1w grid are the template's, sampled through the
session's scanner-to-MNI matrix (read from ``truth/.../*_geometry.json``, or recomputed from the
simulator's random streams for studies written before that file existed) and the participant's
warp (``*_warp.nii.gz``, where written).

Compared, on the same T1w and one ITK thread:

* ``prepost``: :func:`prepost.anat.process_t1w` with its defaults (N4 in a head mask, SyN with the
  dilated template brain mask as metric mask in every stage, prior warping); optionally with
  Atropos refinement (``--refine``), and with ``bias_correction=False`` (``prepost-noN4``: raw T1w
  to raw template);
* ``ants-SyN``: ``ants.registration(template, t1w, type_of_transform='SyN')`` on the raw T1w with
  antspyx's defaults, then the template brain mask and GM map warped back the same way;
* ``prepost-before`` (``--methods``): the settings before the real-size speed-ups, N4 fitted at
  shrink 4 whatever the voxel size and the full T1w registered (``n4_shrink_factor=4,
  moving_shrink=1``); identical to ``prepost`` for a 2 mm T1w.

For a real-size T1w (1 mm) simulate one participant first, e.g. with ``prepost.simulate.
simulate_study(out, participants=1, params={"anat": {"voxel_mm": 1.0}})``.

* ``prepost@AxBxC`` (``--methods``): ``prepost`` with another SyN schedule (``anat.reg_iterations``).

Printed per session and as means: wall and CPU seconds, Dice of the brain mask and of GM
(thresholded at 0.5) against the truth, the median error (mm) of template brain points mapped to
the T1w against their true place (the simulated participant's affine, size and warp), and of the
registration's affine stage alone, and the time ratios.

Usage::

    python benchmarks/anat.py [--study /tmp/simdemo] [--sessions 4] [--refine] [--threads 1]
        [--methods prepost,prepost-before]
    python benchmarks/anat.py --study results/simulated --methods prepost,prepost@40x20x10
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _to_mni(study, participant, session, t1w):
    from prepost import simulate as sim

    import numpy as np

    stem = f"sub-{participant}_ses-{session}"
    geo = Path(study) / "truth" / f"sub-{participant}" / f"{stem}_geometry.json"
    if geo.is_file():
        return np.asarray(json.loads(geo.read_text())["t1w_to_mni"])

    return sim.t1w_to_mni(participant, session)


def truth_maps(study, participant, session, t1w):
    """True brain mask and GM probability on the T1w grid (arrays), and template brain points
    on a 12 mm lattice (``mni``, (N, 3)) with their true T1w positions (``t1w_points``)."""
    import numpy as np

    from prepost import anat
    from prepost import simulate as sim

    to_mni = _to_mni(study, participant, session, t1w)
    tp = sim.truth_paths(Path(study) / "truth", participant, session)
    warp = sim.Warp.from_truth(tp) if tp["warp"].is_file() else None
    out = sim.mni_maps_on_grid(t1w.affine, t1w.shape, to_mni,
                               voxel_mm=float(t1w.header.get_zooms()[0]), keys=("brain", "gm"),
                               warp=warp)
    out["mni"] = anat.template_points(12)
    y = out["mni"].T if warp is None else warp.inverse(out["mni"].T)
    out["t1w_points"] = (np.linalg.inv(to_mni) @ np.vstack([y, np.ones(y.shape[1])]))[:3].T
    return out


def point_error(truth, transforms):
    """Median distance (mm) of the template points mapped to the T1w from their true place."""
    import numpy as np

    from prepost import anat

    est = anat.points_to_t1w(truth["mni"], transforms)
    return float(np.median(np.linalg.norm(est - truth["t1w_points"], axis=1)))


def run_prepost(path, truth, refine=False, threads=1, bias_correction=True, before=False,
                reg_iterations=(40, 20, 0)):
    from prepost import anat

    old = {"n4_shrink_factor": 4, "moving_shrink": 1} if before else {}
    with tempfile.TemporaryDirectory() as d:
        t0, c0 = time.perf_counter(), _cpu()
        res = anat.process_t1w(path, transform_paths=anat.output_paths(d, sub="x", ses=None),
                               template_resolution=2, transform="SyN", seed=1, refine=refine,
                               n_threads=threads, bias_correction=bias_correction,
                               reg_iterations=reg_iterations, **old)
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        xfm = res["transforms"]
        err = point_error(truth, xfm)
        err_affine = point_error(truth, {"forward": [xfm["affine"]]})
    return {"wall": wall, "cpu": cpu, "dice_brain": anat.dice(res["brain_mask"], truth["brain"]),
            "dice_gm": anat.dice(res["probseg"]["GM"], truth["gm"]), "qc": res["qc"],
            "point_mm": err, "affine_point_mm": err_affine}


def run_ants_default(path, truth):
    import ants

    from prepost import anat
    from prepost.image import to_ants

    tpl = anat.template_images(2)
    t1w = anat.load_t1w(path)
    with tempfile.TemporaryDirectory() as d:
        t0, c0 = time.perf_counter(), _cpu()
        moving = to_ants(t1w)
        reg = ants.registration(to_ants(tpl["t1w"]), moving, type_of_transform="SyN",
                                outprefix=str(Path(d) / "r_"))
        out = {k: ants.apply_transforms(moving, to_ants(tpl[k]), reg["invtransforms"],
                                        interpolator="linear").numpy() for k in ("brain", "gm")}
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
    return {"wall": wall, "cpu": cpu, "dice_brain": anat.dice(out["brain"], truth["brain"]),
            "dice_gm": anat.dice(out["gm"], truth["gm"])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="/tmp/simdemo")
    ap.add_argument("--sessions", type=int, default=4, help="at most this many T1w images")
    ap.add_argument("--refine", action="store_true", help="also time Atropos refinement")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default=None,
                    help="comma-separated among prepost, prepost+atropos, prepost-noN4, ants-SyN, "
                         "prepost-before and prepost@AxBxC (SyN iterations per level; default: "
                         "all but prepost-before and prepost@)")
    args = ap.parse_args(argv)
    # ITK reads the thread count before its first filter runs in the process
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)

    import nibabel as nib
    import numpy as np

    t1ws = sorted(Path(args.study, "bids").glob("sub-*/ses-*/anat/sub-*_ses-*_T1w.nii.gz"))
    if not t1ws:
        sys.exit(f"no T1w images under {args.study}/bids")
    t1ws = t1ws[: args.sessions]
    methods = (["prepost"] + (["prepost+atropos"] if args.refine else []) + ["prepost-noN4"]
               + ["ants-SyN"])
    if args.methods:
        methods = args.methods.split(",")
    print(f"cores: {os.cpu_count()}")
    rows = []
    print(f"{'session':<16}{'method':<17}{'wall s':>8}{'cpu s':>8}{'Dice brain':>12}{'Dice GM':>9}"
          f"{'point mm':>10}{'(affine)':>10}")
    for path in t1ws:
        stem = path.name.replace("_T1w.nii.gz", "")
        participant, session = stem.split("_")[0][4:], stem.split("_")[1][4:]
        truth = truth_maps(args.study, participant, session, nib.load(str(path)))
        for m in methods:
            if m == "ants-SyN":
                r = run_ants_default(path, truth)
            else:
                its = tuple(int(i) for i in m.split("@")[1].split("x")) if "@" in m else (40, 20, 0)
                r = run_prepost(path, truth, refine=m.endswith("atropos"), threads=args.threads,
                                bias_correction=not m.endswith("noN4"),
                                before=m.endswith("before"), reg_iterations=its)
            rows.append((m, r))
            pts = (f"{r['point_mm']:>10.2f}{r['affine_point_mm']:>10.2f}" if "point_mm" in r
                   else "")
            print(f"{stem:<16}{m:<17}{r['wall']:>8.1f}{r['cpu']:>8.1f}{r['dice_brain']:>12.4f}"
                  f"{r['dice_gm']:>9.4f}{pts}", flush=True)
            if "qc" in r:
                print("    steps: " + ", ".join(f"{k[8:]} {v:.1f} s" for k, v in r["qc"].items()
                                                if k.startswith("seconds_")), flush=True)
    print("\nmeans over", len(t1ws), "sessions (ITK threads:", args.threads, ")")
    mean = {}
    for m in methods:
        rs = [r for name, r in rows if name == m]
        keys = ("wall", "cpu", "dice_brain", "dice_gm") + (
            ("point_mm", "affine_point_mm") if "point_mm" in rs[0] else ())
        mean[m] = {k: float(np.mean([r[k] for r in rs])) for k in keys}
        v = mean[m]
        pts = (f"  point error {v['point_mm']:.2f} mm (affine stage {v['affine_point_mm']:.2f})"
               if "point_mm" in v else "")
        print(f"  {m:<17} wall {v['wall']:6.1f} s  cpu {v['cpu']:6.1f} s  Dice brain "
              f"{v['dice_brain']:.4f}  Dice GM {v['dice_gm']:.4f}{pts}")
    for ref in ("ants-SyN", "prepost-before", "prepost"):
        if ref not in mean:
            continue
        base = mean[ref]
        for m in methods:
            if m != ref:
                print(f"  time ratio {m} / {ref}: wall {mean[m]['wall'] / base['wall']:.2f}, "
                      f"cpu {mean[m]['cpu'] / base['cpu']:.2f}")


if __name__ == "__main__":
    main()
