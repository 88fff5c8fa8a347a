"""Declarative regions of interest (ROIs) for PET, brought from MNI or T1w space to the analysis space.

ROI configuration
-----------------
A list of dicts (e.g. from the workflow's YAML config); every entry has ``name`` (str, unique,
used as the TAC column) and ``type``:

``atlas`` (defined in MNI space)
    ``atlas`` (str: ``Schaefer100``, ``Schaefer200``, ``Schaefer400``; 7 networks, FSL MNI152
    1 mm) and ``pattern`` (str, a regular expression searched in the label names, e.g.
    ``'Default_pCunPCC'``) or ``labels`` (list of int). Optional ``intersect_gm`` (bool, False),
    ``gm_threshold`` (float, 0.5).
``sphere`` (defined in MNI space)
    ``center_mni`` (3 floats, mm) and ``radius_mm`` (float > 0); optional ``intersect_gm`` (bool,
    False) and ``gm_threshold`` (float, 0.5).
``tissue`` (defined in T1w space)
    ``tissue`` (``gm``, ``wm``, ``csf`` or ``brain``) and optional ``threshold`` (float, 0.5):
    voxels whose probability (or brain-mask value) exceeds it.
``reference`` (T1w space with MNI-space exclusions)
    ``method``: ``semiovale`` (centrum semiovale, PETPrep's white-matter reference recipe).
    Optional ``wm_threshold`` (0.9), ``erode_mm`` (4.0), ``exclude_dilate_mm`` (3.0),
    ``height_mm`` (20.0), ``lateral_mm`` (35.0), ``y_range_mni`` ((-55, 35)), ``z_min_mni``
    ('auto'); see :func:`centrum_semiovale_mask`.

Every entry may set ``pvc_tissue`` (``gm``, ``wm``, ``csf`` or ``brain``: the tissue whose
concentration the partial-volume corrected TAC reports, see :mod:`prepost.pet.pvc`) and
``min_volume_ml`` (float; default the ``min_volume_ml`` argument of
:func:`build_rois`, 1.0 mL): an ROI whose volume in the analysis space is below it (or empty)
raises :class:`~prepost.errors.InputError` naming the ROI.

The recommended anterior cingulate ROI is a 12 mm sphere at MNI (0, 30, 24) intersected with the
subject's grey matter; the Schaefer alternative is ``pattern: 'SalVentAttn_Med'`` (the medial
salience parcels, which in the 7-network Schaefer atlas hold the dorsal ACC / medial frontal
cortex).

Spaces and transforms
---------------------
MNI-space ROIs are built on the atlas' 1 mm grid, resampled to the T1w grid with the MNI->T1w
ANTs transforms (linear interpolation of the binary mask, threshold 0.5) and optionally
intersected with the subject GM. T1w-space ROIs are built on the T1w grid. All T1w-space masks
then go to the analysis space (``space``):

* ``'pet'`` (default): resampled onto the PET grid through the PET->T1w rigid matrix; linear
  interpolation of the binary mask gives the fraction of each PET voxel inside the ROI, which
  :func:`prepost.pet.tacs.extract_tacs` uses as weights (``binary=True`` thresholds at 0.5).
* ``'t1w'``: kept on the T1w grid (PETPrep's choice; resample the PET onto the T1w grid).
* ``'mni'``: MNI ROIs are built directly on ``mni_reference_img``; T1w ROIs go there through the
  T1w->MNI transforms (resample the PET with :func:`prepost.pet.preproc.apply_ants_transforms`
  and the same transforms plus the coregistration).

Transform lists follow ``ants.apply_transforms`` (see :mod:`prepost.pet.preproc`):
``mni_to_t1w`` resamples an MNI image onto the T1w grid (``fixed=T1w, moving=MNI``) and
``t1w_to_mni`` a T1w image onto an MNI grid.

Centrum semiovale (PETPrep recipe, adapted)
-------------------------------------------
WM probability > 0.9, eroded by 4 mm (PETPrep erodes 2 voxels of its 1 mm grid; 4 mm limits
the spill-in from cortex at PET resolution: with 4 mm voxels and 5 mm FWHM, the simulated
centrum semiovale VT is biased by about +10 % with 4 mm and +24 % with 2 mm), minus deep grey matter and ventricles dilated by 3 mm,
restricted to a central superior slab in MNI coordinates: from the top of the lateral ventricles
(``z_min_mni='auto'``: the 95th percentile of the z of the template's ventricle voxels) up
``height_mm``, within ``lateral_mm`` of the midline and ``y_range_mni`` antero-posteriorly.
No offline subcortical atlas ships with nilearn, so deep GM is defined on nilearn's MNI152 2009
templates as GM-probable voxels (p > 0.5) outside the cortical Schaefer-400 labels within a
central box (|x| < 35, -45 < y < 30, -20 < z < 25 mm: caudate, putamen, pallidum, thalamus), and
the ventricles as CSF-probable voxels (brain - GM - WM > 0.5) within |x| < 30, -50 < y < 35,
-10 < z < 40 mm. Both are warped to the T1w with the MNI->T1w transforms.
"""

from __future__ import annotations

import functools
import logging
import os
import re

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from prepost.connectivity.atlas import SCHAEFER_PARCELS, schaefer_files
from prepost.errors import InputError
from prepost.image import load_img
from prepost.pet.preproc import apply_ants_transforms, resample_to_grid
from prepost.registration import compose_ants_affines

__all__ = [
    "ATLASES",
    "ROI_TYPES",
    "DEFAULT_MIN_VOLUME_ML",
    "EXAMPLE_CONFIG",
    "validate_roi_config",
    "load_atlas",
    "atlas_mask",
    "sphere_mask",
    "mni_exclusion_masks",
    "centrum_semiovale_mask",
    "build_rois",
    "masks_to_pet",
    "roi_volume_ml",
    "pet_to_t1w_matrix",
]

log = logging.getLogger(__name__)

ATLASES = {f"Schaefer{n}": n for n in SCHAEFER_PARCELS}
ROI_TYPES = ("atlas", "sphere", "tissue", "reference")
TISSUES = ("gm", "wm", "csf", "brain")
DEFAULT_MIN_VOLUME_ML = 1.0

#: The study's default ROI set.
EXAMPLE_CONFIG = [
    {"name": "PCC", "type": "atlas", "atlas": "Schaefer400", "pattern": "Default_pCunPCC"},
    {"name": "ACC", "type": "sphere", "center_mni": [0, 30, 24], "radius_mm": 12,
     "intersect_gm": True},
    {"name": "cortical_gm", "type": "atlas", "atlas": "Schaefer400", "pattern": "7Networks",
     "intersect_gm": True},
    {"name": "whole_brain", "type": "tissue", "tissue": "brain"},
    {"name": "centrum_semiovale", "type": "reference", "method": "semiovale"},
]

_SEMIOVALE_DEFAULTS = {"wm_threshold": 0.9, "erode_mm": 4.0, "exclude_dilate_mm": 3.0,
                       "height_mm": 20.0, "lateral_mm": 35.0, "y_range_mni": (-55.0, 35.0),
                       "z_min_mni": "auto"}
_COMMON = {"name", "type", "min_volume_ml", "pvc_tissue"}
PVC_TISSUES = ("gm", "wm", "csf", "brain")
_KEYS = {
    "atlas": {"required": {"atlas"}, "optional": {"pattern", "labels", "intersect_gm", "gm_threshold"}},
    "sphere": {"required": {"center_mni", "radius_mm"}, "optional": {"intersect_gm", "gm_threshold"}},
    "tissue": {"required": {"tissue"}, "optional": {"threshold"}},
    "reference": {"required": {"method"}, "optional": set(_SEMIOVALE_DEFAULTS)},
}


# --------------------------------------------------------------------------------------------
# config validation
# --------------------------------------------------------------------------------------------
def _err(name, field, expected, found=None):
    return InputError(field=f"rois[{name}].{field}", expected=expected, found=found)


def _num(entry, key, name, lo=None, positive=False):
    v = entry[key]
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
        raise _err(name, key, "a number", repr(v))
    if positive and v <= 0:
        raise _err(name, key, "a positive number", repr(v))
    if lo is not None and v < lo:
        raise _err(name, key, f"a number >= {lo}", repr(v))
    return float(v)


def validate_roi_config(config):
    """Check an ROI config list and return it normalised (defaults filled in).

    Parameters
    ----------
    config : list of dict
        ROI entries (schema in the module docstring).

    Returns
    -------
    list of dict
        One dict per ROI with every optional key set.

    Raises
    ------
    InputError
        For a malformed entry; the message names the ROI (``rois[NAME].field``).
    """
    if not isinstance(config, (list, tuple)) or not config:
        raise InputError(field="rois", expected="a non-empty list of ROI entries", found=repr(config))
    out, seen = [], set()
    for i, entry in enumerate(config):
        if not isinstance(entry, dict):
            raise InputError(field=f"rois[{i}]", expected="a mapping with name and type",
                             found=type(entry).__name__)
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InputError(field=f"rois[{i}].name", expected="a non-empty string", found=repr(name))
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
            raise _err(name, "name", "letters, digits, '_' or '-' only (it becomes a column)", repr(name))
        if name in seen:
            raise _err(name, "name", "a unique ROI name", "a duplicate")
        seen.add(name)
        typ = entry.get("type")
        if typ not in ROI_TYPES:
            raise _err(name, "type", f"one of {', '.join(ROI_TYPES)}", repr(typ))
        keys = _KEYS[typ]
        missing = sorted(keys["required"] - set(entry))
        if missing:
            raise _err(name, missing[0], f"the key '{missing[0]}' for a {typ} ROI", "it missing")
        unknown = sorted(set(entry) - keys["required"] - keys["optional"] - _COMMON)
        if unknown:
            allowed = sorted(keys["required"] | keys["optional"] | _COMMON)
            raise _err(name, unknown[0], f"one of the keys {allowed}", repr(unknown[0]))
        e = dict(entry)
        if "min_volume_ml" in e and e["min_volume_ml"] is not None:
            e["min_volume_ml"] = _num(e, "min_volume_ml", name, lo=0.0)
        else:
            e["min_volume_ml"] = None
        if e.get("pvc_tissue") is not None and e["pvc_tissue"] not in PVC_TISSUES:
            raise _err(name, "pvc_tissue", f"one of {', '.join(PVC_TISSUES)}", repr(e["pvc_tissue"]))
        if typ == "atlas":
            if e["atlas"] not in ATLASES:
                raise _err(name, "atlas", f"one of {', '.join(ATLASES)}", repr(e["atlas"]))
            has_p, has_l = e.get("pattern") is not None, e.get("labels") is not None
            if has_p == has_l:
                raise _err(name, "pattern", "exactly one of 'pattern' or 'labels'",
                           "both" if has_p else "neither")
            table = load_atlas(e["atlas"])[1]
            if has_p:
                if not isinstance(e["pattern"], str):
                    raise _err(name, "pattern", "a regular expression string", repr(e["pattern"]))
                try:
                    hit = table["name"].str.contains(e["pattern"], regex=True)
                except re.error as exc:
                    raise _err(name, "pattern", "a valid regular expression", str(exc)) from exc
                if not hit.any():
                    raise _err(name, "pattern", f"a pattern matching at least one {e['atlas']} label",
                               f"no match for {e['pattern']!r}")
                e["labels"] = [int(v) for v in table.loc[hit, "index"]]
            else:
                labs = e["labels"]
                if not isinstance(labs, (list, tuple)) or not labs or not all(
                        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labs):
                    raise _err(name, "labels", "a non-empty list of integer labels", repr(labs))
                bad = sorted(set(labs) - set(table["index"]))
                if bad:
                    raise _err(name, "labels", f"labels of {e['atlas']}", f"unknown {bad[:5]}")
                e["labels"] = [int(v) for v in labs]
                e["pattern"] = None
            e.setdefault("intersect_gm", False)
            e.setdefault("gm_threshold", 0.5)
        elif typ == "sphere":
            c = e["center_mni"]
            if not isinstance(c, (list, tuple, np.ndarray)) or len(c) != 3 or not all(
                    isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                    for v in c):
                raise _err(name, "center_mni", "three numbers (x, y, z in mm)", repr(c))
            e["center_mni"] = [float(v) for v in c]
            e["radius_mm"] = _num(e, "radius_mm", name, positive=True)
            e.setdefault("intersect_gm", False)
            e.setdefault("gm_threshold", 0.5)
        elif typ == "tissue":
            if e["tissue"] not in TISSUES:
                raise _err(name, "tissue", f"one of {', '.join(TISSUES)}", repr(e["tissue"]))
            e.setdefault("threshold", 0.5)
            e["threshold"] = _num(e, "threshold", name)
        else:
            if e["method"] != "semiovale":
                raise _err(name, "method", "'semiovale'", repr(e["method"]))
            for k, v in _SEMIOVALE_DEFAULTS.items():
                e.setdefault(k, v)
            for k in ("wm_threshold", "erode_mm", "exclude_dilate_mm", "height_mm", "lateral_mm"):
                e[k] = _num(e, k, name, lo=0.0)
            yr = e["y_range_mni"]
            if not isinstance(yr, (list, tuple)) or len(yr) != 2 or not float(yr[0]) < float(yr[1]):
                raise _err(name, "y_range_mni", "(y_min, y_max) with y_min < y_max", repr(yr))
            if e["z_min_mni"] != "auto":
                e["z_min_mni"] = _num(e, "z_min_mni", name)
        for k in ("intersect_gm",):
            if k in e and not isinstance(e[k], bool):
                raise _err(name, k, "true or false", repr(e[k]))
        if "gm_threshold" in e:
            e["gm_threshold"] = _num(e, "gm_threshold", name)
        out.append(e)
    return out


# --------------------------------------------------------------------------------------------
# MNI-space definitions
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def load_atlas(name):
    """Schaefer 2018 atlas image (FSL MNI152 1 mm) and its label table (index, name)."""
    if name not in ATLASES:
        raise InputError(field="atlas", expected=f"one of {', '.join(ATLASES)}", found=repr(name))
    img_path, lut_path = schaefer_files(ATLASES[name])
    rows = []
    for line in lut_path.read_text().splitlines():
        if line.strip():
            parts = line.split("\t")
            rows.append({"index": int(parts[0]), "name": parts[1]})
    img = nib.load(img_path)
    img = nib.Nifti1Image(np.asarray(img.dataobj).astype(np.int16), img.affine)
    img.header.set_xyzt_units("mm", "sec")
    return img, pd.DataFrame(rows)


def atlas_mask(atlas, labels):
    """Binary MNI-space mask (atlas grid) of the union of ``labels`` of ``atlas``."""
    img, _ = load_atlas(atlas)
    data = np.isin(np.asarray(img.dataobj), list(labels)).astype(np.float32)
    return _img(data, img.affine)


def _img(data, affine):
    out = nib.Nifti1Image(np.asarray(data, np.float32), affine)
    out.header.set_xyzt_units("mm", "sec")
    return out


def _coords(affine, shape):
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    return (affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape((3,) + tuple(shape))


def sphere_mask(center_mni, radius_mm, reference_img=None):
    """Binary mask of a sphere (world mm) on a reference grid.

    Parameters
    ----------
    center_mni : 3 floats
        Centre (mm, the reference's world space).
    radius_mm : float
        Radius (mm); a voxel is inside when its centre lies within the radius.
    reference_img : nibabel image or None
        Grid; None uses nilearn's MNI152 2009 1 mm template grid.
    """
    if reference_img is None:
        from nilearn import datasets

        reference_img = datasets.load_mni152_template(resolution=1)
    ref = load_img(reference_img, ndim=3, field="reference_img")
    xyz = _coords(np.asarray(ref.affine, float), ref.shape[:3])
    d2 = sum((xyz[i] - float(center_mni[i])) ** 2 for i in range(3))
    return _img(d2 <= float(radius_mm) ** 2, ref.affine)


@functools.lru_cache(maxsize=1)
def mni_exclusion_masks():
    """Deep GM and ventricle masks on nilearn's MNI152 2009 1 mm grid (module docstring).

    Returns
    -------
    dict
        ``deep_gm``, ``ventricles`` (nibabel images, 0/1) and ``ventricle_top_z`` (mm, the 95th
        percentile of the z coordinate of the ventricle voxels).
    """
    from nilearn import datasets, image

    tmpl = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    br = datasets.load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32)
    csf = np.clip(br - gm - wm, 0, 1)
    atlas, _ = load_atlas("Schaefer400")
    lab = np.asarray(image.resample_to_img(atlas, tmpl, interpolation="nearest",
                                           force_resample=True, copy_header=True).dataobj)
    x, y, z = _coords(tmpl.affine, tmpl.shape)
    box_gm = (np.abs(x) < 35) & (y > -45) & (y < 30) & (z > -20) & (z < 25)
    deep = (gm > 0.5) & (lab == 0) & box_gm
    box_v = (np.abs(x) < 30) & (y > -50) & (y < 35) & (z > -10) & (z < 40)
    vent = (csf > 0.5) & box_v
    lab_v, n = ndimage.label(vent)
    if n > 2:  # the two lateral ventricles (connected with the third) are the largest parts
        sizes = ndimage.sum(vent, lab_v, range(1, n + 1))
        keep = 1 + np.argsort(sizes)[-2:]
        vent_main = np.isin(lab_v, keep)
    else:
        vent_main = vent
    top = float(np.percentile(z[vent_main], 95))
    return {"deep_gm": _img(deep, tmpl.affine), "ventricles": _img(vent, tmpl.affine),
            "ventricle_top_z": top}


def _semiovale_box(spec, reference_img=None):
    from nilearn import datasets

    ex = mni_exclusion_masks()
    ref = reference_img if reference_img is not None else datasets.load_mni152_template(resolution=1)
    x, y, z = _coords(np.asarray(ref.affine, float), ref.shape[:3])
    z0 = ex["ventricle_top_z"] if spec["z_min_mni"] == "auto" else float(spec["z_min_mni"])
    y0, y1 = (float(v) for v in spec["y_range_mni"])
    box = ((z >= z0) & (z <= z0 + spec["height_mm"]) & (np.abs(x) <= spec["lateral_mm"])
           & (y >= y0) & (y <= y1))
    return _img(box, ref.affine), z0


def _zooms(img):
    return np.sqrt((np.asarray(img.affine, float)[:3, :3] ** 2).sum(0))


def _erode_mm(mask, mm, zooms):
    if mm <= 0 or not mask.any():
        return mask
    dist = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=zooms)[1:-1, 1:-1, 1:-1]
    return dist > mm


def _dilate_mm(mask, mm, zooms):
    if mm <= 0 or not mask.any():
        return mask
    return ndimage.distance_transform_edt(~mask, sampling=zooms) <= mm


def centrum_semiovale_mask(wm_img, mni_to_t1w, *, wm_threshold=0.9, erode_mm=4.0,
                           exclude_dilate_mm=3.0, height_mm=20.0, lateral_mm=35.0,
                           y_range_mni=(-55.0, 35.0), z_min_mni="auto", name="centrum_semiovale",
                           min_volume_ml=None):
    """Centrum semiovale reference region in T1w space (PETPrep's recipe, module docstring).

    Parameters
    ----------
    wm_img : nibabel image
        T1w-space WM probability map.
    mni_to_t1w : list of str
        ANTs transforms resampling an MNI image onto the T1w grid ([] when the WM map is in MNI).
    wm_threshold : float, default=0.9
    erode_mm : float, default=4.0
        Erosion of the thresholded WM (mm): voxels closer than this to a non-WM voxel centre
        are removed.
    exclude_dilate_mm : float, default=3.0
        Dilation of the deep-GM + ventricle exclusion (mm).
    height_mm, lateral_mm : float, default=20, 35
        Slab height above ``z_min_mni`` and half-width about the midline (MNI mm).
    y_range_mni : (float, float), default=(-55, 35)
    z_min_mni : float or 'auto', default='auto'
        Bottom of the slab (MNI mm); 'auto' is the top of the template's lateral ventricles.
    name : str
        ROI name for messages.
    min_volume_ml : float or None
        When the nominal recipe gives less, the WM threshold and then the erosion are relaxed in
        small steps until it does (each step logged, the final values in ``info['relaxed']``).

    Returns
    -------
    mask : nibabel.Nifti1Image
        Binary (0/1 float32) mask on the WM map's grid.
    info : dict
        ``volume_ml``, ``n_voxels``, ``z_min_mni`` and the voxel counts after each step.
    """
    wm_img = load_img(wm_img, ndim=3, field="wm_img")
    spec = {"wm_threshold": wm_threshold, "erode_mm": erode_mm, "exclude_dilate_mm": exclude_dilate_mm,
            "height_mm": height_mm, "lateral_mm": lateral_mm, "y_range_mni": y_range_mni,
            "z_min_mni": z_min_mni}
    zooms = _zooms(wm_img)
    wm = np.asarray(wm_img.dataobj, dtype=np.float32)
    ex = mni_exclusion_masks()
    excl = np.zeros(wm.shape, bool)
    for key in ("deep_gm", "ventricles"):
        w = apply_ants_transforms(ex[key], wm_img, mni_to_t1w, interpolation="linear")
        excl |= np.asarray(w.dataobj) > 0.5
    excl = _dilate_mm(excl, exclude_dilate_mm, zooms)
    box, z0 = _semiovale_box(spec)
    boxw = np.asarray(apply_ants_transforms(box, wm_img, mni_to_t1w, interpolation="linear").dataobj) > 0.5

    def build(threshold, erosion):
        step = {}
        m = wm > threshold
        step["wm_thresholded"] = int(m.sum())
        m = _erode_mm(m, erosion, zooms)
        step["eroded"] = int(m.sum())
        m &= ~excl
        step["after_exclusion"] = int(m.sum())
        m &= boxw
        return m, step

    m, step = build(wm_threshold, erode_mm)
    vol = float(m.sum() * np.prod(zooms) / 1000.0)
    relaxed = None
    if min_volume_ml is not None and vol < min_volume_ml:
        # A thin or imperfectly normalised white matter leaves too few voxels at the nominal
        # recipe: relax the probability threshold, then the erosion, step by step (logged).
        for thr, ero in ((wm_threshold - 0.05, erode_mm), (wm_threshold - 0.1, erode_mm),
                         (wm_threshold - 0.1, erode_mm / 2), (wm_threshold - 0.2, erode_mm / 2)):
            m, step = build(thr, ero)
            vol = float(m.sum() * np.prod(zooms) / 1000.0)
            relaxed = {"wm_threshold": thr, "erode_mm": ero}
            log.warning("%s: under %.1f mL at the nominal recipe; relaxed to WM > %.2f, erosion "
                        "%.1f mm: %.2f mL", name, min_volume_ml, thr, ero, vol)
            if vol >= min_volume_ml:
                break
    info = {"volume_ml": vol, "n_voxels": int(m.sum()), "z_min_mni": z0, "steps": step,
            "relaxed": relaxed}
    log.info("%s: %.2f mL (%d voxels), slab from z=%.1f mm MNI", name, vol, int(m.sum()), z0)
    return _img(m, wm_img.affine), info


# --------------------------------------------------------------------------------------------
# building ROIs in the analysis space
# --------------------------------------------------------------------------------------------
def roi_volume_ml(mask_img):
    """Volume (mL) of a binary or fractional mask: sum of weights x voxel volume."""
    w = np.clip(np.asarray(mask_img.dataobj, dtype=np.float64), 0, None)
    return float(w.sum() * np.prod(_zooms(mask_img)) / 1000.0)


def pet_to_t1w_matrix(pet_to_t1w):
    """4x4 RAS matrix mapping PET points to T1w points from a matrix, an ANTs transform list
    (resampling PET onto the T1w grid) or a :func:`prepost.pet.preproc.coregister_pet_to_t1w`
    result; None is the identity."""
    if pet_to_t1w is None:
        return np.eye(4)
    if isinstance(pet_to_t1w, dict):
        pet_to_t1w = pet_to_t1w["pet_to_t1w"]
    if isinstance(pet_to_t1w, (list, tuple)) and pet_to_t1w and isinstance(pet_to_t1w[0], (str, os.PathLike)):
        # ANTs list resampling PET onto the T1w grid maps T1w points to PET points
        return np.linalg.inv(compose_ants_affines(pet_to_t1w))
    m = np.asarray(pet_to_t1w, float)
    if m.shape != (4, 4):
        raise InputError(field="pet_to_t1w", expected="a 4x4 matrix, an ANTs transform list or a "
                         "coregistration result", found=f"shape {m.shape}")
    return m


def build_rois(config, *, t1w_img, brain_mask_img, gm_img, wm_img, csf_img=None, mni_to_t1w=(),
               pet_to_t1w=None, pet_ref_img=None, space="pet", t1w_to_mni=(),
               mni_reference_img=None, binary=False, min_volume_ml=DEFAULT_MIN_VOLUME_ML):
    """Build every configured ROI in the analysis space.

    Parameters
    ----------
    config : list of dict
        ROI entries (module docstring).
    t1w_img : nibabel image
        Subject T1w (defines the T1w grid).
    brain_mask_img, gm_img, wm_img : nibabel image
        T1w-space brain mask and GM/WM probability maps (resampled to the T1w grid if needed).
    csf_img : nibabel image or None
        T1w-space CSF probability (needed only by ``tissue: csf``).
    mni_to_t1w : list of str
        ANTs transforms resampling an MNI image onto the T1w grid ([] if the T1w *is* in MNI).
    pet_to_t1w : 4x4 array, list of str, dict or None
        PET->T1w rigid: the RAS matrix mapping PET points to T1w points, the ``fwd_transforms``
        of :func:`prepost.pet.preproc.coregister_pet_to_t1w`, or its whole result. None means
        identity. Used when ``space='pet'``.
    pet_ref_img : nibabel image or None
        Image on the PET grid (e.g. the summed PET); required when ``space='pet'``.
    space : {'pet', 't1w', 'mni'}, default='pet'
    t1w_to_mni : list of str
        ANTs transforms resampling a T1w image onto an MNI grid (``space='mni'``).
    mni_reference_img : nibabel image or None
        MNI output grid for ``space='mni'`` (default: nilearn MNI152 2009 at 2 mm).
    binary : bool, default=False
        Threshold the resampled masks at 0.5 instead of keeping voxel fractions.
    min_volume_ml : float, default=1.0
        Minimum ROI volume in the analysis space unless an entry sets its own.

    Returns
    -------
    rois : dict of str to nibabel.Nifti1Image
        Masks (float32 weights in [0, 1]) on the analysis grid, in config order.
    report : pandas.DataFrame
        One row per ROI: name, type, space, volume_ml, n_voxels (weight > 0), volume_t1w_ml.
    """
    specs = validate_roi_config(config)
    if space not in ("pet", "t1w", "mni"):
        raise InputError(field="space", expected="'pet', 't1w' or 'mni'", found=repr(space))
    t1 = load_img(t1w_img, ndim=3, field="t1w_img")
    maps = {}
    for key, img in (("brain", brain_mask_img), ("gm", gm_img), ("wm", wm_img), ("csf", csf_img)):
        if img is None:
            continue
        img = load_img(img, ndim=3, field=f"{key}_img")
        if img.shape[:3] != t1.shape[:3] or not np.allclose(img.affine, t1.affine, atol=1e-3):
            img = resample_to_grid(img, t1, order=1)
        maps[key] = img
    if space == "pet":
        if pet_ref_img is None:
            raise InputError(field="pet_ref_img", expected="a PET-grid image when space='pet'",
                             found="None")
        pet_ref = load_img(pet_ref_img, ndim=3, field="pet_ref_img")
        if len(pet_ref.shape) == 4:
            pet_ref = _img(np.asarray(pet_ref.dataobj)[..., 0], pet_ref.affine)
        p2t = pet_to_t1w_matrix(pet_to_t1w)
    if space == "mni" and mni_reference_img is None:
        from nilearn import datasets

        mni_reference_img = datasets.load_mni152_template(resolution=2)
    t1_vox_ml = float(np.prod(_zooms(t1)) / 1000.0)

    rois, rows = {}, []
    for s in specs:
        name, typ = s["name"], s["type"]
        mni_native = None
        if typ in ("atlas", "sphere"):
            src = atlas_mask(s["atlas"], s["labels"]) if typ == "atlas" else \
                sphere_mask(s["center_mni"], s["radius_mm"])
            if space == "mni":
                w = _resample_mni(src, mni_reference_img)
                if s["intersect_gm"]:
                    gm_mni = apply_ants_transforms(maps["gm"], mni_reference_img, t1w_to_mni)
                    w = w * (np.asarray(gm_mni.dataobj) > s["gm_threshold"])
                mni_native = _img(w, mni_reference_img.affine)
            w1 = np.asarray(apply_ants_transforms(src, t1, mni_to_t1w, interpolation="linear").dataobj) > 0.5
            if s["intersect_gm"]:
                w1 &= np.asarray(maps["gm"].dataobj) > s["gm_threshold"]
        elif typ == "tissue":
            if s["tissue"] not in maps:
                raise _err(name, "tissue", f"a {s['tissue']} map passed as {s['tissue']}_img", "None")
            w1 = np.asarray(maps[s["tissue"]].dataobj, dtype=np.float32) > s["threshold"]
        else:
            m, info = centrum_semiovale_mask(
                maps["wm"], mni_to_t1w, name=name,
                min_volume_ml=(s["min_volume_ml"] if s["min_volume_ml"] is not None
                               else float(min_volume_ml)),
                **{k: s[k] for k in _SEMIOVALE_DEFAULTS})
            w1 = np.asarray(m.dataobj) > 0.5
        t1_mask = _img(w1, t1.affine)
        if space == "t1w":
            out = t1_mask
        elif space == "pet":
            out = resample_to_grid(t1_mask, pet_ref, p2t, order=1)
        else:
            out = mni_native if mni_native is not None else \
                apply_ants_transforms(t1_mask, mni_reference_img, t1w_to_mni, interpolation="linear")
        data = np.clip(np.asarray(out.dataobj, dtype=np.float32), 0, 1)
        if binary:
            data = (data >= 0.5).astype(np.float32)
        out = _img(data, out.affine)
        vol = roi_volume_ml(out)
        vmin = s["min_volume_ml"] if s["min_volume_ml"] is not None else float(min_volume_ml)
        if not np.any(data > 0) or vol < vmin:
            raise _err(name, "volume", f"an ROI of at least {vmin:g} mL in {space} space "
                       f"(check its definition and the transforms)",
                       f"{vol:.3f} mL ({int((data > 0).sum())} voxels; "
                       f"{w1.sum() * t1_vox_ml:.3f} mL in T1w space)")
        rois[name] = out
        rows.append({"name": name, "type": typ, "space": space, "volume_ml": vol,
                     "n_voxels": int((data > 0).sum()), "volume_t1w_ml": float(w1.sum() * t1_vox_ml)})
        log.info("ROI %s (%s): %.2f mL in %s space", name, typ, vol, space)
    return rois, pd.DataFrame(rows)


def masks_to_pet(t1w_rois, pet_ref_img, pet_to_t1w=None, *, config=None, binary=False,
                 min_volume_ml=DEFAULT_MIN_VOLUME_ML):
    """Bring T1w-grid ROI masks (``build_rois(..., space='t1w')``) onto the PET grid.

    Linear interpolation of each binary mask gives the fraction of every PET voxel inside the ROI
    (as ``build_rois(..., space='pet')`` does); the same volume checks apply, with per-ROI
    ``min_volume_ml`` taken from ``config`` when given.

    Returns
    -------
    rois : dict of str to nibabel.Nifti1Image
    report : pandas.DataFrame
        name, space, volume_ml, n_voxels, volume_t1w_ml.
    """
    pet_ref = load_img(pet_ref_img, ndim=3, field="pet_ref_img")
    if len(pet_ref.shape) == 4:
        pet_ref = _img(np.asarray(pet_ref.dataobj)[..., 0], pet_ref.affine)
    p2t = pet_to_t1w_matrix(pet_to_t1w)
    vmins = {}
    if config is not None:
        vmins = {s["name"]: s["min_volume_ml"] for s in validate_roi_config(config)}
    rois, rows = {}, []
    for name, mask in t1w_rois.items():
        w1 = np.asarray(mask.dataobj) > 0.5
        t1_ml = float(w1.sum() * np.prod(_zooms(mask)) / 1000.0)
        out = resample_to_grid(_img(w1, mask.affine), pet_ref, p2t, order=1)
        data = np.clip(np.asarray(out.dataobj, dtype=np.float32), 0, 1)
        if binary:
            data = (data >= 0.5).astype(np.float32)
        out = _img(data, out.affine)
        vol = roi_volume_ml(out)
        vmin = vmins.get(name)
        vmin = float(min_volume_ml) if vmin is None else vmin
        if not np.any(data > 0) or vol < vmin:
            raise _err(name, "volume", f"an ROI of at least {vmin:g} mL in pet space "
                       f"(check its definition and the transforms)",
                       f"{vol:.3f} mL ({int((data > 0).sum())} voxels; {t1_ml:.3f} mL in T1w space)")
        rois[name] = out
        rows.append({"name": name, "space": "pet", "volume_ml": vol,
                     "n_voxels": int((data > 0).sum()), "volume_t1w_ml": t1_ml})
    return rois, pd.DataFrame(rows)


def _resample_mni(src, ref):
    """Resample a binary MNI mask onto another MNI grid (fraction of the target voxel)."""
    zs, zr = _zooms(src), _zooms(ref)
    data = np.asarray(src.dataobj, dtype=np.float32)
    if np.all(zr > zs * 1.5):  # box-average before sampling a coarser grid
        data = ndimage.uniform_filter(data, size=np.maximum(np.round(zr / zs).astype(int), 1))
    return np.clip(np.asarray(resample_to_grid(_img(data, src.affine), ref, order=1).dataobj), 0, 1)
