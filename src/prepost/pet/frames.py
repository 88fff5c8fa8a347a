"""PET frames: checks, time windows and frame-weighted means, defined once for the PET stage.

A dynamic PET is a sequence of frames, each the mean activity over ``[start, start + duration)``
(seconds, BIDS ``FrameTimesStart`` / ``FrameDuration``). Every PET module (TACs, kinetic models,
blood delay fitting, summed images and voxel-wise maps) checks its frames with
:func:`check_frames` and averages over a time window with :func:`window_weights`, so that a
regional value and the voxel map averaged over the same region agree.

A window mean weights each frame by the seconds it shares with the window: it is the exact mean
over the window of the piecewise-constant signal the frames describe, also for a window whose edges
cut frames.
"""

from __future__ import annotations

import numpy as np

from prepost.errors import InputError

__all__ = ["FRAME_FIELDS", "MAX_DYNAMIC_START_S", "MIN_DYNAMIC_FRAMES", "as_1d", "check_frames",
           "check_tac", "mid_times", "scan_kind", "window_bounds", "window_mean", "window_weights"]

#: BIDS sidecar fields of the frame starts and durations (named in error messages).
FRAME_FIELDS = ("FrameTimesStart", "FrameDuration")
# frame edges written as decimal seconds may differ by rounding
_TOL_S = 1e-6
#: A scan is dynamic (kinetic models can be fitted) with at least this many frames ...
MIN_DYNAMIC_FRAMES = 6
#: ... the first of them starting at most this long after injection (s): the models integrate
#: the tissue curve from injection, which a late static acquisition does not cover.
MAX_DYNAMIC_START_S = 300.0


def as_1d(values, field, source, n=None):
    """``values`` as a flat float array; with ``n``, exactly ``n`` of them (one per frame)."""
    try:
        a = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise InputError(file=source, field=field, expected="numeric values",
                         found=str(exc)) from None
    if n is not None and a.size != n:
        raise InputError(file=source, field=field, expected=f"{n} values (one per frame)",
                         found=f"{a.size}")
    return a


def check_frames(frame_start_s, frame_duration_s, n_frames=None, *, source=None,
                 fields=FRAME_FIELDS):
    """Check frame times and return them as float arrays.

    Parameters
    ----------
    frame_start_s, frame_duration_s : array-like of float
        Frame starts and durations (s).
    n_frames : int or None
        Number of frames the data hold (the 4th image dimension, TAC rows); None skips that check.
    source : str or None
        File the frames describe, named in errors.
    fields : (str, str)
        Names of the start and duration fields in errors.

    Returns
    -------
    frame_start_s, frame_duration_s : ndarray of float

    Raises
    ------
    InputError
        No frame; counts differ (from each other or from ``n_frames``); a non-finite time; a
        duration not positive; a start before 0 s; starts not increasing; a frame starting
        before the previous one ends.
    """
    f_start, f_dur = fields
    frame_start_s = as_1d(frame_start_s, f_start, source)
    frame_duration_s = as_1d(frame_duration_s, f_dur, source)
    if frame_start_s.size == 0:
        raise InputError(file=source, field=f_start, expected="at least one frame", found="none")
    if frame_duration_s.size != frame_start_s.size:
        raise InputError(file=source, field=f_dur,
                         expected=f"{frame_start_s.size} values (one per frame start)",
                         found=f"{frame_duration_s.size}")
    if n_frames is not None and frame_start_s.size != int(n_frames):
        raise InputError(file=source, field=f_start,
                         expected=f"{int(n_frames)} values (one per frame of the data)",
                         found=f"{frame_start_s.size}")
    if not (np.all(np.isfinite(frame_start_s)) and np.all(np.isfinite(frame_duration_s))):
        raise InputError(file=source, field=f"{f_start}/{f_dur}", expected="finite times (s)",
                         found="NaN or infinite values")
    if np.any(frame_duration_s <= 0):
        bad = int(np.flatnonzero(frame_duration_s <= 0)[0])
        raise InputError(file=source, field=f_dur, expected="positive durations (s)",
                         found=f"{frame_duration_s[bad]:g} s at frame {bad}")
    if np.any(frame_start_s < 0):
        bad = int(np.flatnonzero(frame_start_s < 0)[0])
        raise InputError(file=source, field=f_start, expected="times >= 0 s (from injection)",
                         found=f"{frame_start_s[bad]:g} s at frame {bad}")
    if np.any(np.diff(frame_start_s) <= 0):
        bad = int(np.flatnonzero(np.diff(frame_start_s) <= 0)[0])
        raise InputError(file=source, field=f_start, expected="increasing frame starts",
                         found=f"frame {bad + 1} starts at {frame_start_s[bad + 1]:g} s, "
                               f"frame {bad} at {frame_start_s[bad]:g} s")
    fe = frame_start_s + frame_duration_s
    if np.any(frame_start_s[1:] < fe[:-1] - _TOL_S):
        i = int(np.flatnonzero(frame_start_s[1:] < fe[:-1] - _TOL_S)[0])
        raise InputError(file=source, field=f_start, expected="increasing, non-overlapping frames",
                         found=f"frame {i + 1} starts at {frame_start_s[i + 1]:g} s before frame {i} "
                               f"ends at {fe[i]:g} s")
    return frame_start_s, frame_duration_s


def check_tac(values, n_frames, *, source=None, name="tac"):
    """A time-activity curve as a float array: one finite value per frame.

    Raises
    ------
    InputError
        Non-numeric values, a count other than ``n_frames``, or NaN/inf.
    """
    tac = as_1d(values, name, source)
    if tac.size != int(n_frames):
        raise InputError(file=source, field=name, expected=f"{int(n_frames)} values (one per frame)",
                         found=f"{tac.size}")
    if not np.all(np.isfinite(tac)):
        raise InputError(file=source, field=name, expected="finite TAC values", found="NaN/inf")
    return tac


def scan_kind(frame_start_s, frame_duration_s):
    """``'dynamic'`` or ``'static'``: what a scan's frames support.

    A dynamic scan has at least :data:`MIN_DYNAMIC_FRAMES` frames and starts within
    :data:`MAX_DYNAMIC_START_S` of injection; anything else (one frame, or a few frames of a late
    acquisition) is static: SUV and SUVR only.

    Parameters
    ----------
    frame_start_s, frame_duration_s : array-like of float
        Checked frames (s), e.g. from :func:`check_frames`.

    Returns
    -------
    str
    """
    start = np.atleast_1d(np.asarray(frame_start_s, float))
    if start.size >= MIN_DYNAMIC_FRAMES and start[0] <= MAX_DYNAMIC_START_S:
        return "dynamic"
    return "static"


def mid_times(frame_start_s, frame_duration_s):
    """Frame mid-times (s): ``start + duration / 2``."""
    return np.asarray(frame_start_s, float) + 0.5 * np.asarray(frame_duration_s, float)


def window_bounds(window_s):
    """``(start_s, end_s)`` of a window as floats; an end of None means no end (``inf``).

    Raises
    ------
    InputError
        Not a pair of numbers, or the end not after the start.
    """
    try:
        lo, hi = window_s
        lo, hi = float(lo), (np.inf if hi is None else float(hi))
    except (TypeError, ValueError) as exc:
        raise InputError(field="window_s", expected="(start_s, end_s)",
                         found=repr(window_s)) from exc
    if not hi > lo:
        raise InputError(field="window_s", expected="(start_s, end_s) with end > start",
                         found=repr(window_s))
    return lo, hi


def window_weights(frame_start_s, frame_duration_s, window_s, *, within_scan=True, source=None):
    """Weights of the frames in a time-window mean: the seconds each frame shares with the window.

    Parameters
    ----------
    frame_start_s, frame_duration_s : array-like of float
        Checked frames (s), e.g. from :func:`check_frames`.
    window_s : (float, float or None)
        Window start and end (s); an end of None runs to the end of the scan.
    within_scan : bool, default=True
        Require a window with finite end to lie within the scan (a mean over a window longer than
        the data would not be the mean over that window). With False the window is clipped to
        the scan.
    source : str or None
        File named in errors.

    Returns
    -------
    ndarray of float
        Non-negative weights summing to 1; ``values @ weights`` is the exact window mean of
        piecewise-constant frame values.

    Raises
    ------
    InputError
        A malformed window, one outside the scan (``within_scan``), or one sharing no time with
        any frame.
    """
    frame_start_s = np.asarray(frame_start_s, float)
    fe = frame_start_s + np.asarray(frame_duration_s, float)
    lo, hi = window_bounds(window_s)
    outside = lo < frame_start_s[0] - _TOL_S or (np.isfinite(hi) and hi > fe[-1] + _TOL_S)
    if within_scan and outside:
        raise InputError(file=source, field="window_s",
                         expected=f"a window within the scan {frame_start_s[0]:g}-{fe[-1]:g} s",
                         found=repr(tuple(window_s)))
    overlap = np.clip(np.minimum(fe, hi) - np.maximum(frame_start_s, lo), 0.0, None)
    total = overlap.sum()
    if not total > 0:
        raise InputError(file=source, field="window_s", expected="a window overlapping the frames "
                         f"{frame_start_s[0]:g}-{fe[-1]:g} s", found=repr(tuple(window_s)))
    return overlap / total


def window_mean(values, frame_start_s, frame_duration_s, window_s, *, axis=-1, within_scan=True,
                source=None):
    """Mean over a time window of frame values (frames weighted by their overlap with it).

    Parameters
    ----------
    values : array-like
        Frame values along ``axis`` (a TAC, or voxels x frames).
    frame_start_s, frame_duration_s : array-like of float
        Frames (s).
    window_s : (float, float or None)
        Window (s); see :func:`window_weights`.
    axis : int, default=-1
        Frame axis of ``values``.

    Returns
    -------
    float or ndarray
        The window mean (a float for a 1D ``values``).
    """
    w = window_weights(frame_start_s, frame_duration_s, window_s, within_scan=within_scan,
                       source=source)
    v = np.moveaxis(np.asarray(values, float), axis, -1)
    if v.shape[-1] != w.size:
        raise InputError(file=source, field="values", expected=f"{w.size} frames",
                         found=f"{v.shape[-1]}")
    out = v @ w
    return float(out) if np.ndim(out) == 0 else out
