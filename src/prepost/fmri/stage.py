"""The fMRI stage of the workflow, one BOLD run at a time: built-in preprocessing
(:func:`preprocess_bold`), import of fMRIPrep derivatives (:func:`import_fmriprep`) and denoising
with the QC record the connectivity stage reads (:func:`denoise_run`).

Built-in chain (every step is a function of :mod:`prepost.fmri.preproc`,
:mod:`prepost.fmri.motion` and :mod:`prepost.fmri.confounds`):

1. non-steady-state volumes: a configured count or nipype's ``NonSteadyStateDetector``; they stay
   in the preprocessed series (as in fMRIPrep) and are flagged by ``non_steady_state_outlierNN``
   confound columns;
2. slice-timing correction of the steady-state volumes when the sidecar gives ``SliceTiming``;
3. head-motion estimation (:func:`prepost.fmri.motion.estimate_bold_motion`) of every volume to the
   steady-state volume closest to the temporal median, on volumes scaled to a common mean
   intensity (the non-steady-state volumes are brighter);
4. BOLD reference (median of the first 20 realigned steady-state volumes) and its rigid
   mutual-information registration to the skull-stripped T1w;
5. one cubic-spline resampling per volume into the MNI grid of the configured resolution,
   composing motion, coregistration and the anatomical normalisation (voxels farther than 15 mm
   from the template brain are left at 0);
6. brain mask (the T1w brain mask carried to MNI, within the BOLD field of view) and the
   fMRIPrep-style confounds, with aCompCor masks from the warped WM and CSF probabilities
   (thresholded and eroded).

The denoised output holds the retained (uncensored) steady-state volumes; its QC record gives
``sample_mask``, the positions of those volumes in the steady-state series of ``n_volumes``.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from prepost.errors import InputError
from prepost.fmri.confounds import compute_confounds, erode_mask, read_confounds
from prepost.fmri.denoise import check_confounds_file, denoise
from prepost.image import image_name, load_img, to_ants
from prepost.paths import derivative

log = logging.getLogger("prepost.fmri")

__all__ = [
    "check_fmriprep",
    "denoise_run",
    "fmriprep_paths",
    "import_fmriprep",
    "n_leading_dummies",
    "output_paths",
    "RUN_ENTITIES",
    "find_fmriprep_runs",
    "plot_fd",
    "preprocess_bold",
    "raw_bold_runs",
    "resolution_label",
    "run_inputs",
    "run_key",
]


def resolution_label(resolution_mm):
    """``res-`` label of an isotropic voxel size: 3 -> '3', 2.5 -> '2p5'."""
    r = float(resolution_mm)
    return str(int(r)) if r.is_integer() else f"{r:g}".replace(".", "p")


def output_paths(results, *, space, res, **run):
    """Every file the fMRI stage writes for one BOLD run, named from its BIDS entities.

    Parameters
    ----------
    results : str or path-like
        Derivatives root.
    space : str
        Template of the preprocessed and denoised BOLD (``space-`` entity).
    res : str or int
        ``res-`` label of their grid (:func:`resolution_label`).
    **run : str
        Entities of the BOLD run (``sub``, ``ses``, ``task`` ...; values may be Snakemake
        wildcards such as ``"{subject}"``). Every name carries all of them, so a new entity of
        the run is one more keyword here. The workflow passes the run's key
        (:func:`run_key`, e.g. ``rest_acq-mb_run-1``) as ``task``, so the names carry every
        entity of the run in BIDS order.

    Returns
    -------
    dict of dict of str
        ``preproc`` (rule fmri_preproc, or fmri_import_fmriprep without ``boldref``): ``bold``,
        ``mask``, ``boldref``, ``confounds``, ``confounds_json``, ``qc``, ``fd_plot``;
        ``denoise`` (rule fmri_denoise): ``bold``, ``qc``.
    """
    def func(suffix, ext, **entities):
        return derivative(results, suffix, ext, datatype="func", **run, **entities)

    mni = {"space": space, "res": res}
    return {
        "preproc": {
            "bold": func("bold", ".nii.gz", **mni, desc="preproc"),
            "mask": func("mask", ".nii.gz", **mni, desc="brain"),
            "boldref": func("boldref", ".nii.gz", **mni),
            "confounds": func("timeseries", ".tsv", desc="confounds"),
            "confounds_json": func("timeseries", ".json", desc="confounds"),
            "qc": func("qc", ".json", desc="preproc"),
            "fd_plot": func("plot", ".png", desc="fd"),
        },
        "denoise": {
            "bold": func("bold", ".nii.gz", **mni, desc="denoised"),
            "qc": func("qc", ".json", **mni, desc="denoised"),
        },
    }


def _clean(obj):
    """JSON-safe copy: NaN/inf become None, numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# --------------------------------------------------------------------------------------------
# Built-in preprocessing
# --------------------------------------------------------------------------------------------
def _tissue_mask(prob, brain, threshold, erosions, min_voxels=10):
    m = (prob > threshold) & brain
    if m.sum() < min_voxels:  # coarse grids: too few voxels above a strict threshold
        m = (prob > 0.5) & brain
    if m.sum() < min_voxels:
        m = (prob > 0.5 * prob.max()) & brain
    return erode_mask(m, erosions, min_voxels=min_voxels)


def _head_roi(ref, margin_mm=15.0):
    """Template brain mask on the grid of ``ref``, dilated by ``margin_mm``."""
    from nilearn import image
    from scipy import ndimage

    from prepost import anat

    brain = image.resample_to_img(anat.template_images(2)["brain"], ref,
                                  interpolation="nearest", force_resample=True, copy_header=True)
    vox = float(np.abs(ref.affine[0, 0]))
    it = max(1, int(round(margin_mm / vox)))
    return ndimage.binary_dilation(np.asarray(brain.dataobj) > 0.5, iterations=it)


def _coregistration_metrics(boldref, t1w_brain, mask, coreg):
    """BOLD reference pulled onto the T1w grid: Mattes MI (ANTs, lower is better) and the
    absolute Pearson correlation with the T1w inside the brain mask."""
    import ants
    from scipy import ndimage

    from prepost import anat

    q = np.linalg.inv(boldref.affine) @ coreg @ t1w_brain.affine
    on_t1 = ndimage.affine_transform(boldref.get_fdata(dtype=np.float32), q[:3, :3],
                                     offset=q[:3, 3], output_shape=t1w_brain.shape, order=1)
    t1 = t1w_brain.get_fdata(dtype=np.float32)
    m = np.asarray(mask.dataobj) > 0
    r = float(np.corrcoef(on_t1[m], t1[m])[0, 1])
    mi = float(ants.image_mutual_information(
        to_ants(nib.Nifti1Image(t1 * m, t1w_brain.affine)),
        to_ants(nib.Nifti1Image((on_t1 * m).astype(np.float32), t1w_brain.affine))))
    return {"coregistration_mattes_mi": mi, "coregistration_abs_corr": abs(r)}


def preprocess_bold(bold, t1w, t1w_mask, probseg, transforms, *, resolution_mm, dummy_scans,
                    slice_timing_correction, acompcor_variance, fd_threshold, dvars_threshold,
                    seed, n_threads, t_r=None, slice_timing=None, high_pass_s=128.0,
                    wm_threshold=0.9, csf_threshold=0.9):
    """Preprocess one BOLD run into MNI space and compute its confounds.

    Parameters
    ----------
    bold : nibabel image or path
        4D BOLD run as acquired.
    t1w, t1w_mask : nibabel image or path
        Bias-corrected T1w and its brain mask (:func:`prepost.anat.process_t1w`).
    probseg : dict
        ``GM``, ``WM``, ``CSF`` probability images (or paths) on the T1w grid.
    transforms : dict or path-like
        T1w <-> MNI transforms (:func:`prepost.anat.load_transforms` output or the sidecar).
    resolution_mm : float
        Isotropic MNI output voxel size (:func:`prepost.anat.mni_reference`).
    dummy_scans : int or 'auto'
        Non-steady-state volume count, or 'auto' for nipype's detector.
    slice_timing_correction : bool
        Apply slice-timing correction when ``slice_timing`` is given.
    acompcor_variance : float
        Variance fraction of the retained aCompCor components per mask (fMRIPrep 0.5).
    fd_threshold, dvars_threshold : float or None
        ``motion_outlierNN`` thresholds (FD in mm, standardised DVARS).
    seed : int
        ANTs random seed of the coregistration.
    n_threads : int
        ITK threads of the coregistration and the resampling.
    t_r : float or None
        Repetition time (s); None reads the header.
    slice_timing : sequence of float or None
        BIDS ``SliceTiming`` (s); None or empty skips slice-timing correction.
    high_pass_s : float
        Cosine basis cutoff (s).
    wm_threshold, csf_threshold : float
        Probability thresholds of the aCompCor WM and CSF masks (eroded 2 and 1 voxels).

    Returns
    -------
    dict
        ``bold`` (4D MNI image, all volumes), ``mask`` (uint8 MNI image), ``boldref`` (3D MNI
        image), ``confounds`` (DataFrame), ``metadata`` (confounds sidecar dict), ``qc`` (dict).
    """
    from prepost import anat
    from prepost.fmri import motion

    t_all = time.perf_counter()
    qc, secs = {}, {}
    img = load_img(bold, ndim=4, field="bold", check_empty_volumes=True)
    t_r = _repetition_time(img, t_r)
    n_dummy = _non_steady_state(img, dummy_scans, qc, secs)
    log.info("%d volumes, TR %.3f s, %d non-steady-state (%s)", img.shape[3], t_r, n_dummy,
             qc["dummy_source"])
    img = _slice_timing(img, slice_timing, slice_timing_correction, n_dummy, t_r, qc, secs)

    t0 = time.perf_counter()
    ref_index, params, affines = motion.estimate_bold_motion(img, n_dummy)
    secs["motion"] = time.perf_counter() - t0
    fd = motion.framewise_displacement(params)
    qc.update(motion_reference_volume=int(ref_index), mean_fd=float(fd[n_dummy + 1:].mean()),
              max_fd=float(fd[n_dummy + 1:].max()))
    log.info("motion: reference volume %d, mean FD %.3f mm, max %.3f mm (%.1f s)", ref_index,
             qc["mean_fd"], qc["max_fd"], secs["motion"])

    t0 = time.perf_counter()
    boldref, coreg, t1, mask_t1 = _coregister(img, n_dummy, affines, t1w, t1w_mask, seed=seed,
                                              n_threads=n_threads, qc=qc)
    secs["coregistration"] = time.perf_counter() - t0
    log.info("coregistration: |r| BOLD ref vs T1w %.3f, Mattes MI %.3f (%.1f s)",
             qc["coregistration_abs_corr"], qc["coregistration_mattes_mi"], secs["coregistration"])

    t0 = time.perf_counter()
    xfm = anat.load_transforms(transforms) if isinstance(transforms, (str, Path)) else transforms
    ref = anat.mni_reference(resolution_mm)
    out, boldref_mni, coords = _resample_to_mni(img, boldref, affines, coreg, xfm, t1, ref, t_r)
    secs["resampling"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    brain, wm, csf = _mni_masks(out, coords, mask_t1, probseg, xfm, ref,
                                wm_threshold=wm_threshold, csf_threshold=csf_threshold)
    df, meta = compute_confounds(out, params, brain, wm, csf, t_r=t_r, n_dummy=n_dummy,
                                 acompcor_variance=acompcor_variance, high_pass_s=high_pass_s,
                                 fd_threshold=fd_threshold, dvars_threshold=dvars_threshold)
    secs["confounds"] = time.perf_counter() - t0
    qc.update(n_volumes_total=int(img.shape[3]), t_r=t_r, resolution_mm=float(resolution_mm),
              brain_voxels=int(brain.sum()), acompcor_wm_voxels=int(np.sum(wm)),
              acompcor_csf_voxels=int(np.sum(csf)),
              n_acompcor=int(sum(1 for c in df.columns if c.startswith("a_comp_cor_"))),
              n_motion_outliers=int(sum(1 for c in df.columns if c.startswith("motion_outlier"))))
    secs["total"] = time.perf_counter() - t_all
    qc["seconds"] = {k: round(v, 2) for k, v in secs.items()}
    return {"bold": out, "mask": nib.Nifti1Image(brain.astype(np.uint8), ref.affine),
            "boldref": boldref_mni, "confounds": df, "metadata": meta, "qc": _clean(qc)}


def _repetition_time(img, t_r):
    if t_r is None:
        z = img.header.get_zooms()
        t_r = float(z[3]) if len(z) > 3 else 0.0
    if not t_r or t_r <= 0:
        raise InputError(file=image_name(img), field="RepetitionTime",
                         expected="a positive TR (s)", found=repr(t_r))
    return float(t_r)


def _non_steady_state(img, dummy_scans, qc, secs):
    """Leading non-steady-state volumes: the configured count or nipype's detector."""
    from prepost.fmri import preproc

    n_total = img.shape[3]
    t0 = time.perf_counter()
    auto = dummy_scans == "auto"
    n_dummy = preproc.detect_non_steady_state(img, None if auto else int(dummy_scans))
    if n_dummy >= n_total - 10:
        raise InputError(file=image_name(img), field="dummy_scans",
                         expected=f"fewer than {n_total - 10} non-steady-state volumes",
                         found=str(n_dummy))
    secs["dummy_detection"] = time.perf_counter() - t0
    qc.update(n_dummy=int(n_dummy), dummy_source="NonSteadyStateDetector" if auto else "config")
    return n_dummy


def _slice_timing(img, slice_timing, correct, n_dummy, t_r, qc, secs):
    """Slice-timing correction of the steady-state volumes only (the transient would leak
    through the FFT)."""
    from prepost.fmri import preproc

    st = [] if slice_timing is None else list(slice_timing)
    qc["slice_timing_corrected"] = bool(st) and bool(correct)
    if qc["slice_timing_corrected"]:
        t0 = time.perf_counter()
        post = preproc.slice_timing_correct(img.slicer[..., n_dummy:], st, t_r)
        data = np.concatenate([np.asarray(img.dataobj[..., :n_dummy], np.float32),
                               post.get_fdata(dtype=np.float32)], axis=3)
        img = nib.Nifti1Image(data, img.affine, img.header)
        secs["slice_timing"] = time.perf_counter() - t0
    elif st:
        log.info("SliceTiming present, slice-timing correction disabled by config")
    else:
        log.info("no SliceTiming in the sidecar: slice-timing correction skipped")
    return img


def _coregister(img, n_dummy, affines, t1w, t1w_mask, *, seed, n_threads, qc):
    """BOLD reference of the realigned steady-state volumes, registered to the skull-stripped
    T1w; adds the coregistration QC to ``qc``."""
    from prepost import anat
    from prepost.fmri import preproc

    boldref = preproc.bold_reference(img, n_volumes=20, skip=n_dummy, motion_affines=affines)
    t1 = anat.load_t1w(t1w)
    mask_t1 = load_img(t1w_mask, ndim=3, field="T1w brain mask")
    brain_t1 = nib.Nifti1Image(t1.get_fdata(dtype=np.float32)
                               * (np.asarray(mask_t1.dataobj) > 0), t1.affine)
    coreg = preproc.coregister_bold_to_t1w(boldref, brain_t1, seed=seed, n_threads=n_threads)
    qc.update(_coregistration_metrics(boldref, brain_t1, mask_t1, coreg))
    qc["bold_to_t1w"] = np.round(coreg, 6).tolist()
    return boldref, coreg, t1, mask_t1


def _resample_to_mni(img, boldref, affines, coreg, xfm, t1, ref, t_r):
    """The run and its reference in MNI space, one cubic-spline interpolation per volume; only
    the head is resampled (voxels beyond the template brain dilated by ~15 mm stay 0)."""
    from prepost.fmri import preproc

    coords = preproc.mni_to_t1w_coords_from_ants(ref, xfm["forward"], t1)
    coords[~_head_roi(ref)] = np.nan
    out = preproc.resample_bold_to_mni(img, affines, coreg, reference_img=ref,
                                       mni_to_t1w_coords=coords, order=3)
    out.header["pixdim"][4] = t_r
    ref_mni = preproc.resample_bold_to_mni(boldref.slicer[..., None], None, coreg,
                                           reference_img=ref, mni_to_t1w_coords=coords, order=3)
    boldref_mni = nib.Nifti1Image(ref_mni.get_fdata(dtype=np.float32)[..., 0], ref.affine)
    return out, boldref_mni, coords


def _mni_masks(out, coords, mask_t1, probseg, xfm, ref, *, wm_threshold, csf_threshold):
    """Brain mask (T1w brain mask in MNI, within the BOLD field of view) and the eroded aCompCor
    WM and CSF masks from the warped probabilities."""
    from prepost import anat

    warp = {k: anat.apply_to_mni(v, xfm, ref).get_fdata(dtype=np.float32)
            for k, v in [("brain", mask_t1)] + [(k, probseg[k]) for k in ("GM", "WM", "CSF")]}
    data = np.asarray(out.dataobj)
    fov = np.all(np.isfinite(coords), axis=3) & (data.min(axis=3) > 0)
    brain = (warp["brain"] > 0.5) & fov
    wm = _tissue_mask(warp["WM"], brain, wm_threshold, 2)
    csf = _tissue_mask(warp["CSF"], brain, csf_threshold, 1)
    return brain, wm, csf


def plot_fd(confounds, out_png, *, fd_threshold, title=""):
    """Framewise displacement over the run, with the censoring threshold and the
    non-steady-state volumes shaded.

    Parameters
    ----------
    confounds : pandas.DataFrame
        Confounds with ``framewise_displacement`` (and ``non_steady_state_outlierNN``) columns.
    out_png : path-like
    fd_threshold : float or None
        Censoring threshold (mm) drawn as a dashed line; None draws none.
    title : str
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prepost.io import atomic_path

    fd = confounds["framewise_displacement"].to_numpy(float)
    n_dummy = n_leading_dummies(confounds)
    fig, ax = plt.subplots(figsize=(8, 2.4), dpi=100)
    ax.plot(np.arange(len(fd)), fd, lw=1, color="k")
    if fd_threshold is not None:
        ax.axhline(fd_threshold, color="tab:red", ls="--", lw=1, label=f"{fd_threshold} mm")
        ax.legend(loc="upper right", frameon=False)
    if n_dummy:
        ax.axvspan(-0.5, n_dummy - 0.5, color="0.85", lw=0)
    ax.set_xlabel("volume")
    ax.set_ylabel("FD (mm)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# fMRIPrep derivatives
# --------------------------------------------------------------------------------------------
def fmriprep_paths(fmriprep_dir, *, space, res=None, **run):
    """fMRIPrep output names of one run: ``bold``, ``confounds`` (TSV; its JSON beside it),
    ``confounds_json`` and ``mask`` (``space-<space>[_res-<res>]_desc-brain_mask``).

    ``run`` holds the BIDS entities of the run (``sub``, ``ses``, ``task`` ...)."""
    def func(suffix, ext, **entities):
        return Path(derivative(fmriprep_dir, suffix, ext, datatype="func", **run, **entities))

    mni = {"space": space, "res": None if res in (None, "") else res}
    return {"bold": func("bold", ".nii.gz", **mni, desc="preproc"),
            "confounds": func("timeseries", ".tsv", desc="confounds"),
            "confounds_json": func("timeseries", ".json", desc="confounds"),
            "mask": func("mask", ".nii.gz", **mni, desc="brain")}


# entities that name a BOLD run (beyond sub/ses); space/res/desc name fMRIPrep's outputs of it
RUN_ENTITIES = ("task", "acq", "ce", "rec", "dir", "run", "echo")
_FMRIPREP_CONFOUNDS = ("timeseries", "regressors")  # desc-confounds_<suffix>: >= 20.2, 1.4-20.1


def run_key(entities):
    """Label of a BOLD run in derivative names: its entities from ``task`` on, in BIDS order.

    ``{"task": "rest"}`` -> ``'rest'``; ``{"task": "rest", "acq": "mb", "run": "1"}`` ->
    ``'rest_acq-mb_run-1'``. Placed as the ``task`` entity of :func:`output_paths`, it gives
    ``..._task-rest_acq-mb_run-1_space-...`` (a run with only ``task`` keeps its usual name).
    """
    from prepost.paths import bids_name

    ents = {k: entities.get(k) for k in RUN_ENTITIES}
    if not ents["task"]:
        raise ValueError(f"a BOLD run needs a task entity, got {entities}")
    return bids_name("x", "", **ents).removeprefix("task-").removesuffix("_x")


def raw_bold_runs(bold_runs, task, default=None):
    """``{run key: {"bold", "bold_json"}}`` of a session's raw BOLD runs.

    Parameters
    ----------
    bold_runs : list
        Objects with ``entities`` (from ``task`` on), ``bold`` and ``bold_json``
        (:class:`prepost.bids.BoldRun`); may be empty.
    task : str
        Task label of the run ``default`` holds.
    default : dict or None
        ``{"bold", "bold_json"}`` of the single run of ``task``, used when ``bold_runs`` is empty
        (the simulated study).
    """
    if not bold_runs:
        return {run_key({"task": task}): dict(default or {})}
    return {run_key(r.entities): {"bold": str(r.bold), "bold_json": str(r.bold_json)}
            for r in bold_runs}


def run_inputs(pattern, runs):
    """Input function of a session-level rule: ``pattern`` (a per-run output with the
    ``{subject}``, ``{session}`` and ``{bold_run}`` wildcards) for every run of the session.

    ``runs`` maps ``(subject, session)`` to the session's run keys."""
    def files(wildcards):
        return [pattern.format(subject=wildcards.subject, session=wildcards.session, bold_run=k)
                for k in runs[(wildcards.subject, wildcards.session)]]

    return files


def _labels(values):
    return ", ".join(sorted({"(none)" if v is None else str(v) for v in values}))


def _derivative_tr(bold, problems):
    """(TR in s, volume count) of an fMRIPrep BOLD: its JSON ``RepetitionTime``, else the
    header's; None and a problem when neither gives a positive TR or the image is not 4D."""
    hdr = nib.load(bold).header
    shape = hdr.get_data_shape()
    if len(shape) != 4 or shape[3] < 2:
        problems.append(f"{bold}: expected a 4D BOLD series, found shape {tuple(shape)}")
        return None, None
    zooms = hdr.get_zooms()
    t_r = float(zooms[3]) if len(zooms) > 3 else 0.0
    if hdr.get_xyzt_units()[1] == "msec":
        t_r /= 1000.0
    side = Path(str(bold).removesuffix(".gz").removesuffix(".nii") + ".json")
    if side.is_file():
        from prepost.bids import read_json

        try:
            meta = read_json(side)
        except InputError as exc:
            problems.append(str(exc))
            meta = {}
        if meta.get("RepetitionTime"):
            js = float(meta["RepetitionTime"])
            if t_r > 0 and abs(js - t_r) > 1e-3:
                log.warning("%s: RepetitionTime %.4g s in the JSON, %.4g s in the header: the "
                            "JSON's is used", bold, js, t_r)
            t_r = js
    if not t_r > 0:
        problems.append(f"{bold}: field RepetitionTime: expected a positive TR (s) in the JSON "
                        f"sidecar or the header, found {t_r!r}")
        return None, int(shape[3])
    return t_r, int(shape[3])


def _count_rows(tsv):
    with open(tsv, "rb") as f:
        return max(sum(1 for line in f if line.strip()) - 1, 0)


def _pick_space(cands, space, res, where):
    """The fMRIPrep BOLD of one run among ``cands`` (path -> entities): the configured space and
    res, else the only candidate; (path, None) or (None, problem)."""
    res = None if res in (None, "") else str(res)
    want = [p for p, e in cands.items() if e.get("space") == space and e.get("res") == res]
    if len(want) == 1:
        return want[0], None
    # another template's file is never taken instead: its grid is not this workflow's MNI grid
    same = {p: e for p, e in cands.items() if e.get("space") == space}
    if len(same) == 1:
        p, e = next(iter(same.items()))
        log.info("%s: fMRIPrep BOLD space-%s res-%s taken (the only one; configured "
                 "space-%s res-%s)", where, e["space"], e.get("res"), space, res)
        return p, None
    spaces = _labels(e.get("space") for e in cands.values())
    ress = _labels(e.get("res") for e in cands.values() if e.get("space") == space)
    hint = (f"set fmri.fmriprep_res to one of: {ress}" if ress and any(
        e.get("space") == space for e in cands.values())
        else f"set fmri.fmriprep_space to one of: {spaces}")
    names = ", ".join(sorted(Path(p).name for p in cands))
    return None, (f"{where}: field fmri.fmriprep_space/fmri.fmriprep_res: expected "
                  f"space-{space}" + (f"_res-{res}" if res else " (no res-)") +
                  f"_desc-preproc_bold, found {names}; {hint}")


def find_fmriprep_runs(fmriprep_dir, subject, session, *, task, filters=None, space,
                       res=None, strategy="default", gsr=False, problems):
    """The fMRIPrep runs of one session: ``{run key: files}`` (see :func:`check_fmriprep`);
    problems are appended to ``problems``."""
    from prepost.bids import matches, parse_name

    folder = Path(fmriprep_dir) / f"sub-{subject}" / f"ses-{session}" / "func"
    where = f"{folder}"
    if not folder.is_dir():
        problems.append(f"{folder}: expected the fMRIPrep func folder of sub-{subject} "
                        f"ses-{session}, found none")
        return {}
    groups, seen = {}, []
    for p in sorted(folder.glob("*_desc-preproc_bold.nii*")):
        ents, suffix = parse_name(p.name)
        if ents.get("sub") != subject or ents.get("ses") != session:
            continue
        seen.append(p.name)
        run_ents = {k: ents[k] for k in RUN_ENTITIES if k in ents}
        if ents.get("task") != task or not matches(run_ents, filters):
            continue
        groups.setdefault(run_key(run_ents), ({}, run_ents))[0][str(p)] = ents
    if not groups:
        problems.append(f"{where}: expected an fMRIPrep BOLD of task-{task} (config bids.task"
                        f"{', bids.filters.bold ' + str(filters) if filters else ''}) ending "
                        f"_desc-preproc_bold.nii.gz, found "
                        f"{', '.join(seen) if seen else 'none'}")
        return {}
    out = {}
    for key, (cands, run_ents) in sorted(groups.items()):
        bold, problem = _pick_space(cands, space, res, f"{where} (task-{key})")
        if problem:
            problems.append(problem)
            continue
        e = cands[bold]
        base = {"sub": subject, "ses": session, **run_ents}
        files = {"bold": bold, "entities": run_ents}
        mask = Path(derivative(fmriprep_dir, "mask", ".nii.gz", datatype="func", **base,
                               space=e.get("space"), res=e.get("res"), desc="brain"))
        if mask.is_file():
            files["mask"] = str(mask)
        for suf in _FMRIPREP_CONFOUNDS:
            tsv = Path(derivative(fmriprep_dir, suf, ".tsv", datatype="func", **base,
                                  desc="confounds"))
            if tsv.is_file():
                files["confounds"], files["confounds_json"] = str(tsv), str(tsv.with_suffix(
                    ".json"))
                break
        if "confounds" not in files:
            want = derivative(fmriprep_dir, "timeseries", ".tsv", datatype="func", **base,
                              desc="confounds")
            problems.append(f"{bold}: expected its confounds {want} (or ..._desc-confounds_"
                            "regressors.tsv of fMRIPrep 1.4-20.1), found none")
            continue
        if not Path(files["confounds_json"]).is_file():
            problems.append(f"{files['confounds']}: expected its JSON sidecar "
                            f"{Path(files['confounds_json']).name} (CompCor metadata), found none")
            continue
        t_r, n = _derivative_tr(bold, problems)
        if t_r is None:
            continue
        rows = _count_rows(files["confounds"])
        if rows != n:
            problems.append(f"{files['confounds']}: field rows: expected {n} (one per volume of "
                            f"{Path(bold).name}), found {rows}")
            continue
        try:
            check_confounds_file(files["confounds"], strategy, gsr)
        except InputError as exc:
            problems.append(str(exc))
            continue
        files.update(t_r=t_r, n_volumes=n)
        out[key] = files
    return out


def check_fmriprep(fmriprep_dir, sessions, *, task, filters=None, space, res=None,
                   strategy="default", gsr=False):
    """Every fMRIPrep run of the study, found and checked when the DAG is built.

    In each ``sub-<s>/ses-<ses>/func`` folder, the ``*_desc-preproc_bold.nii.gz`` files of
    ``task`` whose entities pass ``filters`` (:func:`prepost.bids.matches`) are the runs (one
    per run key, :func:`run_key`). Of each run the file of ``space``/``res`` is taken; when it
    is absent and the run has exactly one file of ``space`` (another ``res``), that one (logged);
    otherwise the problem lists the space and res labels found and the key to set. Confounds are
    ``desc-confounds_timeseries`` (fMRIPrep >= 20.2) or ``desc-confounds_regressors``
    (1.4-20.1), with their JSON. TR and volume count come from the derivative (JSON
    ``RepetitionTime``, else the header), and the confounds must have one row per volume.

    Parameters
    ----------
    fmriprep_dir : str or path-like
        fMRIPrep derivatives root.
    sessions : iterable of (str, str)
        ``(subject, session)`` labels.
    task : str
        ``task-`` label (config ``bids.task``).
    filters : dict or None
        Entity filters of the BOLD runs (config ``bids.filters.bold``).
    space, res : str or None
        ``space-`` and ``res-`` labels of the fMRIPrep BOLD (config ``fmri.fmriprep_space``,
        ``fmri.fmriprep_res``).
    strategy, gsr : str, bool
        Denoising strategy (config ``fmri.denoise``): the confounds it needs are checked in
        each run's header and sidecar (:func:`prepost.fmri.denoise.check_confounds_file`).

    Returns
    -------
    dict
        ``{(subject, session): {run key: files}}``; files: ``bold``, ``confounds``,
        ``confounds_json``, ``mask`` (when present), ``entities`` (of the run, from ``task``
        on), ``t_r`` (s), ``n_volumes``.

    Raises
    ------
    InputError
        ``fmriprep_dir`` empty or missing.
    ValidationReport
        Every problem of every session at once.
    """
    from prepost.errors import ValidationReport

    if not fmriprep_dir or not Path(fmriprep_dir).is_dir():
        raise InputError(file=fmriprep_dir or None, field="fmri.fmriprep_dir",
                         expected="the fMRIPrep derivatives folder when fmri.source is fmriprep",
                         found="empty" if not fmriprep_dir else "no such folder")
    problems, out = [], {}
    for s, ses in sessions:
        runs = find_fmriprep_runs(fmriprep_dir, s, ses, task=task, filters=filters,
                                  space=space, res=res, strategy=strategy, gsr=gsr,
                                  problems=problems)
        t_rs = {k: f["t_r"] for k, f in runs.items()}
        if len({round(t, 6) for t in t_rs.values()}) > 1:  # the session's runs are combined
            problems.append(f"sub-{s} ses-{ses}: field RepetitionTime: expected one TR for the "
                            f"runs of a session, found {t_rs}; choose runs with config "
                            "bids.filters.bold")
        out[(s, ses)] = runs
    if problems:
        raise ValidationReport(problems)
    return out


def _same_grid(img, ref):
    return tuple(img.shape[:3]) == tuple(ref.shape[:3]) and np.allclose(img.affine, ref.affine,
                                                                        atol=1e-4)


def import_fmriprep(bold, confounds, out_bold, out_mask, out_confounds, *, mask=None,
                    resolution_mm, t_r=None):
    """Bring one fMRIPrep run into this workflow's names and MNI grid.

    The preprocessed BOLD is copied byte for byte when it is on the grid of
    :func:`prepost.anat.mni_reference` at ``resolution_mm`` and resampled (linear) otherwise;
    the brain mask likewise (nearest neighbour), or computed from the BOLD
    (:func:`nilearn.masking.compute_epi_mask`) when fMRIPrep's is not given. The confounds TSV
    and JSON are copied unchanged.

    Returns
    -------
    dict
        QC: ``source``, ``resampled``, ``mask_source``, ``t_r``, ``n_dummy``, ``mean_fd``.
    """
    from nilearn import image, masking

    from prepost import anat
    from prepost.io import atomic_path, write_nifti

    img = load_img(bold, ndim=4, field="fMRIPrep preproc bold")
    ref = anat.mni_reference(resolution_mm)
    z = img.header.get_zooms()
    header_t_r = float(z[3]) if len(z) > 3 else 0.0
    t_r = float(t_r) if t_r else header_t_r
    if not t_r or t_r <= 0:
        raise InputError(file=bold, field="RepetitionTime",
                         expected="a positive TR in the header or the sidecar", found=repr(t_r))
    df, _ = read_confounds(confounds)
    if len(df) != img.shape[3]:
        raise InputError(file=confounds, field="rows", expected=f"{img.shape[3]} (one per "
                         "volume of the preprocessed BOLD)", found=str(len(df)))
    qc = {"source": str(bold), "t_r": t_r}
    if _same_grid(img, ref) and abs(header_t_r - t_r) < 1e-6:
        with atomic_path(out_bold) as tmp:
            shutil.copyfile(bold, tmp)
        qc["resampled"] = False
    else:
        if _same_grid(img, ref):
            out = nib.Nifti1Image(np.asarray(img.dataobj, np.float32), img.affine, img.header)
        else:
            log.warning("fMRIPrep BOLD grid %s differs from the %g mm MNI grid: resampled "
                        "(linear)", img.shape[:3], resolution_mm)
            out = image.resample_to_img(img, ref, interpolation="continuous",
                                        force_resample=True, copy_header=True)
            out = nib.Nifti1Image(out.get_fdata(dtype=np.float32), ref.affine)
        out.header.set_xyzt_units("mm", "sec")
        out.header["pixdim"][4] = t_r
        write_nifti(out, out_bold)
        qc["resampled"] = not _same_grid(img, ref)
    if mask is not None:
        m = load_img(mask, ndim=3, field="fMRIPrep brain mask")
        if not _same_grid(m, ref):
            m = image.resample_to_img(m, ref, interpolation="nearest", force_resample=True,
                                      copy_header=True)
        m = nib.Nifti1Image((np.asarray(m.dataobj) > 0.5).astype(np.uint8), ref.affine)
        qc["mask_source"] = str(mask)
    else:
        m = masking.compute_epi_mask(nib.load(out_bold))
        m = nib.Nifti1Image(np.asarray(m.dataobj).astype(np.uint8), ref.affine)
        qc["mask_source"] = "nilearn.masking.compute_epi_mask"
    write_nifti(m, out_mask)
    out_confounds = Path(out_confounds)
    for src, dst in ((Path(confounds), out_confounds),
                     (Path(confounds).with_suffix(".json"), out_confounds.with_suffix(".json"))):
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
    qc["n_dummy"] = n_leading_dummies(df)
    fd = df["framewise_displacement"].to_numpy(float)[qc["n_dummy"] + 1:] \
        if "framewise_displacement" in df else np.array([np.nan])
    qc["mean_fd"] = float(np.nanmean(fd)) if np.isfinite(fd).any() else float("nan")
    return _clean(qc)


# --------------------------------------------------------------------------------------------
# Denoising
# --------------------------------------------------------------------------------------------
def n_leading_dummies(confounds):
    """Number of leading volumes flagged by ``non_steady_state_outlierNN`` columns."""
    cols = [c for c in confounds.columns if c.startswith("non_steady_state_outlier")]
    if not cols:
        return 0
    flag = (confounds[cols].to_numpy(float) > 0.5).any(axis=1)
    n = 0
    while n < len(flag) and flag[n]:
        n += 1
    return n


def denoise_run(bold, mask, confounds, *, strategy, gsr, fd_threshold, dvars_threshold,
                min_segment, low_pass, high_pass, smoothing_fwhm, min_retained_s, extra_qc=None):
    """Denoise one preprocessed run (:func:`prepost.fmri.denoise.denoise`) after removing its
    leading non-steady-state volumes, never failing on a run with too little data.

    A run whose retained time falls below ``min_retained_s`` is flagged ``excluded``: the
    denoised retained volumes are returned when the model can be fitted on them, otherwise the
    uncensored denoised series, otherwise the uncensored (masked, mean-removed) series; the QC
    ``reason`` says which. ``sample_mask`` always lists the positions, within the steady-state
    series of ``n_volumes`` volumes, of the volumes of the returned image.

    Parameters
    ----------
    bold, mask : nibabel image or path
        Preprocessed run and its brain mask.
    confounds : path or (DataFrame, dict)
        Confounds table and sidecar.
    strategy, gsr, fd_threshold, dvars_threshold, min_segment, low_pass, high_pass, \
smoothing_fwhm, min_retained_s
        Settings of :func:`prepost.fmri.denoise.denoise` (config ``fmri.denoise``).
    extra_qc : dict or None
        Entries added to the QC record (not overriding its own).

    Returns
    -------
    (nibabel.Nifti1Image, dict)
        Denoised image on the input grid and the QC record.
    """
    img = nib.load(bold) if isinstance(bold, (str, Path)) else bold
    m = nib.load(mask) if isinstance(mask, (str, Path)) else mask
    df, meta = read_confounds(confounds) if isinstance(confounds, (str, Path)) else confounds
    z = img.header.get_zooms()
    t_r = float(z[3]) if len(z) > 3 else 0.0
    if len(df) != img.shape[3]:
        raise InputError(file=confounds, field="rows", expected=f"{img.shape[3]} (one per volume)",
                         found=str(len(df)))
    n_dummy = n_leading_dummies(df)
    if n_dummy:
        img = img.slicer[..., n_dummy:]
        df = df.iloc[n_dummy:].reset_index(drop=True)
        df = df.drop(columns=[c for c in df.columns if c.startswith("non_steady_state_outlier")])
    n = img.shape[3]
    kw = dict(mask=m, t_r=t_r, strategy=strategy, gsr=gsr, low_pass=low_pass,
              high_pass=high_pass, fd_threshold=fd_threshold, dvars_threshold=dvars_threshold,
              min_segment=min_segment, smoothing_fwhm=smoothing_fwhm, metadata=meta)
    res = denoise(img, df, min_retained_s=min_retained_s, **kw)
    qc = dict(res.qc)
    keep = np.asarray(res.sample_mask, bool)
    out, output, sample_mask = _denoised_or_fallback(res, img, df, m, kw)
    if qc["excluded"]:
        qc["reason"] += f"; file holds the {output}"
        log.warning("EXCLUDED run %s: %s", bold, qc["reason"])
    out.header.set_xyzt_units("mm", "sec")
    out.header["pixdim"][4] = t_r
    qc.update(t_r=t_r, n_volumes=int(n), n_dummy=int(n_dummy), sample_mask=sample_mask.tolist(),
              censored_volumes=np.flatnonzero(~keep).tolist(), output_volumes=int(out.shape[3]),
              output=output, gsr=bool(gsr) or str(strategy).endswith("_gsr"),
              low_pass=low_pass, high_pass=high_pass, fd_threshold=fd_threshold,
              dvars_threshold=dvars_threshold, min_segment=int(min_segment),
              smoothing_fwhm=smoothing_fwhm, min_retained_s=float(min_retained_s))
    for k, v in (extra_qc or {}).items():
        qc.setdefault(k, v)
    log.info("%s: %d of %d volumes retained (%.0f s), tSNR %.1f -> %.1f%s", qc["strategy"],
             qc["n_retained"], n, qc["retained_s"], qc["tsnr_raw"], qc["tsnr_denoised"],
             " [EXCLUDED]" if qc["excluded"] else "")
    return out, _clean(qc)


def _denoised_or_fallback(res, img, df, mask, kw):
    """The denoised retained volumes; when the model cannot be fitted on them, the uncensored
    denoised series, else the uncensored masked series with its mean removed."""
    if res.data is not None:
        return res.data, "denoised retained volumes", np.flatnonzero(res.sample_mask)
    n = img.shape[3]
    fallback = denoise(img, df, censor=False, min_retained_s=0.0, **kw)
    if fallback.data is not None:
        return fallback.data, "uncensored denoised series", np.arange(n)
    marr = np.asarray(mask.dataobj) > 0
    x = np.asarray(img.dataobj, np.float32)
    x = np.where(marr[..., None], x - x.mean(axis=3, keepdims=True), 0.0)
    out = nib.Nifti1Image(x.astype(np.float32), img.affine, img.header)
    return out, "uncensored series, mean removed (too few volumes for the model)", np.arange(n)
