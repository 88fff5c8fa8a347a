"""ALFF/fALFF: closed-form sine amplitudes, Lomb-Scargle vs FFT, voxel maps."""

import nibabel as nib
import numpy as np
import pytest
from scipy import signal

from prepost.connectivity import alff
from prepost.errors import InputError

T, TR = 200, 2.0  # Fourier spacing 1/400 Hz: 0.05 Hz is bin 20, 0.15 Hz bin 60
t = np.arange(T) * TR
N_BAND = 29       # bins 4..32 = 0.01..0.08 Hz inclusive


def _sines(A=3.0):
    return np.c_[A * np.sin(2 * np.pi * 0.05 * t + 0.3), A * np.sin(2 * np.pi * 0.15 * t + 1.0)]


def test_sine_in_band_vs_out_of_band_closed_form():
    a, f = alff.compute_alff(_sines(3.0) + 10.0, TR)  # an offset changes nothing
    assert a[0] == pytest.approx(3.0 / np.sqrt(2) / N_BAND, rel=1e-10)
    assert f[0] == pytest.approx(1.0, abs=1e-10)
    assert a[1] == pytest.approx(0.0, abs=1e-12)
    assert f[1] == pytest.approx(0.0, abs=1e-12)


def test_amplitude_spectrum_matches_scipy_periodogram():
    x = np.random.default_rng(0).standard_normal((T, 3))
    freqs, amp = alff.amplitude_spectrum(x, TR)
    f_ref, p_ref = signal.periodogram(x, fs=1 / TR, scaling="spectrum", axis=0, detrend="constant")
    assert np.allclose(freqs, f_ref[1:len(freqs) + 1])
    assert np.allclose(amp**2, p_ref[1:len(freqs) + 1], rtol=1e-10, atol=1e-14)


def test_lomb_scargle_matches_scipy_and_fft_when_uncensored():
    x = np.random.default_rng(1).standard_normal((T, 4))
    y = x - x.mean(0)
    freqs = np.arange(1, 100) / (T * TR)
    ours = alff.lomb_scargle_power(t, y, freqs)
    for j in range(4):
        ref = signal.lombscargle(t, y[:, j], 2 * np.pi * freqs)
        assert np.allclose(ours[:, j], ref, rtol=1e-8, atol=1e-12)
    # uncensored: Lomb-Scargle path == FFT path
    _, amp_fft = alff.amplitude_spectrum(x, TR)
    amp_ls = np.sqrt(2 * ours / T)
    assert np.allclose(amp_ls, amp_fft, rtol=1e-8, atol=1e-12)


def test_censored_lomb_scargle():
    rng = np.random.default_rng(2)
    keep = np.ones(T, bool)
    keep[rng.choice(T, 20, replace=False)] = False
    x = _sines(2.0)
    a, f = alff.compute_alff(x, TR, sample_mask=keep)
    a_idx, f_idx = alff.compute_alff(x, TR, sample_mask=np.flatnonzero(keep))
    assert np.allclose(a, a_idx) and np.allclose(f, f_idx)
    # irregular sampling leaks amplitude to other frequencies, but the peak stays put, the
    # in-band sine keeps much more band amplitude than white noise (~0.28) and the 0.15 Hz one little
    freqs, amp = alff.amplitude_spectrum(x, TR, sample_mask=keep)
    assert freqs[amp[:, 0].argmax()] == pytest.approx(0.05) and freqs[amp[:, 1].argmax()] == 0.15
    assert amp[19, 0] == pytest.approx(2.0 / np.sqrt(2), rel=0.1)
    assert f[0] > 0.4 and f[1] < 0.25 and f[0] > 2 * f[1]
    assert a[0] > 1.5 * a[1]
    # censored volumes do not matter, whatever they hold
    x2 = x.copy()
    x2[~keep] = 1e6
    assert np.allclose(alff.compute_alff(x2, TR, sample_mask=keep)[0], a)
    # white noise: close to the uncensored estimate
    z = rng.standard_normal((T, 200))
    full = alff.compute_alff(z, TR)[0].mean()
    cens = alff.compute_alff(z, TR, sample_mask=keep)[0].mean()
    assert cens == pytest.approx(full, rel=0.1)


def test_nan_columns_and_bad_arguments():
    x = _sines()
    x[:, 1] = np.nan
    a, f = alff.compute_alff(x, TR)
    assert np.isfinite(a[0]) and np.isnan(a[1]) and np.isnan(f[1])
    with pytest.raises(InputError):
        alff.compute_alff(x, TR, band=(0.08, 0.01))
    with pytest.raises(InputError):
        alff.compute_alff(x, None)
    with pytest.raises(InputError):
        alff.compute_alff(x, TR, sample_mask=np.ones(T - 1, bool))


def test_voxel_maps():
    shape = (4, 4, 3)
    data = np.zeros(shape + (T,), np.float32)
    data[:2] = 3.0 * np.sin(2 * np.pi * 0.05 * t)
    data[2:] = 3.0 * np.sin(2 * np.pi * 0.15 * t)
    data += 100.0
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    img = nib.Nifti1Image(data, aff)
    img.header.set_zooms((3.0, 3.0, 3.0, TR))
    mask = np.ones(shape, np.uint8)
    mask[0, 0, 0] = 0
    a_img, f_img = alff.alff_maps(img, nib.Nifti1Image(mask, aff))
    a, f = a_img.get_fdata(), f_img.get_fdata()
    assert a[0, 0, 0] == 0
    assert np.allclose(a[1, :, :], 3.0 / np.sqrt(2) / N_BAND, rtol=1e-5)
    assert np.allclose(f[1], 1.0, atol=1e-5) and np.allclose(f[3], 0.0, atol=1e-4)
