"""Dynamic PET preprocessing: frame motion correction, summed images, PET-to-T1w coregistration.

Conventions
-----------
* Times are seconds (BIDS ``FrameTimesStart`` / ``FrameDuration``).
* Every 4x4 matrix is in world (scanner, RAS+ mm) coordinates and is a *pull* transform: it maps
  a point of the reference (fixed) space to the same anatomical point in the moving space, as in
  :mod:`prepost.registration` and as ITK/ANTs fixed-to-moving transforms after LPS -> RAS
  conversion. For frame ``f`` of a dynamic PET the matrix ``M_f`` satisfies
  ``frame_f(M_f @ y) == reference(y)``; the corrected frame is ``frame_f(M_f @ y)``.
* Motion parameters use fMRIPrep's columns ``trans_x, trans_y, trans_z`` (mm) and
  ``rot_x, rot_y, rot_z`` (radians) with ``M = T(trans) @ Rz @ Ry @ Rx``, rotations about the
  world origin (:func:`prepost.registration.params_to_affine`). The simulator in
  :mod:`prepost.simulate` writes the *inverse* convention (``image_t(x) = image_ref(M_t @ x)``),
  so its truth matrices are the inverses of the ones reported here.
* ANTs transform file lists are ordered as for ``ants.apply_transforms``: a list ``[A, B]``
  maps a point ``x`` of the fixed (output) space to ``B(A(x))`` in the moving space, as
  fMRIPrep's ``[anat2std, bold2anat]`` takes a template point to the BOLD run. For example ``coregister_pet_to_t1w(...)['fwd_transforms']`` resamples
  PET onto the T1w grid with ``ants.apply_transforms(fixed=t1w, moving=pet, transformlist=...)``.

Methods
-------
Frame motion correction follows PETPrep's recipe (frames after ``min_start_s`` are registered to
their duration-weighted sum; earlier, low-count frames take the first corrected frame's
transform). The default estimator (``method='gn'``) is the intensity least-squares
Gauss-Newton rigid registration of :func:`prepost.registration.estimate_motion`, run on frames
scaled to the reference's mean inside a head mask and smoothed (PETPrep smooths with 10 mm FWHM
before registering); ``method='ants'`` runs an ANTs rigid Mattes mutual-information registration
per frame instead (slower, robust to contrast changes between frames). Coregistration to the
T1w is ANTs rigid with Mattes mutual information on a summed image of the late frames, against
the T1w block-averaged to (at most) the PET's voxel size: a 2 mm PET gains no accuracy from a 1 mm
fixed grid, which costs 8x the metric evaluations.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from prepost.errors import InputError
from prepost.image import FWHM_TO_SIGMA, ants_settings, from_ants, image_name, load_img, to_ants
from prepost.pet.frames import check_frames, window_weights
from prepost.registration import (
    PARAM_NAMES,
    affine_to_params,
    as_mask,
    estimate_motion,
    params_to_affine,
    register_rigid_ants,
)

__all__ = [
    "summed_image",
    "frame_motion_correct",
    "apply_frame_transforms",
    "coregister_pet_to_t1w",
    "resample_to_grid",
    "apply_ants_transforms",
]



# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------
# summed image
# --------------------------------------------------------------------------------------------
def summed_image(pet_img, frame_start_s, frame_duration_s, window_s=(0.0, None)):
    """Mean of the frames of a dynamic PET over a time window.

    Parameters
    ----------
    pet_img : nibabel image or path
        4D dynamic PET.
    frame_start_s, frame_duration_s : array-like of float
        Frame starts and durations (s).
    window_s : (float, float or None), default=(0, None)
        Start and end of the window (s); an end of None, or one past the scan, runs to the scan
        end. Each frame is weighted by the time it shares with the window
        (:func:`prepost.pet.frames.window_weights`), so frames on the window's edges count by
        their duration.

    Returns
    -------
    nibabel.Nifti1Image
        3D float32 image ``sum_f w_f x_f`` with ``w`` the window weights (same unit as the PET).
    """
    img = load_img(pet_img, ndim=4, field="pet_img")
    frame_start_s, frame_duration_s = check_frames(frame_start_s, frame_duration_s, img.shape[3],
                                                   source=image_name(img))
    w = window_weights(frame_start_s, frame_duration_s, window_s, within_scan=False)
    data = np.asarray(img.dataobj, dtype=np.float32)
    out = np.tensordot(data, w.astype(np.float32), axes=([3], [0]))
    res = nib.Nifti1Image(out.astype(np.float32), img.affine)
    res.header.set_xyzt_units("mm", "sec")
    return res


# --------------------------------------------------------------------------------------------
# frame motion correction
# --------------------------------------------------------------------------------------------
def _head_mask(ref, zooms, fwhm_mm=8.0, frac=0.15):
    sm = ndimage.gaussian_filter(ref, fwhm_mm * FWHM_TO_SIGMA / zooms)
    mask = sm > frac * np.percentile(sm, 99.5)
    lab, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, lab, range(1, n + 1))
        mask = lab == (1 + int(np.argmax(sizes)))
    return ndimage.binary_dilation(mask, iterations=2)


def frame_motion_correct(pet_img, frame_start_s, frame_duration_s, min_start_s=120.0, ref="sum", *,
                         method="gn", fwhm_mm=10.0, levels=None, n_passes=2, mask=None,
                         order=1, seed=1, n_threads=1, verbose=0):
    """Rigid frame-by-frame motion correction of a dynamic PET.

    Frames starting at or after ``min_start_s`` are registered to a reference built from those
    same frames; frames starting earlier (low counts, fast-changing distribution) take the
    transform of the first corrected frame.

    Parameters
    ----------
    pet_img : nibabel image or path
        4D dynamic PET.
    frame_start_s, frame_duration_s : array-like of float
        Frame starts and durations (s).
    min_start_s : float, default=120
        First frame start (s) that is registered.
    ref : {'sum'} or int, default='sum'
        'sum': duration-weighted mean of the registered frames; with ``n_passes=2`` it is rebuilt
        from the corrected frames after the first pass. An int picks that frame as reference.
    method : {'gn', 'ants'}, default='gn'
        'gn': intensity least-squares Gauss-Newton rigid registration
        (:func:`prepost.registration.estimate_motion`) of frames scaled to the reference mean
        inside a head mask. 'ants': ANTs rigid, Mattes mutual information, per frame.
    fwhm_mm : float, default=10
        Smoothing of the coarse level ('gn'); the fine level uses ``0.6 * fwhm_mm``.
        Smoothing of both images before an ANTs registration ('ants').
    levels : sequence of (fwhm_mm, stride, max_iter) or None
        Explicit Gauss-Newton pyramid ('gn'); overrides ``fwhm_mm``.
    n_passes : int, default=2
        Passes of registration with ``ref='sum'`` (the second uses the corrected sum).
    mask : nibabel image or array or None
        Voxels used for the cost ('gn'); None builds a head mask from the reference.
    order : int, default=1
        Interpolation order of the final resampling.
    seed, n_threads : int
        ANTs sampling seed and ITK threads ('ants').
    verbose : int, default=0

    Returns
    -------
    corrected : nibabel.Nifti1Image
        Motion-corrected 4D float32 PET on the input grid.
    params : pandas.DataFrame
        One row per frame: ``frame_start, frame_duration, trans_x, trans_y, trans_z, rot_x,
        rot_y, rot_z, corrected`` (``corrected`` is 0 for frames that copied a transform).
        Parameters describe ``M_f`` (reference -> frame, RAS mm; module docstring) and its
        framewise displacement ``fd_mm`` (Power, 50 mm radius).
    """
    img = load_img(pet_img, ndim=4, field="pet_img")
    frame_start_s, frame_duration_s = check_frames(frame_start_s, frame_duration_s, img.shape[3],
                                                   source=image_name(img))
    data = np.asarray(img.dataobj, dtype=np.float32)
    affine = np.asarray(img.affine, float)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    sel = np.flatnonzero(frame_start_s >= float(min_start_s) - 1e-6)
    if sel.size == 0:
        raise InputError(field="min_start_s", expected="a start time before the last frame",
                         found=f"{min_start_s} s (last frame starts at {frame_start_s[-1]:g} s)")
    if method not in ("gn", "ants"):
        raise InputError(field="method", expected="'gn' or 'ants'", found=repr(method))
    if isinstance(ref, str):
        if ref != "sum":
            raise InputError(field="ref", expected="'sum' or a frame index", found=repr(ref))
        weights = frame_duration_s[sel] / frame_duration_s[sel].sum()
        reference = np.tensordot(data[..., sel], weights, axes=([3], [0]))
        passes = max(int(n_passes), 1)
    else:
        if not -len(frame_start_s) <= int(ref) < len(frame_start_s):
            raise InputError(field="ref", expected=f"a frame index in [0, {len(frame_start_s)})",
                             found=repr(ref))
        reference = data[..., int(ref)]
        passes = 1
    m = _head_mask(reference, zooms) if mask is None else as_mask(mask, reference.shape)
    if levels is None:
        levels = ((float(fwhm_mm), 2, 30), (0.6 * float(fwhm_mm), 1, 15))

    mats = np.tile(np.eye(4), (sel.size, 1, 1))
    for p in range(passes):
        if method == "gn":
            mats = _register_gn(data, sel, reference, m, affine, levels)
        else:
            mats = _register_ants(data, sel, reference, affine, fwhm_mm, seed=seed,
                                  n_threads=n_threads)
        if verbose:
            print(f"pass {p + 1}: max |trans| {np.abs(affine_to_params(mats)[:, :3]).max():.3f} mm")
        if p + 1 < passes:
            corr = _resample_frames(data[..., sel], affine, mats, order=1)
            reference = np.tensordot(corr, weights, axes=([3], [0]))

    all_mats = np.tile(np.eye(4), (len(frame_start_s), 1, 1))
    all_mats[sel] = mats
    all_mats[: sel[0]] = mats[0]
    out = _resample_frames(data, affine, all_mats, order=order)
    corrected = nib.Nifti1Image(out, affine)
    corrected.header.set_xyzt_units("mm", "sec")
    params = affine_to_params(all_mats)
    table = pd.DataFrame(params, columns=PARAM_NAMES)
    table.insert(0, "frame_duration", frame_duration_s)
    table.insert(0, "frame_start", frame_start_s)
    d = np.abs(np.diff(params, axis=0))
    table["fd_mm"] = np.concatenate([[0.0], d[:, :3].sum(1) + 50.0 * d[:, 3:].sum(1)])
    table["corrected"] = (frame_start_s >= float(min_start_s) - 1e-6).astype(int)
    return corrected, table


def _register_gn(data, sel, reference, mask, affine, levels):
    refm = float(reference[mask].mean())
    vols = [reference]
    for i in sel:
        v = data[..., i]
        s = float(v[mask].mean())
        vols.append(v * (refm / s) if s > 0 else v)
    stack = nib.Nifti1Image(np.stack(vols, -1).astype(np.float32), affine)
    _, mats = estimate_motion(stack, ref_index=0, mask=mask, levels=levels)
    return mats[1:]


def _register_ants(data, sel, reference, affine, fwhm_mm, *, seed, n_threads):
    import ants

    sig = fwhm_mm * FWHM_TO_SIGMA
    fixed = to_ants(nib.Nifti1Image(reference.astype(np.float32), affine))
    fixed = ants.smooth_image(fixed, sig, sigma_in_physical_coordinates=True)
    mats = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, i in enumerate(sel):
            mov = to_ants(nib.Nifti1Image(data[..., i], affine))
            mov = ants.smooth_image(mov, sig, sigma_in_physical_coordinates=True)
            reg = register_rigid_ants(fixed, mov, seed=seed, n_threads=n_threads,
                                      initial_transform="Identity", aff_iterations=(100, 50),
                                      aff_shrink_factors=(2, 1), aff_smoothing_sigmas=(1, 0),
                                      outprefix=f"{tmp}/f{k}_")
            mats.append(reg["fixed_to_moving"])
    return np.array(mats)


def _resample_frames(data, affine, mats, order=1):
    ainv = np.linalg.inv(affine)
    out = np.empty(data.shape, np.float32)
    for f in range(data.shape[3]):
        if np.allclose(mats[f], np.eye(4)):
            out[..., f] = data[..., f]
            continue
        q = ainv @ mats[f] @ affine
        ndimage.affine_transform(data[..., f], q[:3, :3], offset=q[:3, 3], output=out[..., f],
                                 order=order, mode="constant", cval=0.0)
    return out


def apply_frame_transforms(pet_img, params, order=1):
    """Resample a dynamic PET with per-frame parameters from :func:`frame_motion_correct`.

    Parameters
    ----------
    pet_img : nibabel image or path
        4D dynamic PET.
    params : pandas.DataFrame or array-like, shape (n_frames, 6)
        Motion parameters (columns ``trans_x .. rot_z``).
    order : int, default=1
        Interpolation order.

    Returns
    -------
    nibabel.Nifti1Image
    """
    img = load_img(pet_img, ndim=4, field="pet_img")
    p = np.asarray(params[list(PARAM_NAMES)] if isinstance(params, pd.DataFrame) else params, float)
    if p.shape != (img.shape[3], 6):
        raise InputError(field="params", expected=f"shape ({img.shape[3]}, 6)", found=str(p.shape))
    out = _resample_frames(np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, float), params_to_affine(p), order)
    res = nib.Nifti1Image(out, img.affine)
    res.header.set_xyzt_units("mm", "sec")
    return res


# --------------------------------------------------------------------------------------------
# ANTs helpers
# --------------------------------------------------------------------------------------------
def apply_ants_transforms(moving_img, reference_img, transforms, interpolation="linear",
                          whichtoinvert=None):
    """Resample a 3D image onto ``reference_img``'s grid with an ANTs transform list.

    ``transforms`` is a list of file paths as for ``ants.apply_transforms`` (``[A, B]`` maps a
    reference-space point ``x`` to ``B(A(x))`` in the moving space), applied as they are unless
    ``whichtoinvert`` says otherwise. An empty list means identity (plain world-space resampling).
    """
    import ants

    moving = load_img(moving_img, ndim=3, field="moving_img")
    ref = load_img(reference_img, ndim=3, field="reference_img")
    transforms = [str(t) for t in (transforms or [])]
    for t in transforms:
        if not Path(t).exists():
            raise InputError(file=t, field="transforms", expected="an existing transform file",
                             found="no file")
    if not transforms:
        return resample_to_grid(moving, ref, np.eye(4), order=0 if interpolation == "nearestNeighbor" else 1)
    # antspyx inverts the affine of a [.mat, warp] list when whichtoinvert is None, but the
    # package's lists (e.g. anat's inverse transforms) are written to be applied as they are
    if whichtoinvert is None:
        whichtoinvert = [False] * len(transforms)
    out = ants.apply_transforms(fixed=to_ants(ref), moving=to_ants(moving), transformlist=transforms,
                                interpolator=interpolation, whichtoinvert=list(whichtoinvert))
    return from_ants(out)


def resample_to_grid(img, reference_img, matrix=None, order=1, cval=0.0):
    """Resample a 3D or 4D image onto a reference grid through a 4x4 RAS world matrix.

    ``out(y) = img(matrix @ y)`` for every world point ``y`` of the reference grid, i.e.
    ``matrix`` maps reference-space points to ``img``-space points (identity by default).
    """
    src = img if isinstance(img, (str, os.PathLike)) else None
    img = nib.load(src) if src is not None else img
    ref = load_img(reference_img, ndim=3, field="reference_img") if not hasattr(reference_img, "affine") else reference_img
    mat = np.eye(4) if matrix is None else np.asarray(matrix, float)
    q = np.linalg.inv(np.asarray(img.affine, float)) @ mat @ np.asarray(ref.affine, float)
    data = np.asarray(img.dataobj, dtype=np.float32)
    shape = tuple(ref.shape[:3])
    if data.ndim == 3:
        out = ndimage.affine_transform(data, q[:3, :3], offset=q[:3, 3], output_shape=shape,
                                       order=order, mode="constant", cval=cval)
    else:
        out = np.empty(shape + data.shape[3:], np.float32)
        for f in range(data.shape[3]):
            ndimage.affine_transform(data[..., f], q[:3, :3], offset=q[:3, 3], output_shape=shape,
                                     output=out[..., f], order=order, mode="constant", cval=cval)
    res = nib.Nifti1Image(out.astype(np.float32), ref.affine)
    res.header.set_xyzt_units("mm", "sec")
    return res


# --------------------------------------------------------------------------------------------
# coregistration
# --------------------------------------------------------------------------------------------
def coregister_pet_to_t1w(pet_sum_img, t1w_img, *, t1w_mask_img=None, init="center_of_mass",
                          fwhm_mm=0.0, out_prefix=None, iterations=(200, 100, 50),
                          shrink_factors=(4, 2, 1), smoothing_sigmas=(2, 1, 0), fixed_shrink="auto",
                          seed=1, n_threads=1):
    """Rigid PET-to-T1w coregistration by Mattes mutual information (ANTs).

    Parameters
    ----------
    pet_sum_img : nibabel image or path
        3D summed PET (e.g. :func:`summed_image` of the motion-corrected late frames).
    t1w_img : nibabel image or path
        T1w image (the fixed image).
    t1w_mask_img : nibabel image or path or None, default=None
        T1w-space brain mask. When given, the T1w is skull-stripped (mask dilated by 2 voxels)
        before registration, as PETPrep registers to the brain-extracted T1w.
    init : {'center_of_mass', 'identity'}, default='center_of_mass'
        Initial alignment: centres of mass (ANTs default) or the scanner geometry as is.
    fwhm_mm : float, default=0
        Extra Gaussian smoothing of the PET before registration.
    out_prefix : str or None
        Where to keep the transform files (a temporary folder when None; the files then live as
        long as the process).
    iterations, shrink_factors, smoothing_sigmas : tuple of int
        ANTs rigid multi-resolution schedule (shrink factors of the registration grid).
    fixed_shrink : int or 'auto', default='auto'
        The T1w is block-averaged by this factor before registering
        (:func:`prepost.registration.shrink_image`); 'auto' brings its voxels to (at most) the
        PET's (a 1 mm T1w against a 2 mm PET: factor 2, 8x fewer voxels, several times faster at
        the same accuracy; a 2 mm T1w against a 3 mm PET: 1, the T1w grid as it is). 1 registers
        on the T1w grid.
    seed : int, default=1
        Random seed of ANTs' metric sampling.
    n_threads : int, default=1
        ITK threads (one thread with a fixed seed gives identical transforms from run to run).

    Returns
    -------
    dict
        ``fwd_transforms`` (list of str; ``ants.apply_transforms(fixed=t1w, moving=pet,
        transformlist=fwd_transforms)`` puts PET on the T1w grid), ``inv_transforms`` (list
        of str; T1w -> PET grid), ``t1w_to_pet`` (4x4 RAS matrix mapping T1w points to PET
        points), ``pet_to_t1w`` (its inverse), ``pet_in_t1w`` (nibabel image), ``qc`` (dict:
        ``mutual_information`` after and ``mutual_information_init`` before registration, ANTs
        Mattes MI on the registration grid, more negative is better; ``dice_brain`` overlap of the thresholded PET with
        the T1w brain mask when a mask is given).
    """
    import ants

    pet = load_img(pet_sum_img, ndim=3, field="pet_sum_img")
    t1 = load_img(t1w_img, ndim=3, field="t1w_img")
    if init not in ("center_of_mass", "identity"):
        raise InputError(field="init", expected="'center_of_mass' or 'identity'", found=repr(init))
    t1_data = np.asarray(t1.dataobj, dtype=np.float32)
    mask = None
    if t1w_mask_img is not None:
        mimg = load_img(t1w_mask_img, ndim=3, field="t1w_mask_img")
        if mimg.shape != t1.shape:
            mimg = resample_to_grid(mimg, t1, order=1)
        mask = np.asarray(mimg.dataobj) > 0.5
        if not mask.any():
            raise InputError(field="t1w_mask_img", expected="a non-empty brain mask", found="empty")
        t1_data = t1_data * ndimage.binary_dilation(mask, iterations=2)
    fixed = to_ants(nib.Nifti1Image(t1_data, t1.affine))
    moving = to_ants(pet)
    if fwhm_mm > 0:
        moving = ants.smooth_image(moving, fwhm_mm * FWHM_TO_SIGMA, sigma_in_physical_coordinates=True)
    if out_prefix is None:
        tmp = tempfile.mkdtemp(prefix="pet2t1w_")
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # as long as the process
        out_prefix = tmp + "/"
    else:
        Path(out_prefix).parent.mkdir(parents=True, exist_ok=True)
    if init == "identity":
        init_tx = "Identity"
    else:
        init_tx = None
    reg = register_rigid_ants(fixed, moving, seed=seed, n_threads=n_threads,
                              initial_transform=init_tx, aff_iterations=tuple(iterations),
                              aff_shrink_factors=tuple(shrink_factors),
                              aff_smoothing_sigmas=tuple(smoothing_sigmas),
                              fixed_shrink=fixed_shrink, outprefix=str(out_prefix))
    fwd = [str(t) for t in reg["fwdtransforms"]]
    inv = [str(t) for t in reg["invtransforms"]]
    t1_to_pet = reg["fixed_to_moving"]
    warped = reg["warpedmovout"]
    if reg["fixed_shrink"] > 1:  # registered on a shrunk T1w grid: resample on the full one
        with ants_settings(n_threads=n_threads, seed=seed):
            warped = ants.apply_transforms(fixed=fixed, moving=moving, transformlist=fwd,
                                           interpolator="linear")
    # the metric on the registration grid: on a 1 mm T1w grid each evaluation costs seconds
    grid = reg["fixed"]
    qc = {
        "mutual_information": float(ants.image_mutual_information(grid, reg["warpedmovout"])),
        "mutual_information_init": float(ants.image_mutual_information(
            grid, ants.resample_image_to_target(moving, grid))),
    }
    pet_in_t1 = from_ants(warped)
    if mask is not None:
        p = np.asarray(pet_in_t1.dataobj)
        thr = p > 0.3 * np.percentile(p[mask], 95)
        qc["dice_brain"] = float(2 * (thr & mask).sum() / (thr.sum() + mask.sum()))
    return {"fwd_transforms": fwd, "inv_transforms": inv, "t1w_to_pet": t1_to_pet,
            "pet_to_t1w": np.linalg.inv(t1_to_pet), "pet_in_t1w": pet_in_t1, "qc": qc}
