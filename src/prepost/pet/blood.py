"""Arterial blood data for dynamic PET (BIDS-PET ``_recording-<label>_blood.tsv/.json``).

Units
-----
* ``time`` is in seconds relative to the PET ``TimeZero`` (BIDS); a JSON ``time.Units`` of
  minutes is converted to seconds on reading.
* Radioactivity columns are converted to Bq/mL when their JSON ``Units`` is a known
  concentration unit (Bq/mL, kBq/mL, MBq/mL, nCi/mL, uCi/mL, mCi/mL; '/cc' accepted); values
  with no ``Units`` are kept as they are.
* ``metabolite_parent_fraction`` is a fraction in [0, 1].
* Parent-fraction models are written with t in **minutes**; rate constants are per minute.
  Public functions take times in seconds.

Data are assumed decay corrected to ``TimeZero`` (as for the PET data).

Interpolation and extrapolation rules
-------------------------------------
* Curves are piecewise linear through their samples, with value 0 at t = 0 when the first
  sample is later (no activity before injection).
* Beyond the last sample, within the tolerance of :func:`check_blood_covers_scan` (default
  300 s), a curve is extrapolated by a mono-exponential fitted (log-linear) to its last three
  positive samples, never increasing.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from prepost.errors import InputError
from prepost.pet.frames import check_frames, check_tac

__all__ = [
    "AVAIL_COLUMNS",
    "PARENT_FRACTION_MODELS",
    "concentration_factor",
    "read_blood",
    "check_time_units",
    "check_blood_covers_scan",
    "check_time_zero",
    "merge_recordings",
    "fit_parent_fraction",
    "parent_fraction_model",
    "metabolite_corrected_input",
    "shift_input",
    "fit_delay",
]

#: JSON availability flag -> TSV column it declares.
AVAIL_COLUMNS = {
    "PlasmaAvail": "plasma_radioactivity",
    "WholeBloodAvail": "whole_blood_radioactivity",
    "MetaboliteAvail": "metabolite_parent_fraction",
}
_RADIO_COLUMNS = ("plasma_radioactivity", "whole_blood_radioactivity")
_CONC_FACTORS = {  # to Bq/mL
    "bq/ml": 1.0, "kbq/ml": 1e3, "mbq/ml": 1e6, "gbq/ml": 1e9,
    "nci/ml": 37.0, "uci/ml": 3.7e4, "µci/ml": 3.7e4, "mci/ml": 3.7e7,
}
_TIME_FACTORS = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
                 "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0}
#: Default tolerance (s) for blood ending before the scan end; the gap is extrapolated.
DEFAULT_COVERAGE_TOLERANCE_S = 300.0


def _src(df, source):
    if source is not None:
        return str(source)
    return df.attrs.get("source") if isinstance(df, pd.DataFrame) else None


# --------------------------------------------------------------------------------------------
# reading and checks
# --------------------------------------------------------------------------------------------
def _load_json(json_path):
    if isinstance(json_path, dict):
        return dict(json_path), None
    try:
        return json.loads(Path(json_path).read_text()), str(json_path)
    except FileNotFoundError:
        raise InputError(file=json_path, field=None, expected="an existing JSON sidecar") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(file=json_path, field=None, expected="valid JSON", found=str(exc)) from None


def _units(meta, col):
    entry = meta.get(col)
    if isinstance(entry, dict):
        u = entry.get("Units")
        return None if u is None else str(u)
    return None


def _norm_unit(u):
    return re.sub(r"\s+", "", u).lower().replace("cc", "ml").replace("mcl", "ul").replace("μ", "µ")


def concentration_factor(units, *, source=None, field="Units"):
    """Factor from a radioactivity concentration unit (``kBq/mL``, ``nCi/cc`` ...) to Bq/mL.

    Raises
    ------
    InputError
        ``units`` is not a radioactivity concentration unit.
    """
    factor = _CONC_FACTORS.get(_norm_unit(str(units)))
    if factor is None:
        raise InputError(file=source, field=field, expected="a radioactivity concentration unit "
                         f"({', '.join(sorted(_CONC_FACTORS))})", found=repr(units))
    return factor


def read_blood(tsv_path, json_path, scan_end_s=None, coverage_tolerance_s=DEFAULT_COVERAGE_TOLERANCE_S):
    """Read a BIDS-PET blood recording.

    Parameters
    ----------
    tsv_path : str or path-like
        ``*_recording-<label>_blood.tsv`` ('n/a' marks a missing value).
    json_path : str or path-like or dict
        The matching sidecar. ``PlasmaAvail``, ``WholeBloodAvail`` and ``MetaboliteAvail``
        (booleans, required by BIDS-PET) declare which of ``plasma_radioactivity``,
        ``whole_blood_radioactivity`` and ``metabolite_parent_fraction`` must be present.
    scan_end_s : float, optional
        End of the last PET frame (s). When given, :func:`check_time_units` and
        :func:`check_blood_covers_scan` are applied.
    coverage_tolerance_s : float
        Passed to :func:`check_blood_covers_scan`.

    Returns
    -------
    pandas.DataFrame
        Column ``time`` (s) and the declared columns (radioactivity in Bq/mL when units are
        given, parent fraction in [0, 1]); missing values are NaN. ``attrs`` holds ``source``
        (the TSV path), ``json`` (the sidecar) and ``units``.

    Raises
    ------
    InputError
        Naming the file and column: missing ``time`` or declared column, non-numeric or
        negative values, parent fraction above 1, times not strictly increasing, unknown
        units, minutes-vs-seconds confusion or short coverage (when ``scan_end_s`` is given).
    """
    meta, json_src = _load_json(json_path)
    json_src = json_src or f"{tsv_path} (sidecar)"
    src = str(tsv_path)
    declared = []
    for flag, col in AVAIL_COLUMNS.items():
        if flag not in meta:
            raise InputError(file=json_src, field=flag, expected="a boolean (required by BIDS-PET)", found="missing")
        if not isinstance(meta[flag], bool):
            raise InputError(file=json_src, field=flag, expected="true or false", found=repr(meta[flag]))
        if meta[flag]:
            declared.append(col)
    try:
        raw = pd.read_csv(tsv_path, sep="\t", dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise InputError(file=src, field=None, expected="an existing blood TSV") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(file=src, field=None, expected="a tab-separated table", found=str(exc)) from None
    raw.columns = [c.strip() for c in raw.columns]
    for col in ["time"] + declared:
        if col not in raw.columns:
            why = "required" if col == "time" else f"declared by {json_src}"
            raise InputError(file=src, field=col, expected=f"column present ({why})",
                             found=f"columns {list(raw.columns)}")
    out = pd.DataFrame()
    units = {}
    for col in ["time"] + declared:
        text = raw[col].str.strip()
        missing = text.isin(["n/a", ""])
        vals = pd.to_numeric(text.where(~missing), errors="coerce")
        bad = vals.isna() & ~missing
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(file=src, field=col, expected="numeric values ('n/a' for missing)",
                             found=f"{text.iloc[i]!r} in row {i + 1}")
        v = vals.to_numpy(float)
        if col == "time":
            if missing.any():
                raise InputError(file=src, field="time", expected="a time in every row", found="n/a")
        elif np.all(np.isnan(v)):
            raise InputError(file=src, field=col, expected=f"values (declared by {json_src})", found="all n/a")
        if np.any(~np.isfinite(v[~np.isnan(v)])):
            raise InputError(file=src, field=col, expected="finite values", found="inf")
        neg = v < 0
        if np.any(neg):
            i = int(np.flatnonzero(neg)[0])
            raise InputError(file=src, field=col, expected="non-negative values", found=f"{v[i]} in row {i + 1}")
        u = _units(meta, col)
        if col == "time":
            u = u or "s"
            f = _TIME_FACTORS.get(u.strip().lower())
            if f is None:
                raise InputError(file=json_src, field="time.Units", expected="'s' or 'min'", found=u)
            v = v * f
            units[col] = "s"
        elif col == "metabolite_parent_fraction":
            mx = np.nanmax(v)
            if mx > 1.05:
                raise InputError(file=src, field=col, expected="fractions in [0, 1]",
                                 found=f"maximum {mx:g}" + (" (percent?)" if mx <= 100 else ""))
            units[col] = "unitless"
        else:
            if u is None:
                units[col] = "unknown"
            else:
                f = _CONC_FACTORS.get(_norm_unit(u))
                if f is None:
                    raise InputError(file=json_src, field=f"{col}.Units",
                                     expected=f"one of {sorted(_CONC_FACTORS)}", found=u)
                v = v * f
                units[col] = "Bq/mL"
        out[col] = v
    t = out["time"].to_numpy()
    d = np.diff(t)
    if np.any(d <= 0):
        i = int(np.flatnonzero(d <= 0)[0]) + 1
        raise InputError(file=src, field="time", expected="strictly increasing times",
                         found=f"{t[i]:g} s in row {i + 1} after {t[i - 1]:g} s")
    out.attrs.update(source=src, json=meta, units=units, json_source=json_src)
    if scan_end_s is not None:
        check_time_units(t, scan_end_s, src, declared_units=_units(meta, "time") or "s")
        check_blood_covers_scan(t, scan_end_s, src, tolerance_s=coverage_tolerance_s)
    return out


def check_time_units(times, scan_end_s, source, declared_units="s"):
    """Detect blood times in the wrong unit by comparing their range with the scan length.

    Parameters
    ----------
    times : array-like
        Blood sample times as read, converted to seconds.
    scan_end_s : float
        End of the last PET frame (s).
    source : str
        File name used in the error.
    declared_units : str
        The unit the sidecar declared (for the message).

    Raises
    ------
    InputError
        When the scan lasts more than 30 min and the last sample is before 200 s (times look like
        minutes labelled as seconds), or the last sample is after 20x the scan end (times look
        like seconds labelled as minutes, or milliseconds).
    """
    t = np.asarray(times, dtype=float)
    if t.size == 0:
        raise InputError(file=source, field="time", expected="at least one sample")
    last = float(np.nanmax(t))
    if scan_end_s > 1800.0 and last < 200.0:
        raise InputError(file=source, field="time",
                         expected=f"seconds (declared '{declared_units}') spanning the {scan_end_s / 60:.0f} min scan",
                         found=f"last sample at {last:g} s; the times look like minutes")
    if last > 20.0 * scan_end_s:
        raise InputError(file=source, field="time",
                         expected=f"times (declared '{declared_units}') within the {scan_end_s:g} s scan",
                         found=f"last sample at {last:g} s; wrong unit (seconds labelled minutes, or ms)?")


def check_blood_covers_scan(times, scan_end_s, source, tolerance_s=DEFAULT_COVERAGE_TOLERANCE_S):
    """Check that blood sampling lasts until the end of the scan.

    Parameters
    ----------
    times : array-like
        Sample times (s) of the curve that must cover the scan.
    scan_end_s : float
        End of the last PET frame (s).
    source : str
        File name used in the error.
    tolerance_s : float
        Allowed gap (s) between the last sample and the scan end; the gap is bridged by the
        mono-exponential extrapolation described in the module docstring.

    Raises
    ------
    InputError
        When ``max(times) < scan_end_s - tolerance_s``.
    """
    t = np.asarray(times, dtype=float)
    last = float(np.nanmax(t)) if t.size else -np.inf
    if last < scan_end_s - tolerance_s:
        raise InputError(file=source, field="time",
                         expected=f"blood samples until the scan end {scan_end_s:g} s (tolerance {tolerance_s:g} s)",
                         found=f"last sample at {last:g} s")


def _parse_clock(value, file, field):
    m = re.fullmatch(r"\s*(\d{1,2}):(\d{2}):(\d{2}(?:\.\d+)?)\s*", str(value))
    if not m:
        raise InputError(file=file, field=field, expected="a clock time hh:mm:ss", found=repr(value))
    h, mi, s = int(m.group(1)), int(m.group(2)), float(m.group(3))
    if h > 23 or mi > 59 or s >= 60:
        raise InputError(file=file, field=field, expected="a valid clock time hh:mm:ss", found=repr(value))
    return 3600 * h + 60 * mi + s


def check_time_zero(blood_json, pet_json, source=None, pet_source=None, tolerance_s=1.0):
    """Check that blood and PET times share the same ``TimeZero``.

    BIDS-PET requires ``TimeZero`` (hh:mm:ss) in the PET sidecar; blood times are relative to
    it. If the blood sidecar also carries ``TimeZero`` it must agree.

    Parameters
    ----------
    blood_json, pet_json : dict or path-like
        Sidecars (paths are read).
    source, pet_source : str, optional
        File names of the blood and PET sidecars for messages (default: the paths given).
    tolerance_s : float
        Allowed difference (s).

    Returns
    -------
    float
        PET ``TimeZero`` in seconds after midnight.

    Raises
    ------
    InputError
        PET ``TimeZero`` missing or malformed; blood ``TimeZero`` malformed; the two differ
        (the message names both files and both values).
    """
    bmeta, bsrc = _load_json(blood_json)
    pmeta, psrc = _load_json(pet_json)
    bsrc = str(source) if source is not None else (bsrc or "blood sidecar")
    psrc = str(pet_source) if pet_source is not None else (psrc or "PET sidecar")
    if "TimeZero" not in pmeta:
        raise InputError(file=psrc, field="TimeZero", expected="hh:mm:ss (required by BIDS-PET)", found="missing")
    tz_pet = _parse_clock(pmeta["TimeZero"], psrc, "TimeZero")
    if "TimeZero" in bmeta:
        tz_blood = _parse_clock(bmeta["TimeZero"], bsrc, "TimeZero")
        diff = abs(tz_blood - tz_pet)
        diff = min(diff, 86400 - diff)
        if diff > tolerance_s:
            raise InputError(file=f"{bsrc} and {psrc}", field="TimeZero",
                             expected="the same TimeZero in the blood and PET sidecars",
                             found=f"{bmeta['TimeZero']} in {bsrc} vs {pmeta['TimeZero']} in {psrc} ({diff:g} s apart)")
    return tz_pet


# --------------------------------------------------------------------------------------------
# merging recordings
# --------------------------------------------------------------------------------------------
def _dedup(df, src, name):
    if "time" not in df.columns:
        raise InputError(file=src, field="time", expected=f"column present in the {name} recording")
    df = df.sort_values("time", kind="stable")
    return df.groupby("time", as_index=False, sort=True).mean(numeric_only=True)


def merge_recordings(manual_df, autosampler_df, manual_source=None, autosampler_source=None):
    """Combine continuous (autosampler) and discrete (manual) blood samples.

    Rule
    ----
    * Whole blood and plasma radioactivity: autosampler samples up to the autosampler's last
      time ``t_end``; manual samples after ``t_end``. Manual radioactivity at ``t <= t_end`` is
      not used (the continuous curve has the better time resolution there).
    * Autosampler plasma: taken from the autosampler if it has ``plasma_radioactivity``,
      otherwise whole blood times the plasma/whole-blood ratio of the manual samples (all
      manual samples with both values, interpolated linearly in time, held constant outside
      their range).
    * Manual whole blood missing after ``t_end`` is plasma divided by that ratio.
    * ``metabolite_parent_fraction``: all manual samples (autosamplers do not measure it).
    * Duplicated times within a recording are averaged; rows at the same time are combined;
      the result is sorted by time.

    Parameters
    ----------
    manual_df, autosampler_df : pandas.DataFrame
        As returned by :func:`read_blood` (``time`` in s).
    manual_source, autosampler_source : str, optional
        File names for messages (default: ``df.attrs['source']``).

    Returns
    -------
    pandas.DataFrame
        Columns ``time``, ``whole_blood_radioactivity``, ``plasma_radioactivity``,
        ``metabolite_parent_fraction`` (NaN where a column has no sample at that time) and
        ``recording`` ('autosampler', 'manual' or 'both').
    """
    msrc = _src(manual_df, manual_source)
    asrc = _src(autosampler_df, autosampler_source)
    man = _dedup(manual_df, msrc, "manual")
    aut = _dedup(autosampler_df, asrc, "autosampler")
    if "whole_blood_radioactivity" not in aut.columns or aut["whole_blood_radioactivity"].notna().sum() < 2:
        raise InputError(file=asrc, field="whole_blood_radioactivity",
                         expected="an autosampler whole-blood curve (>= 2 samples)")
    aut = aut[aut["whole_blood_radioactivity"].notna()]
    t_end = float(aut["time"].max())
    ratio_t = ratio = None
    if {"plasma_radioactivity", "whole_blood_radioactivity"} <= set(man.columns):
        both = man.dropna(subset=["plasma_radioactivity", "whole_blood_radioactivity"])
        both = both[both["whole_blood_radioactivity"] > 0]
        if len(both):
            ratio_t = both["time"].to_numpy(float)
            ratio = (both["plasma_radioactivity"] / both["whole_blood_radioactivity"]).to_numpy(float)

    def pb_ratio(t):
        return np.interp(t, ratio_t, ratio)

    a_plasma = aut["plasma_radioactivity"].to_numpy(float) if "plasma_radioactivity" in aut.columns else None
    a_wb = aut["whole_blood_radioactivity"].to_numpy(float)
    at = aut["time"].to_numpy(float)
    if a_plasma is None or np.all(np.isnan(a_plasma)):
        if ratio is None:
            raise InputError(file=msrc, field="plasma_radioactivity/whole_blood_radioactivity",
                             expected="manual samples with both plasma and whole blood, to convert the "
                                      "autosampler whole blood to plasma")
        a_plasma = a_wb * pb_ratio(at)
    rows = pd.DataFrame({"time": at, "whole_blood_radioactivity": a_wb, "plasma_radioactivity": a_plasma,
                         "metabolite_parent_fraction": np.nan, "recording": "autosampler"})
    late = man[man["time"] > t_end]
    m_pl = late["plasma_radioactivity"].to_numpy(float) if "plasma_radioactivity" in late.columns \
        else np.full(len(late), np.nan)
    m_wb = late["whole_blood_radioactivity"].to_numpy(float) if "whole_blood_radioactivity" in late.columns \
        else np.full(len(late), np.nan)
    lt = late["time"].to_numpy(float)
    if ratio is not None and len(late):
        fill = np.isnan(m_wb) & ~np.isnan(m_pl)
        m_wb = np.where(fill, m_pl / pb_ratio(lt), m_wb)
    rows_late = pd.DataFrame({"time": lt, "whole_blood_radioactivity": m_wb, "plasma_radioactivity": m_pl,
                              "metabolite_parent_fraction": np.nan, "recording": "manual"})
    merged = pd.concat([rows, rows_late], ignore_index=True)
    if "metabolite_parent_fraction" in man.columns:
        pf = man.dropna(subset=["metabolite_parent_fraction"])[["time", "metabolite_parent_fraction"]]
        for t, f in zip(pf["time"].to_numpy(float), pf["metabolite_parent_fraction"].to_numpy(float)):
            hit = np.flatnonzero(np.isclose(merged["time"].to_numpy(float), t, rtol=0, atol=1e-6))
            if hit.size:
                merged.loc[hit[0], "metabolite_parent_fraction"] = f
                if merged.loc[hit[0], "recording"] != "manual":
                    merged.loc[hit[0], "recording"] = "both"
            else:
                merged.loc[len(merged)] = {"time": t, "whole_blood_radioactivity": np.nan,
                                           "plasma_radioactivity": np.nan, "metabolite_parent_fraction": f,
                                           "recording": "manual"}
    merged = merged.sort_values("time", kind="stable").reset_index(drop=True)
    merged.attrs["source"] = f"{asrc} + {msrc}"
    merged.attrs["autosampler_end_s"] = t_end
    return merged


# --------------------------------------------------------------------------------------------
# parent fraction
# --------------------------------------------------------------------------------------------
def _hill(tm, a, b, c):
    tb = np.power(np.clip(tm, 0, None), b)
    return 1.0 - (1.0 - a) * tb / (c + tb)


def _exponential(tm, b, c):
    return (1.0 - c) * np.exp(-b * tm) + c


def _biexponential(tm, a, b, c):
    return a * np.exp(-b * tm) + (1.0 - a) * np.exp(-c * tm)


#: name -> (function of t in min, parameter names, lower bounds, upper bounds, description)
PARENT_FRACTION_MODELS = {
    "hill": (_hill, ("a", "b", "c"), (0.0, 0.1, 1e-8), (1.0, 10.0, 1e8),
             "f = 1 - (1-a) t^b / (c + t^b); a plateau, b Hill exponent, c = (half-time in min)^b"),
    "exponential": (_exponential, ("b", "c"), (1e-5, 0.0), (10.0, 1.0),
                    "f = (1-c) exp(-b t) + c; b rate (1/min), c plateau"),
    "biexponential": (_biexponential, ("a", "b", "c"), (0.0, 1e-5, 1e-5), (1.0, 20.0, 20.0),
                      "f = a exp(-b t) + (1-a) exp(-c t); b >= c rates (1/min)"),
}


def parent_fraction_model(model, params):
    """Return ``f(t_seconds)`` for a named parent-fraction model and its parameters (t in min
    inside the formulas, see :data:`PARENT_FRACTION_MODELS`)."""
    if model not in PARENT_FRACTION_MODELS:
        raise InputError(field="parent fraction model", expected=f"one of {sorted(PARENT_FRACTION_MODELS)}",
                         found=repr(model))
    fun, names = PARENT_FRACTION_MODELS[model][:2]
    p = [float(params[k]) for k in names]

    def f(t_s):
        return fun(np.asarray(t_s, dtype=float) / 60.0, *p)

    return f


def fit_parent_fraction(t, f, model="hill", source=None):
    """Fit a parent-fraction model with ``f(0) = 1`` built in.

    Models (t in minutes, rates per minute):

    * 'hill': ``f = 1 - (1-a) t^b / (c + t^b)`` (kinfitr ``metab_hill`` with ppf0 = 1, no
      delay); ``a`` plateau, ``b`` Hill exponent, ``c^(1/b)`` the half-time (min) of the fall
      from 1 to ``a``.
    * 'exponential': ``f = (1-c) exp(-b t) + c`` (mono-exponential to a plateau ``c``).
    * 'biexponential': ``f = a exp(-b t) + (1-a) exp(-c t)`` with ``b >= c``.

    Parameters
    ----------
    t : array-like
        Sample times (s); NaN pairs are dropped.
    f : array-like
        Measured parent fractions in [0, 1].
    model : str
        'hill', 'exponential' or 'biexponential'.
    source : str, optional
        File name for messages.

    Returns
    -------
    dict
        ``model``, ``params`` (dict), ``se`` (dict; from ``s^2 (J^T J)^-1``), ``function``
        (callable of t in s), ``aic`` (``n log(RSS/n) + 2k``), ``rss``, ``n``, ``fit_ok``,
        ``flag``, ``description``.
    """
    if model not in PARENT_FRACTION_MODELS:
        raise InputError(file=source, field="parent fraction model",
                         expected=f"one of {sorted(PARENT_FRACTION_MODELS)}", found=repr(model))
    fun, names, lo, hi, desc = PARENT_FRACTION_MODELS[model]
    t = np.asarray(t, dtype=float).ravel()
    y = np.asarray(f, dtype=float).ravel()
    if t.size != y.size:
        raise InputError(file=source, field="metabolite_parent_fraction", expected=f"{t.size} values (one per time)",
                         found=f"{y.size}")
    keep = np.isfinite(t) & np.isfinite(y)
    t, y = t[keep], y[keep]
    k = len(names)
    if t.size < k + 1:
        raise InputError(file=source, field="metabolite_parent_fraction",
                         expected=f"at least {k + 1} samples for the '{model}' model", found=f"{t.size}")
    if np.any(y < 0) or np.any(y > 1.05):
        raise InputError(file=source, field="metabolite_parent_fraction", expected="fractions in [0, 1]")
    tm = t / 60.0
    lo, hi = np.array(lo), np.array(hi)
    plateau = float(np.clip(np.mean(y[tm >= np.quantile(tm, 0.75)]), 0.0, 1.0))
    if model == "hill":
        starts = [[min(plateau, 0.9) * 0.9, bb, th ** bb] for bb in (1.0, 2.0, 3.0) for th in (3.0, 10.0, 30.0)]
    elif model == "exponential":
        starts = [[bb, min(plateau, 0.9) * 0.9] for bb in (0.02, 0.1, 0.5)]
    else:
        starts = [[aa, bb, cc] for aa in (0.3, 0.7) for bb, cc in ((0.5, 0.01), (0.2, 0.02), (1.0, 0.05))]

    def resid(p):
        return fun(tm, *p) - y

    best = None
    for x0 in starts:
        x0 = np.clip(x0, lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo))
        try:
            r = least_squares(resid, x0, bounds=(lo, hi), method="trf", x_scale="jac",
                              xtol=1e-14, ftol=1e-14, gtol=1e-14, max_nfev=5000)
        except ValueError:
            continue
        if best is None or r.cost < best.cost:
            best = r
    if best is None:
        raise InputError(file=source, field="metabolite_parent_fraction", expected=f"data a '{model}' model can fit")
    p = best.x.copy()
    J = best.jac.copy()
    if model == "biexponential" and p[1] < p[2]:  # label the fast component b
        p = np.array([1 - p[0], p[2], p[1]])
        J = np.column_stack([-J[:, 0], J[:, 2], J[:, 1]])
    n = t.size
    rss = 2.0 * best.cost
    se = {nm: np.nan for nm in names}
    flags = []
    if n > k:
        try:
            cov = np.linalg.inv(J.T @ J) * rss / (n - k)
            se = {nm: float(np.sqrt(max(cov[i, i], 0.0))) for i, nm in enumerate(names)}
        except np.linalg.LinAlgError:
            flags.append("singular Jacobian: SE not available")
    tol = 1e-6 * (hi - lo)
    lo_s, hi_s = (lo, hi) if model != "biexponential" or best.x[1] >= best.x[2] else \
        (lo[[0, 2, 1]], hi[[0, 2, 1]])
    for i, nm in enumerate(names):
        if p[i] <= lo_s[i] + tol[i] or p[i] >= hi_s[i] - tol[i]:
            flags.append(f"{nm} at bound")
    if best.status <= 0:
        flags.append("non-convergence")
    params = {nm: float(v) for nm, v in zip(names, p)}
    return {
        "model": model,
        "params": params,
        "se": se,
        "function": parent_fraction_model(model, params),
        "aic": float(n * np.log(rss / n) + 2 * k) if rss > 0 else -np.inf,
        "rss": float(rss),
        "n": int(n),
        "fit_ok": best.status > 0,
        "flag": "; ".join(flags),
        "description": desc,
    }


# --------------------------------------------------------------------------------------------
# input function
# --------------------------------------------------------------------------------------------
def _curve_function(t, v, src, field):
    """Piecewise-linear curve with 0 at t <= 0 and exponential extrapolation after the end."""
    keep = np.isfinite(t) & np.isfinite(v)
    t, v = t[keep], v[keep]
    if t.size < 2:
        raise InputError(file=src, field=field, expected="at least 2 samples")
    if t[0] > 0:
        t = np.concatenate([[0.0], t])
        v = np.concatenate([[0.0], v])
    tail = (t > 0) & (v > 0)
    tt, vv = t[tail][-3:], v[tail][-3:]
    lam = 0.0
    if tt.size >= 2:
        lam = max(-np.polyfit(tt, np.log(vv), 1)[0], 0.0)  # 1/s
    t_last, v_last = t[-1], v[-1]

    def fun(tq):
        tq = np.asarray(tq, dtype=float)
        out = np.interp(tq, t, v, left=0.0)
        after = tq > t_last
        out = np.where(after, v_last * np.exp(-lam * np.clip(tq - t_last, 0, None)), out)
        return np.where(tq < t[0], 0.0, out)

    return fun, float(t_last)


def metabolite_corrected_input(blood, model="hill", delay=0.0, grid_step=1.0, scan_end_s=None,
                               coverage_tolerance_s=DEFAULT_COVERAGE_TOLERANCE_S, source=None):
    """Metabolite-corrected arterial plasma input on a uniform grid.

    ``parent_plasma(t) = plasma(t - delay) * f(t - delay)`` with ``plasma`` the piecewise-linear
    total plasma curve and ``f`` the parent fraction; ``whole_blood`` is shifted the same way.

    Parameters
    ----------
    blood : pandas.DataFrame
        From :func:`read_blood` or :func:`merge_recordings`: ``time`` (s),
        ``plasma_radioactivity`` and optionally ``whole_blood_radioactivity`` and
        ``metabolite_parent_fraction`` (NaN rows are ignored per column).
    model : str, dict, callable or None
        Parent fraction: a model name (fitted here to ``metabolite_parent_fraction``), the dict
        returned by :func:`fit_parent_fraction`, a callable ``f(t_seconds)``, or None for no
        metabolite correction (f = 1).
    delay : float
        Delay (s) of the input at the tissue relative to the sampling site; positive shifts the
        curves later. See :func:`fit_delay`.
    grid_step : float
        Grid step (s), default 1 s.
    scan_end_s : float, optional
        Grid end (s), normally the end of the last frame; checked with
        :func:`check_blood_covers_scan` and bridged by exponential extrapolation. Default: the
        last plasma sample.
    coverage_tolerance_s : float
        Allowed gap between the last blood sample and ``scan_end_s``.
    source : str, optional
        File name for messages (default ``blood.attrs['source']``).

    Returns
    -------
    pandas.DataFrame
        Columns ``time`` (s), ``plasma``, ``parent_fraction``, ``parent_plasma`` and
        ``whole_blood`` (only when whole blood is available); ``attrs`` holds ``source``,
        ``delay_s`` and the parent-fraction fit (``parent_fraction_fit``).
    """
    src = _src(blood, source)
    if "time" not in blood.columns:
        raise InputError(file=src, field="time", expected="column present")
    if "plasma_radioactivity" not in blood.columns or blood["plasma_radioactivity"].notna().sum() < 2:
        raise InputError(file=src, field="plasma_radioactivity",
                         expected="plasma samples (PlasmaAvail true, or merged from a manual recording)")
    if not grid_step > 0:
        raise InputError(file=src, field="grid_step", expected="a positive step (s)", found=f"{grid_step}")
    t = blood["time"].to_numpy(float)
    pl = blood["plasma_radioactivity"].to_numpy(float)
    plasma_fun, t_last = _curve_function(t, pl, src, "plasma_radioactivity")
    end = t_last if scan_end_s is None else float(scan_end_s)
    if scan_end_s is not None:
        check_blood_covers_scan([t_last], end, src, tolerance_s=coverage_tolerance_s)
    fit = None
    if model is None:
        pf_fun = lambda tq: np.ones_like(np.asarray(tq, dtype=float))  # noqa: E731
    elif callable(model):
        pf_fun = model
    elif isinstance(model, dict):
        pf_fun = model["function"]
        fit = model
    else:
        if "metabolite_parent_fraction" not in blood.columns:
            raise InputError(file=src, field="metabolite_parent_fraction",
                             expected=f"parent fractions to fit the '{model}' model (MetaboliteAvail true)")
        fit = fit_parent_fraction(t, blood["metabolite_parent_fraction"].to_numpy(float), model, source=src)
        pf_fun = fit["function"]
    n = int(np.ceil(end / grid_step - 1e-9)) + 1
    tg = np.arange(n) * float(grid_step)
    ts = tg - float(delay)
    frac = np.clip(np.asarray(pf_fun(np.clip(ts, 0, None)), dtype=float), 0.0, 1.0)
    plasma = plasma_fun(ts)
    out = pd.DataFrame({"time": tg, "plasma": plasma, "parent_fraction": frac, "parent_plasma": plasma * frac})
    if "whole_blood_radioactivity" in blood.columns and blood["whole_blood_radioactivity"].notna().sum() >= 2:
        wb_fun, wb_last = _curve_function(t, blood["whole_blood_radioactivity"].to_numpy(float), src,
                                          "whole_blood_radioactivity")
        if scan_end_s is not None:
            check_blood_covers_scan([wb_last], end, src, tolerance_s=coverage_tolerance_s)
        out["whole_blood"] = wb_fun(ts)
    else:
        warnings.warn(f"{src}: no whole-blood curve; blood-volume terms will use plasma", stacklevel=2)
    out.attrs.update(source=src, delay_s=float(delay), parent_fraction_fit=fit)
    return out


def shift_input(input_df, delay_s):
    """Shift every curve of an input table by ``delay_s`` seconds on its own grid.

    ``new(t) = old(t - delay)``: zero before the shifted start, last value held after the end
    (only the early part matters for delay fitting).
    """
    t = input_df["time"].to_numpy(float)
    out = input_df.copy()
    for col in input_df.columns:
        if col == "time":
            continue
        v = input_df[col].to_numpy(float)
        out[col] = np.interp(t - delay_s, t, v, left=0.0 if col != "parent_fraction" else 1.0, right=v[-1])
    out.attrs = dict(input_df.attrs)
    out.attrs["delay_s"] = float(input_df.attrs.get("delay_s", 0.0)) + float(delay_s)
    return out


def fit_delay(input_df, tac, frame_start_s, frame_duration_s, delays_s=None, fit_end_s=600.0, source=None):
    """Estimate the blood-to-tissue delay from the early part of a whole-brain TAC.

    For each candidate delay the input is shifted (:func:`shift_input`) and a 1TCM with vB is
    fitted to the frames ending by ``fit_end_s``; the delay with the smallest residual sum of
    squares is returned (grid search, resolution = the spacing of ``delays_s``).

    Parameters
    ----------
    input_df : pandas.DataFrame
        From :func:`metabolite_corrected_input` with ``delay=0``.
    tac : array-like
        Whole-brain (or large-region) frame means.
    frame_start_s, frame_duration_s : array-like
        Frames (s).
    delays_s : array-like, optional
        Candidate delays (s); default -30 to 30 s in 1 s steps.
    fit_end_s : float
        Only frames ending at or before this time (s) are used; default 10 min.
    source : str, optional
        File name of the TAC for messages.

    Returns
    -------
    dict
        ``delay_s`` (best delay, s), ``delays_s``, ``rss`` (per candidate, NaN when a fit
        failed) and ``fit`` (the :class:`~prepost.pet.kinetics.FitResult` at the best delay).
    """
    from prepost.pet.kinetics import one_tcm

    frame_start_s, frame_duration_s = check_frames(frame_start_s, frame_duration_s, source=source)
    y = check_tac(tac, frame_start_s.size, source=source)
    sel = frame_start_s + frame_duration_s <= fit_end_s + 1e-6
    if sel.sum() < 5:
        raise InputError(file=source, field="frame_start",
                         expected=f"at least 5 frames ending by {fit_end_s:g} s for delay fitting",
                         found=f"{int(sel.sum())}")
    delays = np.arange(-30.0, 31.0, 1.0) if delays_s is None else np.asarray(delays_s, dtype=float)
    keep = input_df["time"].to_numpy(float) <= fit_end_s + 60.0
    base = input_df.loc[keep].reset_index(drop=True)
    cb_col = "whole_blood" if "whole_blood" in base.columns else None
    rss = np.full(delays.size, np.nan)
    fits = [None] * delays.size
    for i, d in enumerate(delays):
        sh = shift_input(base, d)
        try:
            r = one_tcm(sh["time"], sh["parent_plasma"], None if cb_col is None else sh[cb_col],
                        frame_start_s[sel], frame_duration_s[sel], y[sel], source=source)
        except InputError:
            raise
        except Exception:  # a failed candidate is skipped
            continue
        if np.isfinite(r.rss):
            rss[i] = r.rss
            fits[i] = r
    if np.all(np.isnan(rss)):
        raise InputError(file=source, field="tac", expected="an early TAC that a 1TCM can fit for delay estimation")
    i = int(np.nanargmin(rss))
    return {"delay_s": float(delays[i]), "delays_s": delays, "rss": rss, "fit": fits[i]}
