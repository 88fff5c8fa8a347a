"""Confound regression, temporal filtering and censoring of preprocessed BOLD data.

Strategies (columns of an fMRIPrep-style confounds table, :mod:`prepost.fmri.confounds`):

``default``
    24 motion parameters (6 + derivatives + squares), the first 5 aCompCor components of the WM
    mask and the first 5 of the CSF mask (XCP-D's ``acompcor`` choice and Muschelli 2014; a fixed
    count, rather than 50 % variance, keeps the model size the same across runs and sessions,
    which matters for pre/post comparisons), the cosine high-pass basis, and censoring.
``36P``
    24 motion parameters + WM and CSF with derivatives and squares, and censoring. The
    Satterthwaite (2013) 36-parameter model proper also has the global signal terms: that is
    ``36P_gsr`` (36 columns); plain ``36P`` is its no-GSR variant (32 columns), so that every
    strategy exists with and without global signal regression.
``simple``
    6 motion parameters + mean WM and CSF, no censoring.

``<strategy>_gsr`` or ``gsr=True`` adds the global signal (with its derivative and their squares
for ``default``/``36P``; only the signal for ``simple``). Non-steady-state volumes present in the
table (``non_steady_state_outlierNN``) are always censored.

The columns are chosen by the loaders of :func:`nilearn.interfaces.fmriprep.load_confounds`
(``motion``, ``wm_csf``, ``global_signal`` ``'full'``/``'basic'``, ``compcor='anat_separated'``
with ``n_compcor=5``, ``high_pass``, non-steady-state), which know every fMRIPrep release from
1.4 on: up to 20.2 the WM and CSF components are ``a_comp_cor_NN`` told apart by the sidecar's
``Mask``; from 21.0 they are ``w_comp_cor_NN`` and ``c_comp_cor_NN`` (``a_comp_cor_NN`` is then
the combined mask, not used). Components are taken in the order of their number (the order of
decreasing variance explained), never in text order. The built-in confounds use the same format.

Cleaning follows XCP-D's order: (1) ordinary least squares of the data on the confounds plus a
mean and a linear trend, fitted on the retained volumes only and applied to all volumes (own
code, a single ``lstsq``: :func:`nilearn.signal.clean` would filter signals and confounds first
and regress afterwards, which on short runs spends the few band-limited degrees of freedom left
on a 30-column model and removes most of the signal); (2) censored volumes replaced by a
cubic-spline interpolation of the retained ones, and those before the first or after the last
retained volume by that volume (own code with scipy, as XCP-D; nilearn 0.13's
``signal.clean(sample_mask=...)`` would do this but overwrites the wrong volumes because it
negates an index array), (3) zero-phase Butterworth band-pass
(:func:`nilearn.signal.butterworth`, order 2 as XCP-D) so that high-motion frames do not spread
through the filter, and (4) removal of the censored volumes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
import pandas as pd

# nilearn's component loaders and CompCor chooser, not the public load_confounds: that one takes
# the path of a BOLD image and finds the confounds file by name next to it, whereas denoising
# works on a table already read (arrays in tests, runs with their non-steady-state volumes
# removed, built-in confounds) and must name our config keys in its errors.
from nilearn.interfaces.fmriprep import load_confounds_components as _nl
from nilearn.interfaces.fmriprep.load_confounds_compcor import find_compcor
from nilearn.interfaces.fmriprep.load_confounds_utils import MissingConfoundError

from prepost.errors import InputError

__all__ = ["STRATEGIES", "DenoiseResult", "censor_mask", "check_confounds_file",
           "confound_columns", "denoise", "select_confounds"]

_MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
_TISSUE = ["white_matter", "csf"]
# column order of each nilearn model (nilearn's own order of the suffixes comes from a set, so
# it can change between processes; a fixed order keeps results reproducible to the last bit)
_SUFFIXES = {"basic": [""], "full": ["", "_derivative1", "_power2", "_derivative1_power2"]}
_COMPCOR = re.compile(r"^([a-z])_comp_cor_(\d+)$")
_PREFIX_MASK = {"w": "WM", "c": "CSF"}

#: Strategy definitions in the terms of nilearn's ``load_confounds``: motion, wm_csf and
#: global_signal models (None: not used; global_signal only with GSR), CompCor method and count
#: per mask, whether the cosine basis (high_pass) is included and whether censoring applies by
#: default.
STRATEGIES = {
    "default": {"motion": "full", "wm_csf": None, "global_signal": "full",
                "compcor": "anat_separated", "n_compcor": 5, "high_pass": True, "censor": True},
    "36P": {"motion": "full", "wm_csf": "full", "global_signal": "full", "compcor": None,
            "n_compcor": 0, "high_pass": False, "censor": True},
    "simple": {"motion": "basic", "wm_csf": "basic", "global_signal": "basic", "compcor": None,
               "n_compcor": 0, "high_pass": False, "censor": False},
}


def _parse_strategy(strategy, gsr):
    name = str(strategy)
    if name.endswith("_gsr"):
        name, gsr = name[:-4], True
    if name not in STRATEGIES:
        raise InputError(field="strategy", expected="one of " + ", ".join(
            sorted(STRATEGIES) + [f"{s}_gsr" for s in sorted(STRATEGIES)]), found=repr(strategy))
    return name, bool(gsr)


def _sidecar(source):
    return None if source is None else Path(source).with_suffix(".json")


def _group(raw, component, model, bases, source, label):
    """Columns of one nilearn component (motion, wm_csf, global_signal) in a fixed order."""
    wanted = [b + s for b in bases for s in _SUFFIXES[model]]
    try:
        got = set(getattr(_nl, f"_load_{component}")(raw, model).columns)
    except (MissingConfoundError, KeyError):  # none found / some missing (nilearn's KeyError)
        got = None
    if got != set(wanted):
        missing = [c for c in wanted if c not in raw.columns]
        hint = ("every fMRIPrep release writes them" if component == "motion" else
                "set fmri.denoise.gsr: false" if component == "global_signal" else
                "set fmri.denoise.strategy: default (CompCor instead of WM/CSF means)")
        raise InputError(file=source, field=missing[0] if missing else component,
                         expected=f"columns {wanted} for strategy '{label}' ({component}="
                         f"'{model}'; {hint})", found=f"missing {missing}")
    return wanted


def _compcor(raw, metadata, spec, source, label):
    """WM then CSF CompCor columns, each in the order of their component number."""
    js = _sidecar(source)
    named = {}  # prefix -> [(number, name, entry)] of the retained components in the sidecar
    for k, v in (metadata or {}).items():
        m = _COMPCOR.match(k)
        if m and isinstance(v, dict) and v.get("Retained", True) is not False:
            named.setdefault(m.group(1), []).append((int(m.group(2)), k, v))
    masks = {k: v.get("Mask") or _PREFIX_MASK.get(p) for p, comps in named.items()
             for _, k, v in comps}
    howto = ("set fmri.denoise.strategy: 36P or simple to denoise without CompCor")
    if not {"WM", "CSF"} & set(masks.values()):
        raise InputError(
            file=js, field="Mask", expected=f"a confounds JSON sidecar giving the Mask (WM, CSF) "
            f"of each CompCor component (a_comp_cor_NN up to fMRIPrep 20.2, w_comp_cor_NN and "
            f"c_comp_cor_NN from 21.0), which strategy '{label}' needs; {howto}",
            found="no sidecar" if not metadata else "no CompCor component of the WM or CSF mask")
    # nilearn derives the names from a count (prefix_comp_cor_00, _01, ...): components numbered
    # without padding or with gaps are renumbered by their number first, then mapped back
    canon, back = {k: v for k, v in metadata.items() if "_comp_cor" not in k}, {}
    for p, comps in named.items():
        for i, (_, k, v) in enumerate(sorted(comps, key=lambda t: t[0])):
            new = f"{p}_comp_cor_{i:02d}"
            canon[new] = {**v, "Mask": masks[k] or "unknown"}
            back[new] = k
    picked = [back[c] for c in find_compcor(canon, spec["compcor"], spec["n_compcor"])]
    out = []
    for mask in ("WM", "CSF"):
        cols = [c for c in picked if masks[c] == mask]
        if not cols:
            raise InputError(file=js, field="Mask", expected=f"CompCor components of the {mask} "
                             f"mask for strategy '{label}'; {howto}",
                             found=f"masks {sorted(set(map(str, masks.values())))}")
        out += cols
    missing = [c for c in out if c not in raw.columns]
    if missing:
        raise InputError(file=source, field=missing[0], expected="a column for each CompCor "
                         "component its JSON sidecar lists", found=f"missing {missing}")
    return out


def confound_columns(columns, metadata=None, strategy="default", gsr=False, source=None):
    """Names of the confound columns a strategy takes from a confounds table.

    Needs only the column names and the sidecar, so it also checks a table before any data are
    read.

    Parameters
    ----------
    columns : iterable of str
        Columns of the confounds table.
    metadata : dict or None
        The JSON sidecar; ``default`` needs it to tell the WM and CSF CompCor components apart.
    strategy, gsr : see :func:`select_confounds`.
    source : path-like or None
        The confounds file, named in errors.

    Returns
    -------
    list of str
        Motion, WM/CSF, global signal, CompCor (WM then CSF, each by component number) and
        cosine columns, in this order.

    Raises
    ------
    InputError
        A column or sidecar field the strategy needs is absent (names the file, the field and the
        key to set).
    """
    name, gsr = _parse_strategy(strategy, gsr)
    label = name + ("_gsr" if gsr else "")
    spec = STRATEGIES[name]
    raw = pd.DataFrame(columns=[str(c) for c in columns])
    cols = _group(raw, "motion", spec["motion"], _MOTION, source, label)
    if spec["wm_csf"]:
        cols += _group(raw, "wm_csf", spec["wm_csf"], _TISSUE, source, label)
    if gsr:
        cols += _group(raw, "global_signal", spec["global_signal"], ["global_signal"], source,
                       label)
    if spec["compcor"]:
        cols += _compcor(raw, metadata, spec, source, label)
    if spec["high_pass"]:
        cols += [c for c in _nl._load_high_pass(raw).columns if c not in cols]
    return cols


def check_confounds_file(path, strategy="default", gsr=False):
    """Columns a strategy will take from a confounds file, read from its header and sidecar
    only (cheap enough for every run when the DAG is built).

    Parameters
    ----------
    path : path-like
        ``*_desc-confounds_timeseries.tsv`` or ``*_desc-confounds_regressors.tsv``; the sidecar is
        the ``.json`` of the same name.
    strategy, gsr : see :func:`select_confounds`.

    Returns
    -------
    list of str
        :func:`confound_columns`.

    Raises
    ------
    InputError
        The file is unreadable, or lacks a column or sidecar field the strategy needs.
    """
    from prepost.io import read_json_object

    path = Path(path)
    try:
        columns = pd.read_csv(path, sep="\t", nrows=0).columns
    except (OSError, ValueError) as err:
        raise InputError(file=path, field="header", expected="a tab-separated confounds table",
                         found=str(err)) from err
    js = path.with_suffix(".json")
    meta = read_json_object(js, "the confounds JSON sidecar") if js.is_file() else {}
    return confound_columns(columns, meta, strategy, gsr, source=path)


def select_confounds(confounds_df, strategy="default", gsr=False, metadata=None, source=None):
    """Design matrix of a denoising strategy from a confounds table.

    Parameters
    ----------
    confounds_df : pandas.DataFrame
        fMRIPrep-style confounds (``n/a`` read as NaN).
    strategy : str, default='default'
        ``'default'``, ``'36P'``, ``'simple'``, optionally with a ``'_gsr'`` suffix.
    gsr : bool, default=False
        Add global signal regression.
    metadata : dict or None
        The JSON sidecar; needed by ``default`` to tell the WM and CSF CompCor components apart
        (their ``Mask``). Without it, ``default`` raises :class:`InputError`.
    source : path-like or None
        The confounds file, named in errors (default: ``confounds_df.attrs['source']``, set by
        :func:`prepost.fmri.confounds.read_confounds`).

    Returns
    -------
    pandas.DataFrame
        Selected columns (:func:`confound_columns`); NaN (first rows of derivatives) replaced
        by 0, as XCP-D.
    """
    source = source if source is not None else confounds_df.attrs.get("source")
    cols = confound_columns(confounds_df.columns, metadata, strategy, gsr, source)
    return confounds_df[cols].astype(float).fillna(0.0)


def censor_mask(fd, std_dvars=None, fd_threshold=0.5, dvars_threshold=1.5, min_segment=5,
                extra=None):
    """Volumes to keep after motion censoring (scrubbing).

    A volume is flagged when ``fd > fd_threshold`` or ``std_dvars > dvars_threshold`` (NaN never
    flags; None disables a criterion). Runs of kept volumes shorter than ``min_segment``
    between flagged volumes or the run edges are removed too (Power 2014; the same rule as
    nilearn's ``scrub`` option).

    Own code rather than nilearn's ``load_confounds(scrub=...)``: that one needs both the FD
    and the std DVARS column and both thresholds (``fmri.denoise.dvars_threshold: null``, FD
    only as XCP-D, is the default here), and it applies the minimum segment length without
    counting the non-steady-state volumes as segment boundaries. With both criteria and no
    ``extra`` volumes the result is nilearn's.

    Parameters
    ----------
    fd, std_dvars : array-like (T,) or None
    fd_threshold : float or None, default=0.5 (fMRIPrep's motion-outlier threshold)
    dvars_threshold : float or None, default=1.5
    min_segment : int, default=5
        0 or 1 keeps every unflagged volume.
    extra : array-like of bool (T,) or None
        Further volumes to censor (e.g. non-steady-state volumes).

    Returns
    -------
    numpy.ndarray of bool, shape (T,)
        True = keep.
    """
    if fd is None and std_dvars is None:
        raise InputError(field="fd", expected="framewise displacement or std DVARS", found="none")
    n = len(fd) if fd is not None else len(std_dvars)
    bad = np.zeros(n, bool)
    for x, thr, name in ((fd, fd_threshold, "fd"), (std_dvars, dvars_threshold, "std_dvars")):
        if x is None or thr is None:
            continue
        x = np.asarray(x, float).ravel()
        if x.size != n:
            raise InputError(field=name, expected=f"{n} values", found=f"{x.size}")
        bad |= np.nan_to_num(x, nan=-np.inf) > thr
    if extra is not None:
        e = np.asarray(extra, bool).ravel()
        if e.size != n:
            raise InputError(field="extra", expected=f"{n} values", found=f"{e.size}")
        bad |= e
    keep = ~bad
    if min_segment and min_segment > 1:
        t = 0
        while t < n:
            if keep[t]:
                s = t
                while t < n and keep[t]:
                    t += 1
                if t - s < min_segment:
                    keep[s:t] = False
            else:
                t += 1
    return keep


class DenoiseResult(NamedTuple):
    """Output of :func:`denoise`."""

    data: object  #: cleaned data: image or (T_kept, V) array; None if nothing can be cleaned
    sample_mask: np.ndarray  #: bool (T,), True = volume kept
    qc: dict  #: n_volumes, n_censored, retained_s, excluded, reason, mean_fd, tsnr...


def _load_confounds(confounds, metadata):
    if isinstance(confounds, (str, os.PathLike)):
        from prepost.fmri.confounds import read_confounds

        df, meta = read_confounds(confounds)
        return df, metadata if metadata is not None else meta
    if isinstance(confounds, tuple) and len(confounds) == 2:
        return confounds[0], confounds[1] if metadata is None else metadata
    if not isinstance(confounds, pd.DataFrame):
        raise InputError(field="confounds", expected="a DataFrame, (DataFrame, metadata) or "
                         "a path to a confounds TSV", found=type(confounds).__name__)
    return confounds, metadata


def denoise(img_or_array, confounds, mask=None, t_r=None, strategy="default", gsr=False,
            low_pass=0.08, high_pass=0.01, censor=None, fd_threshold=0.5, dvars_threshold=1.5,
            min_segment=5, smoothing_fwhm=None, min_retained_s=240.0, metadata=None,
            filter_order=2, standardize=False):
    """Regress confounds, band-pass filter and censor a BOLD run.

    Parameters
    ----------
    img_or_array : nibabel image, path or array (T, V)
        Preprocessed 4D BOLD run (typically in MNI space) or a time x voxel/parcel array.
    confounds : DataFrame, (DataFrame, metadata) or path
        fMRIPrep-style confounds of the run (a path also reads its JSON sidecar).
    mask : nibabel image, array or path or None
        Brain mask for images (required for images, unused for arrays).
    t_r : float or None
        Repetition time (s); None reads it from the image header.
    strategy, gsr : see :func:`select_confounds`.
    low_pass, high_pass : float or None, default=0.08 and 0.01 Hz
        Butterworth band (None disables a side). With ``high_pass`` set, the cosine columns of
        ``default`` are redundant but harmless.
    censor : bool or None
        Apply motion censoring; None follows the strategy (``default``/``36P`` censor).
    fd_threshold, dvars_threshold, min_segment : see :func:`censor_mask`.
    smoothing_fwhm : float or None
        Gaussian smoothing (mm) before masking (images only).
    min_retained_s : float, default=240
        Runs with less retained time are flagged ``excluded`` (not an error).
    metadata : dict or None
        Confounds JSON sidecar (needed by ``default``).
    filter_order : int, default=2
        Butterworth order (applied forward and backward).
    standardize : bool, default=False
        z-score the cleaned series.

    Returns
    -------
    DenoiseResult
        ``(data, sample_mask, qc)``. ``data`` is a 4D image of the kept volumes for image input
        and a (T_kept, V) array for array input; None when too few volumes remain to fit the
        model. ``qc`` holds ``n_volumes, n_censored, n_retained, retained_s, excluded, reason,
        mean_fd, tsnr_raw, tsnr_denoised, n_regressors, confound_columns (the names of the
        regressors, in design order), strategy``.
    """
    from nilearn import signal

    name, gsr = _parse_strategy(strategy, gsr)
    df, meta = _load_confounds(confounds, metadata)
    x, img, marr, t_r = _data_matrix(img_or_array, mask, t_r, smoothing_fwhm)
    n = x.shape[0]
    if len(df) != n:
        raise InputError(field="confounds", expected=f"{n} rows (one per volume)",
                         found=f"{len(df)}")
    do_censor = STRATEGIES[name]["censor"] if censor is None else bool(censor)
    keep, fd = _sample_mask(df, do_censor, fd_threshold=fd_threshold,
                            dvars_threshold=dvars_threshold, min_segment=min_segment)
    design = select_confounds(df, name, gsr, meta)  # errors name df.attrs["source"]
    qc, mean_raw = _qc_before(x, keep, fd, design, t_r, name + ("_gsr" if gsr else ""),
                              min_retained_s)
    if int(keep.sum()) <= design.shape[1] + 2:
        return DenoiseResult(None, keep, qc)

    resid = _regress(x, design.to_numpy(float), keep)
    resid = _interpolate_censored(resid, keep, t_r)
    if low_pass is not None or high_pass is not None:
        resid = signal.butterworth(resid, sampling_rate=1.0 / float(t_r), low_pass=low_pass,
                                   high_pass=high_pass, order=int(filter_order), copy=True)
    cleaned = resid[keep]
    if standardize:
        cleaned = (cleaned - cleaned.mean(0)) / np.where(cleaned.std(0, ddof=1) > 0,
                                                         cleaned.std(0, ddof=1), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        res_sd = cleaned.std(axis=0, ddof=1)
        qc["tsnr_denoised"] = float(np.nanmedian(mean_raw / res_sd))
    if img is None:
        return DenoiseResult(cleaned, keep, qc)
    out = np.zeros(img.shape[:3] + (int(keep.sum()),), np.float32)
    out[marr] = cleaned.T
    hdr = img.header.copy() if isinstance(img, nib.Nifti1Image) else None
    res = nib.Nifti1Image(out, img.affine, hdr)
    res.set_data_dtype(np.float32)
    return DenoiseResult(res, keep, qc)


def _data_matrix(img_or_array, mask, t_r, smoothing_fwhm):
    """(T, V) float64 data of an image inside its mask (or of an array), and the TR."""
    img = marr = None
    if isinstance(img_or_array, (str, os.PathLike)) or hasattr(img_or_array, "affine"):
        img = nib.load(img_or_array) if isinstance(img_or_array, (str, os.PathLike)) \
            else img_or_array
        if len(img.shape) != 4:
            raise InputError(field="img", expected="a 4D image", found=str(img.shape))
        if mask is None:
            raise InputError(field="mask", expected="a brain mask for image input", found="None")
        if t_r is None:
            z = img.header.get_zooms()
            t_r = float(z[3]) if len(z) > 3 else None
        if smoothing_fwhm:
            from nilearn import image as nimage

            img = nimage.smooth_img(img, smoothing_fwhm)
        m = nib.load(mask) if isinstance(mask, (str, os.PathLike)) else mask
        marr = np.asarray(getattr(m, "dataobj", m)) > 0
        if marr.shape != img.shape[:3]:
            raise InputError(field="mask", expected=f"shape {img.shape[:3]}", found=str(marr.shape))
        x = np.asarray(img.dataobj, dtype=np.float32)[marr].T.astype(np.float64)
    else:
        x = np.asarray(img_or_array, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2:
            raise InputError(field="data", expected="an array of shape (T, V)", found=str(x.shape))
    if not t_r or t_r <= 0:
        raise InputError(field="t_r", expected="a positive repetition time (s)", found=repr(t_r))
    return x, img, marr, t_r


def _sample_mask(df, do_censor, *, fd_threshold, dvars_threshold, min_segment):
    """Volumes kept (non-steady-state volumes always out; motion censoring when asked) and FD."""
    n = len(df)
    nss = np.zeros(n, bool)
    for c in _nl._load_non_steady_state(df).columns:
        nss |= df[c].to_numpy(float) > 0.5
    fd = df["framewise_displacement"].to_numpy(float) if "framewise_displacement" in df else None
    sd = df["std_dvars"].to_numpy(float) if "std_dvars" in df else None
    if not do_censor:
        return ~nss, fd
    if fd is None and sd is None:
        raise InputError(field="confounds", expected="framewise_displacement or std_dvars "
                         "columns for censoring", found="neither")
    return censor_mask(fd, sd, fd_threshold, dvars_threshold, min_segment, extra=nss), fd


def _qc_before(x, keep, fd, design, t_r, strategy, min_retained_s):
    """QC record before the fit (retained time, exclusion and its reasons, raw tSNR) and the
    mean of the retained volumes."""
    n, n_keep = x.shape[0], int(keep.sum())
    qc = {
        "strategy": strategy,
        "n_volumes": int(n),
        "n_censored": int(n - n_keep),
        "n_retained": n_keep,
        "retained_s": float(n_keep * t_r),
        "n_regressors": int(design.shape[1]),
        "confound_columns": [str(c) for c in design.columns],
        "mean_fd": float(np.nanmean(fd)) if fd is not None else float("nan"),
        "excluded": False,
        "reason": "",
    }
    reasons = []
    if n_keep * t_r < min_retained_s:
        reasons.append(f"{n_keep * t_r:.0f} s retained after censoring, below the minimum of "
                       f"{min_retained_s:.0f} s ({n - n_keep} of {n} volumes censored)")
    # degrees of freedom: the fit needs more kept volumes than regressors (+ mean and trend)
    if n_keep <= design.shape[1] + 2:
        reasons.append(f"{n_keep} retained volumes cannot fit {design.shape[1]} regressors")
    mean_raw = x[keep].mean(axis=0) if n_keep else np.full(x.shape[1], np.nan)
    sd_raw = x[keep].std(axis=0, ddof=1) if n_keep > 1 else np.full(x.shape[1], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        qc["tsnr_raw"] = float(np.nanmedian(mean_raw / sd_raw)) if n_keep > 1 else float("nan")
    qc["tsnr_denoised"] = float("nan")
    if reasons:
        qc["excluded"] = True
        qc["reason"] = "; ".join(reasons)
    return qc, mean_raw


def _regress(x, design, keep):
    """Residuals of every volume after a least-squares fit on the kept volumes only.

    Own least squares: nilearn.signal.clean filters before it regresses, which on short
    band-limited runs over-fits large models; the betas are applied to every volume so that
    censored volumes get residuals too. Mean and linear trend are always in the model.
    """
    n = x.shape[0]
    dmat = design - design[keep].mean(axis=0)
    tc = np.linspace(-1.0, 1.0, n)[:, None]
    dmat = np.concatenate([np.ones((n, 1)), tc, dmat], axis=1)
    scale = np.abs(dmat[keep]).max(axis=0)
    scale[scale == 0] = 1.0
    beta, *_ = np.linalg.lstsq(dmat[keep] / scale, x[keep], rcond=None)
    return x - (dmat / scale) @ beta


def _interpolate_censored(resid, keep, t_r):
    """Censored volumes replaced by a cubic spline through the retained ones, before filtering.

    Own code with scipy: nilearn 0.13's signal.clean(sample_mask=...) indexes the censored
    volumes with ``~sample_mask`` on an *index* array, so it overwrites the wrong volumes.
    """
    n = len(keep)
    if keep.all():
        return resid
    from scipy.interpolate import CubicSpline

    t_all = np.arange(n) * float(t_r)
    idx = np.flatnonzero(keep)
    inner = ~keep & (np.arange(n) > idx[0]) & (np.arange(n) < idx[-1])
    if inner.any():
        # voxels in blocks: the spline's coefficients take 4 copies of the series (~2 GB for a
        # 3 mm MNI run of 300 volumes at once); every voxel's spline is independent
        step = 8192
        for j in range(0, resid.shape[1], step):
            spline = CubicSpline(t_all[keep], resid[keep, j:j + step], axis=0)
            resid[inner, j:j + step] = spline(t_all[inner])
    # censored volumes at either end take the nearest retained volume (as XCP-D): a cubic
    # extrapolated beyond the data diverges and the filter would spread it into the run
    resid[: idx[0]] = resid[idx[0]]
    resid[idx[-1] + 1:] = resid[idx[-1]]
    return resid
