"""Region-based partial-volume correction: the geometric transfer matrix (GTM, Rousset 1998).

Model
-----
The brain is split into disjoint *compartments* ``j``: each ROI's own voxels (ROIs taken from the
smallest to the largest, so a voxel belongs to the smallest ROI containing it; voxels in no ROI
form ``rest``) crossed with the tissue classes GM and WM through the T1w-space tissue
probabilities, ``f_j(x) = 1[x in region] * p_class(x)``, plus one CSF compartment over the whole
image (by default; see ``pooled``). Every compartment is assumed to have one
activity concentration ``T_j`` per frame, so the noise-free PET is
``PSF (*) sum_j T_j f_j``. With ``s_j = PSF (*) f_j`` (the regional spread function, computed on
the T1w grid with an isotropic Gaussian PSF and sampled on the PET grid) and ``w_i`` the fraction
of each PET voxel in compartment ``i``, the observed weighted means are
``t_i = sum_j G_ij T_j`` with ``G_ij = sum_x w_i(x) s_j(x) / sum_x w_i(x)``; ``T = G^-1 t``
frame by frame (least squares).

The corrected TAC of an ROI ``r`` is the concentration of its tissue class (``pvc_tissue``:
atlas and sphere ROIs and ``tissue: gm`` -> GM, ``reference`` and ``tissue: wm`` -> WM,
``tissue: brain`` -> GM and WM) averaged over the compartments weighted by the amount of that
tissue they have inside the ROI, ``sum_j a_rj T_j / sum_j a_rj`` with
``a_rj = sum_{x in r} f_j(x)`` on the T1w grid.

Compartments smaller than ``min_compartment_ml`` are merged into the largest compartment of
their tissue class (their tissue keeps being modelled, with the concentration of that one).

Reference: Rousset OG, Ma Y, Evans AC (1998) J Nucl Med 39:904-911.
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from prepost.errors import InputError
from prepost.image import load_img
from prepost.pet.preproc import resample_to_grid

__all__ = ["TISSUE_CLASSES", "roi_tissue", "gtm_compartments", "gtm_matrix", "gtm_correct"]

log = logging.getLogger(__name__)

TISSUE_CLASSES = ("gm", "wm", "csf")
_FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))


def roi_tissue(spec):
    """Tissue classes whose concentration a corrected ROI reports (tuple of 'gm', 'wm', 'csf')."""
    t = spec.get("pvc_tissue")
    if t is None:
        if spec["type"] in ("atlas", "sphere"):
            t = "gm"
        elif spec["type"] == "reference":
            t = "wm"
        else:
            t = spec["tissue"]
    return ("gm", "wm") if t == "brain" else (t,)


def _zooms(img):
    return np.sqrt((np.asarray(img.affine, float)[:3, :3] ** 2).sum(0))


def gtm_compartments(roi_masks, tissue_maps, *, min_compartment_ml=0.5, pooled=("csf",)):
    """Disjoint tissue compartments on the T1w grid (module docstring).

    Parameters
    ----------
    roi_masks : dict of str to nibabel image
        Binary T1w-grid ROI masks (e.g. :func:`prepost.pet.roi.build_rois` with ``space='t1w'``).
    tissue_maps : dict
        ``gm``, ``wm``, ``csf`` T1w-grid probability images.
    min_compartment_ml : float, default=0.5
    pooled : sequence of str, default=('csf',)
        Tissue classes modelled as one compartment over the whole brain (``all_<class>``)
        instead of one per region. CSF carries no specific signal, and a CSF compartment per
        region is nearly collinear with the GM of the same region, which makes the GM estimate
        unstable.

    Returns
    -------
    fractions : ndarray, shape (n_compartments, X, Y, Z), float32
        Tissue fraction of each T1w voxel in each compartment.
    table : pandas.DataFrame
        ``compartment`` (``<region>_<class>``), ``region``, ``tissue``, ``volume_ml``.
    overlap : pandas.DataFrame
        ``a_rj`` (mL of compartment ``j``'s tissue inside ROI ``r``), ROIs x compartments.
    """
    names = list(roi_masks)
    if not names:
        raise InputError(field="rois", expected="at least one ROI for the GTM")
    first = next(iter(roi_masks.values()))
    shape, affine = first.shape[:3], np.asarray(first.affine, float)
    vox_ml = float(np.prod(_zooms(first)) / 1000.0)
    masks = {}
    for n in names:
        m = roi_masks[n]
        if m.shape[:3] != shape or not np.allclose(m.affine, affine, atol=1e-3):
            raise InputError(field=f"rois[{n}]", expected="T1w-grid masks sharing one grid")
        masks[n] = np.asarray(m.dataobj) > 0.5
    tissues = {}
    for c in TISSUE_CLASSES:
        if c not in tissue_maps:
            raise InputError(field=f"tissue_maps.{c}", expected="a T1w-space probability map")
        img = tissue_maps[c]
        if img.shape[:3] != shape or not np.allclose(img.affine, affine, atol=1e-3):
            img = resample_to_grid(img, first, order=1)
        tissues[c] = np.clip(np.asarray(img.dataobj, dtype=np.float32), 0, 1)
    order = sorted(names, key=lambda n: (masks[n].sum(), names.index(n)))
    taken = np.zeros(shape, bool)
    regions = []
    for n in order:
        own = masks[n] & ~taken
        taken |= own
        regions.append((n, own))
    regions.append(("rest", ~taken))
    fr, rows = [], []
    for reg, own in regions:
        for c in TISSUE_CLASSES:
            if c in pooled:
                continue
            f = np.where(own, tissues[c], 0.0).astype(np.float32)
            fr.append(f)
            rows.append({"compartment": f"{reg}_{c}", "region": reg, "tissue": c,
                         "volume_ml": float(f.sum() * vox_ml)})
    for c in pooled:
        if c not in TISSUE_CLASSES:
            raise InputError(field="pooled", expected=f"tissue classes among {TISSUE_CLASSES}",
                             found=repr(c))
        fr.append(tissues[c].astype(np.float32))
        rows.append({"compartment": f"all_{c}", "region": "all", "tissue": c,
                     "volume_ml": float(tissues[c].sum() * vox_ml)})
    table = pd.DataFrame(rows)
    fr = np.stack(fr)
    keep = np.ones(len(table), bool)
    for c in TISSUE_CLASSES:
        idx = np.flatnonzero(table.tissue.to_numpy() == c)
        big = idx[np.argmax(table.volume_ml.to_numpy()[idx])]
        for i in idx:
            if i != big and table.volume_ml[i] < min_compartment_ml:
                fr[big] += fr[i]
                keep[i] = False
                log.info("GTM: compartment %s (%.2f mL) merged into %s", table.compartment[i],
                         table.volume_ml[i], table.compartment[big])
    fr = fr[keep]
    table = table[keep].reset_index(drop=True)
    table["volume_ml"] = fr.reshape(len(fr), -1).sum(1) * vox_ml
    flat = fr.reshape(len(fr), -1)
    overlap = pd.DataFrame({n: flat[:, masks[n].ravel()].sum(1) * vox_ml for n in names},
                           index=table.compartment).T
    return fr, table, overlap


def gtm_matrix(fractions, t1w_affine, pet_ref_img, pet_to_t1w=None, fwhm_mm=5.0):
    """GTM of compartments on the PET grid.

    Parameters
    ----------
    fractions : ndarray, shape (n, X, Y, Z)
        T1w-grid compartment fractions (:func:`gtm_compartments`).
    t1w_affine : 4x4 array
        Affine of the T1w grid.
    pet_ref_img : nibabel image
        PET-grid image (3D).
    pet_to_t1w : 4x4 array or None
        RAS matrix mapping PET points to T1w points (identity when None).
    fwhm_mm : float or 3 floats, default=5.0
        Scanner PSF (isotropic Gaussian FWHM, mm).

    Returns
    -------
    G : ndarray, shape (n, n)
        ``G[i, j]``: mean of compartment ``j``'s spread function over compartment ``i``.
    weights : ndarray, shape (n, V)
        PET-grid weights ``w_i`` (fraction of each PET voxel in compartment ``i``), flattened.
    """
    pet_ref = load_img(pet_ref_img, ndim=3, field="pet_ref_img")
    if len(pet_ref.shape) == 4:
        pet_ref = nib.Nifti1Image(np.asarray(pet_ref.dataobj)[..., 0], pet_ref.affine)
    mat = np.eye(4) if pet_to_t1w is None else np.asarray(pet_to_t1w, float)
    aff = np.asarray(t1w_affine, float)
    t1_zooms = np.sqrt((aff[:3, :3] ** 2).sum(0))
    fwhm = np.broadcast_to(np.asarray(fwhm_mm, float), (3,))
    sigma = fwhm * _FWHM_TO_SIGMA / t1_zooms
    n = fractions.shape[0]
    W, S = [], []
    for j in range(n):
        img = nib.Nifti1Image(fractions[j], aff)
        W.append(np.asarray(resample_to_grid(img, pet_ref, mat, order=1).dataobj, np.float64).ravel())
        sm = ndimage.gaussian_filter(fractions[j], sigma) if np.any(fwhm > 0) else fractions[j]
        S.append(np.asarray(resample_to_grid(nib.Nifti1Image(sm.astype(np.float32), aff), pet_ref,
                                             mat, order=1).dataobj, np.float64).ravel())
    W, S = np.stack(W), np.stack(S)
    wsum = W.sum(1)
    if np.any(wsum <= 0):
        raise InputError(field="fractions", expected="compartments inside the PET field of view",
                         found=f"{int((wsum <= 0).sum())} empty on the PET grid")
    G = (W @ S.T) / wsum[:, None]
    return G, W


def gtm_correct(tacs, roi_specs, fractions, table, overlap, t1w_affine, pet_img, pet_to_t1w=None,
                fwhm_mm=5.0):
    """Partial-volume corrected regional TACs by the GTM.

    Parameters
    ----------
    tacs : pandas.DataFrame
        Uncorrected TAC table (``frame_start``, ``frame_end``, ROI columns); only its frame
        columns and ROI names are used.
    roi_specs : list of dict
        Normalised ROI entries (:func:`prepost.pet.roi.validate_roi_config`), for the tissue
        class of each ROI.
    fractions, table, overlap
        From :func:`gtm_compartments`.
    t1w_affine : 4x4 array
    pet_img : nibabel image
        The 4D PET the TACs came from.
    pet_to_t1w : 4x4 array or None
    fwhm_mm : float

    Returns
    -------
    corrected : pandas.DataFrame
        Same layout as ``tacs`` with corrected ROI columns.
    compartments : pandas.DataFrame
        ``frame_start``, ``frame_end`` and one column per compartment (its estimated
        concentration).
    info : dict
        ``condition_number`` of G, the compartment table (records) and ``fwhm_mm``.
    """
    img = load_img(pet_img, ndim=4, field="pet_img")
    ref3 = nib.Nifti1Image(np.asarray(img.dataobj[..., 0], dtype=np.float32), img.affine)
    G, W = gtm_matrix(fractions, t1w_affine, ref3, pet_to_t1w, fwhm_mm)
    data = np.asarray(img.dataobj, dtype=np.float32).reshape(-1, img.shape[3])
    nz = np.flatnonzero(W.sum(0) > 0)
    t_obs = (W[:, nz] @ data[nz].astype(np.float64)) / W.sum(1)[:, None]  # (n, frames)
    T, *_ = np.linalg.lstsq(G, t_obs, rcond=None)
    comp = pd.DataFrame(T.T, columns=table.compartment.tolist())
    comp.insert(0, "frame_end", tacs["frame_end"].to_numpy())
    comp.insert(0, "frame_start", tacs["frame_start"].to_numpy())
    out = tacs[["frame_start", "frame_end"]].copy()
    specs = {s["name"]: s for s in roi_specs}
    for roi in [c for c in tacs.columns if c not in ("frame_start", "frame_end")]:
        classes = roi_tissue(specs[roi])
        a = overlap.loc[roi].to_numpy(float) * table.tissue.isin(classes).to_numpy()
        if not a.sum() > 0:
            raise InputError(field=f"rois[{roi}]", expected=f"{'/'.join(classes)} tissue inside the ROI "
                             "for the partial-volume correction", found="none")
        out[roi] = (a / a.sum()) @ T
    info = {"method": "GTM (Rousset 1998)", "fwhm_mm": float(np.mean(fwhm_mm)),
            "condition_number": float(np.linalg.cond(G)),
            "compartments": table.to_dict(orient="records")}
    return out, comp, info
