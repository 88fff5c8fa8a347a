"""The one gate for images: loading and checking, and the nibabel <-> ANTs bridge.

Every stage loads its NIfTI inputs through :func:`load_img` (as nilearn's ``check_niimg``): a path
or a nibabel image comes back as a NIfTI image whose voxels are in memory, with the dimensionality
checked and non-finite values rejected by an :class:`~prepost.errors.InputError` that names the
file. Keeping the voxels in memory matters: slicing a file-backed ``.nii.gz`` volume by volume
decompresses the stream from its start each time (see ``benchmarks/image_io.py``).

:func:`to_ants` and :func:`from_ants` convert between nibabel (RAS+ world) and ANTsImage (ITK's LPS+
world) without going through a file; :func:`ants_settings` sets ANTs' thread count and random seed
for the calls made inside it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np

from prepost.errors import InputError

__all__ = ["FWHM_TO_SIGMA", "LPS", "ants_settings", "from_ants", "image_name", "load_img",
           "set_itk_threads", "to_ants"]

#: RAS+ <-> LPS+ (ITK) world coordinates: the first two axes change sign.
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Gaussian sigma of a full width at half maximum of 1.
FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))


def image_name(img):
    """File name of a nibabel image, or ``"<in-memory image>"``."""
    fn = img.get_filename() if hasattr(img, "get_filename") else None
    return fn or "<in-memory image>"


def load_img(img, *, ndim=None, field="img", check_empty_volumes=False):
    """Load and check an image; its voxels are held in memory.

    Parameters
    ----------
    img : str, path-like or nibabel.Nifti1Image
        A NIfTI file or an in-memory image.
    ndim : {3, 4, None}
        Required number of dimensions (trailing singleton dimensions are dropped first);
        None accepts 3D and 4D.
    field : str
        Name used in error messages.
    check_empty_volumes : bool
        For 4D images, reject volumes that are entirely zero (a converter's placeholder).

    Returns
    -------
    nibabel.Nifti1Image
        With ``dataobj`` a numpy array (float64 file data held as float32, scaling applied once)
        and the source file name kept (``get_filename``).

    Raises
    ------
    InputError
        The file is missing or not a NIfTI image, the image has the wrong number of dimensions
        or holds non-finite values.
    """
    source = None
    if isinstance(img, (str, os.PathLike)):
        path = source = Path(img)
        if not path.is_file():
            raise InputError(file=path, field=field, expected="an existing NIfTI file",
                             found="no such file")
        try:
            img = nib.load(str(path))
        except Exception as exc:  # nibabel raises several types for unreadable files
            raise InputError(file=path, field=field, expected="a NIfTI image (.nii or .nii.gz)",
                             found=f"unreadable ({type(exc).__name__})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(file=source, field=field, expected="a NIfTI image (.nii or .nii.gz)",
                         found=type(img).__name__)
    shape = img.shape
    while len(shape) > (ndim or 3) and shape[-1] == 1:  # a single-volume 4D stays 4D for ndim=4
        shape = shape[:-1]
    allowed = (3, 4) if ndim is None else (ndim,)
    if len(shape) not in allowed:
        exp = "a 3D or 4D image" if ndim is None else f"a {ndim}D image"
        raise InputError(file=image_name(img), field=field, expected=exp,
                         found=f"shape {img.shape}")
    data = np.asarray(img.dataobj).reshape(shape)
    if not isinstance(img.dataobj, np.ndarray) or shape != img.shape:
        # Keep the voxels in memory: slicing a file-backed .nii.gz volume by volume decompresses
        # the stream from its start each time (quadratic in the number of volumes).
        if data.dtype == np.float64:
            data = data.astype(np.float32)
        fname = img.get_filename()
        img = nib.Nifti1Image(data, img.affine, img.header)
        img.set_data_dtype(data.dtype)
        img.header.set_slope_inter(None, None)
        if fname:
            img.set_filename(fname)
    if not np.all(np.isfinite(data)):
        raise InputError(file=image_name(img), field=field, expected="finite voxel values",
                         found=f"{int(np.size(data) - np.isfinite(data).sum())} NaN/inf voxels")
    if check_empty_volumes and data.ndim == 4:
        empty = np.flatnonzero(~np.any(data.reshape(-1, data.shape[3]) != 0, axis=0))
        if empty.size:
            raise InputError(file=image_name(img), field=field,
                             expected="no volume filled with zeros",
                             found=f"{empty.size} zero-filled volume(s), first at index {empty[0]}")
    return img


def to_ants(img, *, field="img"):
    """nibabel image (3D or 4D) or NIfTI path -> ANTsImage (float32) in ITK's LPS+ convention.

    The header is not modified (unlike ``ants.from_nibabel_nifti``); trailing singleton dimensions
    beyond the third are dropped. A sheared affine, which ITK cannot represent, raises
    :class:`InputError`.
    """
    import ants

    if isinstance(img, (str, os.PathLike)):
        img = load_img(img, field=field)
    A = LPS @ np.asarray(img.affine, float)
    M = A[:3, :3]
    spacing = np.linalg.norm(M, axis=0)
    direction = M / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise InputError(file=image_name(img), field="affine", expected="an affine without shear",
                         found=np.array2string(img.affine, precision=3))
    data = np.asarray(img.dataobj, dtype=np.float32)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    origin, spacing = list(A[:3, 3]), list(spacing)
    if data.ndim == 4:
        zooms = img.header.get_zooms()
        spacing.append(float(zooms[3]) if len(zooms) > 3 and zooms[3] > 0 else 1.0)
        origin.append(0.0)
        d4 = np.eye(4)
        d4[:3, :3] = direction
        direction = d4
    return ants.from_numpy(np.ascontiguousarray(data), origin=origin, spacing=spacing,
                           direction=direction)


def from_ants(aimg, *, dtype=np.float32, header=None):
    """ANTsImage (3D or 4D) -> nibabel Nifti1Image in RAS+ world coordinates (units mm, s)."""
    A = np.eye(4)
    A[:3, :3] = np.asarray(aimg.direction)[:3, :3] * np.asarray(aimg.spacing)[:3]
    A[:3, 3] = np.asarray(aimg.origin)[:3]
    out = nib.Nifti1Image(aimg.numpy().astype(dtype), LPS @ A, header=header)
    out.header.set_xyzt_units("mm", "sec")
    if aimg.dimension == 4:
        zooms = list(out.header.get_zooms())
        zooms[3] = aimg.spacing[3]
        out.header.set_zooms(zooms)
    return out


def set_itk_threads(n_threads):
    """ITK's thread count for the rest of this process: call it before the first ANTs image is made.

    ITK reads its thread count once, when the process creates its first ANTs image or filter
    (``ants.from_numpy`` included), so :func:`ants_settings` alone comes too late for a step that
    converts images first. A multi-threaded registration sums its metric in an order that depends
    on thread timing; with one thread and a fixed seed, runs are bit-identical.

    Parameters
    ----------
    n_threads : int
        ITK threads (the rule's ``threads``).
    """
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(n_threads))


@contextmanager
def ants_settings(*, n_threads, seed):
    """ANTs thread count and random seed for the calls made inside the ``with`` block.

    Parameters
    ----------
    n_threads : int
        ITK threads. ITK reads its thread count when the process makes its first ANTs image or
        filter, so a later change in the same process has no effect: workflow steps call
        :func:`set_itk_threads` first.
    seed : int or None
        Sampling seed of ``ants.registration`` (antspyx 0.6 ignores its ``random_seed`` argument
        and reads ``ants.config``). With one thread and a fixed seed, runs are bit-identical.
    """
    import ants

    set_itk_threads(n_threads)
    config = getattr(ants, "config", None)
    old = getattr(config, "_random_seed", None)
    if config is not None:
        config._random_seed = None if seed is None else int(seed)
    try:
        yield
    finally:
        if config is not None:
            config._random_seed = old
