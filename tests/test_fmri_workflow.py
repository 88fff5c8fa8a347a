"""The fMRI rules run for real on a small simulated study (one participant, two sessions, 6 mm
BOLD of 60 volumes): motion against the simulator's truth, confounds readable by nilearn, MNI
alignment, the excluded-run path, fMRIPrep derivatives as input and params-driven reruns."""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from runner import snakemake

SPACE = "MNI152NLin2009aSym"
SESSIONS = ("pre", "post")
MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]

pytestmark = pytest.mark.slow



def outputs(results, ses):
    """The fMRI stage's files of participant 01's session ``ses``: preprocessing keys as is,
    denoising keys prefixed ``denoised_``."""
    from prepost.fmri.stage import output_paths

    p = output_paths(results, space=SPACE, res="3", sub="01", ses=ses, task="rest")
    return {**{k: Path(v) for k, v in p["preproc"].items()},
            **{f"denoised_{k}": Path(v) for k, v in p["denoise"].items()}}


def targets(results):
    return [str(outputs(results, s)["denoised_qc"]) for s in SESSIONS]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmri_wf")
    (root / "participants.tsv").write_text("participant_id\tage\tfollowup_days\nsub-01\t30\t1\n")
    cfg = {
        "participants": str(root / "participants.tsv"),
        "results_dir": str(root / "results"),
        "modalities": {"pet": False},
        "simulate": {"anat": {"voxel_mm": 3.0}, "bold": {"n_volumes": 60, "voxel_mm": 6.0},
                     "pet": {"voxel_mm": 6.0}},
        # 60 volumes of 2 s: the 240 s default would exclude every run
        "fmri": {"denoise": {"min_retained_s": 60}},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    # the simulated dataset's description too: the fMRIPrep test reads it as a user's BIDS dataset
    snakemake(*targets(root / "results"), str(root / "results/simulated/bids/dataset_description.json"),
              "--cores", "2", "--configfile", str(root / "config.yaml"), cwd=root)
    return root


def test_contract_files_exist(study):
    res = study / "results"
    for ses in SESSIONS:
        for key, path in outputs(res, ses).items():
            assert path.is_file(), key
    assert (res / "benchmarks/fmri/sub-01_ses-pre_task-rest_preproc.tsv").is_file()
    assert (res / "logs/fmri/sub-01_ses-pre_task-rest_denoise.log").is_file()


def test_motion_matches_the_simulated_truth(study):
    from prepost import registration
    from prepost.fmri import motion

    res = study / "results"
    for ses in SESSIONS:
        conf = pd.read_csv(outputs(res, ses)["confounds"], sep="\t", na_values="n/a")
        qc = json.loads(outputs(res, ses)["qc"].read_text())
        truth = pd.read_csv(res / f"simulated/truth/sub-01/sub-01_ses-{ses}_task-rest_motion.tsv",
                            sep="\t")
        assert qc["n_dummy"] == int(truth.non_steady_state.sum()) == 2
        # truth: vol_t(x) = vol_0(T_t x); estimate: vol_t(E_t y) = vol_r(y), so E_t = T_t^-1 T_r
        T = registration.params_to_affine(truth[MOTION].to_numpy())
        r = qc["motion_reference_volume"]
        expected = registration.affine_to_params(np.linalg.inv(T) @ T[r])
        est = conf[MOTION].to_numpy()
        steady = slice(2, None)
        err = est[steady] - expected[steady]
        assert np.sqrt((err[:, :3] ** 2).mean()) < 0.05  # mm, on 6 mm voxels
        assert np.sqrt((err[:, 3:] ** 2).mean()) < 0.001  # rad
        fd_true = motion.framewise_displacement(expected)[3:]
        fd_est = conf.framewise_displacement.to_numpy()[3:]
        assert np.corrcoef(fd_true, fd_est)[0, 1] > 0.98
        assert abs(fd_est.mean() - fd_true.mean()) < 0.03


def test_confounds_are_read_by_nilearn(study):
    from nilearn.interfaces.fmriprep import load_confounds

    bold = outputs(study / "results", "pre")["bold"]
    conf, sample_mask = load_confounds(
        str(bold), strategy=("motion", "high_pass", "wm_csf", "compcor", "scrub"),
        motion="full", wm_csf="basic", compcor="anat_separated", n_compcor=5,
        scrub=5, fd_threshold=0.5, std_dvars_threshold=1.5)
    n = nib.load(bold).shape[3]
    assert len(conf) == n and conf.shape[1] >= 24 + 2
    assert not conf.isna().any().any()
    assert sample_mask is not None and 0 not in sample_mask and 1 not in sample_mask  # dummies


def test_denoised_bold_is_in_template_space(study):
    from nilearn import image

    from prepost import anat

    res = study / "results"
    ref = anat.mni_reference(3)
    tpl = anat.template_images(2)
    gm = image.resample_to_img(tpl["gm"], ref, force_resample=True, copy_header=True).get_fdata()
    brain = image.resample_to_img(tpl["brain"], ref, force_resample=True,
                                  copy_header=True).get_fdata()
    for ses in SESSIONS:
        pre = nib.load(outputs(res, ses)["bold"])
        den = nib.load(outputs(res, ses)["denoised_bold"])
        qc = json.loads(outputs(res, ses)["denoised_qc"].read_text())
        assert den.shape[:3] == ref.shape and np.allclose(den.affine, ref.affine)
        assert den.shape[3] == len(qc["sample_mask"]) == qc["n_retained"]
        assert qc["n_volumes"] == 58 and not qc["excluded"]
        assert np.isclose(den.header.get_zooms()[3], qc["t_r"]) and qc["t_r"] == 2.0
        mean = pre.get_fdata()[..., 2:].mean(axis=3)
        assert np.corrcoef(mean.ravel(), brain.ravel())[0, 1] > 0.9
        # the BOLD fluctuations left after denoising sit in grey matter
        sd = den.get_fdata().std(axis=3)
        assert np.corrcoef(sd.ravel(), gm.ravel())[0, 1] > 0.7
        assert qc["tsnr_denoised"] > qc["tsnr_raw"]
        assert {"mean_fd", "retained_s", "strategy", "reason", "n_censored",
                "coregistration_abs_corr"} <= set(qc)


def test_low_pass_change_reschedules_only_denoising(study):
    cfg = yaml.safe_load((study / "config.yaml").read_text())
    cfg["fmri"]["denoise"]["low_pass"] = 0.07
    path = study / "config_lowpass.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = snakemake(*targets(study / "results"), "-n", "--cores", "2", "--configfile", str(path),
                    cwd=study).stdout
    assert "fmri_denoise" in out and "Params have changed" in out
    assert "fmri_preproc" not in out and "rule anat" not in out and "anat " not in out


def test_excluded_run_writes_everything(study, tmp_path):
    res2 = tmp_path / "results"
    shutil.copytree(study / "results", res2)
    cfg = yaml.safe_load((study / "config.yaml").read_text())
    cfg["results_dir"] = str(res2)
    cfg["fmri"]["denoise"]["min_retained_s"] = 100000
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = snakemake(*targets(res2), "--cores", "2", "--configfile", str(path), "--forcerun",
                    "fmri_denoise", cwd=tmp_path)
    for ses in SESSIONS:
        qc = json.loads(outputs(res2, ses)["denoised_qc"].read_text())
        assert qc["excluded"] is True and "below the minimum" in qc["reason"]
        img = nib.load(outputs(res2, ses)["denoised_bold"])
        assert img.shape[3] == len(qc["sample_mask"]) > 0
        log = (res2 / f"logs/fmri/sub-01_ses-{ses}_task-rest_denoise.log").read_text()
        assert "EXCLUDED" in log
    assert "fmri_preproc" not in out.stdout + out.stderr


def _fake_fmriprep(results, dest):
    """fMRIPrep-named copies of this workflow's preprocessing outputs."""
    from prepost.fmri.stage import fmriprep_paths

    for ses in SESSIONS:
        ours = outputs(results, ses)
        theirs = fmriprep_paths(dest, space=SPACE, res=3, sub="01", ses=ses, task="rest")
        theirs["bold"].parent.mkdir(parents=True)
        for key in ("bold", "mask", "confounds", "confounds_json"):
            shutil.copy(ours[key], theirs[key])


def test_fmriprep_input_gives_the_same_denoising(study, tmp_path):
    prep = tmp_path / "fmriprep"
    _fake_fmriprep(study / "results", prep)
    cfg = yaml.safe_load((study / "config.yaml").read_text())
    cfg.update(results_dir=str(tmp_path / "results"),
               bids_dir=str(study / "results/simulated/bids"))
    cfg["fmri"].update(source="fmriprep", fmriprep_dir=str(prep), fmriprep_space=SPACE,
                       fmriprep_res=3)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = snakemake(*targets(tmp_path / "results"), "--cores", "2", "--configfile", str(path),
                    cwd=tmp_path)
    assert "fmri_preproc" not in out.stdout + out.stderr
    for ses in SESSIONS:
        a = nib.load(outputs(study / "results", ses)["denoised_bold"]).get_fdata()
        b = nib.load(outputs(tmp_path / "results", ses)["denoised_bold"]).get_fdata()
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-4)
        qa = json.loads(outputs(study / "results", ses)["denoised_qc"].read_text())
        qb = json.loads(outputs(tmp_path / "results", ses)["denoised_qc"].read_text())
        assert qa["sample_mask"] == qb["sample_mask"]
    # a missing fMRIPrep file is named when the DAG is built
    from prepost.fmri.stage import fmriprep_paths

    missing = fmriprep_paths(prep, space=SPACE, res=3, sub="01", ses="post",
                             task="rest")["confounds"]
    missing.unlink()
    res = snakemake(*targets(tmp_path / "results2"), "-n", "--cores", "1", "--configfile",
                    str(path), "--config", f"results_dir={tmp_path / 'results2'}",
                    cwd=tmp_path, check=False)
    assert res.returncode != 0 and str(missing) in res.stdout + res.stderr
