"""The PET stage's steps as plain functions (the workflow's scripts call these).

Each step takes file paths or images and explicit keyword parameters, and returns images,
DataFrames and dicts; writing is left to the caller. Times are seconds; frame arrays are
``frame_start_s`` and ``frame_duration_s``. :func:`output_paths` names every file the stage
writes.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from prepost import bids as pbids
from prepost.errors import InputError
from prepost.paths import derivative
from prepost.pet import blood as pblood
from prepost.pet import kinetics, preproc, pvc, roi, tacs
from prepost.pet.frames import check_frames, scan_kind, window_bounds

__all__ = [
    "MAPS",
    "MEASURES",
    "STATIC_MAPS",
    "STATIC_MODELS",
    "output_paths",
    "plan_study",
    "scan_frames",
    "session_param",
    "participant_weights",
    "check_study_suv",
    "body_weight_kg",
    "check_suv_inputs",
    "pet_sidecar",
    "frames_of",
    "motion_step",
    "coreg_step",
    "rois_step",
    "stack_masks",
    "unstack_masks",
    "tacs_step",
    "blood_step",
    "kinetics_step",
    "model_curves",
    "long_table",
    "pet_to_mni",
    "maps_step",
]

log = logging.getLogger(__name__)

#: (model, parameter) -> measure name of the tidy long table.
MEASURES = {
    ("1tcm", "VT"): "VT_1tcm", ("1tcm", "K1"): "K1_1tcm",
    ("2tcm", "VT"): "VT_2tcm", ("2tcm", "K1"): "K1_2tcm", ("2tcm", "VND"): "VND_2tcm",
    ("logan", "VT"): "VT_logan", ("ma1", "VT"): "VT_ma1",
    ("srtm", "BPND"): "BPND_srtm", ("srtm", "R1"): "R1_srtm",
    ("logan_ref", "DVR"): "DVR_logan", ("logan_ref", "BPND"): "BPND_logan",
    ("suvr", "SUVR"): "SUVR", ("suv", "SUV"): "SUV",
}


#: Voxel-wise maps: ``stat`` entity of the file name -> what it holds.
MAPS = {"SUVR": "SUV ratio over the SUVR window", "BPNDsrtm": "basis-function SRTM BPND",
        "VTlogan": "plasma-input Logan VT", "SUV": "SUV over the SUVR window (with model 'suv')"}


#: Kinetic models a static (single- or few-frame) scan supports.
STATIC_MODELS = ("suv", "suvr")
#: Parametric maps a static scan supports.
STATIC_MAPS = ("SUVR", "SUV")


# --------------------------------------------------------------------------------------------
# derivative names
# --------------------------------------------------------------------------------------------
def output_paths(results, *, sub, ses, trc=None, space="MNI152NLin2009aSym", res=2,
                 maps=tuple(MAPS)):
    """Every file the PET stage writes for one session, named from its BIDS entities.

    Parameters
    ----------
    results : str or path-like
        Derivatives root.
    sub, ses : str
        Participant and session labels (or Snakemake wildcards such as ``"{subject}"``).
    trc : str or None
        Tracer label; None leaves the ``trc-`` entity out.
    space : str
        Template of the parametric maps.
    res : int
        Template resolution (mm) of the parametric maps (``res-`` entity).
    maps : sequence of str
        Parametric maps (keys of :data:`MAPS`) to name.

    Returns
    -------
    dict of str
        By rule: ``pet``, ``pet_json``, ``motion``, ``motion_qc`` (pet_motion); ``xfm``,
        ``summed``, ``coreg_qc``, ``coreg_png`` (pet_coreg); ``probseg``, ``mask_t1w``, ``rois``,
        ``tacs``, ``tacs_json``, ``pvc``, ``pvc_json``, ``input``, ``input_json`` (pet_tacs:
        ROIs, TACs and arterial input); ``kinetics``, ``long``, ``fits`` (model curves at the
        frames), ``tacs_qc`` (pet_kinetics); ``map_<stat>`` for each of ``maps`` (pet_maps).
    """
    unknown = set(maps) - set(MAPS)
    if unknown:
        raise InputError(field="maps", expected=f"any of {sorted(MAPS)}", found=sorted(unknown))

    def pet(suffix, ext, **entities):
        return derivative(results, suffix, ext, datatype="pet", sub=sub, ses=ses, trc=trc,
                          **entities)

    out = {
        "pet": pet("pet", ".nii.gz", desc="mc"),
        "pet_json": pet("pet", ".json", desc="mc"),
        "motion": pet("timeseries", ".tsv", desc="motion"),
        "motion_qc": pet("qc", ".png", desc="motion"),
        "xfm": pet("xfm", ".mat", **{"from": "pet", "to": "T1w", "mode": "image"}),
        "summed": pet("pet", ".nii.gz", desc="summed"),
        "coreg_qc": pet("qc", ".json", desc="coreg"),
        "coreg_png": pet("qc", ".png", desc="coreg"),
        "probseg": pet("probseg", ".nii.gz", seg="study"),
        "mask_t1w": pet("mask", ".nii.gz", space="T1w", seg="study"),
        "rois": pet("rois", ".tsv", seg="study"),
        "tacs": pet("tacs", ".tsv", seg="study"),
        "tacs_json": pet("tacs", ".json", seg="study"),
        "pvc": pet("tacs", ".tsv", seg="study", desc="gtm"),
        "pvc_json": pet("tacs", ".json", seg="study", desc="gtm"),
        "input": pet("blood", ".tsv", desc="input"),
        "input_json": pet("blood", ".json", desc="input"),
        "kinetics": pet("table", ".tsv", desc="kinetics"),
        "long": pet("long", ".tsv", desc="pet"),
        "fits": pet("tacs", ".tsv", seg="study", desc="fits"),
        "tacs_qc": pet("qc", ".png", desc="tacs"),
    }
    for stat in maps:
        out[f"map_{stat}"] = pet("petmap", ".nii.gz", space=space, res=res, stat=stat)
    return out


# --------------------------------------------------------------------------------------------
# what the scans support (decided when the DAG is built)
# --------------------------------------------------------------------------------------------
def _fmt_window(w):
    return f"[{float(w[0]):g}, {'scan end' if w[1] is None else f'{float(w[1]):g}'}] s"


def plan_study(frames, *, models, maps, suvr_window_s, coreg_window_s, motion_min_start_s,
               tstar_s=None, tstar_frames=None):
    """Which PET steps a study's scans support, with per-session parameters.

    Every session must hold the same kind of scan (:func:`prepost.pet.frames.scan_kind`). A
    dynamic study keeps the configuration as it is. A static study (one frame, or a few frames of
    a late acquisition) keeps the models of :data:`STATIC_MODELS` and the maps of
    :data:`STATIC_MAPS`; its coregistration sums the whole scan; its SUVR window is the whole scan
    when the configured window does not lie within it; a single frame passes motion correction
    unchanged and a few frames are all registered to their mean.

    Parameters
    ----------
    frames : dict
        ``{(participant, session): (frame_start_s, frame_duration_s, source)}``; ``source`` is
        the sidecar named in messages.
    models, maps : sequence of str
        Configured kinetic models (``pet.models``, those the inputs allow) and parametric maps.
    suvr_window_s, coreg_window_s : (float, float or None)
        ``pet.suvr_window_s`` and ``pet.coreg.window_s``.
    motion_min_start_s : float
        ``pet.motion.min_start_s``.
    tstar_s : float or None
        ``pet.tstar_s``.
    tstar_frames : int or None
        ``pet.tstar_frames`` (t* as the count of last frames); exclusive with ``tstar_s``.

    Returns
    -------
    dict
        ``kind`` ('dynamic' or 'static'), ``models``, ``maps`` (lists), ``messages`` (what is
        left out and why, one line each) and ``sessions``: per key of ``frames`` a dict of
        ``suvr_window_s``, ``coreg_window_s``, ``motion_min_start_s``, ``tstar_s`` and
        ``tstar_frames``.

    Raises
    ------
    InputError
        Sessions of both kinds, t* given both ways or as more frames than a scan has, or a
        static study with none of :data:`STATIC_MODELS` configured.
    """
    if tstar_frames is not None and tstar_s is not None:
        raise InputError(field="pet.tstar_frames", expected="t* either in seconds (pet.tstar_s) or "
                         "as a count of last frames (pet.tstar_frames): set pet.tstar_s: null to "
                         "use pet.tstar_frames", found=f"tstar_s={tstar_s}, tstar_frames={tstar_frames}")
    kinds = {key: scan_kind(st, du) for key, (st, du, _) in frames.items()}
    by_kind = {}
    for key, kind in kinds.items():
        by_kind.setdefault(kind, []).append(f"sub-{key[0]} ses-{key[1]}")
    if len(by_kind) > 1:
        raise InputError(field="FrameTimesStart", expected="the same kind of PET scan in every "
                         "session (dynamic: at least 6 frames from injection; static: one frame or "
                         "a few late frames)",
                         found="; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(by_kind.items())))
    kind = next(iter(kinds.values()), "dynamic")
    sessions, messages = {}, []
    models, maps = list(models), list(maps)
    if kind == "dynamic":
        for key, (st, du, src) in frames.items():
            if tstar_frames is not None and int(tstar_frames) > len(st):
                raise InputError(file=src, field="FrameDuration",
                                 expected=f"more frames than pet.tstar_frames ({tstar_frames})",
                                 found=f"{len(st)} frames")
            sessions[key] = {"suvr_window_s": suvr_window_s, "coreg_window_s": coreg_window_s,
                             "motion_min_start_s": motion_min_start_s, "tstar_s": tstar_s,
                             "tstar_frames": tstar_frames}
        return {"kind": kind, "models": models, "maps": maps, "sessions": sessions,
                "messages": messages}
    dropped = [m for m in models if m not in STATIC_MODELS]
    models = [m for m in models if m in STATIC_MODELS]
    if not models:
        raise InputError(field="pet.models", expected=f"any of {list(STATIC_MODELS)} for static PET "
                         "scans (one frame or a few late frames)", found=str(dropped))
    if dropped:
        messages.append(f"PET: static scans (one frame or a few late frames): models {dropped} "
                        f"need a dynamic scan from injection and are left out; fitted: {models}")
    left = [m for m in maps if m not in STATIC_MAPS]
    maps = [m for m in maps if m in STATIC_MAPS]
    if left:
        messages.append(f"PET: static scans: parametric maps {left} are left out; made: {maps}")
    messages.append("PET: static scans: the coregistration sums the whole scan (pet.coreg.window_s "
                    "is not used)")
    lo, hi = window_bounds(suvr_window_s)
    for key, (st, du, src) in frames.items():
        st, du = np.asarray(st, float), np.asarray(du, float)
        start, end = float(st[0]), float(st[-1] + du[-1])
        window = suvr_window_s
        # an end of None is the scan end
        if lo < start - 1e-6 or (suvr_window_s[1] is not None and hi > end + 1e-6):
            window = [start, end]
            messages.append(f"PET: sub-{key[0]} ses-{key[1]}: static scan {start:g}-{end:g} s "
                            f"({src}) does not hold pet.suvr_window_s {_fmt_window(suvr_window_s)}: "
                            "SUV and SUVR average the whole scan")
        sessions[key] = {"suvr_window_s": window, "coreg_window_s": [start, None],
                         "motion_min_start_s": start, "tstar_s": tstar_s,
                         "tstar_frames": tstar_frames}
    n_frames = sorted({len(st) for st, _, _ in frames.values()})
    if n_frames == [1]:
        messages.append("PET: single-frame scans: no frame motion correction (the image passes "
                        "through pet_motion unchanged)")
    else:
        messages.append(f"PET: static scans of {'/'.join(map(str, n_frames))} frames: every frame "
                        "is registered to their mean (pet.motion.min_start_s is not used)")
    return {"kind": kind, "models": models, "maps": maps, "sessions": sessions,
            "messages": messages}


def scan_frames(study):
    """Checked frames of every scan of a collected study (:func:`prepost.bids.collect_study`),
    from the frame times it read from each merged sidecar (no second read).

    Returns ``{(participant, session): (frame_start_s, frame_duration_s, sidecar path)}``.
    """
    out = {}
    for key, sf in study.items():
        if sf.pet_frame_start_s is None or sf.pet_frame_duration_s is None:
            raise InputError(file=sf.pet_json, field="FrameTimesStart/FrameDuration",
                             expected="a list of frame times (s)", found="missing")
        out[key] = (*check_frames(sf.pet_frame_start_s, sf.pet_frame_duration_s,
                                  source=str(sf.pet_json)), str(sf.pet_json))
    return out


def session_param(plan, key):
    """A Snakemake params function giving the per-session value ``key`` of a
    :func:`plan_study` plan."""
    return lambda wildcards: plan["sessions"][(wildcards.subject, wildcards.session)][key]


def participant_weights(participants, column, source=None):
    """Body weight (kg) of each participant from a participants-table column.

    Parameters
    ----------
    participants : pandas.DataFrame
        The table with a ``label`` column (:func:`prepost.bids.read_participants`).
    column : str or None
        ``pet.weight_column``; None gives no weights.
    source : str or None
        The participants file, named in errors.

    Returns
    -------
    dict
        label -> float, or None where the value is missing (``n/a``) or not a number.
    """
    if column is None:
        return {lab: None for lab in participants["label"]}
    if column not in participants.columns:
        raise InputError(file=source, field=column, expected="a body weight column (kg) named by "
                         "pet.weight_column",
                         found=f"columns {[c for c in participants.columns if c != 'label']}")
    values = pd.to_numeric(participants[column], errors="coerce")
    return {lab: None if pd.isna(v) else float(v) for lab, v in zip(participants["label"], values)}


def check_study_suv(study, bids_dir, weights, *, participants=None, weight_column=None):
    """:func:`check_suv_inputs` for every scan of a collected study (when the DAG is built);
    ``weights`` is :func:`participant_weights`' dict."""
    for (sub, _), sf in study.items():
        check_suv_inputs(pbids.sidecar(bids_dir, sf.pet)[0], weights.get(sub),
                         source=str(sf.pet_json), participants=participants,
                         weight_column=weight_column)


# --------------------------------------------------------------------------------------------
# SUV: injected dose and body weight
# --------------------------------------------------------------------------------------------
def body_weight_kg(meta, participant_weight=None):
    """Body weight (kg) for the SUV: the sidecar's ``BodyWeight`` (BIDS-PET, kg), else the
    participants table's value (``pet.weight_column``).

    Returns
    -------
    float or None
        None when neither gives a number.
    """
    for value in (meta.get("BodyWeight"), participant_weight):
        try:
            w = float(value)
        except (TypeError, ValueError):
            continue
        if np.isfinite(w):
            return w
    return None


def check_suv_inputs(meta, participant_weight=None, *, source, participants=None,
                     weight_column=None):
    """Dose (Bq) and body weight (kg) of one scan for the SUV, checked when the DAG is built.

    Parameters
    ----------
    meta : dict
        The PET sidecar.
    participant_weight : object
        The participant's value in the ``weight_column`` of the participants table (None when
        no column is configured).
    source : str
        The PET sidecar, named in errors.
    participants, weight_column : str or None
        The participants table and ``pet.weight_column``, named in errors.

    Returns
    -------
    (float, float)
        ``(injected_dose_bq, weight_kg)``.

    Raises
    ------
    InputError
        No dose, or no body weight in the sidecar nor the participants table.
    """
    dose = pbids.injected_bq(meta, source)
    if dose is None:
        raise InputError(file=source, field="InjectedRadioactivity", expected="the injected "
                         "radioactivity (with InjectedRadioactivityUnits) for the 'suv' model",
                         found="it missing")
    weight = body_weight_kg(meta, participant_weight)
    if weight is None:
        where = (f"nor a number in column {weight_column!r} of {participants}" if weight_column
                 else "and no participants column is configured (set pet.weight_column, e.g. "
                      "'weight')")
        raise InputError(file=source, field="BodyWeight", expected="the body weight (kg) for the "
                         f"'suv' model: none in the sidecar {where}",
                         found=repr(meta.get("BodyWeight", participant_weight)))
    if not 10 <= weight <= 400:
        raise InputError(file=source if meta.get("BodyWeight") is not None else participants,
                         field="BodyWeight" if meta.get("BodyWeight") is not None else weight_column,
                         expected="a body weight in kg (10-400)", found=f"{weight:g}")
    return dose, weight


# --------------------------------------------------------------------------------------------
# frames
# --------------------------------------------------------------------------------------------
def pet_sidecar(pet_json, bids_dir=None, pet_path=None):
    """PET sidecar (merged by BIDS inheritance when ``bids_dir`` and ``pet_path`` are given).

    Returns (meta dict, frame_start_s, frame_duration_s, units); the frames are checked
    (:func:`prepost.pet.frames.check_frames`).
    """
    if bids_dir and pet_path:
        meta, _ = pbids.sidecar(bids_dir, pet_path)
    else:
        meta = pbids.read_json(pet_json)
    for key in ("FrameTimesStart", "FrameDuration"):
        if key not in meta:
            raise InputError(file=pet_json, field=key, expected="a list of frame times (s)", found="missing")
    frame_start_s, frame_duration_s = check_frames(meta["FrameTimesStart"], meta["FrameDuration"],
                                                   source=pet_json)
    return meta, frame_start_s, frame_duration_s, str(meta.get("Units", "kBq/mL"))


def frames_of(pet_json):
    """Checked ``(frame_start_s, frame_duration_s)`` of a sidecar (e.g. the motion-corrected one)."""
    return pet_sidecar(pet_json)[1:3]


# --------------------------------------------------------------------------------------------
# motion and coregistration
# --------------------------------------------------------------------------------------------
def motion_step(pet, frame_start_s, frame_duration_s, *, min_start_s, method, fwhm_mm):
    """Frame motion correction (:func:`prepost.pet.preproc.frame_motion_correct`; its
    ``min_start_s``, ``method`` and ``fwhm_mm``). A single frame (3D image or one volume) passes
    through unchanged, as a one-frame 4D image with zero motion.

    Returns (corrected 4D image, per-frame parameter table, summary dict).
    """
    t0 = time.perf_counter()
    img = nib.load(pet) if isinstance(pet, (str, Path)) else pet
    if img.ndim == 3 or img.shape[3] == 1:
        # one frame: nothing to align; the image passes through as a one-frame 4D PET
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(img.shape[:3] + (1,))
        corrected = nib.Nifti1Image(data, img.affine)
        corrected.header.set_xyzt_units("mm", "sec")
        table = pd.DataFrame({"frame_start": np.asarray(frame_start_s, float),
                              "frame_duration": np.asarray(frame_duration_s, float),
                              **{k: [0.0] for k in preproc.PARAM_NAMES}, "fd_mm": [0.0],
                              "corrected": [0]})
        summary = {"seconds": time.perf_counter() - t0, "method": "none (one frame)",
                   "min_start_s": min_start_s, "max_fd_mm": 0.0, "max_translation_mm": 0.0,
                   "frames_corrected": 0}
        log.info("motion: one frame, passed through unchanged")
        return corrected, table, summary
    corrected, table = preproc.frame_motion_correct(img, frame_start_s, frame_duration_s,
                                                    min_start_s=min_start_s, method=method,
                                                    fwhm_mm=fwhm_mm)
    summary = {"seconds": time.perf_counter() - t0, "method": method, "min_start_s": min_start_s,
               "max_fd_mm": float(table["fd_mm"].max()),
               "max_translation_mm": float(np.abs(table[["trans_x", "trans_y", "trans_z"]]).max().max()),
               "frames_corrected": int(table["corrected"].sum())}
    log.info("motion: %d of %d frames registered, max FD %.2f mm, max translation %.2f mm (%.1f s)",
             summary["frames_corrected"], len(table), summary["max_fd_mm"],
             summary["max_translation_mm"], summary["seconds"])
    return corrected, table, summary


def coreg_step(pet, frame_start_s, frame_duration_s, t1w, brain_mask, xfm_out, *, window_s, init,
               seed=1, n_threads=1):
    """PET -> T1w rigid coregistration (Mattes MI) of the summed late frames.

    The ANTs transform that resamples PET onto the T1w grid is copied to ``xfm_out``.

    Parameters
    ----------
    window_s : (float, float or None)
        Frames summed for the registration (s); None runs to the scan end.
    init : {'center_of_mass', 'identity'}
    seed, n_threads : int
        ANTs sampling seed and ITK threads (one thread and a fixed seed give identical runs).

    Returns (summed image, PET resampled on the T1w grid, QC dict).
    """
    summed = preproc.summed_image(pet, frame_start_s, frame_duration_s, window_s=window_s)
    tmp = Path(tempfile.mkdtemp(prefix="pet2t1w_"))
    try:
        reg = preproc.coregister_pet_to_t1w(summed, t1w, t1w_mask_img=brain_mask, init=init,
                                            out_prefix=f"{tmp}/", seed=seed, n_threads=n_threads)
        if len(reg["fwd_transforms"]) != 1:
            raise InputError(field="coregistration", expected="one rigid transform file",
                             found=str(reg["fwd_transforms"]))
        Path(xfm_out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(reg["fwd_transforms"][0], xfm_out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    params = preproc.affine_to_params(reg["pet_to_t1w"][None])[0]
    qc = dict(reg["qc"])
    qc.update({"window_s": [float(window_s[0]), None if window_s[1] is None else float(window_s[1])],
               "init": init, "pet_to_t1w": reg["pet_to_t1w"].tolist(),
               "pet_to_t1w_params": dict(zip(preproc.PARAM_NAMES, map(float, params)))})
    log.info("coregistration: MI %.3f (initial %.3f), brain Dice %s", qc["mutual_information"],
             qc["mutual_information_init"], f"{qc.get('dice_brain', float('nan')):.3f}")
    return summed, reg["pet_in_t1w"], qc


# --------------------------------------------------------------------------------------------
# ROIs
# --------------------------------------------------------------------------------------------
def rois_step(config, *, t1w, brain_mask, gm, wm, csf, mni_to_t1w, xfm, pet_ref, min_volume_ml):
    """Configured ROIs on the T1w grid and on the PET grid (fractions).

    Returns (pet_rois dict, t1w_rois dict, report DataFrame).
    """
    t1w_rois, rep_t1 = roi.build_rois(config, t1w_img=t1w, brain_mask_img=brain_mask, gm_img=gm,
                                      wm_img=wm, csf_img=csf, mni_to_t1w=list(mni_to_t1w),
                                      space="t1w", min_volume_ml=min_volume_ml)
    pet_rois, rep = roi.masks_to_pet(t1w_rois, pet_ref, [str(xfm)], config=config,
                                     min_volume_ml=min_volume_ml)
    rep.insert(1, "type", rep_t1["type"].to_numpy())
    for _, r in rep.iterrows():
        log.info("ROI %s (%s): %.2f mL in PET space (%d voxels), %.2f mL in T1w space", r["name"],
                 r["type"], r["volume_ml"], r["n_voxels"], r["volume_t1w_ml"])
        if r["type"] == "reference":
            log.info("reference region %s volume: %.2f mL", r["name"], r["volume_t1w_ml"])
    return pet_rois, t1w_rois, rep


def stack_masks(masks, dtype=np.float32):
    """dict of 3D images on one grid -> one 4D image (volume order = dict order)."""
    first = next(iter(masks.values()))
    data = np.stack([np.asarray(m.dataobj, dtype=np.float32) for m in masks.values()], -1)
    img = nib.Nifti1Image(data.astype(dtype), first.affine)
    img.header.set_xyzt_units("mm", "sec")
    return img


def unstack_masks(img, names):
    """One 4D image + names -> dict of 3D images."""
    img = nib.load(img) if isinstance(img, (str, Path)) else img
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 3:
        data = data[..., None]
    if data.shape[3] != len(names):
        raise InputError(file=img.get_filename(), field="volumes", expected=f"{len(names)} ROI volumes",
                         found=str(data.shape[3]))
    return {n: nib.Nifti1Image(data[..., i], img.affine) for i, n in enumerate(names)}


# --------------------------------------------------------------------------------------------
# TACs
# --------------------------------------------------------------------------------------------
def tacs_step(pet, frame_start_s, frame_duration_s, pet_rois, *, units, pvc_method, psf_fwhm_mm,
              source=None, t1w_rois=None, tissue_maps=None, xfm=None, roi_config=None,
              min_compartment_ml=0.5):
    """Regional TACs, and GTM partial-volume corrected TACs when ``pvc_method == 'gtm'``.

    ``units`` is the PET's unit; ``psf_fwhm_mm`` the image resolution the GTM models (used with
    'gtm', which also needs ``t1w_rois``, ``tissue_maps``, ``xfm`` and ``roi_config``).

    Returns (tacs, meta, pvc_tacs or None, pvc_meta or None).
    """
    img = nib.load(pet) if isinstance(pet, (str, Path)) else pet
    df, meta = tacs.extract_tacs(img, pet_rois, frame_start_s, frame_duration_s, units=units,
                                 source=source)
    if pvc_method == "none":
        return df, meta, None, None
    if pvc_method != "gtm":
        raise InputError(field="pet.pvc", expected="'none' or 'gtm'", found=repr(pvc_method))
    specs = roi.validate_roi_config(roi_config)
    t0 = time.perf_counter()
    fr, table, overlap = pvc.gtm_compartments(t1w_rois, tissue_maps,
                                              min_compartment_ml=min_compartment_ml)
    t1_aff = next(iter(t1w_rois.values())).affine
    p2t = roi.pet_to_t1w_matrix([str(xfm)]) if xfm is not None else None
    corr, comp, info = pvc.gtm_correct(df, specs, fr, table, overlap, t1_aff, img, p2t, psf_fwhm_mm)
    log.info("GTM: %d compartments, condition number %.1f (%.1f s)", len(table),
             info["condition_number"], time.perf_counter() - t0)
    pmeta = dict(meta)
    pmeta["Description"] = ("Partial-volume corrected mean activity concentration of each ROI's "
                            "tissue class (geometric transfer matrix, Rousset 1998)")
    pmeta["PartialVolumeCorrection"] = info
    pmeta["PVCTissue"] = {s["name"]: list(pvc.roi_tissue(s)) for s in specs}
    return df, meta, corr, pmeta


# --------------------------------------------------------------------------------------------
# blood
# --------------------------------------------------------------------------------------------
def blood_step(recordings, *, scan_end_s, units, parent_fraction_model, grid_step_s, fit_delay,
               delay_tac=None, frame_start_s=None, frame_duration_s=None,
               coverage_tolerance_s=pblood.DEFAULT_COVERAGE_TOLERANCE_S):
    """Metabolite-corrected arterial input on a uniform grid from BIDS blood recordings.

    Parameters
    ----------
    recordings : dict
        ``{label: tsv, label_json: json}`` (the workflow's ``get_blood``). One recording is
        used as is; with two, the one with parent fractions is the manual recording and the
        other the continuous (autosampler) recording, merged by
        :func:`prepost.pet.blood.merge_recordings`.
    scan_end_s : float
        End of the last frame.
    units : str
        The PET's ``Units``: the input is written in the same unit (blood recordings are read in
        Bq/mL when their sidecar gives units).
    parent_fraction_model : {'hill', 'exponential', 'biexponential'}
    grid_step_s : float
    fit_delay : bool
        Estimate the delay from the early ``delay_tac`` (needs ``frame_start_s`` and
        ``frame_duration_s``).

    Returns
    -------
    input_df : pandas.DataFrame
        ``time, plasma, parent_fraction, parent_plasma[, whole_blood]``.
    meta : dict
        Sidecar: sources, model and its parameters, delay.
    """
    labels = [k for k in recordings if not k.endswith("_json")]
    if not labels:
        raise InputError(field="blood", expected="at least one blood recording")
    data = {}
    for lab in labels:
        data[lab] = pblood.read_blood(recordings[lab], recordings[f"{lab}_json"], scan_end_s=None)
    if len(labels) == 1:
        blood = data[labels[0]]
        pblood.check_blood_covers_scan(blood["time"].to_numpy(float), scan_end_s,
                                       recordings[labels[0]], coverage_tolerance_s)
    else:
        has_pf = [lab for lab in labels if "metabolite_parent_fraction" in data[lab].columns]
        if len(labels) != 2 or len(has_pf) != 1:
            raise InputError(field="blood", expected="one recording, or two with parent fractions in "
                             "exactly one (manual + autosampler)", found=", ".join(labels))
        manual = has_pf[0]
        auto = [lab for lab in labels if lab != manual][0]
        pblood.check_blood_covers_scan(data[manual]["time"].to_numpy(float), scan_end_s,
                                       recordings[manual], coverage_tolerance_s)
        blood = pblood.merge_recordings(data[manual], data[auto])
    inp = pblood.metabolite_corrected_input(blood, model=parent_fraction_model, grid_step=grid_step_s,
                                            scan_end_s=scan_end_s,
                                            coverage_tolerance_s=coverage_tolerance_s)
    factor = pblood.concentration_factor(units)
    fit = inp.attrs.get("parent_fraction_fit") or {}
    meta = {"Sources": [str(recordings[lab]) for lab in labels],
            "ParentFractionModel": parent_fraction_model,
            "ParentFractionParameters": {k: (v.tolist() if hasattr(v, "tolist") else v)
                                         for k, v in fit.items()
                                         if k != "function" and not callable(v)},
            "DelaySeconds": 0.0, "GridStepSeconds": float(grid_step_s),
            "time": {"Units": "s"}, "plasma": {"Units": units, "Description": "total plasma"},
            "parent_plasma": {"Units": units, "Description": "metabolite-corrected parent plasma"},
            "parent_fraction": {"Units": "fraction"},
            "whole_blood": {"Units": units}}
    if fit_delay:
        scaled = inp.copy()
        for col in ("plasma", "parent_plasma", "whole_blood"):
            if col in scaled:
                scaled[col] = scaled[col] / factor
        res = pblood.fit_delay(scaled, delay_tac, frame_start_s, frame_duration_s)
        d = res["delay_s"]
        inp = pblood.metabolite_corrected_input(blood, model=parent_fraction_model, delay=d,
                                                grid_step=grid_step_s, scan_end_s=scan_end_s,
                                                coverage_tolerance_s=coverage_tolerance_s)
        meta["DelaySeconds"] = float(d)
        log.info("input delay: %.0f s", d)
    for col in ("plasma", "parent_plasma", "whole_blood"):
        if col in inp:
            inp[col] = inp[col] / factor
    log.info("input: %d samples over %.0f s, parent-fraction model %s %s", len(inp),
             inp["time"].iloc[-1], parent_fraction_model, meta["ParentFractionParameters"])
    return inp, meta


# --------------------------------------------------------------------------------------------
# kinetics
# --------------------------------------------------------------------------------------------
def kinetics_step(tac_tables, *, input_df, models, reference_roi, tstar_s, suvr_window_s, vb,
                  vt_bounds, bp_bounds, bounds=None, injected_dose_bq=None, weight_kg=None,
                  units="kBq/mL", tstar_frames=None, k2prime="srtm"):
    """Fit every model to every TAC table.

    Parameters
    ----------
    tac_tables : dict
        ``{pvc label ('none', 'gtm'): (DataFrame, source path)}``.
    tstar_s, tstar_frames : float or int or None
        t* in seconds, or as the count of last frames (exclusive).
    k2prime : float, str or None
        ``pet.k2prime``: k2' of reference Logan (see :func:`prepost.pet.kinetics.fit_models`).
    injected_dose_bq, weight_kg : float or None
        Injected radioactivity (Bq) and body weight (kg) of the 'suv' model.
    units : str
        Concentration unit of the TACs: the SUV divides the concentration in Bq/mL by the dose
        per gram, ``SUV = C [Bq/mL] / (dose [Bq] / weight [g])``.

    Returns
    -------
    pandas.DataFrame
        :func:`prepost.pet.kinetics.fit_models` rows with a ``pvc`` column.
    """
    out = []
    # the model divides the TAC as it is by dose/weight: give the dose in the TACs' unit (x/mL
    # with a dose in x), so the SUV is the same for TACs in Bq/mL or kBq/mL
    dose = (None if injected_dose_bq is None
            else float(injected_dose_bq) / pblood.concentration_factor(units, field="Units"))
    # t* as a count of frames is passed only when set
    tstar = {"tstar_frames": int(tstar_frames)} if tstar_frames is not None else {}
    for label, (df, src) in tac_tables.items():
        t0 = time.perf_counter()
        res = kinetics.fit_models(df, input=input_df, reference_roi=reference_roi, models=models,
                                  bounds=bounds, vb=vb, tstar_s=tstar_s,
                                  suvr_window_s=tuple(suvr_window_s), vt_bounds=tuple(vt_bounds),
                                  bp_bounds=tuple(bp_bounds), injected_dose_bq=dose, k2prime=k2prime,
                                  weight_kg=weight_kg, source=src, **tstar)
        res.insert(0, "pvc", label)
        n_bad = int((~res.drop_duplicates(["roi", "model"]).fit_ok).sum())
        log.info("kinetics (pvc %s): %d fits, %d flagged (%.1f s)", label,
                 res.drop_duplicates(["roi", "model"]).shape[0], n_bad, time.perf_counter() - t0)
        out.append(res)
    return pd.concat(out, ignore_index=True)


def model_curves(tacs_df, kin, input_df=None, reference_roi=None):
    """Model TACs at the frames from fitted estimates: dict model -> DataFrame like ``tacs_df``.

    1TCM (plasma input) and SRTM (reference) curves are computed when fitted.
    """
    frame_start_s = tacs_df["frame_start"].to_numpy(float)
    frame_duration_s = tacs_df["frame_end"].to_numpy(float) - frame_start_s
    out = {}
    est = kin.pivot_table(index=["roi", "model"], columns="parameter", values="estimate",
                          aggfunc="first")
    for model in ("1tcm", "srtm"):
        if model not in est.index.get_level_values("model"):
            continue
        df = tacs_df[["frame_start", "frame_end"]].copy()
        for roi_name in [c for c in tacs_df.columns if c not in ("frame_start", "frame_end")]:
            if (roi_name, model) not in est.index:
                continue
            e = est.loc[(roi_name, model)]
            try:
                if model == "1tcm":
                    cb = input_df["whole_blood"] if "whole_blood" in input_df else None
                    y = kinetics.one_tcm_model(input_df["time"], input_df["parent_plasma"], cb,
                                               frame_start_s, frame_duration_s, e["K1"], e["k2"],
                                               e["vB"])
                else:
                    y = kinetics.srtm_model(tacs_df[reference_roi].to_numpy(float), frame_start_s,
                                            frame_duration_s, e["R1"], e["k2"], e["BPND"])
            except Exception:  # a failed fit has NaN estimates: no curve
                y = np.full(frame_start_s.size, np.nan)
            df[roi_name] = y
        out[model] = df
    return out


def long_table(kin, participant_id, session, pvc_label):
    """Tidy rows (participant_id, session, modality, measure, region, value, flag).

    Only the fits of ``pvc_label`` are used. ``flag`` is the fit's flag when the fit failed or
    its outcome is out of bounds (``fit_ok`` False), else empty; flagged rows are kept.
    """
    sub = kin[kin["pvc"] == pvc_label]
    rows = []
    for r in sub.itertuples(index=False):
        m = MEASURES.get((r.model, r.parameter))
        if m is None:
            continue
        rows.append({"participant_id": participant_id, "session": session, "modality": "pet",
                     "measure": m, "region": r.roi, "value": r.estimate,
                     "flag": "" if r.fit_ok else (r.flag or "fit failed")})
    return pd.DataFrame(rows, columns=["participant_id", "session", "modality", "measure", "region",
                                       "value", "flag"])


# --------------------------------------------------------------------------------------------
# voxel-wise maps in MNI space
# --------------------------------------------------------------------------------------------
def pet_to_mni(pet, xfm, t1w_to_mni, mni_ref, interpolation="linear"):
    """Resample a (4D) PET onto an MNI grid through the coregistration and T1w -> MNI transforms.

    ``t1w_to_mni`` is the ``forward`` list of :func:`prepost.anat.load_transforms`; the PET -> T1w
    transform file comes last (``ants.apply_transforms`` order).
    """
    import ants

    from prepost.image import from_ants, to_ants

    img = nib.load(pet) if isinstance(pet, (str, Path)) else pet
    ref = nib.load(mni_ref) if isinstance(mni_ref, (str, Path)) else mni_ref
    tlist = [str(t) for t in t1w_to_mni] + [str(xfm)]
    # a one-frame PET (static scan) is resampled as a 3D image and keeps its frame axis
    one_frame = len(img.shape) == 4 and img.shape[3] == 1
    if one_frame:
        img = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32)[..., 0], img.affine)
    out = ants.apply_transforms(to_ants(ref), to_ants(img), tlist, interpolator=interpolation,
                                imagetype=3 if len(img.shape) == 4 else 0,
                                whichtoinvert=[False] * len(tlist))
    data = np.asarray(from_ants(out).dataobj, dtype=np.float32)
    return nib.Nifti1Image(data[..., None] if one_frame else data, ref.affine)


def maps_step(pet_mni, frame_start_s, frame_duration_s, mask, *, reference_tac, input_df,
              suvr_window_s, tstar_s, vb, k2a_range, n_basis, maps=("SUVR", "BPNDsrtm", "VTlogan"),
              tstar_frames=None, suv=None):
    """Voxel-wise SUVR, plasma Logan VT (when an input is given), basis-function SRTM BPND and
    SUV (when ``suv`` is given).

    ``maps`` limits the maps made (a static scan: SUVR and SUV only); t* of the Logan VT is
    ``tstar_s`` or the last ``tstar_frames`` frames. ``suv`` holds ``injected_dose_bq``,
    ``weight_kg`` and ``units`` (:func:`prepost.pet.tacs.voxelwise_suv`).

    Returns (dict name -> image, dict name -> seconds).
    """
    wanted = set(maps)
    maps, secs = {}, {}
    t0 = time.perf_counter()
    maps["SUVR"] = tacs.voxelwise_suvr(pet_mni, frame_start_s, frame_duration_s,
                                       reference_tac=reference_tac, window_s=suvr_window_s,
                                       mask_img=mask)
    secs["SUVR"] = time.perf_counter() - t0
    if suv is not None and "SUV" in wanted:
        t0 = time.perf_counter()
        maps["SUV"] = tacs.voxelwise_suv(pet_mni, frame_start_s, frame_duration_s,
                                         window_s=suvr_window_s, mask_img=mask, **suv)
        secs["SUV"] = time.perf_counter() - t0
    if input_df is not None and "VTlogan" in wanted:
        t0 = time.perf_counter()
        cb = input_df["whole_blood"].to_numpy(float) if "whole_blood" in input_df else None
        maps["VTlogan"], _ = tacs.voxelwise_logan_vt(
            pet_mni, frame_start_s, frame_duration_s, input_df["time"].to_numpy(float),
            input_df["parent_plasma"].to_numpy(float),
            mask_img=mask, tstar_s=tstar_s, cb=cb, vb=vb, tstar_frames=tstar_frames)
        secs["VTlogan"] = time.perf_counter() - t0
    if "BPNDsrtm" in wanted:
        t0 = time.perf_counter()
        maps["BPNDsrtm"], _, _ = tacs.voxelwise_srtm_bpnd(pet_mni, frame_start_s, frame_duration_s,
                                                          reference_tac, mask_img=mask,
                                                          k2a_range=tuple(k2a_range),
                                                          n_basis=int(n_basis))
        secs["BPNDsrtm"] = time.perf_counter() - t0
    for k, v in secs.items():
        log.info("map %s: %.2f s", k, v)
    return maps, secs
