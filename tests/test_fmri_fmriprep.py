"""fMRIPrep derivatives as input: runs found by their entities (``run-``, ``res-``), confounds of
both namings (nilearn's shipped ``desc-confounds_regressors`` of fMRIPrep 1.4-20.1 and
``desc-confounds_timeseries`` of 21.0+), the space/res hints and the only-candidate pick when
the DAG is built, and a small workflow run through denoising and the session's combined FC."""

import importlib.resources
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from runner import dry_run_jobs, snakemake

from prepost.errors import ValidationReport
from prepost.fmri import stage

FMRIPREP_SPACE = "MNI152NLin2009cAsym"
OUR_SPACE = "MNI152NLin2009aSym"
NILEARN_CONFOUNDS = {
    "regressors": "test_desc-confounds_regressors",  # fMRIPrep 1.4-20.1
    "timeseries": "test-v21_desc-confounds_timeseries",  # fMRIPrep 21.0+
}
T_R = 2.0


def _confounds(naming, n):
    """nilearn's shipped fMRIPrep confounds of ``naming``, cut or padded to ``n`` rows (padding
    mirrors the steady-state rows; outlier indicator columns are 0 there)."""
    data = importlib.resources.files("nilearn.interfaces.fmriprep") / "data"
    df = pd.read_csv(data / f"{NILEARN_CONFOUNDS[naming]}.tsv", sep="\t")
    meta = json.loads((data / f"{NILEARN_CONFOUNDS[naming]}.json").read_text())
    if n <= len(df):
        return df.iloc[:n].reset_index(drop=True), meta
    flags = [c for c in df.columns if "outlier" in c]
    steady = df.iloc[stage.n_leading_dummies(df):]
    pads = []
    while len(df) + sum(map(len, pads)) < n:
        pads.append(steady.iloc[::-1 if len(pads) % 2 == 0 else 1])
    pad = pd.concat(pads).iloc[: n - len(df)].copy()
    pad[flags] = 0
    return pd.concat([df, pad], ignore_index=True), meta


def _write_run(root, ses, *, n, naming="timeseries", space=FMRIPREP_SPACE, res="2", grid=None,
               seed=0, **ents):
    """One fMRIPrep run of sub-01: preproc BOLD, brain mask, BOLD JSON and confounds + JSON.

    ``grid`` (an image) gives the BOLD grid; by default a 4 x 4 x 4 block of 6 mm voxels."""
    func = Path(root) / "sub-01" / f"ses-{ses}" / "func"
    func.mkdir(parents=True, exist_ok=True)
    run = {"sub": "01", "ses": ses, "task": "rest", **ents}
    from prepost.paths import derivative

    def name(suffix, ext, **e):
        return Path(derivative(root, suffix, ext, datatype="func", **run, **e))

    shape, affine = ((4, 4, 4), np.diag([6.0, 6, 6, 1])) if grid is None else (grid.shape[:3],
                                                                                grid.affine)
    mask = np.zeros(shape, bool)
    c = [s // 2 for s in shape]
    w = [max(2, s // 5) for s in shape]
    mask[c[0] - w[0]:c[0] + w[0], c[1] - w[1]:c[1] + w[1], c[2] - w[2]:c[2] + w[2]] = True
    rng = np.random.default_rng(seed)
    data = np.zeros(shape + (n,), np.float32)
    data[mask] = 1000 + 10 * rng.standard_normal((int(mask.sum()), n))
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = T_R
    mni = {"space": space, "res": res}
    nib.save(img, name("bold", ".nii.gz", **mni, desc="preproc"))
    name("bold", ".json", **mni, desc="preproc").write_text(json.dumps({"RepetitionTime": T_R}))
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), name("mask", ".nii.gz", **mni,
                                                                   desc="brain"))
    df, meta = _confounds(naming, n)
    df.to_csv(name(naming, ".tsv", desc="confounds"), sep="\t", index=False, na_rep="n/a")
    name(naming, ".json", desc="confounds").write_text(json.dumps(meta))
    return name("bold", ".nii.gz", **mni, desc="preproc")


# --------------------------------------------------------------------------------------------
# discovery, at DAG time
def test_runs_both_namings_and_the_only_res_are_found(tmp_path):
    _write_run(tmp_path, "pre", n=12, naming="regressors", run="1")
    _write_run(tmp_path, "pre", n=10, naming="timeseries", run="2")
    # a native-space file and another task are not runs of the rest BOLD in the template
    _write_run(tmp_path, "pre", n=10, space=None, res=None, run="2")
    _write_run(tmp_path, "pre", n=10, naming="timeseries", task="nback", run="1")
    found = stage.check_fmriprep(tmp_path, [("01", "pre")], task="rest", space=FMRIPREP_SPACE,
                                 res=None)[("01", "pre")]
    assert list(found) == ["rest_run-1", "rest_run-2"]
    one, two = found["rest_run-1"], found["rest_run-2"]
    assert one["confounds"].endswith("_task-rest_run-1_desc-confounds_regressors.tsv")
    assert two["confounds"].endswith("_task-rest_run-2_desc-confounds_timeseries.tsv")
    assert Path(one["confounds_json"]).is_file() and Path(one["mask"]).is_file()
    assert "_res-2_" in one["bold"] and one["entities"] == {"task": "rest", "run": "1"}
    assert (one["t_r"], one["n_volumes"], two["n_volumes"]) == (T_R, 12, 10)
    # entity filters (config bids.filters.bold) choose among the runs
    only = stage.check_fmriprep(tmp_path, [("01", "pre")], task="rest", filters={"run": "2"},
                                space=FMRIPREP_SPACE, res="2")[("01", "pre")]
    assert list(only) == ["rest_run-2"]


def test_absent_space_or_res_lists_what_is_there_and_the_key(tmp_path):
    _write_run(tmp_path, "pre", n=6, res="1")
    _write_run(tmp_path, "pre", n=6, res="2")
    _write_run(tmp_path, "post", n=6, space="MNI152NLin6Asym", res="2")
    _write_run(tmp_path, "post", n=6, space="T1w", res=None)
    # the TR of the derivative comes from its JSON, and the confounds need one row per volume
    bad = _write_run(tmp_path, "post2", n=6, res="2")
    Path(str(bad).replace(".nii.gz", ".json")).write_text("{}")
    img = nib.Nifti1Image(np.zeros((4, 4, 4, 6), np.float32), np.eye(4))
    img.header["pixdim"][4] = 0.0  # no TR in the header either
    nib.save(img, bad)
    next(bad.parent.glob("*confounds_timeseries.tsv")).write_text("a\n1\n2\n")
    with pytest.raises(ValidationReport) as err:
        stage.check_fmriprep(tmp_path, [("01", "pre"), ("01", "post"), ("01", "post2"),
                                        ("01", "none")], task="rest", space=FMRIPREP_SPACE,
                             res=None)
    problems = err.value.problems
    assert len(problems) == 4
    assert "set fmri.fmriprep_res to one of: 1, 2" in problems[0]
    assert "set fmri.fmriprep_space to one of: MNI152NLin6Asym, T1w" in problems[1]
    assert "RepetitionTime" in problems[2]
    assert "ses-none/func" in problems[3]
    # the TR from the header when the JSON has none, then the row count is checked
    bad.with_suffix("").with_suffix(".json").unlink()
    img = nib.Nifti1Image(np.zeros((4, 4, 4, 6), np.float32), np.eye(4))
    img.header["pixdim"][4] = 1.5
    nib.save(img, bad)
    with pytest.raises(ValidationReport, match=r"rows: expected 6 .* found 2"):
        stage.check_fmriprep(tmp_path, [("01", "post2")], task="rest", space=FMRIPREP_SPACE,
                             res="2")


# --------------------------------------------------------------------------------------------
# the workflow: DAG and one small run
def _study(tmp_path, fmriprep_dir, **fmri):
    (tmp_path / "participants.tsv").write_text("participant_id\tage\tfollowup_days\n"
                                               "sub-01\t30\t1\n")
    cfg = {"participants": str(tmp_path / "participants.tsv"),
           "results_dir": str(tmp_path / "results"), "modalities": {"pet": False},
           "fmri": {"source": "fmriprep", "fmriprep_dir": str(fmriprep_dir), "resolution_mm": 6,
                    "denoise": {"min_retained_s": 20}, **fmri},
           "connectivity": {"atlases": ["Schaefer100"], "fc_kinds": ["pearson"]}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _raw_bids_without_bold(root):
    """A user's BIDS dataset holding only T1w images (the BOLD exists as fMRIPrep outputs)."""
    (root).mkdir()
    (root / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion":
                                                               "1.9.0"}))
    for ses in ("pre", "post"):
        anat = root / "sub-01" / f"ses-{ses}" / "anat"
        anat.mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)),
                 anat / f"sub-01_ses-{ses}_T1w.nii.gz")
        (anat / f"sub-01_ses-{ses}_T1w.json").write_text("{}")


def _targets(results, runs):
    from prepost.connectivity.stage import output_paths as conn_paths

    out = []
    for ses, keys in runs.items():
        for k in keys:
            p = stage.output_paths(results, space=OUR_SPACE, res="6", sub="01", ses=ses, task=k)
            out.append(p["denoise"]["qc"])
        c = conn_paths(results, space=OUR_SPACE, res="6", sub="01", ses=ses, task="rest",
                       atlas="Schaefer100", meas="pearson")
        out += [c["relmat"], c["qc"]]
    return out


def test_dag_needs_no_raw_bold_and_takes_the_only_candidate(tmp_path):
    prep = tmp_path / "fmriprep"
    for ses in ("pre", "post"):
        _write_run(prep, ses, n=8, naming="regressors", run="1")
        _write_run(prep, ses, n=8, naming="timeseries", run="2")
    bids = tmp_path / "bids"
    _raw_bids_without_bold(bids)
    cfg = _study(tmp_path, prep)
    runs = {"pre": ["rest_run-1", "rest_run-2"], "post": ["rest_run-1", "rest_run-2"]}
    out = snakemake(*_targets(tmp_path / "results", runs), "-n", "--cores", "1", "--configfile",
                    str(cfg), "--config", f"bids_dir={bids}", cwd=tmp_path)
    jobs = dry_run_jobs(out)
    assert jobs["fmri_import_fmriprep"] == 4 and jobs["fmri_denoise"] == 4
    assert jobs["connectivity_session_qc"] == 2 and "fmri_preproc" not in jobs
    # (the space/res hints themselves: test_absent_space_or_res_lists_what_is_there_and_the_key)


def test_raw_runs_are_preprocessed_each_and_combined_per_session(tmp_path):
    # built-in preprocessing: each raw run of a session is its own chain, named by its run-
    bids = tmp_path / "bids"
    _raw_bids_without_bold(bids)
    for ses in ("pre", "post"):
        func = bids / "sub-01" / f"ses-{ses}" / "func"
        func.mkdir()
        for run in ("1", "2"):
            img = nib.Nifti1Image(np.ones((4, 4, 4, 20), np.float32), np.eye(4))
            img.header["pixdim"][4] = T_R
            nib.save(img, func / f"sub-01_ses-{ses}_task-rest_run-{run}_bold.nii.gz")
            (func / f"sub-01_ses-{ses}_task-rest_run-{run}_bold.json").write_text(
                json.dumps({"RepetitionTime": T_R}))
    cfg = _study(tmp_path, "", source="builtin")
    out = snakemake("-n", "--cores", "1", "--configfile", str(cfg), "--config",
                    f"bids_dir={bids}", cwd=tmp_path)
    jobs = dry_run_jobs(out)
    assert jobs["fmri_preproc"] == jobs["fmri_denoise"] == 4
    assert jobs["connectivity_session_qc"] == jobs["connectivity_session"] == 2
    text = out.stdout + out.stderr
    assert "sub-01_ses-pre_task-rest_run-2_space-MNI152NLin2009aSym_res-6_desc-denoised_qc" in text
    assert "sub-01_ses-pre_task-rest_space-MNI152NLin2009aSym_res-6_atlas-Schaefer100_meas-" \
        "pearson_relmat.tsv" in text


@pytest.mark.slow
def test_nilearn_confounds_of_both_namings_run_through_denoising(tmp_path):
    from prepost import anat

    prep = tmp_path / "fmriprep"
    grid = anat.mni_reference(6)  # already on our grid: copied, not resampled
    n = 60
    _write_run(prep, "pre", n=n, naming="regressors", grid=grid, run="1", seed=1)
    _write_run(prep, "pre", n=n, naming="timeseries", grid=grid, run="2", seed=2)
    _write_run(prep, "post", n=8, naming="timeseries", run="1")
    cfg = _study(tmp_path, prep)
    runs = {"pre": ["rest_run-1", "rest_run-2"]}  # ses-post: found at DAG time, not run
    snakemake(*_targets(tmp_path / "results", runs), "--cores", "2", "--configfile", str(cfg),
              cwd=tmp_path)
    res = tmp_path / "results"
    qcs = {}
    for ses, keys in runs.items():
        for k in keys:
            p = stage.output_paths(res, space=OUR_SPACE, res="6", sub="01", ses=ses, task=k)
            qc = json.loads(Path(p["denoise"]["qc"]).read_text())
            assert qc["strategy"] == "default" and qc["bold_run"] == k
            assert nib.load(p["denoise"]["bold"]).shape[3] == len(qc["sample_mask"]) > 0
            qcs[(ses, k)] = qc
    # nilearn's files flag 1 (regressors) and 3 (v21) non-steady-state volumes
    assert qcs[("pre", "rest_run-1")]["n_dummy"] == 1
    assert qcs[("pre", "rest_run-2")]["n_dummy"] == 3
    from prepost.connectivity.stage import output_paths as conn_paths

    c = conn_paths(res, space=OUR_SPACE, res="6", sub="01", ses="pre", task="rest",
                   atlas="Schaefer100", meas="pearson")
    sqc = json.loads(Path(c["qc"]).read_text())
    used = [q for q in (qcs[("pre", "rest_run-1")], qcs[("pre", "rest_run-2")])
            if not q["excluded"]]
    assert [r["key"] for r in sqc["runs"]] == ["rest_run-1", "rest_run-2"]
    assert sqc["retained_s"] == pytest.approx(sum(q["retained_s"] for q in used))
    ts = pd.read_csv(c["timeseries"], sep="\t")
    assert len(ts) == sum(len(q["sample_mask"]) for q in used)
    # the relmat is the FC of the concatenated retained volumes
    rel = pd.read_csv(c["relmat"], sep="\t", index_col=0)
    ok = ts.columns[ts.notna().all()]
    assert len(ok) >= 2
    r = np.corrcoef(ts[ok].to_numpy(float).T)
    assert np.allclose(rel.loc[ok, ok].to_numpy()[~np.eye(len(ok), dtype=bool)],
                       r[~np.eye(len(ok), dtype=bool)], atol=1e-5)
    shutil.rmtree(prep)
