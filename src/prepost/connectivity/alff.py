"""ALFF and fALFF per parcel (from time series) or per voxel (from a 4D image and a mask).

Design follows XCP-D's ``restingstate.compute_alff``: the amplitude spectrum is the square root of
the one-sided power spectrum with "spectrum" scaling (``scipy.signal.periodogram(...,
scaling='spectrum')``), ALFF is its mean over the band (default 0.01-0.08 Hz) and, as in Zou et
al. (2008), fALFF is the band's amplitude sum over the amplitude sum of the whole spectrum.
When volumes were censored (``sample_mask``), the power spectrum of the retained volumes is the
Lomb-Scargle periodogram at the same frequencies, rescaled to the same units.

Conventions (documented differences to XCP-D):

* Frequencies are the Fourier frequencies of the full run, ``k / (n_volumes * t_r)`` for
  ``k = 1 .. (n_volumes - 1) // 2``: the DC and Nyquist bins are left out of both methods (the
  series are demeaned, and Lomb-Scargle is undefined at Nyquist on a regular grid).
* The band holds every frequency with ``low <= f <= high`` (XCP-D takes the bins nearest the
  cut-offs, excluding the upper one).
* Amplitudes are in the data's units: a sine of amplitude ``A`` on a Fourier frequency has
  amplitude ``A / sqrt(2)`` (its RMS) in its bin and 0 elsewhere, so its ALFF is
  ``A / (sqrt(2) * n_band_bins)`` when it lies in the band, and its fALFF is 1.
* Lomb-Scargle units: scipy's unnormalised periodogram ``P_LS`` of ``n`` retained samples is
  converted with ``2 P_LS / n``; for an uncensored run this equals the periodogram exactly.
"""

from __future__ import annotations

import numpy as np

from prepost.errors import InputError

__all__ = [
    "DEFAULT_BAND",
    "lomb_scargle_power",
    "amplitude_spectrum",
    "compute_alff",
    "alff_maps",
]

DEFAULT_BAND = (0.01, 0.08)


def _frequencies(n_volumes, t_r):
    k = np.arange(1, (n_volumes - 1) // 2 + 1)
    return k / (n_volumes * t_r)


def _as_bool_mask(sample_mask, n_volumes):
    if sample_mask is None:
        return None
    sm = np.asarray(sample_mask)
    if sm.dtype == bool:
        if sm.size != n_volumes:
            raise InputError(None, "sample_mask", f"{n_volumes} booleans (one per volume)",
                             sm.size)
        return sm
    if sm.size and (sm.min() < 0 or sm.max() >= n_volumes):
        raise InputError(None, "sample_mask", f"volume indices in [0, {n_volumes})",
                         f"[{sm.min()}, {sm.max()}]")
    out = np.zeros(n_volumes, bool)
    out[sm.astype(int)] = True
    return out


def lomb_scargle_power(times, y, freqs):
    """Classical (unnormalised) Lomb-Scargle periodogram of many series at once.

    ``y`` is (n_samples, n_series) and is used as given (demean it first). Equals
    ``scipy.signal.lombscargle(times, y[:, j], 2 * pi * freqs)`` for each column; written here
    because scipy evaluates one series per call, which is too slow for voxel maps.
    """
    t = np.asarray(times, float)
    w = 2 * np.pi * np.asarray(freqs, float)
    y = np.asarray(y, float).reshape(len(t), -1)
    wt = np.outer(w, t)  # (F, n)
    tau = np.arctan2(np.sin(2 * wt).sum(1), np.cos(2 * wt).sum(1)) / (2 * w)
    arg = wt - (w * tau)[:, None]
    c, s = np.cos(arg), np.sin(arg)
    cc = (c**2).sum(1)[:, None]
    ss = (s**2).sum(1)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        p = 0.5 * ((c @ y) ** 2 / cc + (s @ y) ** 2 / ss)
    return p  # (F, n_series)


def amplitude_spectrum(timeseries, t_r, sample_mask=None):
    """One-sided amplitude spectrum (sqrt of 'spectrum'-scaled power) of each column.

    Returns ``(freqs, amplitude)`` with amplitude of shape (n_freqs, n_series).
    """
    x = np.asarray(timeseries, float)
    if x.ndim == 1:
        x = x[:, None]
    n = x.shape[0]
    if t_r is None or t_r <= 0:
        raise InputError(None, "t_r", "the repetition time in seconds (> 0)", t_r)
    if n < 4:
        raise InputError(None, "timeseries", "at least 4 volumes", n)
    freqs = _frequencies(n, t_r)
    mask = _as_bool_mask(sample_mask, n)
    if mask is None or mask.all():
        y = x - x.mean(axis=0)
        spec = np.fft.rfft(y, axis=0)[1:len(freqs) + 1]
        power = 2.0 * np.abs(spec) ** 2 / n**2
    else:
        if mask.sum() < 4:
            raise InputError(None, "sample_mask", "at least 4 retained volumes", int(mask.sum()))
        y = x[mask] - x[mask].mean(axis=0)
        times = np.arange(n)[mask] * t_r
        power = 2.0 * lomb_scargle_power(times, y, freqs) / mask.sum()
    return freqs, np.sqrt(np.maximum(power, 0.0))


def compute_alff(timeseries, t_r, band=DEFAULT_BAND, sample_mask=None):
    """ALFF and fALFF of each column of a ``(n_volumes, n_series)`` array.

    Parameters
    ----------
    timeseries : array (n_volumes,) or (n_volumes, n_series)
        Full-length series (censored volumes included; they are ignored when ``sample_mask``
        marks them). All-NaN or constant columns give NaN.
    t_r : float
        Repetition time (s).
    band : (low, high)
        Frequency band in Hz.
    sample_mask : boolean array (n_volumes,) or integer indices of retained volumes, or None
        Given and not all True: Lomb-Scargle on the retained volumes.

    Returns
    -------
    alff, falff : arrays (n_series,)
    """
    x = np.asarray(timeseries, float)
    one = x.ndim == 1
    x = x[:, None] if one else x
    lo, hi = float(band[0]), float(band[1])
    if not 0 <= lo < hi:
        raise InputError(None, "band", "0 <= low < high (Hz)", band)
    mask = _as_bool_mask(sample_mask, x.shape[0])
    rows = slice(None) if mask is None else mask
    finite = np.isfinite(x[rows]).all(axis=0)
    ok = finite & (np.std(np.where(finite, x[rows], 0.0), axis=0) > 0)
    alff = np.full(x.shape[1], np.nan)
    falff = np.full(x.shape[1], np.nan)
    if ok.any():
        xx = np.where(np.isfinite(x[:, ok]), x[:, ok], 0.0)
        freqs, amp = amplitude_spectrum(xx, t_r, mask)
        sel = (freqs >= lo) & (freqs <= hi)
        if not sel.any():
            raise InputError(None, "band", f"at least one frequency of the run "
                             f"({freqs[0]:.4f}-{freqs[-1]:.4f} Hz in steps of {freqs[0]:.4f})",
                             band)
        alff[ok] = amp[sel].mean(axis=0)
        total = amp.sum(axis=0)
        falff[ok] = np.where(total > 0, amp[sel].sum(axis=0) / np.where(total > 0, total, 1), np.nan)
    return (alff[0], falff[0]) if one else (alff, falff)


def alff_maps(img, mask_img, t_r=None, band=DEFAULT_BAND, sample_mask=None, chunk=20000,
              n_volumes=None):
    """Voxel-wise ALFF and fALFF images from a 4D image inside ``mask_img``.

    ``t_r`` defaults to the image header's fourth zoom. ``n_volumes``: the length of the full run
    when ``img`` holds only the retained volumes (censored volumes removed); ``sample_mask`` then
    gives the retained positions (indices or booleans of length ``n_volumes``). Returns
    ``(alff_img, falff_img)``; voxels outside the mask are 0, constant voxels inside it NaN.
    """
    from nilearn import image, masking

    img = image.check_niimg_4d(img)
    if t_r is None:
        zooms = img.header.get_zooms()
        t_r = float(zooms[3]) if len(zooms) > 3 else None
    if not t_r or t_r <= 0:
        raise InputError(None, "t_r", "a repetition time (argument or 4th header zoom)", t_r)
    mask_img = image.resample_to_img(image.check_niimg_3d(mask_img), img, interpolation="nearest",
                                     force_resample=True, copy_header=True)
    data = masking.apply_mask(img, mask_img, dtype=np.float64)  # (T, n_voxels)
    if n_volumes is not None and int(n_volumes) != data.shape[0]:
        keep = _as_bool_mask(sample_mask, int(n_volumes))
        if keep is None or int(keep.sum()) != data.shape[0]:
            raise InputError(None, "sample_mask", f"{data.shape[0]} retained volumes of "
                             f"{n_volumes} (one per volume of the image)",
                             None if keep is None else int(keep.sum()))
        full = np.zeros((int(n_volumes), data.shape[1]))
        full[keep] = data
        data = full
    alff = np.empty(data.shape[1])
    falff = np.empty(data.shape[1])
    for start in range(0, data.shape[1], chunk):
        sl = slice(start, start + chunk)
        alff[sl], falff[sl] = compute_alff(data[:, sl], t_r, band, sample_mask)
    return masking.unmask(alff, mask_img), masking.unmask(falff, mask_img)
