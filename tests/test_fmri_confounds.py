"""Tests for prepost.fmri.confounds: fMRIPrep-compatible confounds of a simulated run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prepost.errors import InputError
from prepost.fmri.confounds import (
    compute_confounds,
    confounds_paths,
    dvars,
    erode_mask,
    read_confounds,
    std_dvars,
    write_confounds,
)
from prepost.fmri.denoise import select_confounds


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from fmri_data import simulated_run

    from prepost.registration import apply_motion, estimate_motion

    sim_run = simulated_run(tmp_path_factory.mktemp("sim"), n_volumes=80,
                            tissues=("wm", "csf", "brain"))
    img, tis, motion_true = sim_run["img"], sim_run["tissue"], sim_run["motion"]
    est, affines = estimate_motion(img)
    mc = apply_motion(img, affines)
    brain = tis["brain"] > 0.5
    wm = erode_mask(tis["wm"] > 0.9)
    csf = tis["csf"] > 0.7
    df, meta = compute_confounds(mc, est, brain, wm, csf, t_r=2.0, n_dummy=2,
                                 fd_threshold=0.5, dvars_threshold=1.5)
    return {"mc": mc, "df": df, "meta": meta, "brain": brain, "wm": wm, "csf": csf, "est": est,
            "truth": motion_true}


def test_columns_and_naming(run):
    df, meta = run["df"], run["meta"]
    n = run["mc"].shape[3]
    assert len(df) == n
    for c in ["trans_x", "rot_z"]:
        for suf in ["", "_derivative1", "_power2", "_derivative1_power2"]:
            assert c + suf in df
    assert list(df.columns[:4]) == ["trans_x", "trans_x_derivative1",
                                    "trans_x_derivative1_power2", "trans_x_power2"]
    for c in ["framewise_displacement", "dvars", "std_dvars", "trans_x_derivative1",
              "white_matter_derivative1"]:
        assert np.isnan(df[c].iloc[0]) and not df[c].iloc[1:].isna().any()
    for c in ["global_signal", "white_matter", "csf", "csf_power2", "cosine00",
              "a_comp_cor_00", "non_steady_state_outlier00", "non_steady_state_outlier01"]:
        assert c in df
    # dummy volumes: one-hot columns, zero CompCor rows
    assert df.non_steady_state_outlier00.tolist()[:3] == [1, 0, 0]
    assert df.non_steady_state_outlier01.tolist()[:3] == [0, 1, 0]
    assert (df.a_comp_cor_00.iloc[:2] == 0).all()
    # cosine basis over the steady-state volumes, 128 s cutoff: floor(2 n TR / 128) - 1
    # regressors (nipype/fMRIPrep drop the constant term)
    n_cos = sum(c.startswith("cosine") for c in df)
    assert n_cos == int(np.floor(2 * (n - 2) * 2.0 / 128.0)) - 1 >= 1
    # CompCor sidecar entries in fMRIPrep's format, numbered across masks
    comps = sorted(c for c in df if c.startswith("a_comp_cor_"))
    assert comps == [f"a_comp_cor_{k:02d}" for k in range(len(comps))]
    masks = [meta[c]["Mask"] for c in comps]
    assert masks == sorted(masks, key=["CSF", "WM", "combined"].index)
    assert set(masks) == {"CSF", "WM", "combined"}
    for c in comps:
        m = meta[c]
        assert m["Method"] == "aCompCor" and m["Retained"] is True
        assert set(m) == {"Method", "Mask", "SingularValue", "VarianceExplained",
                          "CumulativeVarianceExplained", "Retained"}
    # 50 % variance rule: the retained components of each mask reach 0.5 cumulative variance
    for mk in ("CSF", "WM", "combined"):
        kept = [meta[c] for c in comps if meta[c]["Mask"] == mk]
        assert kept[-1]["CumulativeVarianceExplained"] >= 0.5
        if len(kept) > 1:
            assert kept[-2]["CumulativeVarianceExplained"] < 0.5
    # motion outliers: FD > 0.5 or std DVARS > 1.5, one-hot
    flagged = np.flatnonzero((df.framewise_displacement.fillna(0) > 0.5)
                             | (df.std_dvars.fillna(0) > 1.5))
    mo = [c for c in df if c.startswith("motion_outlier")]
    assert len(mo) == len(flagged) > 0
    assert [int(np.flatnonzero(df[c])[0]) for c in mo] == list(flagged)


def test_motion_outlier_thresholds_are_the_given_ones(run):
    """Other thresholds (config fmri.motion_outliers) flag exactly FD above them; None turns the
    DVARS criterion off."""
    df, meta = compute_confounds(run["mc"], run["est"], run["brain"], run["wm"], run["csf"],
                                 t_r=2.0, n_dummy=2, fd_threshold=0.2, dvars_threshold=None)
    flagged = np.flatnonzero(df.framewise_displacement.fillna(0) > 0.2)
    mo = [c for c in df if c.startswith("motion_outlier")]
    assert 0 < len(flagged) and [int(np.flatnonzero(df[c])[0]) for c in mo] == list(flagged)
    assert meta["_settings"]["FDThreshold"] == 0.2 and meta["_settings"]["StdDVARSThreshold"] is None


def test_fd_plot_draws_the_given_threshold(tmp_path, monkeypatch):
    import matplotlib.axes

    from prepost.fmri.stage import plot_fd

    drawn = []
    axhline = matplotlib.axes.Axes.axhline

    def spy(self, y=0, *args, **kwargs):
        drawn.append(y)
        return axhline(self, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "axhline", spy)
    df = pd.DataFrame({"framewise_displacement": [np.nan, 0.1, 0.4, 0.2],
                       "non_steady_state_outlier00": [1.0, 0, 0, 0]})
    plot_fd(df, tmp_path / "a.png", fd_threshold=0.3)
    plot_fd(df, tmp_path / "b.png", fd_threshold=None)
    assert drawn == [0.3] and (tmp_path / "a.png").is_file() and (tmp_path / "b.png").is_file()


def test_fd_matches_truth(run):
    from prepost.simulate import fd_power

    fd_true = fd_power(run["truth"])
    fd_est = run["df"].framewise_displacement.to_numpy()
    # skip the first volumes: the non-steady-state intensity change biases their registration
    d = np.abs(fd_est[3:] - fd_true[3:])
    print(f"FD estimated vs true: max |diff| {d.max():.3f} mm, mean {d.mean():.3f} mm, "
          f"r {np.corrcoef(fd_est[3:], fd_true[3:])[0, 1]:.4f}")
    assert np.corrcoef(fd_est[3:], fd_true[3:])[0, 1] > 0.99
    assert d.mean() < 0.05 and d.max() < 0.25
    # nipype FD equals the closed form on the same parameters
    from prepost.fmri.motion import framewise_displacement

    p = run["df"][["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]].to_numpy()
    np.testing.assert_allclose(fd_est[1:], framewise_displacement(p)[1:], rtol=1e-6, atol=1e-6)


def test_dvars_closed_form(run):
    data = run["mc"].get_fdata(dtype=np.float32)
    expected = dvars(data, run["brain"])
    np.testing.assert_allclose(run["df"].dvars.to_numpy()[1:], expected[1:], rtol=2e-3)
    # the standardised DVARS is DVARS over its AR(1)-predicted value, so their ratio is constant
    ratio = run["df"].std_dvars.to_numpy()[1:] / run["df"].dvars.to_numpy()[1:]
    assert np.ptp(ratio) / ratio.mean() < 1e-3



def test_std_dvars_matches_nipype(run, tmp_path):
    """The vectorised DVARS gives nipype ComputeDVARS' values (as nipype writes them, 6
    decimals), voxels of zero variance included."""
    import nibabel as nib
    from nipype.algorithms.confounds import compute_dvars

    data = run["mc"].get_fdata(dtype=np.float32).copy()  # get_fdata caches its array
    brain = run["brain"]
    data[np.argwhere(brain)[0][0], np.argwhere(brain)[0][1], np.argwhere(brain)[0][2]] = 500.0
    nib.Nifti1Image(data, run["mc"].affine).to_filename(tmp_path / "bold.nii")
    nib.Nifti1Image(brain.astype(np.uint8), run["mc"].affine).to_filename(tmp_path / "m.nii")
    ref_std, ref_plain, _ = compute_dvars(str(tmp_path / "bold.nii"), str(tmp_path / "m.nii"),
                                          remove_zerovariance=True, variance_tol=1e-7)
    got_std, got_plain = std_dvars(data, brain)
    np.testing.assert_allclose(got_std, np.round(ref_std, 6), atol=2e-6)
    np.testing.assert_allclose(got_plain, np.round(ref_plain, 6), atol=2e-6)


def test_tissue_means(run):
    data = run["mc"].get_fdata(dtype=np.float32)
    np.testing.assert_allclose(run["df"].global_signal, data[run["brain"]].mean(0), rtol=1e-5)
    np.testing.assert_allclose(run["df"].csf_power2, run["df"].csf ** 2, rtol=1e-9)


def test_written_file_loads_with_nilearn(run, tmp_path):
    from nilearn.interfaces.fmriprep import load_confounds

    from prepost.fmri.denoise import censor_mask

    func = tmp_path / "sub-01" / "func"
    bold = func / "sub-01_ses-pre_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    func.mkdir(parents=True)
    run["mc"].to_filename(bold)
    tsv, js = confounds_paths(bold)
    assert tsv.name == "sub-01_ses-pre_task-rest_desc-confounds_timeseries.tsv"
    write_confounds(run["df"], run["meta"], tsv)
    assert js.exists() and "n/a" in tsv.read_text().splitlines()[1]
    df2, meta2 = read_confounds(tsv)
    pd.testing.assert_frame_equal(df2, run["df"], check_dtype=False, rtol=1e-6)
    assert meta2 == json.loads(json.dumps(run["meta"]))

    df, meta = run["df"], run["meta"]
    n_comb = sum(1 for c, m in meta.items() if c.startswith("a_comp_cor_")
                 and m["Mask"] == "combined")
    conf, sample_mask = load_confounds(
        str(bold), strategy=("motion", "high_pass", "wm_csf", "compcor", "scrub"),
        motion="full", wm_csf="basic", compcor="anat_combined", n_compcor="all", scrub=5,
        fd_threshold=0.5, std_dvars_threshold=1.5)
    n_cos = sum(c.startswith("cosine") for c in df)
    assert conf.shape == (len(df), 24 + n_cos + 2 + n_comb)
    assert {"trans_x_derivative1_power2", "white_matter", "csf", "cosine00"} <= set(conf)
    assert [c for c in conf if "comp_cor" in c] == [
        c for c in sorted(meta) if c.startswith("a_comp_cor_") and meta[c]["Mask"] == "combined"]
    # nilearn's scrubbing agrees with ours (non-steady-state volumes are censored too)
    ours = censor_mask(df.framewise_displacement, df.std_dvars, 0.5, 1.5, min_segment=5,
                       extra=df.non_steady_state_outlier00 + df.non_steady_state_outlier01 > 0)
    assert sample_mask is not None
    lost = set(np.flatnonzero(ours)) - set(sample_mask)
    assert not lost, f"volumes kept by us but censored by nilearn: {sorted(lost)}"
    assert set(sample_mask) - set(np.flatnonzero(ours)) <= set(range(2, 7))
    # the default strategy takes what nilearn's load_confounds takes for 24P + 5 WM and 5 CSF
    # aCompCor + cosine, read from the written file
    conf5, _ = load_confounds(str(bold), strategy=("motion", "compcor", "high_pass"),
                              motion="full", compcor="anat_separated", n_compcor=5)
    design = select_confounds(df2, "default", metadata=meta2)
    assert set(design.columns) == set(conf5.columns)
    assert [c for c in design if "comp_cor" in c] == [
        c for mask in ("WM", "CSF") for c in sorted(meta) if c.startswith("a_comp_cor_")
        and meta[c]["Mask"] == mask][:5]


@pytest.mark.parametrize("name,desc", [("test_desc-confounds_regressors", "regressors"),
                                       ("test-v21_desc-confounds_timeseries", "timeseries")])
def test_fmriprep_files_of_both_namings_match_nilearn(tmp_path, name, desc):
    """fMRIPrep 1.4-20.1 (``desc-confounds_regressors``) and >= 21 (``_timeseries``) files: the
    strategies take the columns nilearn's public ``load_confounds`` takes from a derivative
    folder (a tiny stand-in image: only its name is read)."""
    import shutil
    from importlib.resources import files

    import nibabel as nib
    from nilearn.interfaces.fmriprep import load_confounds

    data = files("nilearn.interfaces.fmriprep") / "data"
    stem = tmp_path / "sub-01_ses-pre_task-rest_run-1"
    tsv = Path(f"{stem}_desc-confounds_{desc}.tsv")
    for ext in (".tsv", ".json"):
        shutil.copy(data / f"{name}{ext}", tsv.with_suffix(ext))
    bold = f"{stem}_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz"
    df, meta = read_confounds(tsv)
    nib.Nifti1Image(np.zeros((2, 2, 2, len(df)), np.float32), np.eye(4)).to_filename(bold)
    for strategy, kw in [
            ("default", dict(strategy=("motion", "compcor", "high_pass"), motion="full",
                             compcor="anat_separated", n_compcor=5)),
            ("36P_gsr", dict(strategy=("motion", "wm_csf", "global_signal"), motion="full",
                             wm_csf="full", global_signal="full")),
            ("simple", dict(strategy=("motion", "wm_csf"), motion="basic", wm_csf="basic"))]:
        conf, _ = load_confounds(bold, demean=False, **kw)
        ours = select_confounds(df, strategy, metadata=meta)
        assert set(ours.columns) == set(conf.columns), strategy
        # same values after the first row, whose n/a is 0 here (XCP-D) and the second row's
        # value in nilearn
        np.testing.assert_allclose(ours[list(conf.columns)].to_numpy()[1:], conf.to_numpy()[1:],
                                   rtol=0, atol=1e-12)


def test_censor_mask_matches_nilearn_scrub():
    """With both criteria and no non-steady-state volumes, censoring is nilearn's scrub."""
    from nilearn.interfaces.fmriprep.load_confounds_components import _load_scrub

    from prepost.fmri.denoise import censor_mask

    rng = np.random.default_rng(3)
    for _ in range(50):
        n = 60
        df = pd.DataFrame({"framewise_displacement": np.r_[np.nan, rng.gamma(2, 0.12, n - 1)],
                           "std_dvars": np.r_[np.nan, rng.gamma(20, 0.06, n - 1)]})
        onehot = _load_scrub(df, 5, 0.5, 1.5)
        theirs = set(np.argmax(onehot.to_numpy(), axis=0)) if onehot.shape[1] else set()
        ours = censor_mask(df.framewise_displacement, df.std_dvars, 0.5, 1.5, min_segment=5)
        assert 0 < len(theirs) < n and set(np.flatnonzero(~ours)) == theirs


def test_input_errors(run):
    mc = run["mc"]
    p = run["df"][["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]]
    with pytest.raises(InputError):
        compute_confounds(mc, p.iloc[:-1], run["brain"], run["brain"], run["brain"], t_r=2.0,
                          fd_threshold=0.5, dvars_threshold=1.5)
    with pytest.raises(InputError):
        compute_confounds(mc, p, run["brain"][:-1], run["brain"], run["brain"], t_r=2.0,
                          fd_threshold=0.5, dvars_threshold=1.5)
    with pytest.raises(InputError):
        compute_confounds(mc, p, run["brain"], np.zeros_like(run["brain"]), run["brain"],
                          t_r=2.0, fd_threshold=0.5, dvars_threshold=1.5)
