"""Regional time-activity curves (TACs) and vectorised voxel-wise parametric maps.

TAC tables follow the BIDS-PET derivatives layout (``*_tacs.tsv`` + JSON): columns
``frame_start`` and ``frame_end`` (s) then one column per ROI, each the (weighted) mean activity
concentration of the frame in the PET's unit. The sidecar lists the unit, the frame times and per
ROI the volume (mL; sum of weights x voxel volume) and voxel counts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from prepost.errors import InputError
from prepost.io import read_json_object, read_tsv, write_json, write_tsv
from prepost.pet.frames import check_frames, window_weights
from prepost.pet.kinetics import srtm_basis, tissue_integral
from prepost.image import load_img

__all__ = [
    "extract_tacs",
    "write_tacs",
    "read_tacs",
    "voxelwise_logan_vt",
    "voxelwise_suv",
    "voxelwise_suvr",
    "voxelwise_srtm_bpnd",
]


def _mask_data(mask, name, shape, affine):
    if hasattr(mask, "affine"):
        if tuple(mask.shape[:3]) != tuple(shape):
            raise InputError(field=f"rois[{name}]", expected=f"a mask on the PET grid {tuple(shape)}",
                             found=f"shape {mask.shape}")
        if not np.allclose(mask.affine, affine, atol=1e-3):
            raise InputError(field=f"rois[{name}]", expected="a mask with the PET image's affine",
                             found="a different affine")
        w = np.asarray(mask.dataobj, dtype=np.float64)
    else:
        w = np.asarray(mask, dtype=np.float64)
        if w.shape != tuple(shape):
            raise InputError(field=f"rois[{name}]", expected=f"a mask of shape {tuple(shape)}",
                             found=f"shape {w.shape}")
    if w.dtype == bool:
        w = w.astype(np.float64)
    if not np.all(np.isfinite(w)) or w.min() < 0 or w.max() > 1 + 1e-6:
        raise InputError(field=f"rois[{name}]", expected="weights in [0, 1] (binary or probabilistic)",
                         found=f"range [{np.nanmin(w):g}, {np.nanmax(w):g}]")
    return w


def extract_tacs(pet_img, rois, frame_start_s, frame_duration_s, units="kBq/mL", *, source=None):
    """Regional TACs: weighted mean of each frame inside each ROI.

    Parameters
    ----------
    pet_img : nibabel image or path
        4D dynamic PET (decay corrected).
    rois : dict of str to nibabel image or array
        ROI masks on the PET grid, binary or probabilistic (weights in [0, 1]).
    frame_start_s, frame_duration_s : array-like
        Frames (s).
    units : str, default='kBq/mL'
        Unit of the PET values (BIDS ``Units``).
    source : str, optional
        Name of the PET file for messages and the sidecar.

    Returns
    -------
    tacs : pandas.DataFrame
        ``frame_start, frame_end`` (s) then one column per ROI: ``sum_v w_v x_v / sum_v w_v``.
    meta : dict
        JSON sidecar content: ``Units``, ``FrameTimesStart``, ``FrameDuration``, column
        descriptions and ``ROIs``: per ROI ``volume_ml`` (sum of weights x voxel volume),
        ``n_voxels`` (weight > 0) and ``n_voxels_half`` (weight >= 0.5).
    """
    img = load_img(pet_img, ndim=4, field="pet_img")
    if source is None:
        source = img.get_filename() if hasattr(img, "get_filename") else None
    frame_start_s, frame_duration_s = check_frames(frame_start_s, frame_duration_s, img.shape[3],
                                                   source=source)
    if not isinstance(rois, dict) or not rois:
        raise InputError(field="rois", expected="a non-empty dict of name -> mask", found=repr(type(rois)))
    shape = img.shape[:3]
    affine = np.asarray(img.affine, float)
    vox_ml = float(np.prod(np.sqrt((affine[:3, :3] ** 2).sum(0))) / 1000.0)
    names, W = [], []
    info = {}
    for name, mask in rois.items():
        if name in ("frame_start", "frame_end"):
            raise InputError(field=f"rois[{name}]", expected="an ROI name other than a time column")
        w = _mask_data(mask, name, shape, affine)
        if w.sum() <= 0:
            raise InputError(field=f"rois[{name}]", expected="a non-empty ROI mask", found="no voxel")
        names.append(name)
        W.append(w.ravel())
        info[name] = {"volume_ml": float(w.sum() * vox_ml), "n_voxels": int((w > 0).sum()),
                      "n_voxels_half": int((w >= 0.5).sum())}
    W = np.stack(W, 1)  # (V, R)
    nz = np.flatnonzero(W.sum(1) > 0)
    data = np.asarray(img.dataobj, dtype=np.float32).reshape(-1, img.shape[3])[nz]
    if not np.all(np.isfinite(data)):
        raise InputError(file=source, field="data", expected="finite values inside the ROIs",
                         found="NaN or infinite values")
    Wn = W[nz]
    means = (data.T.astype(np.float64) @ Wn) / Wn.sum(0)
    df = pd.DataFrame(means, columns=names)
    df.insert(0, "frame_end", frame_start_s + frame_duration_s)
    df.insert(0, "frame_start", frame_start_s)
    meta = {
        "Units": units,
        "FrameTimesStart": frame_start_s.tolist(),
        "FrameDuration": frame_duration_s.tolist(),
        "frame_start": {"Description": "Start of the frame", "Units": "s"},
        "frame_end": {"Description": "End of the frame", "Units": "s"},
        "ROIs": info,
        "Description": "Weighted mean activity concentration per frame in each ROI "
                       "(weights: fraction of the PET voxel inside the ROI)",
    }
    for n in names:
        meta[n] = {"Description": f"Mean activity concentration in ROI {n}", "Units": units}
    if source:
        meta["Sources"] = [str(source)]
    return df, meta


def write_tacs(df, meta, path):
    """Write a TAC table (``.tsv``) and its JSON sidecar atomically; returns both paths."""
    path = Path(path)
    if not path.name.endswith(".tsv"):
        raise InputError(file=path, field="path", expected="a .tsv file name")
    for col in ("frame_start", "frame_end"):
        if col not in df.columns:
            raise InputError(file=path, field=col, expected="a TAC table with frame_start/frame_end")
    json_path = path.with_name(re.sub(r"\.tsv$", ".json", path.name))
    write_tsv(df, path, float_format="%.8g")
    write_json(meta, json_path)
    return str(path), str(json_path)


def read_tacs(path):
    """Read a TAC table written by :func:`write_tacs` (returns DataFrame, sidecar dict)."""
    import json

    path = Path(path)
    if not path.exists():
        raise InputError(file=path, field="path", expected="an existing TAC table", found="no file")
    df = read_tsv(path, what="a TAC table (frame_start, frame_end, one column per ROI)",
                  required=("frame_start", "frame_end"), numeric="all")
    jp = path.with_name(re.sub(r"\.tsv$", ".json", path.name))
    meta = read_json_object(jp, "the TAC JSON sidecar") if jp.exists() else {}
    return df, meta


# --------------------------------------------------------------------------------------------
# voxel-wise maps
# --------------------------------------------------------------------------------------------
def _voxels(pet_img, mask_img):
    img = load_img(pet_img, ndim=4, field="pet_img")
    shape = img.shape[:3]
    if mask_img is None:
        mask = np.ones(shape, bool)
    else:
        mask = np.asarray(getattr(mask_img, "dataobj", mask_img)) > 0.5
        if mask.shape != tuple(shape):
            raise InputError(field="mask_img", expected=f"a mask of shape {tuple(shape)}",
                             found=str(mask.shape))
    idx = np.flatnonzero(mask.ravel())
    data = np.asarray(img.dataobj, dtype=np.float32).reshape(-1, img.shape[3])[idx]
    return img, shape, idx, data


def _to_img(values, idx, shape, affine, fill=np.nan):
    out = np.full(int(np.prod(shape)), fill, np.float32)
    out[idx] = values
    img = nib.Nifti1Image(out.reshape(shape), affine)
    img.header.set_xyzt_units("mm", "sec")
    return img


def voxelwise_logan_vt(pet_img, frame_start_s, frame_duration_s, cp_t, cp, *, mask_img=None,
                       tstar_s=30 * 60.0, cb=None, vb=None, chunk=200_000, tstar_frames=None):
    """Voxel-wise Logan (1990) VT with an arterial input, vectorised over voxels.

    Same estimator as :func:`prepost.pet.kinetics.logan_plasma`: for frames whose mid-time is
    ``>= tstar_s``, the ordinary least-squares slope of ``int_0^t C / C(t)`` on
    ``int_0^t Cp / C(t)``, where ``C(t)`` is the frame mean at the mid-time, ``int C`` the sum
    of the preceding frames plus half the current one, gaps bridged linearly
    (:func:`prepost.pet.kinetics.tissue_integral`), and ``int Cp`` exact for the
    piecewise-linear input. All voxels are solved at once with closed-form OLS.

    Parameters
    ----------
    pet_img : nibabel image or path
        4D dynamic PET (same unit as ``cp``).
    frame_start_s, frame_duration_s : array-like
        Frames (s).
    cp_t, cp : array-like
        Metabolite-corrected parent plasma input: times (s) and values. A zero at t=0 is
        prepended when the first time is > 0.
    mask_img : nibabel image or None
        Voxels to fit (e.g. the brain mask on the PET grid); None fits every voxel.
    tstar_s : float or None, default=1800
        Start of the linear phase (s): frames whose mid-time is ``>= tstar_s``.
    tstar_frames : int or None
        The linear phase as the last ``tstar_frames`` frames instead (``tstar_s`` must then be
        None), as in :func:`prepost.pet.kinetics.logan_plasma`.
    cb, vb : array-like, float or None
        Whole blood at ``cp_t`` and a fixed blood fraction: if ``vb`` is given, the voxel TACs
        are corrected ``(C - vb Cb) / (1 - vb)`` first (``cb`` defaults to ``cp``).
    chunk : int, default=200000
        Voxels processed at once (bounds memory).

    Returns
    -------
    vt : nibabel.Nifti1Image
        VT (mL/cm3); NaN outside the mask and where a TAC is not positive after t*.
    intercept : nibabel.Nifti1Image
        Logan intercept (min).
    """
    img, shape, idx, data = _voxels(pet_img, mask_img)
    frame_start_s, frame_duration_s = check_frames(frame_start_s, frame_duration_s, img.shape[3])
    t = np.asarray(cp_t, float).ravel()
    c = np.asarray(cp, float).ravel()
    if t.size != c.size or t.size < 2 or np.any(np.diff(t) <= 0):
        raise InputError(field="cp_t", expected="increasing input times matching cp", found=f"{t.size} times, {c.size} values")
    if t[0] > 0:
        t, c = np.r_[0.0, t], np.r_[0.0, c]
    fe = frame_start_s + frame_duration_s
    if t[-1] < fe[-1] - 1e-6:
        raise InputError(field="cp_t", expected=f"an input covering the scan end ({fe[-1]:g} s)",
                         found=f"last sample at {t[-1]:g} s")
    tm, fsm, fem = t / 60.0, frame_start_s / 60.0, fe / 60.0
    mid = 0.5 * (fsm + fem)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (c[1:] + c[:-1]) * np.diff(tm))])
    int_cp = np.interp(mid, tm, cum)
    if vb is not None:
        cbv = c if cb is None else np.asarray(cb, float).ravel()
        if cbv.size == t.size - 1:  # a zero was prepended to the times
            cbv = np.r_[0.0, cbv]
        if cbv.size != t.size:
            raise InputError(field="cb", expected="whole blood at the input times", found=f"{cbv.size} values")
        cumb = np.concatenate([[0.0], np.cumsum(0.5 * (cbv[1:] + cbv[:-1]) * np.diff(tm))])
        cb_mean = (np.interp(fem, tm, cumb) - np.interp(fsm, tm, cumb)) / (fem - fsm)
    if tstar_frames is not None:
        if tstar_s is not None:
            raise InputError(field="tstar_frames", expected="t* either as tstar_s or as "
                             "tstar_frames, not both", found=f"tstar_s={tstar_s}")
        sel = np.arange(mid.size) >= mid.size - int(tstar_frames)
    else:
        sel = mid >= (30 * 60.0 if tstar_s is None else float(tstar_s)) / 60.0
    if sel.sum() < 3:
        raise InputError(field="tstar_s", expected="at least 3 frames after t*", found=f"{int(sel.sum())}")
    vt = np.full(idx.size, np.nan, np.float32)
    icpt = np.full(idx.size, np.nan, np.float32)
    for a in range(0, idx.size, int(chunk)):
        y = data[a:a + int(chunk)].astype(np.float64)
        if vb is not None:
            y = (y - vb * cb_mean) / (1.0 - vb)
        # as the regional Logan: gaps between frames and before the first frame are bridged
        cum_ct = tissue_integral(y, frame_start_s, frame_duration_s)
        ys = y[:, sel]
        ok = np.all(ys > 0, axis=1)
        ys = np.where(ok[:, None], ys, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            X = int_cp[sel][None, :] / ys
            Y = cum_ct[:, sel] / ys
        mx, my = X.mean(1), Y.mean(1)
        sxx = ((X - mx[:, None]) ** 2).sum(1)
        sxy = ((X - mx[:, None]) * (Y - my[:, None])).sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = sxy / sxx
        b0 = my - slope * mx
        slope[~ok] = np.nan
        b0[~ok] = np.nan
        vt[a:a + int(chunk)] = slope
        icpt[a:a + int(chunk)] = b0
    return _to_img(vt, idx, shape, img.affine), _to_img(icpt, idx, shape, img.affine)


def voxelwise_suvr(pet_img, frame_start_s, frame_duration_s, reference_tac=None, *, reference_mask=None,
                   window_s=(60 * 60.0, 90 * 60.0), mask_img=None):
    """Voxel-wise SUVR: mean over ``window_s`` divided by the reference's.

    Parameters
    ----------
    pet_img : nibabel image or path
        4D dynamic PET.
    frame_start_s, frame_duration_s : array-like
        Frames (s).
    reference_tac : array-like or None
        Reference-region TAC (one value per frame); or give ``reference_mask``.
    reference_mask : nibabel image or array or None
        Reference region on the PET grid (binary or probabilistic).
    window_s : (float, float), default=(3600, 5400)
        Time window (s); each frame is weighted by the time it shares with the window
        (:func:`prepost.pet.frames.window_weights`), as in the regional
        :func:`prepost.pet.kinetics.suvr`.
    mask_img : nibabel image or None
        Voxels to compute (NaN elsewhere).

    Returns
    -------
    nibabel.Nifti1Image
        SUVR (unitless).
    """
    img, shape, idx, data = _voxels(pet_img, mask_img)
    frame_start_s, frame_duration_s = check_frames(frame_start_s, frame_duration_s, img.shape[3])
    w = window_weights(frame_start_s, frame_duration_s, window_s)
    if reference_tac is None:
        if reference_mask is None:
            raise InputError(field="reference_tac", expected="a reference TAC or reference_mask")
        tac, _ = extract_tacs(img, {"reference": reference_mask}, frame_start_s, frame_duration_s)
        reference_tac = tac["reference"].to_numpy()
    ref = np.asarray(reference_tac, float).ravel()
    if ref.size != frame_start_s.size:
        raise InputError(field="reference_tac", expected=f"{frame_start_s.size} values", found=str(ref.size))
    den = float(ref @ w)
    if not den > 0:
        raise InputError(field="reference_tac", expected="a positive mean in the window", found=f"{den:g}")
    return _to_img((data @ w.astype(np.float32)) / den, idx, shape, img.affine)


def voxelwise_suv(pet_img, frame_start_s, frame_duration_s, *, injected_dose_bq, weight_kg,
                  units="kBq/mL", window_s=(60 * 60.0, 90 * 60.0), mask_img=None):
    """Voxel-wise SUV: ``mean C(window) [Bq/mL] / (injected dose [Bq] / body weight [g])``.

    The window mean weights frames as :func:`voxelwise_suvr` and the regional
    :func:`prepost.pet.kinetics.suv`.

    Parameters
    ----------
    pet_img : nibabel image or path
        4D PET (one or more frames).
    frame_start_s, frame_duration_s : array-like
        Frames (s).
    injected_dose_bq, weight_kg : float
        Injected radioactivity (Bq) and body weight (kg).
    units : str
        Concentration unit of the image (converted to Bq/mL).
    window_s : (float, float)
        Time window (s).
    mask_img : nibabel image or None
        Voxels to compute (NaN elsewhere).

    Returns
    -------
    nibabel.Nifti1Image
        SUV (g/mL).
    """
    from prepost.pet.blood import concentration_factor

    img, shape, idx, data = _voxels(pet_img, mask_img)
    frame_start_s, frame_duration_s = check_frames(frame_start_s, frame_duration_s, img.shape[3])
    dose, weight = float(injected_dose_bq), float(weight_kg)
    if not (dose > 0 and weight > 0):
        raise InputError(field="injected_dose_bq, weight_kg", expected="positive values",
                         found=f"{dose:g} Bq, {weight:g} kg")
    w = window_weights(frame_start_s, frame_duration_s, window_s)
    scale = concentration_factor(units) / (dose / (weight * 1000.0))
    return _to_img((data.astype(np.float64) @ w) * scale, idx, shape, img.affine)


def voxelwise_srtm_bpnd(pet_img, frame_start_s, frame_duration_s, reference_tac, *, mask_img=None,
                        k2a_range=(0.003, 1.0), n_basis=100, weights=None, grid_step_s=1.0,
                        chunk=200_000):
    """Voxel-wise basis-function SRTM (Gunn 1997), vectorised over voxels.

    ``C_T = R1 C_R + theta2 (C_R (*) exp(-k2a t))`` with ``k2a = k2/(1+BPND)`` searched over
    ``n_basis`` log-spaced values in ``k2a_range`` (1/min): for each basis function all voxels
    are solved at once by (weighted) linear least squares, and each voxel keeps the basis with
    the smallest residual. ``BPND = R1 + theta2/k2a - 1``. The convolution uses the same
    piecewise-linear reference curve as :func:`prepost.pet.kinetics.srtm` (through the frame
    mid-points, zero at t = 0), averaged exactly over the frames.

    Parameters
    ----------
    pet_img : nibabel image or path
        4D dynamic PET.
    frame_start_s, frame_duration_s : array-like
        Frames (s).
    reference_tac : array-like
        Reference-region frame means (e.g. the centrum semiovale TAC).
    mask_img : nibabel image or None
        Voxels to fit (NaN elsewhere).
    k2a_range : (float, float), default=(0.003, 1.0)
        Range of the basis rate constants (1/min).
    n_basis : int, default=100
    weights : array-like or None
        Per-frame weights (default: frame durations).
    grid_step_s : float, default=1.0
        Step of the reference interpolation grid (s).
    chunk : int, default=200000
        Voxels processed at once.

    Returns
    -------
    bpnd, r1, k2 : nibabel.Nifti1Image
        BPND (unitless), R1 (unitless) and k2 (1/min); NaN outside the mask. A voxel whose best
        fit lies on the first or last basis function is still reported (its k2a is at the edge
        of the range).
    """
    img, shape, idx, data = _voxels(pet_img, mask_img)
    frame_start_s, frame_duration_s = check_frames(frame_start_s, frame_duration_s, img.shape[3])
    ref = np.asarray(reference_tac, float).ravel()
    if ref.size != frame_start_s.size or not np.all(np.isfinite(ref)) or not np.any(ref > 0):
        raise InputError(field="reference_tac", expected=f"{frame_start_s.size} finite values, some positive",
                         found=f"{ref.size} values")
    lo, hi = (float(v) for v in k2a_range)
    if not 0 < lo < hi:
        raise InputError(field="k2a_range", expected="0 < low < high (1/min)", found=repr(k2a_range))
    w = frame_duration_s.copy() if weights is None else np.asarray(weights, float).ravel()
    if w.size != frame_start_s.size or np.any(w < 0) or not np.any(w > 0):
        raise InputError(field="weights", expected=f"{frame_start_s.size} non-negative weights")
    sw = np.sqrt(w / w.max())
    thetas = np.geomspace(lo, hi, int(n_basis))
    basis = srtm_basis(ref, frame_start_s, frame_duration_s, thetas, grid_step_s)
    # per basis function X_k = Q_k R_k: the least-squares fit maximises |Q_k^T y|, and the
    # coefficients are R_k^-1 Q_k^T y
    QT, Rinv = [], []
    for conv in basis:
        X = np.column_stack([ref, conv]) * sw[:, None]
        Q, R = np.linalg.qr(X)
        QT.append(Q.T)
        Rinv.append(np.linalg.pinv(R))
    QT = np.concatenate(QT).astype(np.float64)  # (2B, F)
    Rinv = np.stack(Rinv)  # (B, 2, 2)
    nb = thetas.size
    out_bp = np.full(idx.size, np.nan, np.float32)
    out_r1 = np.full(idx.size, np.nan, np.float32)
    out_k2 = np.full(idx.size, np.nan, np.float32)
    step = max(1, min(int(chunk), 2_000_000 // max(nb, 1)))
    for a in range(0, idx.size, step):
        Y = (data[a:a + step].astype(np.float64) * sw[None, :]).T  # (F, V)
        P = (QT @ Y).reshape(nb, 2, -1)  # (B, 2, V)
        k = np.argmax((P * P).sum(1), axis=0)  # best basis per voxel
        cols = np.arange(Y.shape[1])
        proj = P[k, :, cols]  # (V, 2)
        coef = np.einsum("vij,vj->vi", Rinv[k], proj)
        b1, b2, bt = coef[:, 0], coef[:, 1], thetas[k]
        out_r1[a:a + step] = b1
        out_k2[a:a + step] = b2 + b1 * bt
        out_bp[a:a + step] = b1 + b2 / bt - 1.0
    return (_to_img(out_bp, idx, shape, img.affine), _to_img(out_r1, idx, shape, img.affine),
            _to_img(out_k2, idx, shape, img.affine))
