"""Nuisance time series of a BOLD run in fMRIPrep's ``desc-confounds_timeseries`` format.

The table and its JSON sidecar follow fMRIPrep (>= 20.2) so that any tool that reads fMRIPrep
confounds (``nilearn.interfaces.fmriprep.load_confounds``, XCP-D) reads ours:

===================================  =========================================================
column                               content
===================================  =========================================================
``trans_x`` .. ``rot_z``             rigid motion, mm and radians (``prepost.registration``)
``*_derivative1``                    backward difference, first row ``n/a``
``*_power2``, ``*_derivative1_power2``  squares (24-parameter model, Friston 1996)
``framewise_displacement``           Power FD, 50 mm radius (nipype ``FramewiseDisplacement``,
                                     parameter_source ``SPM``: mm then radians); first ``n/a``
``dvars``, ``std_dvars``             DVARS and standardised DVARS (nipype ``ComputeDVARS``,
                                     intensity normalised to a median of 1000); first ``n/a``
``global_signal``                    mean over the brain mask
``white_matter``, ``csf``            means over the (eroded) WM and CSF masks
  + ``_derivative1``, ``_power2``,   as for motion (36-parameter model)
  ``_derivative1_power2``
``a_comp_cor_NN``                    anatomical CompCor (nipype ``ACompCor``) on the CSF, WM and
                                     combined masks, numbered across masks in that order; the
                                     JSON gives Method, Mask, SingularValue, VarianceExplained,
                                     CumulativeVarianceExplained and Retained per component
``t_comp_cor_NN``                    temporal CompCor (optional, nipype ``TCompCor``)
``cosineNN``                         discrete cosine high-pass basis (128 s cutoff)
``non_steady_state_outlierNN``       one-hot, one per kept non-steady-state volume
``motion_outlierNN``                 one-hot, FD > 0.5 mm or std DVARS > 1.5
===================================  =========================================================

As in fMRIPrep, CompCor is computed after a cosine high-pass of the voxel series and excludes the
non-steady-state volumes (their component values are 0); the cosine regressors are those basis
functions (0 on the non-steady-state rows, which their one-hot columns model instead).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from prepost.errors import InputError
from prepost.io import read_json_object, read_tsv, write_json, write_tsv
from prepost.registration import PARAM_NAMES

__all__ = [
    "MOTION_COLUMNS",
    "compute_confounds",
    "confounds_paths",
    "dvars",
    "erode_mask",
    "expand_24",
    "read_confounds",
    "std_dvars",
    "write_confounds",
]

MOTION_COLUMNS = list(PARAM_NAMES)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _as_mask(mask, shape, field, affine=None):
    src = mask if isinstance(mask, (str, os.PathLike)) else None
    if src is not None:
        mask = nib.load(src)
    arr = np.asarray(getattr(mask, "dataobj", mask))
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.shape != tuple(shape):
        raise InputError(file=src, field=field, expected=f"a 3D mask of shape {tuple(shape)} "
                         "(the BOLD grid)", found=f"shape {arr.shape}")
    if affine is not None and hasattr(mask, "affine") and not np.allclose(
            mask.affine, affine, atol=1e-3):
        raise InputError(file=src, field=field, expected="a mask with the BOLD affine",
                         found="a different affine")
    out = arr > 0.5 if arr.dtype.kind == "f" else arr > 0
    if not out.any():
        raise InputError(file=src, field=field, expected="a non-empty mask", found="0 voxels")
    return out


def erode_mask(mask, iterations=1, min_voxels=10):
    """Binary erosion (6-connected) that keeps the last mask with at least ``min_voxels``."""
    m = np.asarray(getattr(mask, "dataobj", mask)) > 0
    for _ in range(int(iterations)):
        e = ndimage.binary_erosion(m)
        if e.sum() < min_voxels:
            break
        m = e
    if hasattr(mask, "affine"):
        return nib.Nifti1Image(m.astype(np.uint8), mask.affine)
    return m


def expand_24(df, columns):
    """Add ``_derivative1``, ``_power2`` and ``_derivative1_power2`` columns (fMRIPrep order)."""
    out = {}
    for c in columns:
        x = df[c].astype(float)
        d = x.diff()  # first row NaN, written as 'n/a'
        out[c] = x
        out[f"{c}_derivative1"] = d
        out[f"{c}_derivative1_power2"] = d ** 2
        out[f"{c}_power2"] = x ** 2
    return pd.DataFrame(out, index=df.index)


def dvars(data, mask, intensity_normalization=1000.0):
    """Non-standardised DVARS in closed form (for checks): RMS over mask voxels of the volume
    differences after scaling the masked data to a median of ``intensity_normalization``."""
    x = np.asarray(data, float)[np.asarray(mask, bool)]
    x = x / np.median(x) * intensity_normalization
    out = np.full(x.shape[1], np.nan)
    out[1:] = np.sqrt((np.diff(x, axis=1) ** 2).mean(axis=0))
    return out


def std_dvars(data, mask, intensity_normalization=1000.0, variance_tol=1e-7):
    """Standardised and plain DVARS, nipype ``ComputeDVARS`` (``remove_zerovariance=True``) in
    vectorised form.

    Same steps and precision as nipype's ``compute_dvars`` (Nichols 2013): masked float32
    series scaled to a median of ``intensity_normalization``, robust SD from the lower
    quartiles, voxels with SD <= ``variance_tol`` dropped, lag-1 autocorrelation of the demeaned
    series (Yule-Walker, the ratio of the lag-1 to the lag-0 autocovariance, computed here as
    dot products instead of nitime's per-voxel FFTs), then the SD of the differences predicted
    from it. Values are rounded to 6 decimals as nipype writes them.

    Parameters
    ----------
    data : numpy.ndarray, shape (X, Y, Z, T)
    mask : numpy.ndarray of bool, shape (X, Y, Z)
    intensity_normalization : float, default=1000
    variance_tol : float, default=1e-7

    Returns
    -------
    std_dvars, dvars : numpy.ndarray, shape (T - 1,)
        Standardised DVARS and plain DVARS of volumes 1..T-1.
    """
    m = np.asarray(data, np.float32)[np.asarray(mask, bool)]
    if intensity_normalization:
        m = (m / np.median(m)) * np.float32(intensity_normalization)
    # the 'lower' quartiles are order statistics: one partition finds both
    n = m.shape[1]
    lo, hi = (int(np.floor(q * (n - 1))) for q in (0.25, 0.75))
    part = np.partition(m, [lo, hi], axis=1)
    sd = (part[:, hi] - part[:, lo]) / 1.349
    del part
    keep = sd > variance_tol
    m, sd = m[keep], sd[keep]
    # nipype: regress_poly(0) in float64 (pinv of a column of ones = the mean), cast to float32
    c = (m - m.astype(np.float64).mean(axis=1, keepdims=True)).astype(np.float32)
    c = c.astype(np.float64)
    ar1 = np.einsum("ij,ij->i", c[:, 1:], c[:, :-1]) / np.einsum("ij,ij->i", c, c)
    diff_sdhat = np.sqrt((1 - ar1) * 2) * sd
    diff = np.diff(m, axis=1)
    plain = np.sqrt(np.square(diff).mean(axis=0))
    return np.round(plain / diff_sdhat.mean(), 6), np.round(plain, 6)


def confounds_paths(bold_preproc_path):
    """fMRIPrep file names of the confounds table and sidecar for a ``*_desc-preproc_bold`` file.

    ``sub-01_ses-pre_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz`` ->
    ``sub-01_ses-pre_task-rest_desc-confounds_timeseries.tsv`` and ``.json`` (the space and
    resolution entities are dropped, as in fMRIPrep).
    """
    p = Path(bold_preproc_path)
    name = p.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    parts = [e for e in name.split("_")
             if not e.startswith(("space-", "res-", "desc-", "den-")) and e != "bold"]
    stem = "_".join(parts)
    tsv = p.parent / f"{stem}_desc-confounds_timeseries.tsv"
    return tsv, tsv.with_suffix(".json")


# --------------------------------------------------------------------------------------------
# Main entry point
# --------------------------------------------------------------------------------------------
def compute_confounds(bold_img, motion_params, brain_mask, wm_mask, csf_mask, *, fd_threshold,
                      dvars_threshold, t_r=None, n_dummy=0, acompcor_variance=0.5,
                      acompcor_n=None, tcompcor=False, high_pass_s=128.0, fd_radius=50.0):
    """Compute the fMRIPrep-style confounds of one motion-corrected BOLD run.

    Parameters
    ----------
    bold_img : nibabel image or path
        Motion-corrected 4D BOLD run (all volumes, non-steady-state ones included) on the grid
        of the masks.
    motion_params : array (T, 6) or DataFrame
        ``trans_x, trans_y, trans_z`` (mm), ``rot_x, rot_y, rot_z`` (rad) per volume.
    brain_mask, wm_mask, csf_mask : nibabel image, array or path
        Brain mask and eroded white-matter / CSF masks on the BOLD grid (see
        :func:`erode_mask`). aCompCor also uses their union ("combined").
    fd_threshold, dvars_threshold : float or None
        Thresholds of the ``motion_outlierNN`` columns (FD in mm, standardised DVARS; fMRIPrep
        uses 0.5 and 1.5); None disables one criterion.
    t_r : float or None
        Repetition time (s); None reads it from the image header.
    n_dummy : int, default=0
        Initial non-steady-state volumes kept in the run: they get one-hot
        ``non_steady_state_outlierNN`` columns and are left out of CompCor.
    acompcor_variance : float or None, default=0.5
        Keep, per mask, the components explaining this fraction of variance (fMRIPrep: 0.5).
    acompcor_n : int or None, default=None
        Keep this many components per mask instead (overrides ``acompcor_variance``).
    tcompcor : bool, default=False
        Also compute temporal CompCor (top 2 % variance voxels of the brain mask).
    high_pass_s : float, default=128
        Cutoff period (s) of the cosine basis (fMRIPrep 128 s).
    fd_radius : float, default=50
        Head radius (mm) of the framewise displacement.

    Returns
    -------
    confounds : pandas.DataFrame
        One row per volume; NaN where fMRIPrep writes ``n/a``.
    metadata : dict
        JSON sidecar content keyed by column (CompCor components, dropped components, cosine
        and outlier descriptions).
    """
    img, src = _load_bold(bold_img)
    n_vol, shape = img.shape[3], img.shape[:3]
    t_r = _repetition_time(img, t_r, src)
    motion = _motion_array(motion_params, n_vol)
    if not isinstance(n_dummy, (int, np.integer)) or not 0 <= n_dummy < n_vol - 2:
        raise InputError(field="n_dummy", expected=f"an integer in [0, {n_vol - 2})",
                         found=repr(n_dummy))
    if acompcor_n is None and not (acompcor_variance and 0 < acompcor_variance <= 1):
        raise InputError(field="acompcor_variance", expected="a fraction in (0, 1] or "
                         "acompcor_n", found=repr(acompcor_variance))
    masks = {"brain": _as_mask(brain_mask, shape, "brain_mask", img.affine),
             "WM": _as_mask(wm_mask, shape, "wm_mask", img.affine),
             "CSF": _as_mask(csf_mask, shape, "csf_mask", img.affine)}

    data = np.asarray(img.dataobj, dtype=np.float32)
    comp_kw = dict(pre_filter="cosine", high_pass_cutoff=float(high_pass_s),
                   save_pre_filter=True, save_metadata=True, failure_mode="NaN",
                   repetition_time=float(t_r), ignore_initial_volumes=int(n_dummy))
    if acompcor_n is not None:
        comp_kw["num_components"] = int(acompcor_n)
    else:
        comp_kw["variance_threshold"] = float(acompcor_variance)
    nip = _run_nipype(data, img.affine, masks, motion, comp_kw, tcompcor=tcompcor,
                      fd_radius=fd_radius)

    # 24 motion parameters, FD, DVARS, tissue means (a masked mean needs no library)
    df = expand_24(pd.DataFrame(motion, columns=MOTION_COLUMNS), MOTION_COLUMNS)
    df["framewise_displacement"] = np.concatenate([[np.nan], nip["fd"]])
    df["dvars"] = np.concatenate([[np.nan], nip["dvars"]])
    df["std_dvars"] = np.concatenate([[np.nan], nip["std_dvars"]])
    tissue = pd.DataFrame({
        "global_signal": data[masks["brain"]].mean(axis=0),
        "white_matter": data[masks["WM"]].mean(axis=0),
        "csf": data[masks["CSF"]].mean(axis=0),
    })
    df = pd.concat([df, expand_24(tissue, ["global_signal", "white_matter", "csf"])], axis=1)
    meta = {}
    for method, (comp, cmeta) in nip["compcor"].items():
        df = pd.concat([df, comp.reset_index(drop=True)], axis=1)
        meta.update(_compcor_meta(cmeta, method))
    df, cos_meta = _cosine_columns(df, nip["prefilter"], high_pass_s)
    meta.update(cos_meta)
    df = _outlier_columns(df, n_dummy, fd_threshold=fd_threshold,
                          dvars_threshold=dvars_threshold)
    meta.update({
        "framewise_displacement": {"Description": "Power framewise displacement",
                                   "Units": "mm", "Radius": float(fd_radius)},
        "dvars": {"Description": "DVARS, intensity normalised to median 1000"},
        "std_dvars": {"Description": "standardised DVARS (Nichols 2013)"},
        "_settings": {"RepetitionTime": float(t_r), "NonSteadyStateVolumes": int(n_dummy),
                      "FDThreshold": fd_threshold, "StdDVARSThreshold": dvars_threshold,
                      "HighPassCutoff": float(high_pass_s)},
    })
    return df, meta


def _load_bold(bold_img):
    src = bold_img if isinstance(bold_img, (str, os.PathLike)) else None
    img = nib.load(src) if src is not None else bold_img
    if not hasattr(img, "shape") or len(img.shape) != 4:
        raise InputError(file=src, field="bold_img", expected="a 4D image",
                         found=str(getattr(img, "shape", type(img).__name__)))
    return img, src


def _repetition_time(img, t_r, src):
    if t_r is None:
        zooms = img.header.get_zooms()
        t_r = float(zooms[3]) if len(zooms) > 3 else 0.0
    if not t_r or t_r <= 0:
        raise InputError(file=src, field="RepetitionTime", expected="a positive TR (s)",
                         found=repr(t_r))
    return t_r


def _motion_array(motion_params, n_vol):
    if isinstance(motion_params, pd.DataFrame):
        missing = [c for c in MOTION_COLUMNS if c not in motion_params]
        if missing:
            raise InputError(field="motion_params", expected=f"columns {MOTION_COLUMNS}",
                             found=f"missing {missing}")
        motion = motion_params[MOTION_COLUMNS].to_numpy(float)
    else:
        motion = np.asarray(motion_params, float)
    if motion.shape != (n_vol, 6) or not np.all(np.isfinite(motion)):
        raise InputError(field="motion_params", expected=f"finite values of shape ({n_vol}, 6)",
                         found=f"shape {motion.shape}")
    return motion


def _run_nipype(data, affine, masks, motion, comp_kw, *, tcompcor, fd_radius):
    """FD, DVARS, aCompCor (and tCompCor) by nipype's interfaces, in a scratch folder."""
    from nipype.algorithms.confounds import ACompCor, FramewiseDisplacement, TCompCor

    out = {"compcor": {}}
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="prepost_confounds_") as tmp:
        os.chdir(tmp)  # nipype interfaces write their outputs to the working directory
        try:
            bold_path = os.path.join(tmp, "bold.nii")  # uncompressed: fast to write and read
            nib.Nifti1Image(data, affine).to_filename(bold_path)
            files = {}
            for name, m in list(masks.items()) + [("combined", masks["WM"] | masks["CSF"])]:
                files[name] = os.path.join(tmp, f"mask_{name}.nii.gz")
                nib.Nifti1Image(m.astype(np.uint8), affine).to_filename(files[name])
            np.savetxt("motion.txt", motion)
            # framewise displacement ('SPM' order = mm then radians)
            fd_res = FramewiseDisplacement(in_file="motion.txt", parameter_source="SPM",
                                           radius=fd_radius).run()
            out["fd"] = np.loadtxt(fd_res.outputs.out_file, skiprows=1, ndmin=1)
            # DVARS by own vectorised code: nipype's ComputeDVARS fits the lag-1
            # autocorrelation voxel by voxel (nitime, ~0.5 ms per voxel: ~45 s at 2 mm)
            out["std_dvars"], out["dvars"] = std_dvars(data, masks["brain"])
            # aCompCor per mask, as fMRIPrep
            ac = ACompCor(realigned_file=bold_path,
                          mask_files=[files["CSF"], files["WM"], files["combined"]],
                          mask_names=["CSF", "WM", "combined"], merge_method="none",
                          components_file="acompcor.tsv", header_prefix="a_comp_cor_",
                          **comp_kw).run()
            out["compcor"]["aCompCor"] = (pd.read_csv(ac.outputs.components_file, sep="\t"),
                                          pd.read_csv(ac.outputs.metadata_file, sep="\t"))
            out["prefilter"] = pd.read_csv(ac.outputs.pre_filter_file, sep="\t")
            if tcompcor:
                tc = TCompCor(realigned_file=bold_path, mask_files=[files["brain"]],
                              percentile_threshold=0.02, components_file="tcompcor.tsv",
                              header_prefix="t_comp_cor_", **comp_kw).run()
                out["compcor"]["tCompCor"] = (pd.read_csv(tc.outputs.components_file, sep="\t"),
                                              pd.read_csv(tc.outputs.metadata_file, sep="\t"))
        finally:
            os.chdir(cwd)
    return out


def _cosine_columns(df, prefilter, high_pass_s):
    """The cosine basis of the CompCor pre-filter, as fMRIPrep's ``cosineNN`` columns."""
    meta = {}
    for c in prefilter.columns:
        if c.startswith("Cosine"):
            new = "cosine" + c[len("Cosine"):]
            df[new] = prefilter[c].to_numpy()
            meta[new] = {"Method": "discrete cosine basis", "CutoffPeriod": float(high_pass_s),
                         "CutoffPeriodUnits": "s"}
    return df, meta


def _outlier_columns(df, n_dummy, *, fd_threshold, dvars_threshold):
    """One-hot ``non_steady_state_outlierNN`` and ``motion_outlierNN`` columns (a volume is a
    motion outlier when its FD or standardised DVARS is above its threshold)."""
    n_vol = len(df)
    for k in range(int(n_dummy)):
        v = np.zeros(n_vol)
        v[k] = 1.0
        df[f"non_steady_state_outlier{k:02d}"] = v
    bad = np.zeros(n_vol, bool)
    if fd_threshold is not None:
        bad |= np.nan_to_num(df["framewise_displacement"].to_numpy()) > fd_threshold
    if dvars_threshold is not None:
        bad |= np.nan_to_num(df["std_dvars"].to_numpy()) > dvars_threshold
    for k, t in enumerate(np.flatnonzero(bad)):
        v = np.zeros(n_vol)
        v[t] = 1.0
        df[f"motion_outlier{k:02d}"] = v
    return df


def _compcor_meta(table, method):
    out = {}
    for r in table.itertuples(index=False):
        out[str(r.component)] = {
            "Method": method,
            "Mask": str(r.mask),
            "SingularValue": float(r.singular_value),
            "VarianceExplained": float(r.variance_explained),
            "CumulativeVarianceExplained": float(r.cumulative_variance_explained),
            "Retained": bool(r.retained),
        }
    return out


def write_confounds(confounds, metadata, out_tsv):
    """Write the table (``n/a`` for missing) and its JSON sidecar next to it, atomically.

    Parameters
    ----------
    out_tsv : path-like
        Usually ``<stem>_desc-confounds_timeseries.tsv`` (:func:`confounds_paths`).

    Returns
    -------
    (Path, Path)
        TSV and JSON paths.
    """
    out_tsv = Path(out_tsv)
    if not out_tsv.name.endswith(".tsv"):
        raise InputError(file=out_tsv, field="out_tsv", expected="a .tsv path", found=out_tsv.name)
    out_json = out_tsv.with_suffix(".json")
    write_tsv(confounds, out_tsv, float_format="%.8g")
    write_json(metadata, out_json)
    return out_tsv, out_json


def read_confounds(path):
    """Read a confounds TSV and its JSON sidecar (empty dict if absent).

    Any fMRIPrep naming: ``desc-confounds_timeseries`` (20.2 and later, and the built-in
    confounds) or ``desc-confounds_regressors`` (1.4 to 20.1); the sidecar is the ``.json`` of
    the same name. The table's ``attrs['source']`` holds the path, which errors of
    :func:`prepost.fmri.denoise.select_confounds` name.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(file=path, field="confounds", expected="an existing TSV file",
                         found="no such file")
    df = read_tsv(path, what="a confounds table (one numeric column per regressor)", numeric="all")
    js = path.with_suffix(".json")
    meta = read_json_object(js, "the confounds JSON sidecar") if js.exists() else {}
    df.attrs["source"] = str(path)  # kept through row/column selection; named in errors
    return df, meta
