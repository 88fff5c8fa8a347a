"""Tests for prepost.fmri.denoise: strategies, censoring, exclusion, filter response and
recovery of the simulated network signals."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from prepost.errors import InputError
from prepost.fmri.denoise import censor_mask, denoise, select_confounds



# ------------------------------------------------------------------------------------------------
# closed-form censoring
def test_censor_mask_thresholds_and_segments():
    fd = np.zeros(20)
    fd[[3, 10]] = 0.6
    # flagged 3 and 10; segments 0-2 (3 vols) and 4-9 (6) and 11-19 (9)
    keep = censor_mask(fd, None, fd_threshold=0.5, dvars_threshold=None, min_segment=5)
    expected = np.ones(20, bool)
    expected[[0, 1, 2, 3, 10]] = False
    assert np.array_equal(keep, expected)
    # a 5-volume segment between two outliers stays, a 4-volume one goes
    fd = np.zeros(20)
    fd[[5, 11]] = 1.0
    keep = censor_mask(fd, None, min_segment=5)
    assert np.array_equal(np.flatnonzero(~keep), [5, 11])
    fd[11], fd[10] = 0.0, 1.0
    keep = censor_mask(fd, None, min_segment=5)
    assert np.array_equal(np.flatnonzero(~keep), [5, 6, 7, 8, 9, 10])
    # DVARS criterion, NaN (first row) never flags, min_segment=0 keeps short segments
    sd = np.r_[np.nan, np.ones(9), 2.0, np.ones(9)]
    keep = censor_mask(np.r_[np.nan, np.zeros(19)], sd, dvars_threshold=1.5, min_segment=0)
    assert np.array_equal(np.flatnonzero(~keep), [10])
    keep = censor_mask(None, sd, dvars_threshold=None, min_segment=5)
    assert keep.all()
    # extra volumes (non-steady state) are censored and count as segment boundaries
    keep = censor_mask(np.zeros(12), None, extra=np.arange(12) < 2, min_segment=5)
    assert np.array_equal(np.flatnonzero(~keep), [0, 1])
    with pytest.raises(InputError):
        censor_mask(np.zeros(5), np.zeros(6))


def _random_confounds(n, seed=0, with_fd=None):
    rng = np.random.default_rng(seed)
    cols = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "white_matter", "csf"]
    df = pd.DataFrame(rng.normal(size=(n, len(cols))), columns=cols)
    df["framewise_displacement"] = np.r_[np.nan, np.full(n - 1, 0.1)] if with_fd is None \
        else with_fd
    df["std_dvars"] = np.r_[np.nan, np.ones(n - 1)]
    return df


def test_filter_response_keeps_005_removes_02():
    n, t_r = 300, 2.0
    t = np.arange(n) * t_r
    x = np.stack([np.sin(2 * np.pi * 0.05 * t), np.sin(2 * np.pi * 0.2 * t)], axis=1) + 100.0
    conf = _random_confounds(n)
    conf.iloc[:, :8] = 0.0  # no nuisance signal: only the filter acts
    res = denoise(x, conf, t_r=t_r, strategy="simple", censor=False,
                  low_pass=0.08, high_pass=0.01, min_retained_s=0)
    amp = res.data[20:-20].std(axis=0) * np.sqrt(2)  # away from the filter's edges
    assert amp[0] > 0.9
    assert amp[1] < 0.05  # order-2 Butterworth applied forward-backward: |H(0.2 Hz)| ~ 0.03
    assert not res.qc["excluded"] and res.qc["n_censored"] == 0


def test_everything_censored_is_excluded_not_an_error():
    n = 120
    fd = np.r_[np.nan, np.full(n - 1, 2.0)]
    df = _random_confounds(n, with_fd=fd)
    x = np.random.default_rng(1).normal(size=(n, 10)) + 50
    res = denoise(x, df, t_r=2.0, strategy="simple", censor=True,
                  min_retained_s=240)
    assert res.qc["excluded"] is True
    assert "censor" in res.qc["reason"] and "minimum" in res.qc["reason"]
    assert res.data is None
    assert res.sample_mask.sum() <= 1
    assert res.qc["n_censored"] >= n - 1
    # a short but cleanable run is returned with its data and flagged
    df2 = _random_confounds(n)
    res2 = denoise(x, df2, t_r=2.0, strategy="simple", min_retained_s=600)
    assert res2.qc["excluded"] and res2.data is not None and res2.data.shape == (n, 10)
    assert "240 s retained" in res2.qc["reason"]


def test_select_confounds_strategies():
    n = 50
    rng = np.random.default_rng(2)
    base = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "global_signal",
            "white_matter", "csf"]
    cols = {}
    for c in base:
        x = rng.normal(size=n)
        d = np.r_[np.nan, np.diff(x)]
        cols.update({c: x, f"{c}_derivative1": d, f"{c}_power2": x ** 2,
                     f"{c}_derivative1_power2": d ** 2})
    meta = {}
    for k, mask in enumerate(["CSF"] * 6 + ["WM"] * 6 + ["combined"] * 3):
        cols[f"a_comp_cor_{k:02d}"] = rng.normal(size=n)
        meta[f"a_comp_cor_{k:02d}"] = {"Method": "aCompCor", "Mask": mask, "Retained": True}
    cols["cosine00"] = rng.normal(size=n)
    cols["cosine01"] = rng.normal(size=n)
    df = pd.DataFrame(cols)
    d = select_confounds(df, "default", metadata=meta)
    assert d.shape[1] == 24 + 10 + 2
    assert [c for c in d if "comp" in c] == [f"a_comp_cor_{k:02d}" for k in
                                              (6, 7, 8, 9, 10, 0, 1, 2, 3, 4)]
    assert not d.isna().any().any()
    assert select_confounds(df, "default_gsr", metadata=meta).shape[1] == 40
    assert select_confounds(df, "default", gsr=True, metadata=meta).shape[1] == 40
    assert select_confounds(df, "36P").shape[1] == 32  # no-GSR variant
    assert select_confounds(df, "36P_gsr").shape[1] == 36
    assert list(select_confounds(df, "simple").columns) == base[:6] + ["white_matter", "csf"]
    assert select_confounds(df, "simple_gsr").shape[1] == 9
    with pytest.raises(InputError):
        select_confounds(df, "default")  # needs the sidecar for the masks
    with pytest.raises(InputError):
        select_confounds(df, "aroma")


# ------------------------------------------------------------------------------------------------
# simulated run: denoising recovers the planted network signals
@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    from fmri_data import simulated_run

    run = simulated_run(tmp_path_factory.mktemp("sim"), n_volumes=100,
                        tissues=("gm", "wm", "csf", "brain", "labels"))
    tissue = dict(run["tissue"])
    labels = tissue.pop("labels")
    signals = pd.read_csv(run["truth"]["network_signals"], sep="\t")
    return {"img": run["img"], "tissue": tissue, "labels": labels, "signals": signals}


def test_default_strategy_recovers_network_signals(simulated):
    from nilearn import signal

    from prepost import simulate as sim
    from prepost.fmri.confounds import compute_confounds, erode_mask
    from prepost.registration import apply_motion, estimate_motion

    img, tis = simulated["img"], simulated["tissue"]
    params, affines = estimate_motion(img)
    mc = apply_motion(img, affines)
    df, meta = compute_confounds(mc, params, tis["brain"] > 0.5, erode_mask(tis["wm"] > 0.9),
                                 tis["csf"] > 0.7, t_r=2.0, n_dummy=2,
                                 fd_threshold=0.5, dvars_threshold=1.5)
    table = sim.schaefer400_table()
    net = np.array([sim.NETWORKS.index(n) for n in table.network])
    gm = (tis["gm"] > 0.5) & (simulated["labels"] > 0)
    x = mc.get_fdata(dtype=np.float32)[gm].T
    netlab = net[simulated["labels"][gm] - 1]
    truth = simulated["signals"][sim.NETWORKS].to_numpy()

    def recovery(y, keep):
        return np.mean([np.corrcoef(y[:, netlab == k].mean(1), truth[keep, k])[0, 1]
                        for k in range(len(sim.NETWORKS))])

    res = denoise(x, df, t_r=2.0, strategy="default", metadata=meta, min_retained_s=60)
    keep = np.arange(x.shape[0]) >= 2
    raw = signal.clean(x[keep], detrend=True, standardize=None, filter="butterworth",
                       low_pass=0.08, high_pass=0.01, t_r=2.0, butterworth__order=2)
    r_raw, r_den = recovery(raw, keep), recovery(res.data, res.sample_mask)
    print(f"mean network-signal correlation: band-passed raw {r_raw:.3f}, default {r_den:.3f}; "
          f"qc {res.qc}")
    assert r_den > r_raw + 0.15
    assert not res.qc["excluded"]
    assert res.qc["n_censored"] >= 2 and not res.sample_mask[:2].any()
    assert res.qc["tsnr_denoised"] > res.qc["tsnr_raw"]
    assert abs(res.qc["mean_fd"] - np.nanmean(df.framewise_displacement)) < 1e-12

    # image input with a mask returns a 4D image of the kept volumes
    mask = nib.Nifti1Image(gm.astype(np.uint8), mc.affine)
    res_img = denoise(mc, df, mask=mask, t_r=2.0, strategy="default", metadata=meta,
                      min_retained_s=60)
    assert res_img.data.shape == mc.shape[:3] + (int(res.sample_mask.sum()),)
    np.testing.assert_allclose(res_img.data.get_fdata()[gm].T, res.data, rtol=1e-4, atol=1e-3)
