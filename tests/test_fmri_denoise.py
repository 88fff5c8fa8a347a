"""Tests for prepost.fmri.denoise: strategies, censoring, exclusion, filter response and
recovery of the simulated network signals."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from prepost.errors import InputError
from prepost.fmri.denoise import (
    censor_mask,
    check_confounds_file,
    denoise,
    select_confounds,
)



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


# ------------------------------------------------------------------------------------------------
# confounds of every fMRIPrep release: nilearn's shipped files and a 20.2-style table
_NILEARN_FILES = {
    "1.4-20.1": "test_desc-confounds_regressors",
    ">=21": "test-v21_desc-confounds_timeseries",
}
_MOTION24 = [f"{p}{s}" for p in ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
             for s in ("", "_derivative1", "_power2", "_derivative1_power2")]


def _nilearn_confounds(release):
    from importlib.resources import files

    from prepost.fmri.confounds import read_confounds

    return read_confounds(files("nilearn.interfaces.fmriprep") / "data"
                          / f"{_NILEARN_FILES[release]}.tsv")


def _first_by_number(meta, mask, n=5):
    """The first n CompCor components of a mask by component number, read from the sidecar."""
    import re

    comps = [(int(m.group(1)), k) for k, v in meta.items()
             if (m := re.fullmatch(r"[acw]_comp_cor_(\d+)", k)) and v.get("Mask") == mask]
    return [k for _, k in sorted(comps)[:n]]


@pytest.mark.parametrize("release", sorted(_NILEARN_FILES))
def test_default_takes_first_five_components_of_each_mask(release):
    df, meta = _nilearn_confounds(release)
    wm, csf = _first_by_number(meta, "WM"), _first_by_number(meta, "CSF")
    cosine = [c for c in df.columns if c.startswith("cosine")]
    d = select_confounds(df, "default", metadata=meta)
    assert list(d.columns) == _MOTION24 + wm + csf + cosine
    assert check_confounds_file(df.attrs["source"]) == list(d.columns)
    assert not d.isna().any().any()
    if release == "1.4-20.1":
        # a text sort would give a_comp_cor_100..104 for WM
        assert wm == [f"a_comp_cor_{k}" for k in range(70, 75)]
        assert csf == [f"a_comp_cor_{k}" for k in range(57, 62)]
        assert len(cosine) == 4
    else:
        # from 21.0: w_comp_cor (WM) and c_comp_cor (CSF); a_comp_cor is the combined mask,
        # and this run kept only 4 and 3 components (fMRIPrep's 50 % variance)
        assert wm == [f"w_comp_cor_{k:02d}" for k in range(4)]
        assert csf == [f"c_comp_cor_{k:02d}" for k in range(3)]
        assert not any(c.startswith("a_comp_cor") for c in d.columns)
    # the other strategies need no sidecar and take the same columns from either release
    assert list(select_confounds(df, "36P").columns) == _MOTION24 + [
        f"{p}{s}" for p in ("white_matter", "csf")
        for s in ("", "_derivative1", "_power2", "_derivative1_power2")]
    assert list(select_confounds(df, "simple_gsr").columns) == _MOTION24[::4] + [
        "white_matter", "csf", "global_signal"]


def _table_202(n=150, names="padded", seed=5):
    """fMRIPrep 20.2-style table: a_comp_cor_0..120 (CSF 0-13, WM 14-110, combined 111-120)."""
    rng = np.random.default_rng(seed)
    cols = {c: rng.normal(size=n) for c in _MOTION24}
    for c in _MOTION24[1::4] + _MOTION24[3::4]:  # derivatives: first row n/a
        cols[c][0] = np.nan
    meta = {}
    for k in range(121):
        name = f"a_comp_cor_{k:02d}" if names == "padded" else f"a_comp_cor_{k}"
        cols[name] = rng.normal(size=n)
        mask = "CSF" if k < 14 else "WM" if k <= 110 else "combined"
        meta[name] = {"Method": "aCompCor", "Mask": mask, "Retained": True}
    meta["dropped_0"] = {"Method": "aCompCor", "Mask": "WM", "Retained": False}
    t = np.arange(n)
    for k in range(3):
        cols[f"cosine{k:02d}"] = np.cos(np.pi * (k + 1) * (t + 0.5) / n)
    cols["framewise_displacement"] = np.r_[np.nan, rng.uniform(0, 0.6, n - 1)]
    return pd.DataFrame(cols), meta


@pytest.mark.parametrize("names", ["padded", "unpadded"])
def test_202_components_in_numeric_order(names):
    df, meta = _table_202(names=names)
    fmt = "{:02d}" if names == "padded" else "{}"
    d = select_confounds(df, "default", metadata=meta)
    comps = [c for c in d.columns if "comp_cor" in c]
    assert comps == [f"a_comp_cor_{fmt.format(k)}" for k in (14, 15, 16, 17, 18, 0, 1, 2, 3, 4)]
    # shuffled sidecar order changes nothing
    shuffled = dict(reversed(list(meta.items())))
    assert list(select_confounds(df, "default", metadata=shuffled).columns) == list(d.columns)


@pytest.mark.parametrize("censor", [False, True])
def test_regression_equals_numpy_lstsq(censor):
    df, meta = _table_202()
    n = len(df)
    rng = np.random.default_rng(7)
    design = select_confounds(df, "default", metadata=meta)
    x = design.to_numpy() @ rng.normal(size=(design.shape[1], 6)) \
        + rng.normal(size=(n, 6)) + 100.0
    res = denoise(x, df, t_r=2.0, strategy="default", metadata=meta, low_pass=None,
                  high_pass=None, censor=censor, fd_threshold=0.5, min_segment=0,
                  min_retained_s=0)
    keep = (np.nan_to_num(df.framewise_displacement.to_numpy()) <= 0.5) if censor \
        else np.ones(n, bool)
    assert np.array_equal(res.sample_mask, keep) and (~keep).sum() >= (5 if censor else 0)
    # plain least squares on the kept volumes: mean, linear trend and the chosen columns
    a = np.column_stack([np.ones(n), np.linspace(-1, 1, n), design.to_numpy()])
    beta, *_ = np.linalg.lstsq(a[keep], x[keep], rcond=None)
    np.testing.assert_allclose(res.data, (x - a @ beta)[keep], rtol=0, atol=1e-8)
    assert res.qc["confound_columns"] == list(design.columns)
    assert res.qc["n_regressors"] == 24 + 10 + 3


def test_missing_confounds_name_file_field_and_key(tmp_path):
    import shutil
    from importlib.resources import files

    src = files("nilearn.interfaces.fmriprep") / "data" / "test_desc-confounds_regressors.tsv"
    tsv = tmp_path / "sub-01_task-rest_desc-confounds_regressors.tsv"
    shutil.copy(src, tsv)  # an early-1.x style file: no JSON sidecar
    from prepost.fmri.confounds import read_confounds

    df, meta = read_confounds(tsv)
    assert meta == {} and df.attrs["source"] == str(tsv)
    with pytest.raises(InputError) as e:
        select_confounds(df, "default", metadata=meta)
    msg = str(e.value)
    assert str(tsv.with_suffix(".json")) in msg and "'Mask'" in msg
    assert "fmri.denoise.strategy: 36P or simple" in msg and "no sidecar" in msg
    assert list(select_confounds(df, "36P").columns)[:24] == _MOTION24  # no sidecar needed
    # the same checks from the header and sidecar alone, as when the DAG is built
    with pytest.raises(InputError, match="'Mask'"):
        check_confounds_file(tsv, "default")
    assert check_confounds_file(tsv, "36P") == list(select_confounds(df, "36P").columns)
    # the source survives the removal of non-steady-state rows and columns
    df2 = df.iloc[1:].reset_index(drop=True).drop(columns=["non_steady_state_outlier00"])
    with pytest.raises(InputError, match="gsr: false") as e:
        select_confounds(df2.drop(columns=["global_signal_power2"]), "36P_gsr")
    assert str(tsv) in str(e.value) and "global_signal_power2" in str(e.value)
    # a sidecar with WM components only
    df3, meta3 = _nilearn_confounds(">=21")
    meta3 = {k: v for k, v in meta3.items() if not k.startswith("c_comp_cor")}
    with pytest.raises(InputError, match="CompCor components of the CSF mask"):
        select_confounds(df3, "default", metadata=meta3)
    # a component the sidecar lists but the table lacks
    with pytest.raises(InputError, match="w_comp_cor_00"):
        select_confounds(df3.drop(columns=["w_comp_cor_00"]), "default",
                         metadata=_nilearn_confounds(">=21")[1])
