"""Rigid registration shared by the fMRI and PET stages: motion parameters, within-series
motion estimation (BOLD volumes, PET frames) and ANTs rigid registration with its transforms.

Motion estimation
-----------------
No installable pure-Python library offers a fast rigid within-run realignment (ANTs'
``motion_correction`` runs a full multi-resolution mutual-information registration per volume,
about 1.5 s per volume on a 3 mm grid), so :func:`estimate_motion` implements its own: an intensity
least-squares Gauss-Newton registration in the inverse-compositional Lucas-Kanade form, the
same cost function as SPM ``spm_realign`` and AFNI ``3dvolreg``.

* Every volume is registered to one reference volume of the series (``ref_index``; by default the
  volume closest to the voxel-wise temporal median, see :func:`select_reference`).
* Coarse to fine: each level smooths the reference and the moving volume with the same isotropic
  Gaussian (FWHM in mm) and samples a sub-grid of reference voxels (every ``stride``-th voxel)
  inside an intensity mask. The default levels are FWHM 8 mm / stride 2, then FWHM 4 mm /
  stride 1.
* Inverse compositional: the steepest-descent images ``grad(ref) . dW/dp`` are computed once per
  level at the reference sample points, so the 6x6 Gauss-Newton Hessian is constant; each
  iteration only resamples the moving volume (trilinear, ``scipy.ndimage.map_coordinates``
  with ``order=1``) at the current warp of the sample points.
* Volumes are processed in order and each starts from its predecessor's estimate.

Conventions
-----------
All transforms are 4x4 matrices in world (scanner, RAS+ mm) coordinates. For volume ``t`` the
matrix ``M_t`` maps reference world coordinates to volume-``t`` world coordinates::

    vol_t(M_t @ y) == ref(y)          for every world point y

i.e. a point of the head that sits at ``y`` in the reference volume sits at ``M_t @ y`` in
volume ``t``. This is the "pull" transform for resampling (``realigned_t(y) = vol_t(M_t @ y)``)
and equals ITK/ANTs' fixed-to-moving transform with fixed = reference, after conversion from
LPS to RAS (:func:`ants_affine_to_ras`). Motion parameters follow fMRIPrep's confound columns
``trans_x, trans_y, trans_z`` (mm) and ``rot_x, rot_y, rot_z`` (radians) with::

    M = [[R, t], [0, 1]],   R = Rz(rot_z) @ Ry(rot_y) @ Rx(rot_x),   t = (trans_x, trans_y, trans_z)

where ``Rx(a) = [[1, 0, 0], [0, cos a, -sin a], [0, sin a, cos a]]`` and likewise (right-handed,
counter-clockwise when looking down the positive axis) for y and z. Rotations are about the world
origin (scanner coordinate (0, 0, 0)); :func:`params_to_affine` and :func:`affine_to_params`
accept another ``center``.

ANTs transform file lists are ordered as for ``ants.apply_transforms``: a list ``[A, B]`` maps a
point ``x`` of the fixed (output) space to ``B(A(x))`` in the moving space
(:func:`compose_ants_affines`).
"""

from __future__ import annotations

import os
import tempfile

import nibabel as nib
import numpy as np
from scipy import ndimage

from prepost.errors import InputError
from prepost.image import FWHM_TO_SIGMA, LPS, ants_settings, load_img

__all__ = [
    "DEFAULT_LEVELS",
    "PARAM_NAMES",
    "affine_to_params",
    "ants_affine_to_ras",
    "apply_motion",
    "as_mask",
    "compose_ants_affines",
    "estimate_motion",
    "params_to_affine",
    "ras_to_ants_affine",
    "register_rigid_ants",
    "resolve_shrink",
    "select_reference",
    "shrink_factor_for",
    "shrink_image",
    "write_ants_affine",
]

#: Motion parameter names (fMRIPrep confound columns): mm, then radians.
PARAM_NAMES = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")

#: Default pyramid: (smoothing FWHM in mm, sampling stride in voxels, max iterations).
DEFAULT_LEVELS = ((8.0, 2, 30), (4.0, 1, 15))


# --------------------------------------------------------------------------------------------
# Parameter <-> matrix conversion
# --------------------------------------------------------------------------------------------
def _rotation(rx, ry, rz):
    """Rotation matrices ``Rz @ Ry @ Rx`` for arrays of angles (broadcast), shape (..., 3, 3)."""
    cx, sx = np.cos(rx), np.sin(rx)
    cy, sy = np.cos(ry), np.sin(ry)
    cz, sz = np.cos(rz), np.sin(rz)
    r = np.empty(np.broadcast(rx, ry, rz).shape + (3, 3))
    r[..., 0, 0] = cz * cy
    r[..., 0, 1] = cz * sy * sx - sz * cx
    r[..., 0, 2] = cz * sy * cx + sz * sx
    r[..., 1, 0] = sz * cy
    r[..., 1, 1] = sz * sy * sx + cz * cx
    r[..., 1, 2] = sz * sy * cx - cz * sx
    r[..., 2, 0] = -sy
    r[..., 2, 1] = cy * sx
    r[..., 2, 2] = cy * cx
    return r


def params_to_affine(params, center=(0.0, 0.0, 0.0)):
    """Convert rigid motion parameters to 4x4 world-space matrices.

    Parameters
    ----------
    params : array-like, shape (6,) or (T, 6)
        ``trans_x, trans_y, trans_z`` in mm, ``rot_x, rot_y, rot_z`` in radians.
    center : array-like, shape (3,), default=(0, 0, 0)
        World point (mm) the rotations are about. The matrix is
        ``x -> R @ (x - center) + center + t`` with ``R = Rz @ Ry @ Rx``.

    Returns
    -------
    numpy.ndarray, shape (4, 4) or (T, 4, 4)
        Homogeneous matrices (see the module docstring for what they map).
    """
    p = np.asarray(params, dtype=float)
    if p.shape[-1:] != (6,) or p.ndim > 2:
        raise InputError(field="params", expected="an array of shape (6,) or (T, 6)",
                         found=f"shape {p.shape}")
    c = np.asarray(center, dtype=float).reshape(3)
    r = _rotation(p[..., 3], p[..., 4], p[..., 5])
    m = np.zeros(p.shape[:-1] + (4, 4))
    m[..., :3, :3] = r
    m[..., :3, 3] = p[..., :3] + c - r @ c
    m[..., 3, 3] = 1.0
    return m


def affine_to_params(affines, center=(0.0, 0.0, 0.0)):
    """Convert rigid 4x4 world-space matrices to motion parameters.

    Inverse of :func:`params_to_affine` for rotations with ``|rot_y| < pi/2``.

    Parameters
    ----------
    affines : array-like, shape (4, 4) or (T, 4, 4)
        Rigid homogeneous matrices.
    center : array-like, shape (3,), default=(0, 0, 0)
        World point (mm) the rotations are about.

    Returns
    -------
    numpy.ndarray, shape (6,) or (T, 6)
        ``trans_x, trans_y, trans_z`` (mm), ``rot_x, rot_y, rot_z`` (radians).
    """
    m = np.asarray(affines, dtype=float)
    if m.shape[-2:] != (4, 4) or m.ndim > 3:
        raise InputError(field="affines", expected="an array of shape (4, 4) or (T, 4, 4)",
                         found=f"shape {m.shape}")
    c = np.asarray(center, dtype=float).reshape(3)
    r = m[..., :3, :3]
    p = np.empty(m.shape[:-2] + (6,))
    p[..., 3] = np.arctan2(r[..., 2, 1], r[..., 2, 2])
    p[..., 4] = np.arctan2(-r[..., 2, 0], np.hypot(r[..., 0, 0], r[..., 1, 0]))
    p[..., 5] = np.arctan2(r[..., 1, 0], r[..., 0, 0])
    p[..., :3] = m[..., :3, 3] - c + r @ c
    return p


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------
def _load_4d(img):
    img = load_img(img, ndim=4, field="img")
    return img, np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, dtype=float)


def select_reference(img):
    """Pick the reference volume of a series: the one closest to the voxel-wise temporal median.

    This is robust to spikes and to drifts at either end of the run (unlike always taking the
    first or middle volume).

    Parameters
    ----------
    img : nibabel.Nifti1Image or str or path-like
        4D BOLD run.

    Returns
    -------
    int
        Index of the reference volume.
    """
    _, data, _ = _load_4d(img)
    return _select_reference(data)


def _select_reference(data):
    sub = data[::2, ::2, ::2, :].reshape(-1, data.shape[3])
    med = np.median(sub, axis=1, keepdims=True)
    return int(np.argmin(((sub - med) ** 2).sum(axis=0)))


def as_mask(mask, shape, field="mask"):
    """Boolean array of a mask given as an image or array (``> 0``), checked against ``shape``."""
    m = np.asarray(getattr(mask, "dataobj", mask)) > 0
    if m.shape != tuple(shape):
        raise InputError(field=field, expected=f"a 3D mask of shape {tuple(shape)}",
                         found=str(m.shape))
    return m


def _auto_mask(ref, zooms):
    """Head mask on the reference: smoothed intensity above 10% of its robust maximum,
    dilated so that the brain/background edge (where the gradients are) is kept."""
    sm = ndimage.gaussian_filter(ref, 6.0 * FWHM_TO_SIGMA / zooms)
    hi = np.percentile(sm, 99.5)
    mask = sm > 0.1 * hi
    mask = ndimage.binary_dilation(mask, iterations=2)
    return mask


# --------------------------------------------------------------------------------------------
# Estimation
# --------------------------------------------------------------------------------------------
class _Level:
    """Precomputed inverse-compositional quantities for one pyramid level."""

    def __init__(self, ref, mask, affine, fwhm, stride, max_iter):
        zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        self.sigma = fwhm * FWHM_TO_SIGMA / zooms if fwhm > 0 else None
        self.max_iter = int(max_iter)
        refs = self.smooth(ref).astype(np.float64)
        sub = np.zeros(mask.shape, bool)
        sub[::stride, ::stride, ::stride] = True
        # keep a one-voxel margin so that central-difference gradients are defined
        sub[[0, -1], :, :] = sub[:, [0, -1], :] = sub[:, :, [0, -1]] = False
        vox = np.argwhere(mask & sub)
        if len(vox) < 50:
            raise InputError(field="mask", expected="at least 50 voxels with signal to register",
                             found=f"{len(vox)} at stride {stride}")
        i, j, k = vox.T
        gvox = np.stack([
            (refs[i + 1, j, k] - refs[i - 1, j, k]) / 2.0,
            (refs[i, j + 1, k] - refs[i, j - 1, k]) / 2.0,
            (refs[i, j, k + 1] - refs[i, j, k - 1]) / 2.0,
        ], axis=1)
        ainv = np.linalg.inv(affine)
        g = gvox @ ainv[:3, :3]                      # world-space gradient (row vectors)
        world = vox @ affine[:3, :3].T + affine[:3, 3]
        self.center = world.mean(axis=0)
        rel = world - self.center
        sd = np.concatenate([g, np.cross(rel, g)], axis=1)   # d/d(t), d/d(omega)
        hess = sd.T @ sd
        self.proj = np.linalg.solve(hess, sd.T)     # (6, N): Gauss-Newton step operator
        self.ref_vals = refs[i, j, k]
        self.vox_h = np.concatenate([vox.astype(np.float64), np.ones((len(vox), 1))], axis=1)
        self.affine = affine
        self.ainv = ainv

    def smooth(self, vol):
        if self.sigma is None:
            return vol
        return ndimage.gaussian_filter(vol, self.sigma, mode="nearest")

    def register(self, vol_s, m, tol_mm, radius):
        """Refine ``m`` (ref world -> vol world) so that vol_s(m y) matches ref(y)."""
        n_iter = 0
        for n_iter in range(1, self.max_iter + 1):
            q = (self.ainv @ m @ self.affine)[:3]
            coords = q @ self.vox_h.T
            warped = ndimage.map_coordinates(vol_s, coords, order=1, mode="nearest",
                                             prefilter=False)
            dp = self.proj @ (warped - self.ref_vals)
            m = m @ np.linalg.inv(params_to_affine(dp, center=self.center))
            if np.abs(dp[:3]).max() + radius * np.abs(dp[3:]).max() < tol_mm:
                break
        return m, n_iter


def estimate_motion(img, ref_index=None, *, mask=None, levels=DEFAULT_LEVELS, tol=1e-3,
                    warm_start=True, verbose=0):
    """Estimate rigid motion of every volume of a 4D series relative to a reference volume.

    Intensity least-squares Gauss-Newton (inverse-compositional) registration, coarse to fine,
    6 parameters per volume; see the module docstring for the algorithm.

    Parameters
    ----------
    img : nibabel.Nifti1Image or str or path-like
        4D series (x, y, z, volume): a BOLD run, or PET frames scaled to a common mean. All
        volumes share one grid and one affine.
    ref_index : int or None, default=None
        Index of the reference volume. None picks the volume closest to the voxel-wise temporal
        median (:func:`select_reference`); its parameters are exactly zero.
    mask : numpy.ndarray of bool or nibabel image or None, default=None
        Voxels of the reference grid used for the cost function. None builds a head mask from
        the reference (smoothed intensity > 10 % of its 99.5th percentile, dilated 2 voxels).
    levels : sequence of (float, int, int), default=DEFAULT_LEVELS
        Pyramid levels, coarse to fine: (smoothing FWHM in mm, voxel sampling stride, maximum
        Gauss-Newton iterations).
    tol : float, default=1e-3
        Convergence threshold in mm: iterations stop when the largest translation update plus
        the largest rotation update times 50 mm falls below it.
    warm_start : bool, default=True
        Start each volume from the previous volume's estimate (identity otherwise).
    verbose : int, default=0
        Print per-volume iteration counts when > 0.

    Returns
    -------
    params : numpy.ndarray, shape (T, 6)
        ``trans_x, trans_y, trans_z`` (mm) and ``rot_x, rot_y, rot_z`` (radians), rotations
        about the world origin with ``R = Rz @ Ry @ Rx`` (fMRIPrep confound column order).
    affines : numpy.ndarray, shape (T, 4, 4)
        World-space (RAS+ mm) matrices ``M_t`` mapping reference coordinates to volume ``t``
        coordinates: ``vol_t(M_t @ y) == ref(y)``. ``params == affine_to_params(affines)``.

    Notes
    -----
    The reference volume gets the identity. Sample points that move outside the field of view
    take the value of the nearest edge voxel (the mask sits well inside the field of view for
    usual head motion). No intensity scaling is estimated: the cost assumes the same global
    intensity in every volume, which holds within a BOLD run (PET frames are scaled first).
    """
    img, data, affine = _load_4d(img)
    n_vol = data.shape[3]
    if ref_index is None:
        ref_index = _select_reference(data)
    if not isinstance(ref_index, (int, np.integer)) or not -n_vol <= ref_index < n_vol:
        raise InputError(file=img.get_filename(), field="ref_index",
                         expected=f"an integer volume index in [0, {n_vol})", found=repr(ref_index))
    ref_index = int(ref_index) % n_vol
    ref = data[..., ref_index]
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    mask = _auto_mask(ref, zooms) if mask is None else as_mask(mask, ref.shape)
    try:
        lv = [_Level(ref, mask, affine, float(f), int(s), int(n)) for f, s, n in levels]
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(field="levels", expected="a sequence of (fwhm_mm, stride, max_iter)",
                         found=repr(levels)) from exc
    if not lv:
        raise InputError(field="levels", expected="at least one level", found="none")

    affines = np.tile(np.eye(4), (n_vol, 1, 1))
    m = np.eye(4)
    for t in range(n_vol):
        if t == ref_index:
            m = np.eye(4)
            continue
        if not warm_start:
            m = np.eye(4)
        vol = data[..., t]
        its = []
        for level in lv:
            m, k = level.register(level.smooth(vol), m, tol, 50.0)
            its.append(k)
        affines[t] = m
        if verbose > 0:
            print(f"volume {t}: iterations per level {its}")
    return affine_to_params(affines), affines


# --------------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------------
def apply_motion(img, affines, reference=None, order=1):
    """Resample every volume of a series onto a reference grid, undoing its motion.

    Output volume ``t`` at world point ``y`` is ``vol_t(M_t @ y)`` (one interpolation per
    volume). Voxels that map outside the input field of view are set to 0.

    Parameters
    ----------
    img : nibabel.Nifti1Image or str or path-like
        4D BOLD run.
    affines : array-like, shape (T, 4, 4)
        Per-volume world-space matrices from :func:`estimate_motion` (reference -> volume).
    reference : nibabel image or None, default=None
        Image whose grid (shape[:3], affine) is the output grid. None uses the input grid.
    order : int, default=1
        Spline order of the interpolation (1 = trilinear).

    Returns
    -------
    nibabel.Nifti1Image
        Realigned 4D float32 image on the reference grid.
    """
    img, data, affine = _load_4d(img)
    mats = np.asarray(affines, dtype=float)
    if mats.shape != (data.shape[3], 4, 4):
        raise InputError(field="affines", expected=f"shape ({data.shape[3]}, 4, 4)",
                         found=str(mats.shape))
    if reference is None:
        out_shape, out_affine = data.shape[:3], affine
    else:
        if isinstance(reference, (str, os.PathLike)):
            reference = nib.load(reference)
        out_shape, out_affine = tuple(reference.shape[:3]), np.asarray(reference.affine, float)
    ainv = np.linalg.inv(affine)
    out = np.empty(out_shape + (data.shape[3],), np.float32)
    for t in range(data.shape[3]):
        q = ainv @ mats[t] @ out_affine
        ndimage.affine_transform(data[..., t], q[:3, :3], offset=q[:3, 3],
                                 output_shape=out_shape, output=out[..., t], order=order,
                                 mode="constant", cval=0.0)
    hdr = img.header.copy() if isinstance(img, nib.Nifti1Image) else None
    res = nib.Nifti1Image(out, out_affine, hdr)
    res.set_data_dtype(np.float32)
    return res


# --------------------------------------------------------------------------------------------
# ANTs rigid registration and its transform files
# --------------------------------------------------------------------------------------------
def ants_affine_to_ras(transform):
    """4x4 RAS world matrix of an ANTs linear transform (file path or ANTsTransform).

    ITK maps ``x -> A (x - c) + c + t`` in LPS coordinates (``c`` its fixed parameters); RAS and
    LPS differ by the sign of the first two axes, so the RAS matrix is ``F T F`` with
    ``F = diag(-1, -1, 1, 1)``. The direction of the map (fixed -> moving points) is kept.
    """
    import ants

    tx = ants.read_transform(str(transform)) if isinstance(transform, (str, os.PathLike)) \
        else transform
    par = np.asarray(tx.parameters, float)
    c = np.asarray(tx.fixed_parameters, float)[:3]
    A = par[:9].reshape(3, 3)
    t = par[9:12]
    m = np.eye(4)
    m[:3, :3] = A
    m[:3, 3] = t + c - A @ c
    return LPS @ m @ LPS


def ras_to_ants_affine(matrix):
    """ANTsTransform (AffineTransform) doing what the 4x4 RAS matrix does (fixed -> moving)."""
    import ants

    m = LPS @ np.asarray(matrix, float) @ LPS
    return ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                      matrix=m[:3, :3], offset=m[:3, 3])


def write_ants_affine(matrix, path):
    """Write a 4x4 RAS matrix (fixed -> moving points) as an ANTs ``.mat`` transform file."""
    import ants

    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    ants.write_transform(ras_to_ants_affine(matrix), path)
    return path


def compose_ants_affines(transforms):
    """RAS matrix of an ANTs list of linear transforms (fixed point -> moving point)."""
    m = np.eye(4)
    for t in transforms:  # [A, B]: x -> B(A(x))
        m = ants_affine_to_ras(t) @ m
    return m


def shrink_factor_for(fixed, moving):
    """Integer shrink of the fixed grid that brings its voxels to (at most) the moving image's.

    ``floor(min moving spacing / min fixed spacing)``, at least 1: a 1 mm T1w against a 2 mm PET
    gives 2, a 2 mm T1w against a 3 mm PET 1 (the fixed grid is kept as it is).

    Parameters
    ----------
    fixed, moving : ants.ANTsImage or nibabel image
        3D images.

    Returns
    -------
    int
    """
    def spacing(img):
        if hasattr(img, "spacing"):
            return float(np.min(img.spacing[:3]))
        return float(np.min(np.sqrt((np.asarray(img.affine)[:3, :3] ** 2).sum(axis=0))))

    return max(1, int(np.floor(spacing(moving) / spacing(fixed) + 1e-6)))


def resolve_shrink(shrink, fixed, moving, field="fixed_shrink"):
    """A shrink factor as given (an integer >= 1), or 'auto' as :func:`shrink_factor_for`.

    Raises
    ------
    prepost.errors.InputError
        Naming ``field`` when the factor is neither 'auto' nor an integer >= 1.
    """
    if shrink == "auto":
        return shrink_factor_for(fixed, moving)
    if isinstance(shrink, bool) or not isinstance(shrink, (int, np.integer)) or shrink < 1:
        raise InputError(field=field, expected="an integer >= 1 or 'auto'", found=repr(shrink))
    return int(shrink)


def shrink_image(img, factor):
    """Block average of a 3D ANTs image by an integer factor (anti-aliased downsampling).

    Every output voxel is the mean of a ``factor``-cubed block of input voxels and sits at the
    block's centre, so the world positions of the image content are kept exactly; trailing
    voxels that do not fill a block are dropped.

    Parameters
    ----------
    img : ants.ANTsImage
        3D image.
    factor : int
        Block size in voxels along every axis (1 returns ``img``).

    Returns
    -------
    ants.ANTsImage
        Image with ``factor`` times the spacing, same direction.
    """
    import ants

    f = int(factor)
    if f < 1:
        raise InputError(field="factor", expected="an integer >= 1", found=repr(factor))
    if f == 1:
        return img
    a = img.numpy().astype(np.float32)
    n = [s // f for s in a.shape[:3]]
    if min(n) < 1:
        raise InputError(field="factor", expected=f"at most the image size {a.shape[:3]}",
                         found=str(f))
    a = a[:n[0] * f, :n[1] * f, :n[2] * f]
    a = a.reshape(n[0], f, n[1], f, n[2], f).mean(axis=(1, 3, 5), dtype=np.float64)
    spacing = np.asarray(img.spacing[:3], float)
    direction = np.asarray(img.direction, float)[:3, :3]
    origin = np.asarray(img.origin[:3], float) + direction @ (spacing * (f - 1) / 2.0)
    return ants.from_numpy(a.astype(np.float32), origin=tuple(origin), spacing=tuple(spacing * f),
                           direction=direction)


def register_rigid_ants(fixed, moving, *, seed, n_threads, type_of_transform="Rigid",
                        aff_metric="mattes", fixed_shrink=1, **kwargs):
    """Rigid ANTs registration (Mattes mutual information by default) with a fixed seed.

    Parameters
    ----------
    fixed, moving : ants.ANTsImage
        3D images (:func:`prepost.image.to_ants`).
    seed : int or None
        Sampling seed of the metric (:func:`prepost.image.ants_settings`).
    n_threads : int
        ITK threads.
    type_of_transform : str
        A rigid ``ants.registration`` type ('Rigid', 'DenseRigid', 'QuickRigid', 'BOLDRigid').
    aff_metric : str
        Metric of the rigid stage.
    fixed_shrink : int or 'auto', default=1
        Block-average the fixed image by this factor before registering (:func:`shrink_image`);
        'auto' uses :func:`shrink_factor_for` (the moving image's voxel size). A rigid
        registration of a 2 mm PET or 2.4 mm BOLD image gains no accuracy from a 1 mm fixed grid,
        and the metric's cost scales with the fixed grid's voxel count (8x fewer at factor 2).
        The transform still maps fixed-space points to moving-space points (world coordinates do
        not depend on the grid); ``warpedmovout`` is then on the shrunk grid.
    **kwargs
        Passed to ``ants.registration`` (schedule, ``initial_transform``, ``outprefix`` ...).
        Without ``outprefix`` the transform files go to a temporary folder removed on return
        (ANTs' own default leaves one in the system's temporary folder per call), and
        ``fwdtransforms``/``invtransforms`` are left out of the result.

    Returns
    -------
    dict
        ``ants.registration``'s result plus ``fixed_to_moving``, the 4x4 RAS matrix of its
        forward transforms (fixed-space point -> moving-space point), ``fixed_shrink`` (the
        factor used) and ``fixed`` (the fixed image registered to, on the shrunk grid).
    """
    import ants

    if type_of_transform not in ("Rigid", "DenseRigid", "QuickRigid", "BOLDRigid"):
        raise InputError(field="type_of_transform", expected="a rigid ANTs transform type "
                         "('Rigid', 'DenseRigid', 'QuickRigid', 'BOLDRigid')",
                         found=repr(type_of_transform))
    fixed_shrink = resolve_shrink(fixed_shrink, fixed, moving)
    fixed = shrink_image(fixed, fixed_shrink)
    keep = "outprefix" in kwargs
    with tempfile.TemporaryDirectory(prefix="prepost-rigid-") as tmp:
        if not keep:
            kwargs["outprefix"] = os.path.join(tmp, "rigid_")
        with ants_settings(n_threads=n_threads, seed=seed):
            reg = ants.registration(fixed=fixed, moving=moving,
                                    type_of_transform=type_of_transform, aff_metric=aff_metric,
                                    **kwargs)
        mats = [str(f) for f in reg["fwdtransforms"]]
        if not mats or not all(f.endswith(".mat") for f in mats):
            raise InputError(field="fwdtransforms", expected="linear transform files (.mat)",
                             found=str(mats))
        out = dict(reg)
        out["fixed_to_moving"] = compose_ants_affines(mats)
    if not keep:  # their files went with the temporary folder
        out.pop("fwdtransforms", None)
        out.pop("invtransforms", None)
    out["fixed_shrink"] = int(fixed_shrink)
    out["fixed"] = fixed
    return out
