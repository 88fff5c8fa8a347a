"""Kinetic models for regional time-activity curves (TACs) of dynamic PET.

Conventions
-----------
* Every public time argument is in **seconds** (as in BIDS files): input-function sample times,
  ``frame_start_s``, ``frame_duration_s``, ``tstar_s`` and averaging windows ``window_s``.
* The models work in **minutes** internally. Rate constants (k2, k3, k4, k2') are reported per
  minute, K1 in mL/cm3/min, distribution volumes (VT, VND) in mL/cm3, vB, R1, BPND and DVR are
  unitless.
* TAC values are frame means of decay-corrected activity concentration, in the same unit as
  the input function (e.g. Bq/mL).
* The arterial input (parent plasma ``cp``, whole blood ``cb``) is a piecewise-linear function
  through its samples. Convolutions with exponentials are computed exactly for piecewise-linear
  input (recursive convolution), and model TACs are averaged exactly over each frame using the
  compartment equation ``dC/dt = A*Cp - b*C`` (so ``int C = (A*int Cp - delta C)/b``). No
  time-grid discretisation error remains beyond the piecewise-linear representation of the
  input.

Fit reporting
-------------
Every model returns a :class:`FitResult` with estimates, standard errors, AIC, number of fitted
parameters, ``fit_ok`` and a ``flag`` string. For non-linear least squares (NLS) the standard
errors come from the covariance ``s^2 (J^T W J)^-1`` with ``s^2 = RSS_w/(n-p)`` at the solution;
derived quantities (VT, ...) use the delta method. For the linear (graphical) methods the SEs
come from the (weighted, when frame ``weights`` are given) least-squares covariance.

Graphical methods (Logan, MA1, reference Logan) regress the frames after t*: given as a time
(``tstar_s``, frames whose mid-time is at or after it) or as a count of last frames
(``tstar_frames``), never both. Their tissue integrals (:func:`tissue_integral`) sum the frames
exactly and bridge a gap between frames (and the time from injection to the first frame)
linearly between the neighbouring frame mid-points, so a missing frame is not counted as zero
activity; SRTM's reference curve is linear between mid-points too. A long gap
(:func:`frame_gaps`) is named in ``flag`` without failing the fit. AIC is ``n*log(RSS/n) + 2k`` with ``RSS`` the
(weighted) residual sum of squares, ``n`` the number of frames used and ``k`` the number of
fitted parameters; this differs from a full Gaussian log-likelihood AIC by a constant for fixed
``n``, so only differences between models fitted to the same frames are meaningful.

``fit_ok`` is False (and the reason is in ``flag``) when the optimiser did not converge, the
TAC has no positive values, estimates or the main outcome are not finite, a rate constant
(K1, k2, k3, k4, R1, k2 of SRTM) ends at a bound, or the main outcome (VT, BPND, DVR) lies
outside its plausible range. vB ending at a bound or a few negative frames are reported in
``flag`` but leave ``fit_ok`` True. Single-model functions raise :class:`InputError` for
malformed input (wrong shapes, frames not covered by the input); numerical failures never raise
and give NaN estimates with ``fit_ok`` False. :func:`fit_models` never raises on a failed fit.

References
----------
Lammertsma AA, Hume SP (1996) NeuroImage 4:153-158 (SRTM).
Gunn RN et al. (1997) NeuroImage 6:279-287 (basis functions).
Logan J et al. (1990) JCBFM 10:740-747; Logan J et al. (1996) JCBFM 16:834-840.
Ichise M et al. (2002) JCBFM 22:1271-1281 (MA1).
Finnema SJ et al. (2018) JCBFM 38:2041-2052 ([11C]UCB-J kinetic modelling).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from scipy.signal import lfilter

from prepost.errors import InputError
from prepost.pet.frames import as_1d, check_frames, check_tac, window_mean

__all__ = [
    "FitResult",
    "DEFAULT_BOUNDS",
    "DEFAULT_VT_BOUNDS",
    "DEFAULT_BP_BOUNDS",
    "K2PRIME_BOUNDS",
    "DEFAULT_TSTAR_S",
    "GAP_FLAG_S",
    "frame_average",
    "frame_gaps",
    "tissue_integral",
    "one_tcm_model",
    "two_tcm_model",
    "one_tcm",
    "two_tcm",
    "logan_plasma",
    "ma1",
    "suv",
    "suvr",
    "srtm",
    "srtm_model",
    "srtm_basis",
    "logan_reference",
    "fit_models",
]

# names of the frame arguments in error messages
_FRAME_ARGS = ("frame_start_s", "frame_duration_s")

_SEC_PER_MIN = 60.0

#: Default parameter bounds per model, (lower, upper); rates per minute, K1 in mL/cm3/min.
DEFAULT_BOUNDS = {
    "1tcm": {"K1": (1e-4, 3.0), "k2": (1e-4, 3.0), "vB": (0.0, 0.3)},
    "2tcm": {"K1": (1e-4, 3.0), "k2": (1e-4, 3.0), "k3": (1e-4, 2.0), "k4": (1e-4, 2.0), "vB": (0.0, 0.3)},
    "srtm": {"R1": (1e-3, 10.0), "k2": (1e-4, 3.0), "BPND": (-0.9, 30.0)},
}
#: Plausible range of VT (mL/cm3) for [11C]UCB-J; estimates outside are flagged.
DEFAULT_VT_BOUNDS = (0.5, 100.0)
#: Plausible range of BPND; estimates outside are flagged (DVR is checked as 1 + BPND).
DEFAULT_BP_BOUNDS = (-0.5, 30.0)
#: Plausible reference efflux k2' (1/min): reference regions of the usual tracers lie around
#: 0.02-0.5/min; an SRTM fit that trades k2 against R1 can return far less (then DVR collapses).
K2PRIME_BOUNDS = (0.01, 1.0)

#: A frame gap longer than this (s), or than the longer of its neighbouring frames, is named in
#: the flag of the graphical and reference-tissue fits (:func:`frame_gaps`); the fit stays valid.
GAP_FLAG_S = 300.0
#: Default t* (s) of the graphical methods when neither ``tstar_s`` nor ``tstar_frames`` is given.
DEFAULT_TSTAR_S = 30 * 60.0
# frame edges written as decimal seconds may differ by rounding: smaller gaps are no gaps
_GAP_TOL_S = 1e-6

# parameters whose ending at a bound invalidates the fit (vB at 0 is common and accepted)
_CRITICAL_AT_BOUND = {"K1", "k2", "k3", "k4", "R1"}


# --------------------------------------------------------------------------------------------
# result container
# --------------------------------------------------------------------------------------------
@dataclass
class FitResult:
    """Result of one model fit to one TAC.

    Attributes
    ----------
    model : str
        Model name ('1tcm', '2tcm', 'logan', 'ma1', 'srtm', 'logan_ref', 'suv', 'suvr').
    estimates : dict of str to float
        Parameter estimates (units in the module docstring). The main outcome (VT, BPND, DVR,
        SUV, SUVR) is included.
    se : dict of str to float
        Standard errors, same keys as ``estimates`` (NaN where not available).
    aic : float
        ``n*log(RSS/n) + 2k`` (NaN for models without residuals).
    n_params : int
        Number of fitted parameters ``k``.
    n_frames : int
        Number of frames (or regression points) used.
    rss : float
        (Weighted) residual sum of squares.
    fit_ok : bool
        False when the fit failed or is implausible, see ``flag``.
    flag : str
        '; '-separated reasons the fit is flagged ('' when none).
    fitted : ndarray or None
        Model prediction at the frames (compartment models) or regression points.
    """

    model: str
    estimates: dict
    se: dict
    aic: float = np.nan
    n_params: int = 0
    n_frames: int = 0
    rss: float = np.nan
    fit_ok: bool = True
    flag: str = ""
    fitted: np.ndarray | None = field(default=None, repr=False)

    def rows(self, roi):
        """Return tidy rows (list of dict): roi, model, parameter, estimate, se, aic, ..."""
        return [
            {
                "roi": roi,
                "model": self.model,
                "parameter": p,
                "estimate": float(v),
                "se": float(self.se.get(p, np.nan)),
                "aic": float(self.aic),
                "n_params": int(self.n_params),
                "fit_ok": bool(self.fit_ok),
                "flag": self.flag,
            }
            for p, v in self.estimates.items()
        ]


def _failed(model, names, reason, n_params=0):
    nan = {p: np.nan for p in names}
    return FitResult(model, dict(nan), dict(nan), n_params=n_params, fit_ok=False, flag=reason)


# --------------------------------------------------------------------------------------------
# piecewise-linear integrals and exact exponential convolution
# --------------------------------------------------------------------------------------------
def _cumint_at(t, y, tq):
    """Integral from t[0] to tq of the piecewise-linear (t, y), exact; tq within [t0, t-1]."""
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(t))])
    tq = np.asarray(tq, dtype=float)
    j = np.clip(np.searchsorted(t, tq, side="right") - 1, 0, t.size - 2)
    d = tq - t[j]
    slope = (y[j + 1] - y[j]) / (t[j + 1] - t[j])
    return cum[j] + y[j] * d + 0.5 * slope * d * d


def frame_average(t_fine, c_fine, frame_start_s, frame_duration_s, source=None):
    """Average a piecewise-linear curve over frames, exactly.

    Parameters
    ----------
    t_fine : array-like, shape (m,)
        Sample times of the curve (s), strictly increasing.
    c_fine : array-like, shape (m,)
        Curve values at ``t_fine`` (any unit); linear between samples.
    frame_start_s, frame_duration_s : array-like, shape (n,)
        Frame start times and durations (s). Frames must lie within ``[t_fine[0], t_fine[-1]]``.
    source : str, optional
        Name of the file the data come from, used in error messages.

    Returns
    -------
    ndarray, shape (n,)
        Frame means (exact trapezoid integration, including partial intervals at frame edges).
    """
    t = as_1d(t_fine, "t_fine", source)
    c = as_1d(c_fine, "c_fine", source, n=t.size)
    frame_start_s, frame_duration_s = check_frames(frame_start_s, frame_duration_s, source=source,
                                                   fields=_FRAME_ARGS)
    if t.size < 2 or np.any(np.diff(t) <= 0):
        raise InputError(file=source, field="t_fine", expected="at least 2 strictly increasing times (s)")
    fe = frame_start_s + frame_duration_s
    if frame_start_s[0] < t[0] - 1e-9 or fe[-1] > t[-1] + 1e-9:
        raise InputError(file=source, field="t_fine",
                         expected=f"curve covering the frames {frame_start_s[0]}-{fe[-1]} s",
                         found=f"{t[0]}-{t[-1]} s")
    fe = np.minimum(fe, t[-1])
    return (_cumint_at(t, c, fe) - _cumint_at(t, c, frame_start_s)) / frame_duration_s


def _e1e2(k, h):
    """E1 = int_0^h exp(-k u) du and E2 = int_0^h u exp(-k u) du (k scalar, h array or scalar)."""
    h = np.asarray(h, dtype=float)
    x = k * h
    if k == 0.0:
        return h.copy(), 0.5 * h * h
    small = np.abs(x) < 1e-3
    xs = np.where(small, 1.0, x)
    e1 = np.where(small, h * (1 - x / 2 + x * x / 6 - x ** 3 / 24), -np.expm1(-xs) / k)
    e2_big = (1.0 - np.exp(-xs) * (1.0 + xs)) / (k * k)
    e2 = np.where(small, h * h * (0.5 - x / 3 + x * x / 8 - x ** 3 / 30), e2_big)
    return e1, e2


class _Grid:
    """A piecewise-linear curve on a uniform grid (minutes) plus exact frame operations."""

    def __init__(self, t_min, y, frame_start_min, frame_end_min):
        self.t = t_min
        self.h = float(t_min[1] - t_min[0])
        self.y = y
        self.slope = np.diff(y) / self.h
        self.start_min = frame_start_min
        self.end_min = frame_end_min
        self.dur = frame_end_min - frame_start_min
        tb = np.concatenate([frame_start_min, frame_end_min])
        self.tb = tb
        self.jb = np.clip(np.floor((tb - t_min[0]) / self.h + 1e-9).astype(int), 0, t_min.size - 2)
        self.db = tb - t_min[self.jb]
        self.yb = y[self.jb] + self.slope[self.jb] * self.db
        nfr = frame_start_min.size
        ib = _cumint_at(t_min, y, tb)
        self.int_frames = ib[nfr:] - ib[:nfr]  # exact integral of y over each frame
        self.mean_frames = self.int_frames / self.dur
        self._n = nfr

    def conv_nodes(self, k):
        """Nodes of int_0^t exp(-k (t-s)) y(s) ds."""
        e1, e2 = _e1e2(k, self.h)
        a = np.exp(-k * self.h)
        incr = self.y[1:] * e1 - self.slope * e2
        return np.concatenate([[0.0], lfilter([1.0], [1.0, -a], incr)])

    def conv_frame_means(self, k):
        """Frame means of exp(-k t) (*) y, exact for piecewise-linear y."""
        nodes = self.conv_nodes(k)
        e1, e2 = _e1e2(k, self.db)
        cb = nodes[self.jb] * np.exp(-k * self.db) + self.yb * e1 - self.slope[self.jb] * e2
        n = self._n
        if k > 1e-9:
            integ = (self.int_frames - (cb[n:] - cb[:n])) / k
        else:
            integ = _cumint_at(self.t, nodes, self.end_min) - _cumint_at(self.t, nodes, self.start_min)
        return integ / self.dur


def _uniform_grid(t_s, values, source, names, t_needed_s, step_s=None):
    """Put curves sampled at t_s (s) on a uniform grid in minutes starting at 0."""
    t = as_1d(t_s, "time", source)
    vals = [as_1d(v, nm, source, n=t.size) for v, nm in zip(values, names)]
    if t.size < 2:
        raise InputError(file=source, field="time", expected="at least 2 input samples")
    if not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise InputError(file=source, field="time", expected="finite, strictly increasing times (s)")
    for v, nm in zip(vals, names):
        if not np.all(np.isfinite(v)):
            raise InputError(file=source, field=nm, expected="finite input values", found="NaN/inf")
    if t[0] < 0:
        raise InputError(file=source, field="time", expected="input times >= 0 s (relative to TimeZero)",
                         found=f"{t[0]}")
    if t[-1] < t_needed_s - 1e-6:
        raise InputError(file=source, field="time",
                         expected=f"input covering the last frame end ({t_needed_s:g} s)",
                         found=f"last input sample at {t[-1]:g} s")
    if t[0] > 0:  # input is zero at injection
        t = np.concatenate([[0.0], t])
        vals = [np.concatenate([[0.0], v]) for v in vals]
    dt = np.diff(t)
    uniform = np.all(np.abs(dt - dt[0]) <= 1e-6 * dt[0])
    if uniform and step_s is None:
        return t / _SEC_PER_MIN, vals
    step = float(step_s) if step_s is not None else max(float(dt.min()), 0.1)
    n = int(np.ceil(t[-1] / step - 1e-9)) + 1
    tg = np.linspace(0.0, (n - 1) * step, n)
    tg = tg[tg <= t[-1] + 1e-9]
    if tg[-1] < t[-1] - 1e-9:
        tg = np.append(tg, tg[-1] + step)
        t = np.append(t, tg[-1])
        vals = [np.append(v, v[-1]) for v in vals]
    return tg / _SEC_PER_MIN, [np.interp(tg, t, v) for v in vals]


class _PlasmaInput:
    def __init__(self, cp_t, cp, cb, frame_start_s, frame_duration_s, source, grid_step_s=None):
        frame_start_s, frame_duration_s = check_frames(frame_start_s, frame_duration_s,
                                                       source=source, fields=_FRAME_ARGS)
        self.n_frames = frame_start_s.size
        fe_s = frame_start_s + frame_duration_s
        if cb is None:
            tg, (cpg,) = _uniform_grid(cp_t, [cp], source, ["parent_plasma"], fe_s[-1], grid_step_s)
            cbg = None
        else:
            tg, (cpg, cbg) = _uniform_grid(cp_t, [cp, cb], source, ["parent_plasma", "whole_blood"],
                                           fe_s[-1], grid_step_s)
        start_min, end_min = frame_start_s / _SEC_PER_MIN, fe_s / _SEC_PER_MIN
        self.cp = _Grid(tg, cpg, start_min, end_min)
        self.cb_mean = None if cbg is None else _Grid(tg, cbg, start_min, end_min).mean_frames
        self.mid = 0.5 * (start_min + end_min)
        self.int_cp_mid = _cumint_at(tg, cpg, self.mid)  # Bq/mL*min
        self.start_min, self.end_min = start_min, end_min


# --------------------------------------------------------------------------------------------
# forward models
# --------------------------------------------------------------------------------------------
def _tcm1_pred(inp, K1, k2, vb):
    ct = K1 * inp.cp.conv_frame_means(k2)
    cb = inp.cb_mean if inp.cb_mean is not None else inp.cp.mean_frames
    return (1.0 - vb) * ct + vb * cb


def _tcm2_pred(inp, K1, k2, k3, k4, vb):
    s = k2 + k3 + k4
    disc = np.sqrt(max(s * s - 4.0 * k2 * k4, 0.0))
    a1, a2 = 0.5 * (s + disc), 0.5 * (s - disc)
    if a1 - a2 < 1e-12:
        a1 = a2 + 1e-12
    c1 = K1 * (k3 + k4 - a2) / (a1 - a2)  # amplitude of exp(-a2 t)
    c2 = K1 * (a1 - k3 - k4) / (a1 - a2)  # amplitude of exp(-a1 t)
    ct = c1 * inp.cp.conv_frame_means(a2) + c2 * inp.cp.conv_frame_means(a1)
    cb = inp.cb_mean if inp.cb_mean is not None else inp.cp.mean_frames
    return (1.0 - vb) * ct + vb * cb


def one_tcm_model(cp_t, cp, cb, frame_start_s, frame_duration_s, K1, k2, vb=0.0, source=None):
    """Frame-averaged one-tissue compartment model TAC.

    ``C_PET(t) = (1 - vB) * K1 * exp(-k2 t) (*) Cp(t) + vB * Cb(t)``.

    Parameters
    ----------
    cp_t : array-like
        Input sample times (s), strictly increasing, covering the last frame end. A zero sample
        at t = 0 is prepended when the first time is > 0.
    cp : array-like
        Metabolite-corrected parent plasma concentration at ``cp_t`` (e.g. Bq/mL).
    cb : array-like or None
        Whole-blood concentration at ``cp_t``; None uses ``cp`` in its place.
    frame_start_s, frame_duration_s : array-like
        Frames (s).
    K1 : float
        mL/cm3/min.
    k2 : float
        1/min.
    vb : float
        Blood volume fraction (unitless).
    source : str, optional
        File name used in error messages.

    Returns
    -------
    ndarray
        Frame-mean concentrations (unit of ``cp``).
    """
    inp = _PlasmaInput(cp_t, cp, cb, frame_start_s, frame_duration_s, source)
    return _tcm1_pred(inp, float(K1), float(k2), float(vb))


def two_tcm_model(cp_t, cp, cb, frame_start_s, frame_duration_s, K1, k2, k3, k4, vb=0.0, source=None):
    """Frame-averaged reversible two-tissue compartment model TAC.

    Same conventions as :func:`one_tcm_model`; k3 and k4 in 1/min. The tissue impulse response
    is ``K1/(a1-a2) * [(k3+k4-a2) exp(-a2 t) + (a1-k3-k4) exp(-a1 t)]`` with
    ``a1,2 = (k2+k3+k4 +/- sqrt((k2+k3+k4)^2 - 4 k2 k4))/2``.
    """
    inp = _PlasmaInput(cp_t, cp, cb, frame_start_s, frame_duration_s, source)
    return _tcm2_pred(inp, float(K1), float(k2), float(k3), float(k4), float(vb))


# --------------------------------------------------------------------------------------------
# NLS machinery
# --------------------------------------------------------------------------------------------
def _weights(weights, n, source):
    if weights is None:
        return np.ones(n)
    w = as_1d(weights, "weights", source, n=n)
    if np.any(~np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise InputError(file=source, field="weights", expected="finite non-negative weights, not all zero")
    return w


def _merge_bounds(model, bounds, names):
    b = dict(DEFAULT_BOUNDS[model])
    if bounds:
        for k, v in bounds.items():
            if k not in b:
                raise InputError(field=f"bounds.{model}.{k}", expected=f"one of {sorted(b)}", found=k)
            lo, hi = float(v[0]), float(v[1])
            if not lo < hi:
                raise InputError(field=f"bounds.{model}.{k}", expected="lower < upper", found=f"{v}")
            b[k] = (lo, hi)
    return np.array([b[p][0] for p in names]), np.array([b[p][1] for p in names])


def _nls(fun_pred, y, w, names, lo, hi, starts):
    """Weighted NLS from several starts; returns (best OptimizeResult, cov or None)."""
    sw = np.sqrt(w)

    def resid(x):
        r = (fun_pred(x) - y) * sw
        return np.where(np.isfinite(r), r, 1e10)

    best = None
    for x0 in starts:
        x0 = np.clip(np.asarray(x0, float), lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo))
        try:
            r = least_squares(resid, x0, bounds=(lo, hi), method="trf", x_scale="jac",
                              xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=2000)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            continue
        if best is None or r.cost < best.cost:
            best = r
    if best is None:
        return None, None
    n, p = y.size, len(names)
    cov = None
    if n > p:
        J = best.jac
        rss = 2.0 * best.cost
        try:
            jtj = J.T @ J
            if np.linalg.cond(jtj) < 1e14:
                cov = np.linalg.inv(jtj) * rss / (n - p)
        except np.linalg.LinAlgError:
            cov = None
    return best, cov


def _nls_report(model, names, res, cov, y, w, lo, hi, derived=None):
    """Assemble a FitResult from NLS output; ``derived`` = (name, f(x), grad(x)) list."""
    x = res.x
    est = {p: float(v) for p, v in zip(names, x)}
    se = {p: (float(np.sqrt(cov[i, i])) if cov is not None and cov[i, i] >= 0 else np.nan)
          for i, p in enumerate(names)}
    for dname, f, g in derived or []:
        est[dname] = float(f(x))
        if cov is not None:
            gv = np.asarray(g(x), float)
            var = float(gv @ cov @ gv)
            se[dname] = np.sqrt(var) if var >= 0 else np.nan
        else:
            se[dname] = np.nan
    n, k = y.size, len(names)
    rss = 2.0 * res.cost
    aic = n * np.log(rss / n) + 2 * k if rss > 0 else -np.inf
    flags, ok = [], True
    if res.status <= 0:
        flags.append(f"non-convergence ({res.message})")
        ok = False
    tol = 1e-6 * (hi - lo)
    for i, p in enumerate(names):
        if x[i] <= lo[i] + tol[i] or x[i] >= hi[i] - tol[i]:
            side = "lower" if x[i] <= lo[i] + tol[i] else "upper"
            flags.append(f"{p} at {side} bound")
            if p in _CRITICAL_AT_BOUND:
                ok = False
    if cov is None:
        flags.append("singular Jacobian: SE not available")
    if not all(np.isfinite(v) for v in est.values()):
        flags.append("non-finite estimate")
        ok = False
    return FitResult(model, est, se, aic=float(aic), n_params=k, n_frames=n, rss=float(rss),
                     fit_ok=ok, flag="; ".join(flags), fitted=None)


def _add_flag(res, msg, fail=True):
    res.flag = f"{res.flag}; {msg}" if res.flag else msg
    if fail:
        res.fit_ok = False


def _check_range(res, key, bounds, label):
    v = res.estimates.get(key, np.nan)
    if np.isfinite(v) and not (bounds[0] <= v <= bounds[1]):
        _add_flag(res, f"{label} {v:.4g} outside plausible range [{bounds[0]:g}, {bounds[1]:g}]")


def _tac_precheck(tac, model, names):
    if not np.any(tac > 0):
        return _failed(model, names, "TAC has no positive values")
    return None


def _negative_note(res, tac):
    nneg = int(np.sum(tac < 0))
    if nneg:
        _add_flag(res, f"{nneg} negative frame value(s)", fail=False)


# --------------------------------------------------------------------------------------------
# compartment models with plasma input
# --------------------------------------------------------------------------------------------
def _linear_1tcm_start(inp, tac):
    """Linearised 1TCM (integrated form) for starting values.

    ``C(t) = (1-vB) K1 int Cp - k2 int C + k2 vB int Cb + vB Cb``, solved by least squares on
    frame mid-times; without a separate whole-blood curve ``Cb = Cp`` and the two ``int Cp``
    terms merge.
    """
    intc = _cum_mid(tac, inp.start_min, inp.end_min)
    if inp.cb_mean is not None:
        cbm = inp.cb_mean
        cbcum = _cum_mid(cbm, inp.start_min, inp.end_min)
        X = np.column_stack([inp.int_cp_mid, -intc, cbcum, cbm])
    else:
        cbm = inp.cp.mean_frames
        X = np.column_stack([inp.int_cp_mid, -intc, cbm])
    try:
        coef, *_ = np.linalg.lstsq(X, tac, rcond=None)
    except np.linalg.LinAlgError:
        return None
    k2 = coef[1]
    vb = float(np.clip(coef[-1], 0.0, 0.2))
    p1 = coef[0] if inp.cb_mean is not None else coef[0] - k2 * vb
    K1 = p1 / (1.0 - vb)
    if not (np.isfinite(k2) and k2 > 0 and np.isfinite(K1) and K1 > 0):
        return None
    return [float(K1), float(k2), vb]


def one_tcm(cp_t, cp, cb, frame_start_s, frame_duration_s, tac, vb=None, weights=None, bounds=None,
            vt_bounds=DEFAULT_VT_BOUNDS, grid_step_s=None, source=None):
    """Fit the one-tissue compartment model (1TCM) with blood volume.

    ``C_PET(t) = (1 - vB) * K1 * exp(-k2 t) (*) Cp(t) + vB * Cb(t)``, frame averaged exactly;
    ``VT = K1/k2`` with SE by the delta method.

    Parameters
    ----------
    cp_t : array-like
        Input sample times (s), e.g. the uniform grid of
        :func:`prepost.pet.blood.metabolite_corrected_input`. Non-uniform samples are
        interpolated linearly onto a uniform grid (step = smallest interval, >= 0.1 s).
    cp : array-like
        Metabolite-corrected parent plasma (same unit as ``tac``).
    cb : array-like or None
        Whole blood; None uses ``cp`` for the vB term.
    frame_start_s, frame_duration_s : array-like
        Frames (s).
    tac : array-like
        Frame-mean tissue concentrations.
    vb : float or None
        Fixed blood volume fraction; None fits vB.
    weights : array-like or None
        Per-frame weights proportional to inverse variance; None = equal weights.
    bounds : dict, optional
        Overrides of ``DEFAULT_BOUNDS['1tcm']``, e.g. ``{'k2': (1e-3, 1.0)}``.
    vt_bounds : tuple of float
        Plausible VT range (mL/cm3); VT outside sets ``fit_ok`` False.
    grid_step_s : float, optional
        Force resampling of the input to this uniform step (s).
    source : str, optional
        File name used in error messages.

    Returns
    -------
    FitResult
        Estimates K1 (mL/cm3/min), k2 (1/min), vB, VT (mL/cm3).
    """
    inp = _PlasmaInput(cp_t, cp, cb, frame_start_s, frame_duration_s, source, grid_step_s)
    y = check_tac(tac, inp.n_frames, source=source)
    w = _weights(weights, inp.n_frames, source)
    fit_vb = vb is None
    names = ["K1", "k2", "vB"] if fit_vb else ["K1", "k2"]
    out_names = names + ["VT"] if fit_vb else names + ["vB", "VT"]
    bad = _tac_precheck(y, "1tcm", out_names)
    if bad is not None:
        return bad
    lo, hi = _merge_bounds("1tcm", bounds, names)
    if fit_vb:
        pred = lambda x: _tcm1_pred(inp, x[0], x[1], x[2])  # noqa: E731
    else:
        vbf = float(vb)
        pred = lambda x: _tcm1_pred(inp, x[0], x[1], vbf)  # noqa: E731
    starts = []
    lin = _linear_1tcm_start(inp, y)
    if lin is not None:
        starts.append(lin if fit_vb else lin[:2])
    for k2s in (0.02, 0.1):
        vt0 = max(np.mean(y[-3:]) / max(np.mean(inp.cp.mean_frames[-3:]), 1e-12), 0.5)
        s = [min(vt0 * k2s, 1.0), k2s, 0.05]
        starts.append(s if fit_vb else s[:2])
    res, cov = _nls(pred, y, w, names, lo, hi, starts)
    if res is None:
        return _failed("1tcm", out_names, "optimiser failed", len(names))
    derived = [("VT", lambda x: x[0] / x[1], lambda x: [1.0 / x[1], -x[0] / x[1] ** 2] + [0.0] * (len(x) - 2))]
    out = _nls_report("1tcm", names, res, cov, y, w, lo, hi, derived)
    if not fit_vb:
        out.estimates = {"K1": out.estimates["K1"], "k2": out.estimates["k2"], "vB": float(vb),
                         "VT": out.estimates["VT"]}
        out.se = {"K1": out.se["K1"], "k2": out.se["k2"], "vB": np.nan, "VT": out.se["VT"]}
    out.fitted = pred(res.x)
    _check_range(out, "VT", vt_bounds, "VT")
    _negative_note(out, y)
    return out


def two_tcm(cp_t, cp, cb, frame_start_s, frame_duration_s, tac, vb=None, weights=None, bounds=None,
            vt_bounds=DEFAULT_VT_BOUNDS, grid_step_s=None, source=None):
    """Fit the reversible two-tissue compartment model (2TCM) with blood volume.

    Parameters are as in :func:`one_tcm`. Estimates K1 (mL/cm3/min), k2, k3, k4 (1/min), vB,
    ``VT = K1/k2 * (1 + k3/k4)`` and ``VND = K1/k2`` (mL/cm3); SEs of derived values by the
    delta method. Several starting points are tried (the 1TCM solution and a small grid in
    k3, k4) and the lowest-RSS solution is kept.
    """
    inp = _PlasmaInput(cp_t, cp, cb, frame_start_s, frame_duration_s, source, grid_step_s)
    y = check_tac(tac, inp.n_frames, source=source)
    w = _weights(weights, inp.n_frames, source)
    fit_vb = vb is None
    names = ["K1", "k2", "k3", "k4", "vB"] if fit_vb else ["K1", "k2", "k3", "k4"]
    out_names = ["K1", "k2", "k3", "k4", "vB", "VT", "VND"]
    bad = _tac_precheck(y, "2tcm", out_names)
    if bad is not None:
        return bad
    lo, hi = _merge_bounds("2tcm", bounds, names)
    vbf = None if fit_vb else float(vb)
    pred = (lambda x: _tcm2_pred(inp, *x)) if fit_vb else (lambda x: _tcm2_pred(inp, *x, vbf))
    lin = _linear_1tcm_start(inp, y) or [0.3, 0.05, 0.05]
    K1s, k2s, vbs = lin
    starts = []
    for k3, k4 in ((0.05, 0.05), (0.02, 0.01), (0.1, 0.03), (0.01, 0.05)):
        k2 = max(k2s * (1 + k3 / k4), 0.01)
        s = [K1s, k2, k3, k4, vbs]
        starts.append(s if fit_vb else s[:4])
    res, cov = _nls(pred, y, w, names, lo, hi, starts)
    if res is None:
        return _failed("2tcm", out_names, "optimiser failed", len(names))

    def vt(x):
        return x[0] / x[1] * (1 + x[2] / x[3])

    def vt_grad(x):
        K1, k2, k3, k4 = x[:4]
        g = [(1 + k3 / k4) / k2, -K1 / k2 ** 2 * (1 + k3 / k4), K1 / (k2 * k4), -K1 * k3 / (k2 * k4 ** 2)]
        return g + [0.0] * (len(x) - 4)

    derived = [("VT", vt, vt_grad),
               ("VND", lambda x: x[0] / x[1], lambda x: [1 / x[1], -x[0] / x[1] ** 2] + [0.0] * (len(x) - 2))]
    out = _nls_report("2tcm", names, res, cov, y, w, lo, hi, derived)
    if not fit_vb:
        out.estimates["vB"] = float(vb)
        out.se["vB"] = np.nan
        out.estimates = {k: out.estimates[k] for k in out_names}
        out.se = {k: out.se[k] for k in out_names}
    out.fitted = pred(res.x)
    _check_range(out, "VT", vt_bounds, "VT")
    _negative_note(out, y)
    return out


# --------------------------------------------------------------------------------------------
# graphical methods with plasma input
# --------------------------------------------------------------------------------------------
def _gap_areas(tac, fs_min, fe_min):
    """Area (conc*min) of the gap before each frame (the first: from injection, t = 0) under the
    line through the neighbouring frame mid-points (through (0, 0) before the first frame).

    Exactly zero where frames abut (gaps below 1e-6 s), so a gap-free schedule keeps the exact
    frame sums. ``tac`` may be 2D (voxels x frames).
    """
    mid = 0.5 * (fs_min + fe_min)
    prev_end = np.concatenate([[0.0], fe_min[:-1]])
    gap = fs_min - prev_end
    gap = np.where(gap > _GAP_TOL_S / _SEC_PER_MIN, gap, 0.0)
    prev_mid = np.concatenate([[0.0], mid[:-1]])
    frac = (0.5 * (prev_end + fs_min) - prev_mid) / (mid - prev_mid)  # gap centre on that line
    tac = np.asarray(tac, float)
    prev_val = np.concatenate([np.zeros(tac.shape[:-1] + (1,)), tac[..., :-1]], axis=-1)
    return gap * (prev_val + frac * (tac - prev_val))


def _cum_mid(tac, fs_min, fe_min):
    """Integral of the TAC from injection (t = 0) to each frame mid-time (conc*min).

    Frames count exactly (frame mean x duration, half of the current frame); a gap between
    frames, and the time before the first frame, count as the line through the neighbouring
    frame mid-points (from zero at t = 0), not as zero activity. ``tac`` may be 2D (voxels x
    frames, integrated along the last axis).
    """
    tac = np.asarray(tac, float)
    area = tac * (fe_min - fs_min)
    gaps = _gap_areas(tac, fs_min, fe_min)  # zeros for abutting frames from t = 0
    done = np.cumsum(area + gaps, axis=-1)
    prev = np.concatenate([np.zeros(done.shape[:-1] + (1,)), done[..., :-1]], axis=-1)
    return prev + gaps + 0.5 * area


def tissue_integral(tac, frame_start_s, frame_duration_s):
    """Integral of a frame-mean TAC from injection to each frame mid-time, bridging gaps.

    The integral used by the graphical methods (:func:`logan_plasma`, :func:`ma1`,
    :func:`logan_reference`): each frame contributes its mean x duration (half of it for the
    current frame); a gap between two frames contributes the area under the line through their
    mid-points, and the time from injection (t = 0) to the first frame the area under the line
    from zero to the first mid-point. A gap thus never counts as zero activity.

    Parameters
    ----------
    tac : array-like, shape (n_frames,) or (n_voxels, n_frames)
        Frame means.
    frame_start_s, frame_duration_s : array-like, shape (n_frames,)
        Frames (s).

    Returns
    -------
    ndarray, same shape as ``tac``
        Integrals in concentration x **minutes** (the unit of the kinetic models).
    """
    frame_start_s, frame_duration_s = check_frames(frame_start_s, frame_duration_s,
                                                   fields=_FRAME_ARGS)
    fs_min = frame_start_s / _SEC_PER_MIN
    return _cum_mid(tac, fs_min, fs_min + frame_duration_s / _SEC_PER_MIN)


def frame_gaps(frame_start_s, frame_duration_s, min_gap_s=GAP_FLAG_S):
    """Long gaps in a frame schedule, as a note for a fit's flag ('' when none).

    A gap (the time between one frame's end and the next frame's start, or from injection to
    the first frame) is long when it exceeds ``min_gap_s`` or the duration of the longer of its
    neighbouring frames: the integrals then rest on a straight line over a stretch the scan did
    not measure.

    Parameters
    ----------
    frame_start_s, frame_duration_s : array-like
        Frames (s).
    min_gap_s : float, default=GAP_FLAG_S
        Gaps longer than this (s) are always named.

    Returns
    -------
    str
    """
    frame_start_s, frame_duration_s = check_frames(frame_start_s, frame_duration_s,
                                                   fields=_FRAME_ARGS)
    prev_end = np.concatenate([[0.0], (frame_start_s + frame_duration_s)[:-1]])
    gap = frame_start_s - prev_end
    neighbour = np.maximum(frame_duration_s, np.concatenate([[0.0], frame_duration_s[:-1]]))
    long = (gap > _GAP_TOL_S) & ((gap > min_gap_s) | (gap > neighbour))
    if not long.any():
        return ""
    spans = ", ".join(f"{g:.0f} s before the frame at {s:.0f} s" for g, s in
                      zip(gap[long], frame_start_s[long]))
    return f"long frame gap(s) bridged linearly: {spans}"


def _wls(X, y, w):
    """Weighted least squares of ``y`` on the columns of ``X`` (``w`` = None: ordinary).

    Returns (coef, cov, rss) with ``rss`` the weighted residual sum of squares and
    ``cov = (X' W X)^-1 rss / (n - p)``, as statsmodels' WLS.
    """
    sw = np.ones_like(y) if w is None else np.sqrt(w)
    Xw, yw = X * sw[:, None], y * sw
    coef, *_ = np.linalg.lstsq(Xw, yw, rcond=None)
    r = yw - Xw @ coef
    rss = float(r @ r)
    dof = max(y.size - X.shape[1], 1)
    cov = np.linalg.pinv(Xw.T @ Xw) * rss / dof
    return coef, cov, rss


def _tstar_selection(mid_min, tstar_s, tstar_frames, source):
    """Frames of the linear phase: mid-time ``>= tstar_s``, or the last ``tstar_frames`` frames.

    Both None: t* = :data:`DEFAULT_TSTAR_S`. Giving both, or fewer than 3 or more than the
    scan's frames as ``tstar_frames``, raises InputError; too late a ``tstar_s`` is flagged by
    the fit (fewer than 3 frames after t*).
    """
    n = mid_min.size
    if tstar_frames is None:
        t = DEFAULT_TSTAR_S if tstar_s is None else float(tstar_s)
        return mid_min >= t / _SEC_PER_MIN
    if tstar_s is not None:
        raise InputError(file=source, field="tstar_frames",
                         expected="t* either as tstar_s (s) or as tstar_frames (a count of last "
                                  "frames), not both; set the other to null",
                         found=f"tstar_s={tstar_s}, tstar_frames={tstar_frames}")
    k = float(tstar_frames)
    if not (k == int(k) and 3 <= k <= n):
        raise InputError(file=source, field="tstar_frames",
                         expected=f"a whole number of last frames from 3 to {n} (the scan's frames)",
                         found=f"{tstar_frames}")
    return np.arange(n) >= n - int(k)


def _frame_weights(weights, sel, source):
    """Weights of the selected frames (None stays None, i.e. ordinary least squares)."""
    if weights is None:
        return None
    return _weights(weights, sel.size, source)[sel]


def _tissue_tac(y, vb, inp):
    if vb is None or vb == 0:
        return y
    cb = inp.cb_mean if inp.cb_mean is not None else inp.cp.mean_frames
    return (y - vb * cb) / (1.0 - vb)


def logan_plasma(cp_t, cp, cb, frame_start_s, frame_duration_s, tac, tstar_s=None, vb=None,
                 vt_bounds=DEFAULT_VT_BOUNDS, source=None, *, weights=None, tstar_frames=None):
    """Logan graphical analysis with arterial input (Logan 1990).

    For the frames of the linear phase (mid-time ``>= tstar_s``, or the last ``tstar_frames``
    frames), regress ``int_0^t C_T / C_T(t)`` on ``int_0^t Cp / C_T(t)``; the slope is VT
    (mL/cm3). ``C_T(t)`` is the frame mean at the frame mid-time ``t``; ``int_0^t C_T`` is
    :func:`tissue_integral` (exact frame sums, gaps bridged linearly); ``int_0^t Cp`` is exact
    on the input.

    Parameters
    ----------
    cp_t, cp, cb, frame_start_s, frame_duration_s, tac, source
        As in :func:`one_tcm` (``cb`` only used when ``vb`` is given).
    tstar_s : float or None
        Start of the linear phase t* (s); None (and no ``tstar_frames``) = 30 min.
    vb : float or None
        If given, the TAC is corrected for blood, ``C_T = (C_PET - vB*Cb)/(1 - vB)``; None
        applies no correction (a vB of 5% then biases VT by a few %).
    vt_bounds : tuple of float
        Plausible VT range (mL/cm3).
    weights : array-like or None
        Per-frame weights (inverse variance up to a scale): weighted least squares on the
        frames after t*; None = ordinary least squares.
    tstar_frames : int or None
        t* as a count of last frames (at least 3), instead of ``tstar_s``; giving both raises
        InputError.

    Returns
    -------
    FitResult
        Estimates VT (mL/cm3, SE from the (weighted) least-squares covariance) and intercept
        (min); ``n_params`` 2. Long frame gaps (:func:`frame_gaps`) are named in ``flag``.
    """
    inp = _PlasmaInput(cp_t, cp, cb, frame_start_s, frame_duration_s, source)
    y = check_tac(tac, inp.n_frames, source=source)
    sel = _tstar_selection(inp.mid, tstar_s, tstar_frames, source)
    w = _frame_weights(weights, sel, source)
    names = ["VT", "intercept"]
    bad = _tac_precheck(y, "logan", names)
    if bad is not None:
        return bad
    ct = _tissue_tac(y, vb, inp)
    res = _linear_graphical("logan", ct, sel, inp.int_cp_mid, _cum_mid(ct, inp.start_min, inp.end_min),
                            vt_bounds, w=w)
    _gap_note(res, frame_start_s, frame_duration_s)
    return res


def _gap_note(res, frame_start_s, frame_duration_s):
    note = frame_gaps(frame_start_s, frame_duration_s)
    if note:
        _add_flag(res, note, fail=False)


def _linear_graphical(model, ct, sel, int_in, int_ct, vt_bounds, key="VT", plaus_label="VT", w=None):
    names = [key, "intercept"]
    if sel.sum() < 3:
        return _failed(model, names, f"fewer than 3 frames after t* ({int(sel.sum())})", 2)
    c = ct[sel]
    if np.any(c <= 0):
        return _failed(model, names, "non-positive TAC value after t*", 2)
    x = int_in[sel] / c
    yy = int_ct[sel] / c
    coef, cov, rss = _wls(np.column_stack([np.ones_like(x), x]), yy, w)
    est = {key: float(coef[1]), "intercept": float(coef[0])}
    se = {key: float(np.sqrt(cov[1, 1])), "intercept": float(np.sqrt(cov[0, 0]))}
    n = int(sel.sum())
    res = FitResult(model, est, se, aic=float(n * np.log(rss / n) + 4) if rss > 0 else -np.inf,
                    n_params=2, n_frames=n, rss=rss, fitted=coef[0] + coef[1] * x)
    if not np.isfinite(est[key]) or est[key] <= 0:
        _add_flag(res, f"non-positive {key}")
    else:
        _check_range(res, key, vt_bounds, plaus_label)
    return res


def ma1(cp_t, cp, cb, frame_start_s, frame_duration_s, tac, tstar_s=None, vb=None,
        vt_bounds=DEFAULT_VT_BOUNDS, source=None, *, weights=None, tstar_frames=None):
    """Ichise multilinear analysis MA1 (Ichise 2002).

    For the frames after t* (as in :func:`logan_plasma`), least squares (no intercept, weighted
    with ``weights``) of ``C_T(t) = a * int_0^t Cp + b * int_0^t C_T``; ``VT = -a/b`` (mL/cm3)
    with SE by the delta method from the covariance of (a, b). Integrals (gaps bridged),
    blood correction, t* and weights as in :func:`logan_plasma`, whose parameters these are.

    Returns
    -------
    FitResult
        Estimates VT (mL/cm3), a (mL/cm3/min), b (1/min); ``n_params`` 2.
    """
    inp = _PlasmaInput(cp_t, cp, cb, frame_start_s, frame_duration_s, source)
    y = check_tac(tac, inp.n_frames, source=source)
    sel = _tstar_selection(inp.mid, tstar_s, tstar_frames, source)
    w = _frame_weights(weights, sel, source)
    names = ["VT", "a", "b"]
    bad = _tac_precheck(y, "ma1", names)
    if bad is not None:
        return bad
    ct = _tissue_tac(y, vb, inp)
    if sel.sum() < 3:
        return _failed("ma1", names, f"fewer than 3 frames after t* ({int(sel.sum())})", 2)
    X = np.column_stack([inp.int_cp_mid[sel], _cum_mid(ct, inp.start_min, inp.end_min)[sel]])
    yy = ct[sel]
    coef, cov, rss = _wls(X, yy, w)
    n = yy.size
    a, b = coef
    vt = -a / b
    g = np.array([-1.0 / b, a / b ** 2])
    est = {"VT": float(vt), "a": float(a), "b": float(b)}
    se = {"VT": float(np.sqrt(max(g @ cov @ g, 0))), "a": float(np.sqrt(cov[0, 0])), "b": float(np.sqrt(cov[1, 1]))}
    res = FitResult("ma1", est, se, aic=float(n * np.log(rss / n) + 4) if rss > 0 else -np.inf,
                    n_params=2, n_frames=n, rss=rss, fitted=X @ coef)
    if not np.isfinite(vt) or vt <= 0 or b >= 0:
        _add_flag(res, "non-positive VT or b >= 0 (no washout)")
    else:
        _check_range(res, "VT", vt_bounds, "VT")
    _negative_note(res, y)
    _gap_note(res, frame_start_s, frame_duration_s)
    return res


# --------------------------------------------------------------------------------------------
# static measures
# --------------------------------------------------------------------------------------------
def suv(tac, frame_start_s, frame_duration_s, injected_dose_bq, weight_kg, window_s=(60 * 60.0, 90 * 60.0),
        source=None):
    """Standardised uptake value over a time window.

    ``SUV = mean C(window) [Bq/mL] / (injected dose [Bq] / body weight [g])`` (tissue density
    1 g/mL assumed). The window mean weights each frame by its overlap with the window (s).

    Returns
    -------
    FitResult
        Estimate 'SUV' (g/mL, i.e. unitless); no SE.
    """
    frame_start_s, frame_duration_s = check_frames(frame_start_s, frame_duration_s, source=source,
                                                   fields=_FRAME_ARGS)
    y = check_tac(tac, frame_start_s.size, source=source)
    dose, wt = float(injected_dose_bq), float(weight_kg)
    if not dose > 0:
        raise InputError(file=source, field="InjectedRadioactivity", expected="positive dose (Bq)", found=f"{dose}")
    if not 10 <= wt <= 400:
        raise InputError(file=source, field="BodyWeight", expected="body weight in kg (10-400)", found=f"{wt}")
    m = window_mean(y, frame_start_s, frame_duration_s, window_s, source=source)
    if m <= 0:
        return _failed("suv", ["SUV"], "non-positive mean concentration in window")
    return FitResult("suv", {"SUV": m / (dose / (wt * 1000.0))}, {"SUV": np.nan})


def suvr(target, reference, frame_start_s, frame_duration_s, window_s=(60 * 60.0, 90 * 60.0), source=None):
    """SUV ratio: window-mean target over window-mean reference.

    Parameters
    ----------
    target, reference : array-like
        Frame-mean TACs.
    frame_start_s, frame_duration_s : array-like
        Frames (s).
    window_s : tuple of float
        Averaging window (s), default 60-90 min. Frames are weighted by their overlap.

    Returns
    -------
    FitResult
        Estimate 'SUVR' (unitless); no SE. SUVR equals DVR (``VT_target/VT_reference``) only at
        true equilibrium. Once both regions reach transient equilibrium with a plasma curve
        clearing at rate lambda, a one-tissue region has ``C/Cp = K1/(k2 - lambda)``, so SUVR
        exceeds DVR; a slow region still loading (k2 close to lambda) gives SUVR below DVR.
    """
    frame_start_s, frame_duration_s = check_frames(frame_start_s, frame_duration_s, source=source,
                                                   fields=_FRAME_ARGS)
    t = check_tac(target, frame_start_s.size, source=source, name="target")
    r = check_tac(reference, frame_start_s.size, source=source, name="reference")
    mt = window_mean(t, frame_start_s, frame_duration_s, window_s, source=source)
    mr = window_mean(r, frame_start_s, frame_duration_s, window_s, source=source)
    if mr <= 0:
        return _failed("suvr", ["SUVR"], "non-positive reference mean in window")
    if mt <= 0:
        return _failed("suvr", ["SUVR"], "non-positive target mean in window")
    return FitResult("suvr", {"SUVR": mt / mr}, {"SUVR": np.nan})


# --------------------------------------------------------------------------------------------
# reference-tissue models
# --------------------------------------------------------------------------------------------
def _reference_grid(ref, frame_start_s, frame_duration_s, grid_step_s):
    """Piecewise-linear reference curve through (0, 0), (frame mid, frame mean) and held to the
    last frame end, resampled on a uniform grid in minutes (activity is assumed zero at injection,
    t = 0)."""
    fs_min = frame_start_s / _SEC_PER_MIN
    fe_min = (frame_start_s + frame_duration_s) / _SEC_PER_MIN
    step_min = grid_step_s / _SEC_PER_MIN
    mid = 0.5 * (fs_min + fe_min)
    tk = np.concatenate([[0.0], mid, [fe_min[-1]]])
    yk = np.concatenate([[0.0], ref, [ref[-1]]])
    n = int(np.ceil(fe_min[-1] / step_min - 1e-9)) + 1
    tg = np.arange(n) * step_min
    return _Grid(tg, np.interp(tg, tk, yk), fs_min, fe_min)


def srtm_basis(reference, frame_start_s, frame_duration_s, rates_per_min, grid_step_s=1.0):
    """SRTM basis functions: frame means of the reference convolved with ``exp(-k t)``.

    The reference is the piecewise-linear curve through the frame mid-points (zero at t = 0)
    that :func:`srtm` and :func:`srtm_model` use, on a ``grid_step_s`` grid.

    Parameters
    ----------
    reference : array-like
        Reference-region frame means.
    frame_start_s, frame_duration_s : array-like
        Frames (s).
    rates_per_min : array-like
        Rate constants ``k`` (1/min).
    grid_step_s : float, default=1.0

    Returns
    -------
    ndarray, shape (n_rates, n_frames)
    """
    frame_start_s, frame_duration_s = check_frames(frame_start_s, frame_duration_s,
                                                   fields=_FRAME_ARGS)
    r = check_tac(reference, frame_start_s.size, name="reference")
    g = _reference_grid(r, frame_start_s, frame_duration_s, grid_step_s)
    return np.array([g.conv_frame_means(float(k)) for k in np.ravel(rates_per_min)])


def srtm_model(reference, frame_start_s, frame_duration_s, R1, k2, BPND, grid_step_s=1.0):
    """Frame-mean SRTM prediction.

    ``C_T = R1 C_R + (k2 - R1 k2/(1+BPND)) C_R (*) exp(-k2/(1+BPND) t)``, k2 in 1/min. The
    ``R1 C_R`` term uses the measured frame means; the convolution uses a piecewise-linear
    reference curve through the frame mid-points (zero at t = 0) on a ``grid_step_s`` grid.
    """
    frame_start_s, frame_duration_s = check_frames(frame_start_s, frame_duration_s, source=None,
                                                   fields=_FRAME_ARGS)
    r = check_tac(reference, frame_start_s.size, source=None, name="reference")
    g = _reference_grid(r, frame_start_s, frame_duration_s, grid_step_s)
    k2a = k2 / (1 + BPND)
    return R1 * r + (k2 - R1 * k2a) * g.conv_frame_means(k2a)


def srtm(target, reference, frame_start_s, frame_duration_s, weights=None, bounds=None,
         bp_bounds=DEFAULT_BP_BOUNDS, grid_step_s=1.0, source=None):
    """Simplified reference tissue model (Lammertsma & Hume 1996).

    Model as in :func:`srtm_model`; its reference curve is linear between frame mid-points
    (from zero at t = 0), so a gap between frames is bridged, not counted as zero activity, and
    a long gap is named in ``flag`` (:func:`frame_gaps`). A basis-function search (Gunn 1997; 200 values of
    ``k2a = k2/(1+BPND)`` log-spaced within the bounds) gives starting values, then bounded NLS
    refines R1, k2 and BPND and gives their SEs.

    Parameters
    ----------
    target, reference : array-like
        Frame-mean TACs of the target and reference regions.
    frame_start_s, frame_duration_s : array-like
        Frames (s).
    weights : array-like or None
        Per-frame weights (inverse variance up to a scale).
    bounds : dict, optional
        Overrides of ``DEFAULT_BOUNDS['srtm']``.
    bp_bounds : tuple of float
        Plausible BPND range.
    grid_step_s : float
        Step of the reference interpolation grid (s).
    source : str, optional
        File name for error messages.

    Returns
    -------
    FitResult
        Estimates R1 (unitless), k2 (1/min), BPND, k2prime = k2/R1 (1/min, SE by delta method).
    """
    frame_start_s, frame_duration_s = check_frames(frame_start_s, frame_duration_s, source=source,
                                                   fields=_FRAME_ARGS)
    y = check_tac(target, frame_start_s.size, source=source, name="target")
    r = check_tac(reference, frame_start_s.size, source=source, name="reference")
    w = _weights(weights, frame_start_s.size, source)
    names = ["R1", "k2", "BPND"]
    out_names = names + ["k2prime"]
    bad = _tac_precheck(y, "srtm", out_names)
    if bad is not None:
        return bad
    if not np.any(r > 0):
        return _failed("srtm", out_names, "reference TAC has no positive values")
    lo, hi = _merge_bounds("srtm", bounds, names)
    g = _reference_grid(r, frame_start_s, frame_duration_s, grid_step_s)

    def pred(x):
        R1, k2, bp = x
        k2a = k2 / (1 + bp)
        return R1 * r + (k2 - R1 * k2a) * g.conv_frame_means(k2a)

    # basis functions
    sw = np.sqrt(w)
    best = None
    k2a_lo = max(lo[1] / (1 + hi[2]), 1e-4)
    k2a_hi = hi[1] / (1 + lo[2])
    for th in np.geomspace(k2a_lo, min(k2a_hi, 5.0), 200):
        B = np.column_stack([r, g.conv_frame_means(th)]) * sw[:, None]
        coef, *_ = np.linalg.lstsq(B, y * sw, rcond=None)
        rss = float(np.sum((B @ coef - y * sw) ** 2))
        if best is None or rss < best[0]:
            best = (rss, coef, th)
    starts = []
    if best is not None:
        _, (R1, c2), th = best
        k2 = c2 + R1 * th
        if R1 > 0 and k2 > 0:
            starts.append([R1, k2, k2 / th - 1])
    starts.append([1.0, 0.1, 1.0])
    res, cov = _nls(pred, y, w, names, lo, hi, starts)
    if res is None:
        return _failed("srtm", out_names, "optimiser failed", 3)
    derived = [("k2prime", lambda x: x[1] / x[0], lambda x: [-x[1] / x[0] ** 2, 1 / x[0], 0.0])]
    out = _nls_report("srtm", names, res, cov, y, w, lo, hi, derived)
    out.fitted = pred(res.x)
    _check_range(out, "BPND", bp_bounds, "BPND")
    _negative_note(out, y)
    _gap_note(out, frame_start_s, frame_duration_s)
    return out


def logan_reference(target, reference, frame_start_s, frame_duration_s, tstar_s=None, k2prime=None,
                    bp_bounds=DEFAULT_BP_BOUNDS, source=None, *, weights=None, tstar_frames=None,
                    k2prime_source=None):
    """Logan reference-tissue graphical analysis (Logan 1996).

    For the frames after t* (mid-time ``>= tstar_s`` or the last ``tstar_frames`` frames, as in
    :func:`logan_plasma`) regress ``int_0^t C_T / C_T(t)`` on
    ``(int_0^t C_R + C_R(t)/k2') / C_T(t)``; the slope is DVR and ``BPND = DVR - 1``. Both
    integrals are :func:`tissue_integral` (gaps between frames bridged linearly).

    Parameters
    ----------
    target, reference : array-like
        Frame-mean TACs.
    frame_start_s, frame_duration_s : array-like
        Frames (s).
    tstar_s : float or None
        t* (s); None (and no ``tstar_frames``) = 30 min.
    k2prime : float, 'srtm' or None
        Reference efflux rate k2' (1/min). A float is used as given (e.g. a population value).
        'srtm' estimates it as ``k2/R1`` from :func:`srtm` fitted to the same target and
        reference. None omits the ``C_R/k2'`` term (the approximation of Logan 1996, valid only
        when ``C_R/C_T`` is constant after t*); for a slowly equilibrating [11C]UCB-J target
        (k2 = 0.015/min) this underestimates DVR by about 20%, so prefer 'srtm' or a value.
        A k2' outside :data:`K2PRIME_BOUNDS` fails the fit with the value and its source in
        the flag.
    k2prime_source : str or None
        Where a float ``k2prime`` came from, written in the flag (e.g. "SRTM of cortical_gm").
    bp_bounds : tuple of float
        Plausible BPND range (DVR checked as 1 + range).
    weights : array-like or None
        Per-frame weights: weighted least squares after t* (also passed to SRTM for k2').
    tstar_frames : int or None
        t* as a count of last frames (at least 3), instead of ``tstar_s``.

    Returns
    -------
    FitResult
        Estimates DVR, BPND, intercept (min); SE of DVR and BPND from the (weighted) least
        squares. Long frame gaps are named in ``flag``.
    """
    frame_start_s, frame_duration_s = check_frames(frame_start_s, frame_duration_s, source=source,
                                                   fields=_FRAME_ARGS)
    y = check_tac(target, frame_start_s.size, source=source, name="target")
    r = check_tac(reference, frame_start_s.size, source=source, name="reference")
    names = ["DVR", "BPND", "intercept"]
    fs_m, fe_m = frame_start_s / _SEC_PER_MIN, (frame_start_s + frame_duration_s) / _SEC_PER_MIN
    mid = 0.5 * (fs_m + fe_m)
    sel = _tstar_selection(mid, tstar_s, tstar_frames, source)
    w = _frame_weights(weights, sel, source)
    bad = _tac_precheck(y, "logan_ref", names)
    if bad is not None:
        return bad
    int_r = _cum_mid(r, fs_m, fe_m)
    k2p_note = None
    if isinstance(k2prime, str):
        if k2prime != "srtm":  # one spelling, as the config check at DAG time
            raise InputError(file=source, field="k2prime", expected="a positive float (1/min), 'srtm' or None",
                             found=k2prime)
        fit = srtm(y, r, frame_start_s, frame_duration_s, weights=weights, source=source)
        if not (fit.fit_ok and np.isfinite(fit.estimates["k2prime"]) and fit.estimates["k2prime"] > 0):
            return _failed("logan_ref", names, f"k2' from SRTM not available ({fit.flag})", 2)
        k2prime = fit.estimates["k2prime"]
        k2p_note = f"k2' = {k2prime:.4g}/min from SRTM"
    if k2prime is not None:
        kp = float(k2prime)
        if not kp > 0:
            raise InputError(file=source, field="k2prime", expected="positive k2' (1/min)", found=f"{kp}")
        if k2prime_source is not None:
            k2p_note = f"k2' = {kp:.4g}/min from {k2prime_source}"
        if not K2PRIME_BOUNDS[0] <= kp <= K2PRIME_BOUNDS[1]:
            what = k2p_note or f"k2' = {kp:.4g}/min"
            return _failed("logan_ref", names, f"{what} outside the plausible "
                           f"{K2PRIME_BOUNDS[0]}-{K2PRIME_BOUNDS[1]}/min: set pet.k2prime to a "
                           "high-binding ROI or a population value", 2)
        int_r = int_r + r / kp
    dvr_bounds = (1 + bp_bounds[0], 1 + bp_bounds[1])
    res = _linear_graphical("logan_ref", y, sel, int_r, _cum_mid(y, fs_m, fe_m), dvr_bounds,
                            key="DVR", plaus_label="DVR", w=w)
    res.estimates = {"DVR": res.estimates["DVR"], "BPND": res.estimates["DVR"] - 1,
                     "intercept": res.estimates["intercept"]}
    res.se = {"DVR": res.se["DVR"], "BPND": res.se["DVR"], "intercept": res.se["intercept"]}
    if k2prime is None:
        _add_flag(res, "k2' not given: C_R/k2' term omitted", fail=False)
    elif k2p_note:
        _add_flag(res, k2p_note, fail=False)
    _gap_note(res, frame_start_s, frame_duration_s)
    return res


# --------------------------------------------------------------------------------------------
# batch helper
# --------------------------------------------------------------------------------------------
_PLASMA_MODELS = {"1tcm", "2tcm", "logan", "ma1"}
_REF_MODELS = {"srtm", "logan_ref", "suvr"}
_ALL_MODELS = _PLASMA_MODELS | _REF_MODELS | {"suv"}
_EXPECTED = {
    "1tcm": ["K1", "k2", "vB", "VT"],
    "2tcm": ["K1", "k2", "k3", "k4", "vB", "VT", "VND"],
    "logan": ["VT", "intercept"],
    "ma1": ["VT", "a", "b"],
    "srtm": ["R1", "k2", "BPND", "k2prime"],
    "logan_ref": ["DVR", "BPND", "intercept"],
    "suvr": ["SUVR"],
    "suv": ["SUV"],
}


def _tac_table(tacs, models, source):
    """Checked frames and region columns of a TAC table, and known model names."""
    if not isinstance(tacs, pd.DataFrame):
        raise InputError(file=source, field="tacs",
                         expected="a DataFrame with frame_start_s, frame_end and ROI columns")
    for col in ("frame_start", "frame_end"):
        if col not in tacs.columns:
            raise InputError(file=source, field=col, expected="column present (s)",
                             found=f"columns {list(tacs.columns)}")
    unknown = [m for m in models if m not in _ALL_MODELS]
    if unknown:
        raise InputError(field="models", expected=f"any of {sorted(_ALL_MODELS)}", found=f"{unknown}")
    start = as_1d(tacs["frame_start"], "frame_start", source)
    end = as_1d(tacs["frame_end"], "frame_end", source)
    frame_start_s, frame_duration_s = check_frames(start, end - start, source=source,
                                                   fields=("frame_start", "frame_end"))
    rois = [c for c in tacs.columns if c not in ("frame_start", "frame_end")]
    if not rois:
        raise InputError(file=source, field="ROI columns", expected="at least one region column")
    return frame_start_s, frame_duration_s, rois


def _plasma_arrays(input, models, frame_start_s, frame_duration_s, input_source):
    """``(time, parent_plasma, whole_blood or None)`` of the arterial input, checked once; all
    None when no plasma-input model is asked for."""
    if not any(m in _PLASMA_MODELS for m in models):
        return None, None, None
    if input is None:
        raise InputError(file=input_source, field="input",
                         expected=f"an arterial input for models {sorted(set(models) & _PLASMA_MODELS)}")
    for col in ("time", "parent_plasma"):
        if col not in input.columns:
            raise InputError(file=input_source, field=col, expected="column present in the input function",
                             found=f"columns {list(input.columns)}")
    cp_t = input["time"].to_numpy(float)
    cp = input["parent_plasma"].to_numpy(float)
    cb = input["whole_blood"].to_numpy(float) if "whole_blood" in input.columns else None
    _PlasmaInput(cp_t, cp, cb, frame_start_s, frame_duration_s, input_source)  # raises InputError
    return cp_t, cp, cb


def _k2prime_of_region(tacs, k2prime, models, rois, ref, frame_start_s, frame_duration_s, weights,
                       source):
    """k2' for reference Logan from SRTM of one region, when ``k2prime`` names a TAC column.

    Returns ``(k2prime, source label, failure flag)``: the value and 'SRTM of <region>' when the
    fit is usable, the failure's reason (every region's reference Logan then fails with it)
    when not, and ``k2prime`` unchanged for a number, 'srtm' or None.
    """
    if "logan_ref" not in models or not isinstance(k2prime, str) or k2prime == "srtm":
        return k2prime, None, None
    if k2prime not in tacs.columns:
        raise InputError(file=source, field="k2prime",
                         expected=f"'srtm', a number (1/min) or a region column {list(rois)}",
                         found=repr(k2prime))
    y = check_tac(tacs[k2prime], frame_start_s.size, source=source, name=k2prime)
    fit = srtm(y, ref, frame_start_s, frame_duration_s, weights=weights, source=source)
    kp = fit.estimates.get("k2prime", np.nan)
    if not (fit.fit_ok and np.isfinite(kp) and kp > 0):
        return None, None, f"k2' from SRTM of {k2prime} not available ({fit.flag})"
    return float(kp), f"SRTM of {k2prime}", None


def _model_fitters(frame_start_s, frame_duration_s, plasma, ref, *, source, bounds, vb, weights,
                   tstar_s, tstar_frames, suvr_window_s, k2prime, vt_bounds, bp_bounds,
                   injected_dose_bq, weight_kg, k2prime_source=None):
    """model name -> function of one region's TAC returning its :class:`FitResult`."""
    frames = (frame_start_s, frame_duration_s)
    cp_t, cp, cb = plasma
    tstar = {"tstar_s": tstar_s, "tstar_frames": tstar_frames, "weights": weights}
    return {
        "1tcm": lambda y: one_tcm(cp_t, cp, cb, *frames, y, vb=vb, weights=weights,
                                  bounds=bounds.get("1tcm"), vt_bounds=vt_bounds, source=source),
        "2tcm": lambda y: two_tcm(cp_t, cp, cb, *frames, y, vb=vb, weights=weights,
                                  bounds=bounds.get("2tcm"), vt_bounds=vt_bounds, source=source),
        "logan": lambda y: logan_plasma(cp_t, cp, cb, *frames, y, vb=vb, vt_bounds=vt_bounds,
                                        source=source, **tstar),
        "ma1": lambda y: ma1(cp_t, cp, cb, *frames, y, vb=vb, vt_bounds=vt_bounds, source=source,
                             **tstar),
        "srtm": lambda y: srtm(y, ref, *frames, weights=weights, bounds=bounds.get("srtm"),
                               bp_bounds=bp_bounds, source=source),
        "logan_ref": lambda y: logan_reference(y, ref, *frames, k2prime=k2prime,
                                               k2prime_source=k2prime_source,
                                               bp_bounds=bp_bounds, source=source, **tstar),
        "suvr": lambda y: suvr(y, ref, *frames, window_s=suvr_window_s, source=source),
        "suv": lambda y: suv(y, *frames, injected_dose_bq, weight_kg, window_s=suvr_window_s,
                             source=source),
    }


def fit_models(tacs, input=None, reference_roi=None, models=("1tcm", "logan", "ma1"), bounds=None,
               vb=None, tstar_s=None, suvr_window_s=(60 * 60.0, 90 * 60.0), k2prime="srtm",
               vt_bounds=DEFAULT_VT_BOUNDS, bp_bounds=DEFAULT_BP_BOUNDS, weights=None,
               injected_dose_bq=None, weight_kg=None, source=None, input_source=None,
               tstar_frames=None):
    """Fit several models to every region of a TAC table.

    Parameters
    ----------
    tacs : pandas.DataFrame
        Columns ``frame_start`` and ``frame_end`` (s) and one column per region (frame means).
    input : pandas.DataFrame or None
        Arterial input with columns ``time`` (s), ``parent_plasma`` and optionally
        ``whole_blood`` (as returned by :func:`prepost.pet.blood.metabolite_corrected_input`).
        Required for '1tcm', '2tcm', 'logan', 'ma1'.
    reference_roi : str or None
        Reference region column; required for 'srtm', 'logan_ref', 'suvr'. The reference
        region itself is not fitted with reference-tissue models.
    models : sequence of str
        Any of '1tcm', '2tcm', 'logan', 'ma1', 'srtm', 'logan_ref', 'suvr', 'suv'.
    bounds : dict, optional
        Per-model bound overrides, e.g. ``{'1tcm': {'k2': (1e-3, 1)}}``.
    vb : float or None
        Fixed blood volume for compartment models (None = fitted) and blood correction for
        Logan/MA1 (None = none).
    tstar_s : float or None
        t* of the graphical methods (Logan, MA1, reference Logan), s: the frames whose mid-time
        is ``>= tstar_s`` are regressed. None (and no ``tstar_frames``) = 30 min.
    tstar_frames : int or None
        t* as a count of last frames: the graphical methods regress the last ``tstar_frames``
        frames (3 to the number of frames). Exclusive with ``tstar_s``: giving both raises
        InputError, as does a count outside 3..n_frames, before any fit.
    suvr_window_s : tuple of float
        SUV/SUVR window (s).
    k2prime : float, str or None
        k2' (1/min) for 'logan_ref' (see :func:`logan_reference`): a number, 'srtm' (SRTM of
        each target region), a region column (SRTM of that region, one k2' for every target,
        as kinfitr's two-step approach; a failed fit fails every reference Logan with its
        reason) or None. Default 'srtm'.
    vt_bounds, bp_bounds : tuple of float
        Plausible ranges for VT (mL/cm3) and BPND.
    weights : array-like or None
        Per-frame weights (inverse variance up to a scale) for every fitted model: NLS
        (1TCM, 2TCM, SRTM) and weighted least squares (Logan, MA1, reference Logan).
    injected_dose_bq, weight_kg : float, optional
        Needed for 'suv'.
    source, input_source : str, optional
        File names of the TAC table and the input, used in messages.

    Returns
    -------
    pandas.DataFrame
        Tidy table with columns roi, model, parameter, estimate, se, aic, n_params, fit_ok,
        flag. A failed fit gives NaN estimates with ``fit_ok`` False and the reason in ``flag``;
        it never raises. Malformed inputs (missing columns, unknown models) raise InputError
        before any fitting.
    """
    models = [str(m).lower() for m in models]
    frame_start_s, frame_duration_s, rois = _tac_table(tacs, models, source)
    bounds = bounds or {}
    for m in bounds:
        if m not in DEFAULT_BOUNDS:
            raise InputError(field=f"bounds.{m}", expected=f"one of {sorted(DEFAULT_BOUNDS)}", found=m)
    plasma = _plasma_arrays(input, models, frame_start_s, frame_duration_s, input_source)
    ref = None
    if any(m in _REF_MODELS for m in models):
        if reference_roi is None or reference_roi not in tacs.columns:
            raise InputError(file=source, field="reference_roi",
                             expected=f"a region column for models {sorted(set(models) & _REF_MODELS)}",
                             found=f"{reference_roi!r}")
        ref = check_tac(tacs[reference_roi], frame_start_s.size, source=source, name=reference_roi)
    if any(m in ("logan", "ma1", "logan_ref") for m in models):  # t* checked once, before fitting
        mid_min = (frame_start_s + 0.5 * frame_duration_s) / _SEC_PER_MIN
        _tstar_selection(mid_min, tstar_s, tstar_frames, source)
    if weights is not None:
        _weights(weights, frame_start_s.size, source)
    if "suv" in models and (injected_dose_bq is None or weight_kg is None):
        raise InputError(field="injected_dose_bq/weight_kg", expected="dose (Bq) and weight (kg) for 'suv'")
    k2prime, k2p_source, k2p_failed = _k2prime_of_region(
        tacs, k2prime, models, rois, ref, frame_start_s, frame_duration_s, weights, source)
    fitters = _model_fitters(
        frame_start_s, frame_duration_s, plasma, ref, source=source, bounds=bounds, vb=vb,
        weights=weights, tstar_s=tstar_s, tstar_frames=tstar_frames, suvr_window_s=suvr_window_s,
        k2prime=k2prime, k2prime_source=k2p_source,
        vt_bounds=vt_bounds, bp_bounds=bp_bounds, injected_dose_bq=injected_dose_bq,
        weight_kg=weight_kg)
    if k2p_failed:
        fitters["logan_ref"] = lambda y: _failed("logan_ref", _EXPECTED["logan_ref"], k2p_failed, 2)

    rows = []
    for roi in rois:
        try:
            y = check_tac(tacs[roi], frame_start_s.size, source=source, name=roi)
        except InputError as exc:
            for m in models:
                rows += _failed(m, _EXPECTED[m], f"bad TAC: {exc}").rows(roi)
            continue
        for m in models:
            if m in _REF_MODELS and roi == reference_roi:
                continue
            try:
                res = fitters[m](y)
            except Exception as exc:  # a failed fit is reported, never raised
                res = _failed(m, _EXPECTED[m], f"error: {type(exc).__name__}: {exc}")
            rows += res.rows(roi)
    cols = ["roi", "model", "parameter", "estimate", "se", "aic", "n_params", "fit_ok", "flag"]
    return pd.DataFrame(rows, columns=cols)
