"""The connectivity stage as a workflow: rules on a small simulated study, scored against the truth.

The stage reads the fMRI stage's denoised outputs (contract: ``desc-denoised_bold``,
``desc-brain_mask``, ``desc-denoised_qc.json`` in MNI152NLin2009aSym). ``fabricate_fmri_outputs``
writes those files from a simulated study with the true geometry and motion (perfect realignment
and normalisation, nilearn cleaning), so the connectivity rules are scored on their own.
"""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
import runner
from runner import ROOT, dry_run_jobs, snakemake

SPACE = "MNI152NLin2009aSym"
SIM = {"anat": {"voxel_mm": 4.0}, "bold": {"n_volumes": 150, "voxel_mm": 6.0},
       "pet": {"voxel_mm": 8.0, "frames": [[2, 60], [4, 300]], "autosampler": False}}
N_SUBJECTS = 4
CONN_RULES = {"connectivity_session_qc", "connectivity_session", "connectivity_tangent",
              "connectivity_gradients", "connectivity_alff_maps"}



def contract_paths(results, sub, ses, res="3", task="rest"):
    stem = (Path(results) / f"sub-{sub}" / f"ses-{ses}" / "func" /
            f"sub-{sub}_ses-{ses}_task-{task}_space-{SPACE}_res-{res}")
    return {"bold": Path(f"{stem}_desc-denoised_bold.nii.gz"),
            "mask": Path(f"{stem}_desc-brain_mask.nii.gz"),
            "qc": Path(f"{stem}_desc-denoised_qc.json")}


def _fd(motion, radius=50.0):
    d = np.abs(np.diff(motion, axis=0))
    return np.concatenate([[0.0], d[:, :3].sum(1) + radius * d[:, 3:].sum(1)])


def fabricate_fmri_outputs(study, results, res_mm=3.0, fd_threshold=0.5, excluded=()):
    """Write the fMRI stage's contract files from a simulated study (true geometry and motion).

    Each volume is sampled on an MNI grid of ``res_mm`` through the true scanner-to-MNI mapping
    (matrix and warp) and the true head motion, cleaned with nilearn (24P-free: 6 motion + 5 WM/CSF principal components,
    linear detrend, 0.01-0.08 Hz band-pass, FD > ``fd_threshold`` volumes censored and removed).
    ``excluded``: (subject, session) pairs whose QC says excluded.
    """
    from nilearn import datasets, image, signal
    from scipy import ndimage

    from prepost import simulate as psim

    brain = datasets.load_mni152_brain_mask(resolution=1)
    tgt = image.resample_img(brain, target_affine=np.diag([res_mm] * 3), interpolation="nearest",
                             force_resample=True, copy_header=True)
    mask = np.asarray(tgt.dataobj) > 0
    wm = image.resample_to_img(datasets.load_mni152_wm_template(resolution=1), tgt,
                               force_resample=True, copy_header=True).get_fdata() > 0.9
    gm = image.resample_to_img(datasets.load_mni152_gm_template(resolution=1), tgt,
                               force_resample=True, copy_header=True).get_fdata()
    csf = mask & (gm < 0.1) & ~wm
    ijk = np.indices(mask.shape).reshape(3, -1)
    mni = tgt.affine[:3, :3] @ ijk + tgt.affine[:3, 3:4]
    for bold_path in sorted(Path(study, "bids").glob("sub-*/ses-*/func/*_bold.nii.gz")):
        sub, ses = bold_path.name.split("_")[0][4:], bold_path.name.split("_")[1][4:]
        tp = psim.truth_paths(Path(study, "truth"), sub, ses)
        geo = json.loads(tp["geometry"].read_text())
        to_mni = np.array(geo["bold_to_mni"])
        motion = pd.read_csv(tp["motion"], sep="\t")
        dummies = int(motion.non_steady_state.sum())
        mot = motion[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]].to_numpy()
        img = nib.load(bold_path)
        data = img.get_fdata(dtype=np.float32)
        t_r = float(img.header.get_zooms()[3])
        inv_aff = np.linalg.inv(img.affine)
        y = psim.Warp.from_truth(tp).inverse(mni)
        x_ref = np.linalg.solve(to_mni, np.vstack([y, np.ones(y.shape[1])]))
        vols = []
        for t in range(dummies, data.shape[3]):
            m_inv = np.linalg.inv(psim.rigid_matrix(mot[t]))
            vox = (inv_aff @ m_inv @ x_ref)[:3]
            vols.append(ndimage.map_coordinates(data[..., t], vox, order=1, cval=0.0))
        ts = np.stack(vols)  # (T, n_grid)
        fd = _fd(mot[dummies:])
        keep = np.flatnonzero(fd <= fd_threshold)
        noise = ts[:, (wm | csf).ravel()]
        noise = signal.clean(noise, detrend=True, standardize="zscore_sample")
        u, _, _ = np.linalg.svd(noise, full_matrices=False)
        conf = np.column_stack([mot[dummies:], u[:, :5]])
        inside = mask.ravel()
        # band-pass first with nilearn's vectorised filter (signal.clean filters one voxel at a
        # time: minutes per run), then detrend, regress and censor
        band = {"sampling_rate": 1.0 / t_r, "low_pass": 0.08, "high_pass": 0.01, "copy": True}
        cleaned = signal.clean(signal.butterworth(ts[:, inside].astype(float), **band),
                               confounds=signal.butterworth(conf, **band), detrend=True,
                               standardize=None, sample_mask=keep)
        out = np.zeros(mask.shape + (len(keep),), np.float32)
        out[mask] = cleaned.T
        paths = contract_paths(results, sub, ses, res=f"{res_mm:g}")
        paths["bold"].parent.mkdir(parents=True, exist_ok=True)
        bimg = nib.Nifti1Image(out, tgt.affine)
        bimg.header.set_xyzt_units("mm", "sec")
        bimg.header["pixdim"][4] = t_r
        bimg.to_filename(paths["bold"])
        nib.Nifti1Image(mask.astype(np.uint8), tgt.affine).to_filename(paths["mask"])
        exc = (sub, ses) in set(excluded)
        paths["qc"].write_text(json.dumps({
            "excluded": exc, "reason": "retained_s<240" if exc else "",
            "t_r": t_r, "sample_mask": keep.tolist(), "n_volumes": int(ts.shape[0]),
            "retained_s": float(len(keep) * t_r), "mean_fd": float(fd.mean()),
            "strategy": "fabricated-6P+5CompCor"}))


def small_config(tmp_path, n=N_SUBJECTS, **extra):
    return runner.small_config(tmp_path, n=n, **{"simulate": SIM, **extra})


def conn_targets(results, atlas="Schaefer400", n=N_SUBJECTS):
    out = [f"{results}/group/connectivity/atlas-{atlas}_desc-gradients_long.tsv",
           f"{results}/group/connectivity/atlas-{atlas}_meas-tangent_desc-groupmean_relmat.tsv"]
    for i in range(n):
        for ses in ("pre", "post"):
            stem = (f"{results}/sub-{i + 1:02d}/ses-{ses}/func/sub-{i + 1:02d}_ses-{ses}_task-rest"
                    f"_space-{SPACE}_res-3")
            out += [f"{stem}_atlas-{atlas}_desc-connectivity_long.tsv",
                    f"{stem}_atlas-{atlas}_meas-pearson_relmat.tsv",
                    f"{stem}_atlas-{atlas}_meas-partial_relmat.tsv",
                    f"{stem}_stat-alff_boldmap.nii.gz"]
    return out


def _pair(a, b, order):
    return (a, b) if order.index(a) <= order.index(b) else (b, a)


def score(results, truth_dir, n=N_SUBJECTS, atlas="Schaefer400", res="3"):
    """Estimated vs true post-pre change of network FC (Fisher z), per network pair.

    Estimated: ``fc_within``/``fc_between`` of the tidy tables. True: arctanh of the expected
    parcel-pair r of the truth (``network-fc.tsv``) of each participant and session.
    Returns a dict with the per-pair mean changes, the planted/true/estimated changes of
    within-Default and SomMot-Default and the correlation across the 28 network pairs.
    """
    rows = []
    for i in range(n):
        sub = f"{i + 1:02d}"
        for ses in ("pre", "post"):
            long = pd.read_csv(f"{results}/sub-{sub}/ses-{ses}/func/sub-{sub}_ses-{ses}_task-rest"
                               f"_space-{SPACE}_res-{res}_atlas-{atlas}_desc-connectivity_long.tsv",
                               sep="\t")
            est = long[long.measure.isin(["fc_within", "fc_between"])]
            S = pd.read_csv(f"{truth_dir}/sub-{sub}/sub-{sub}_ses-{ses}_network-fc.tsv", sep="\t",
                            index_col="network")
            order = list(S.index)
            for _, r in est.iterrows():
                a, b = (r.region, r.region) if r.measure == "fc_within" else r.region.split("-")
                rows.append((sub, ses, "-".join(_pair(a, b, order)), r.value,
                             float(np.arctanh(S.loc[a, b]))))
    df = pd.DataFrame(rows, columns=["sub", "ses", "pair", "est", "true"])
    wide = df.pivot_table(index=["sub", "pair"], columns="ses", values=["est", "true"])
    d = pd.DataFrame({"est": wide[("est", "post")] - wide[("est", "pre")],
                      "true": wide[("true", "post")] - wide[("true", "pre")]})
    per_pair = d.groupby(level="pair").mean()
    return {
        "within_default": per_pair.loc["Default-Default"].to_dict(),
        "sommot_default": per_pair.loc["SomMot-Default"].to_dict(),
        "r_pairs": float(np.corrcoef(per_pair.est, per_pair.true)[0, 1]),
        "r_pairs_subjects": float(np.corrcoef(d.est, d.true)[0, 1]),
        "per_subject": d.loc[(slice(None), ["Default-Default", "SomMot-Default"]), :],
        "per_pair": per_pair,
    }


def _overlay(tmp_path, name, section):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"connectivity": section}))
    return str(path)


# ----------------------------------------------------------------------------------------------
# fast: DAG-time checks and package pieces
@pytest.mark.parametrize("section, key", [
    ({"atlases": ["Schaefer300"]}, "connectivity.atlases[0]"),
    ({"hierarchy": {"lower": ["Vis"], "higher": ["DMN"]}}, "connectivity.hierarchy"),
    ({"custom_atlases": {"mine": {"labels": "no.nii.gz", "tsv": "no.tsv"}}, "atlases": ["mine"]},
     "connectivity.custom_atlases.mine.labels"),
])
def test_bad_connectivity_config_fails_at_dag_time(tmp_path, section, key):
    res = snakemake("-n", "--cores", "1", "--configfile", _overlay(tmp_path, "c.yaml", section),
                    "--config", f"results_dir={tmp_path}/results", cwd=tmp_path, check=False)
    assert res.returncode != 0
    assert key in res.stdout + res.stderr


def test_default_config_registers_connectivity_targets(tmp_path):
    res = snakemake("-n", "--cores", "2", "--config", f"results_dir={tmp_path}/results", cwd=ROOT)
    jobs = dry_run_jobs(res.stdout + res.stderr)
    n = len(pd.read_csv(ROOT / "config/participants.tsv", sep="\t"))
    # one job per session and atlas writes its time series, both FC kinds and its tables
    assert jobs["connectivity_session"] == jobs["connectivity_session_qc"] == 2 * n
    assert jobs["connectivity_tangent"] == jobs["connectivity_gradients"] == 1


def test_alff_maps_of_a_censored_run_match_the_full_length_series():
    from prepost.connectivity import alff

    rng = np.random.default_rng(1)
    n, t_r = 120, 2.0
    data = rng.standard_normal((2, 2, 2, n)).astype(np.float32)
    keep = np.setdiff1d(np.arange(n), [10, 11, 12, 60])
    img = nib.Nifti1Image(data[..., keep], np.eye(4))
    mask = nib.Nifti1Image(np.ones((2, 2, 2), np.uint8), np.eye(4))
    a_img, f_img = alff.alff_maps(img, mask, t_r=t_r, sample_mask=keep, n_volumes=n)
    a, f = alff.compute_alff(data.reshape(-1, n).T, t_r, sample_mask=keep)
    np.testing.assert_allclose(a_img.get_fdata().ravel(), a, rtol=1e-6)
    np.testing.assert_allclose(f_img.get_fdata().ravel(), f, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# slow: the stage on a small simulated study (4 participants, 150 volumes, 6 mm BOLD)
@pytest.fixture(scope="module")
def conn_study(tmp_path_factory):
    from prepost import simulate

    root = tmp_path_factory.mktemp("conn")
    cfg = small_config(root)
    results = root / "results"
    simulate.simulate_study(results / "simulated", N_SUBJECTS, params=SIM)
    fabricate_fmri_outputs(results / "simulated", results)
    snakemake("--cores", "2", "--configfile", str(cfg), "--allowed-rules", *sorted(CONN_RULES),
              "--", *conn_targets(results), cwd=root)
    return root, cfg, results


@pytest.mark.slow
def test_planted_fc_changes_are_recovered(conn_study):
    _, _, results = conn_study
    r = score(results, results / "simulated/truth")
    print("within-Default", r["within_default"], "SomMot-Default", r["sommot_default"],
          "r across pairs", r["r_pairs"])
    # mean over 4 participants: the planted signs (-0.10, +0.10 in z); the true per-session
    # changes include session noise, and the estimate sampling noise (~0.15 z per participant)
    assert r["within_default"]["est"] < 0 and r["sommot_default"]["est"] > 0
    for k in ("within_default", "sommot_default"):
        assert abs(r[k]["est"] - r[k]["true"]) < 0.1
    # estimated vs true change across the 28 network pairs (0.55 measured at these sizes)
    assert r["r_pairs"] > 0.3


@pytest.mark.slow
def test_outputs_are_complete_and_consistent(conn_study):
    _, _, results = conn_study
    stem = results / "sub-01/ses-pre/func" / f"sub-01_ses-pre_task-rest_space-{SPACE}_res-3"
    ts = pd.read_csv(f"{stem}_atlas-Schaefer400_timeseries.tsv", sep="\t")
    qc = json.loads(Path(f"{stem}_desc-denoised_qc.json").read_text())
    assert ts.shape == (len(qc["sample_mask"]), 400)
    r = pd.read_csv(f"{stem}_atlas-Schaefer400_meas-pearson_relmat.tsv", sep="\t", index_col=0)
    assert r.shape == (400, 400) and list(r.index) == list(r.columns) == list(ts.columns)
    ok = ts.columns[ts.notna().all()]
    np.testing.assert_allclose(r.loc[ok, ok].to_numpy(), np.corrcoef(ts[ok].to_numpy().T),
                               atol=1e-5)
    long = pd.read_csv(f"{stem}_atlas-Schaefer400_desc-connectivity_long.tsv", sep="\t",
                       keep_default_na=False, na_values=["n/a"])
    assert list(long.columns) == ["participant_id", "session", "modality", "measure", "region",
                                  "value", "flag", "atlas"]
    q = long[long.modality == "qc"].set_index("measure").value
    assert q["mean_fd"] == pytest.approx(qc["mean_fd"], rel=1e-5) and q["excluded"] == 0
    assert {"fc_within", "fc_between", "integration", "segregation", "alff", "falff",
            "eigenvector_centrality", "modularity"} <= set(long.measure)
    assert "PCC" in set(long.region)
    grad = pd.read_csv(results / "group/connectivity/atlas-Schaefer400_desc-gradients_long.tsv",
                       sep="\t")
    assert len(grad.groupby(["participant_id", "session"])) == 2 * N_SUBJECTS
    pos = grad[grad.measure == "gradient1_position"].groupby("region").value.mean()
    assert pos["Default"] > pos["SomMot"]  # unimodal -> transmodal orientation
    tan = pd.read_csv(f"{stem}_atlas-Schaefer400_meas-tangent_relmat.tsv", sep="\t", index_col=0)
    assert tan.shape == (400, 400) and np.isfinite(tan.to_numpy()).mean() > 0.9


@pytest.mark.slow
def test_params_change_reruns_only_connectivity(conn_study, tmp_path):
    root, cfg, results = conn_study
    targets = conn_targets(results)
    # the fMRI stage's outputs are fabricated here: only connectivity rules may be scheduled
    allowed = ("--allowed-rules", *sorted(CONN_RULES))
    base = dry_run_jobs(snakemake("-n", "--configfile", str(cfg), *allowed, "--", *targets,
                             cwd=root).stdout)
    assert not set(base) & CONN_RULES
    res = snakemake("-n", "--configfile", str(cfg),
                    _overlay(tmp_path, "a.yaml", {"graph_densities": [0.1]}), *allowed, "--",
                    *targets, cwd=root)
    # the session's job rewrites its time series, so the group fits that read them follow
    assert dry_run_jobs(res.stdout) == {**base, "connectivity_session": 2 * N_SUBJECTS,
                                        "connectivity_tangent": 1, "connectivity_gradients": 1}
    res = snakemake("-n", "--configfile", str(cfg),
                    _overlay(tmp_path, "b.yaml", {"min_coverage": 0.6}), *allowed, "--", *targets,
                    cwd=root)
    new = {k: v for k, v in dry_run_jobs(res.stdout).items() if base.get(k) != v}
    assert set(new) == {"connectivity_session", "connectivity_tangent", "connectivity_gradients"}


@pytest.mark.slow
def test_excluded_run_gives_nan_outputs_with_flags(conn_study, tmp_path):
    _, _, results = conn_study
    out = tmp_path / "results"
    for sub in ("01", "02"):
        for ses in ("pre", "post"):
            for src in contract_paths(results, sub, ses).values():
                dst = out / src.relative_to(results)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, dst)
    qc_path = contract_paths(out, "02", "post")["qc"]
    qc = json.loads(qc_path.read_text())
    qc_path.write_text(json.dumps({**qc, "excluded": True, "reason": "retained_s<240"}))
    cfg = small_config(tmp_path, n=2, results_dir=str(out))
    snakemake("--cores", "2", "--configfile", str(cfg), "--allowed-rules", *sorted(CONN_RULES),
              "--", *conn_targets(out, n=2), cwd=tmp_path)
    stem = out / "sub-02/ses-post/func" / f"sub-02_ses-post_task-rest_space-{SPACE}_res-3"
    long = pd.read_csv(f"{stem}_atlas-Schaefer400_desc-connectivity_long.tsv", sep="\t",
                       keep_default_na=False, na_values=["n/a"])
    fm = long[long.modality == "fmri"]
    assert fm.value.isna().all() and (fm.flag == "retained_s<240").all()
    assert long.set_index("measure").loc["excluded", "value"] == 1
    ok = pd.read_csv(str(stem).replace("sub-02/ses-post", "sub-02/ses-pre").replace(
        "ses-post", "ses-pre") + "_atlas-Schaefer400_desc-connectivity_long.tsv", sep="\t")
    assert len(ok) == len(long) and ok.value.notna().mean() > 0.9
    r = pd.read_csv(f"{stem}_atlas-Schaefer400_meas-pearson_relmat.tsv", sep="\t", index_col=0)
    assert r.isna().all().all()
    tan = pd.read_csv(f"{stem}_atlas-Schaefer400_meas-tangent_relmat.tsv", sep="\t", index_col=0)
    assert tan.isna().all().all()
    grad = pd.read_csv(out / "group/connectivity/atlas-Schaefer400_desc-gradients_long.tsv",
                       sep="\t", keep_default_na=False, na_values=["n/a"])
    g = grad[(grad.participant_id == "sub-02") & (grad.session == "post")]
    assert g.value.isna().all() and (g.flag == "retained_s<240").all()
    assert grad[grad.session == "pre"].value.notna().all()


def test_names_follow_the_bold_run_entities():
    # a run's entities (acq-, run-) reach every per-run fMRI name; the session's connectivity
    # names carry its task only (runs are combined); a run of task- only keeps the usual names
    from prepost.connectivity import stage as conn_stage
    from prepost.fmri import stage as fmri_stage

    key = fmri_stage.run_key({"task": "rest", "run": "2", "acq": "mb4"})
    assert key == "rest_acq-mb4_run-2" and fmri_stage.run_key({"task": "rest"}) == "rest"
    bold = fmri_stage.output_paths("r", space=SPACE, res="3", sub="01", ses="pre", task=key)
    stem = bold["denoise"]["bold"].removesuffix("_desc-denoised_bold.nii.gz")
    assert stem == ("r/sub-01/ses-pre/func/"
                    f"sub-01_ses-pre_task-rest_acq-mb4_run-2_space-{SPACE}_res-3")
    conn = conn_stage.output_paths("r", space=SPACE, res="3", atlas="Schaefer100",
                                   meas="pearson", sub="01", ses="pre", task="rest")
    session = f"r/sub-01/ses-pre/func/sub-01_ses-pre_task-rest_space-{SPACE}_res-3"
    assert conn["relmat"] == f"{session}_atlas-Schaefer100_meas-pearson_relmat.tsv"
    assert all(p.startswith(session) for p in conn.values())


def _run_qc(n_volumes, sample_mask, retained_s, mean_fd, excluded=False, t_r=2.0):
    return {"excluded": excluded, "reason": "retained_s<240" if excluded else "", "t_r": t_r,
            "n_volumes": n_volumes, "sample_mask": list(sample_mask), "retained_s": retained_s,
            "mean_fd": mean_fd}


def test_session_qc_combines_runs_and_drops_excluded_ones():
    from prepost.connectivity import stage as cs

    a = _run_qc(50, range(2, 50), 96.0, 0.10)
    b = _run_qc(40, [0, 1, 5, 6], 8.0, 0.30, excluded=True)
    c = _run_qc(30, range(0, 30, 2), 30.0, 0.20)
    q = cs.session_qc([a, b, c], keys=["rest_run-1", "rest_run-2", "rest_run-3"])
    assert not q["excluded"] and q["n_volumes"] == 80
    assert q["sample_mask"] == list(range(2, 50)) + [50 + j for j in range(0, 30, 2)]
    assert q["retained_s"] == 126.0
    assert q["mean_fd"] == pytest.approx((0.10 * 50 + 0.20 * 30) / 80)
    assert [r["used"] for r in q["runs"]] == [True, False, True]
    # every run excluded: the session is, with each run's reason
    q = cs.session_qc([b, {**a, "excluded": True, "reason": "x"}], keys=["r2", "r1"])
    assert q["excluded"] and "run r2: retained_s<240" in q["reason"] and "run r1: x" in q["reason"]
    # one run: its own record
    assert {k: v for k, v in cs.session_qc([a]).items() if k != "runs"} == a


def test_combined_fc_concatenates_or_averages_fisher_z():
    from prepost.connectivity import stage as cs

    rng = np.random.default_rng(3)
    names = [f"p{i}" for i in range(6)]
    mix = rng.standard_normal((6, 6))
    x1 = pd.DataFrame(rng.standard_normal((40, 6)) @ mix, columns=names)
    x2 = pd.DataFrame(rng.standard_normal((25, 6)) @ mix.T + 3.0, columns=names)
    qcs = [_run_qc(45, range(5, 45), 80.0, 0.1), _run_qc(30, range(25), 50.0, 0.2)]
    q = cs.session_qc(qcs)
    cov = pd.DataFrame({"index": range(6), "name": names, "network": "Vis", "n_voxels": 5,
                        "n_valid": 5, "coverage": 1.0, "kept": True})
    ts, _ = cs.combine_timeseries([(x1, cov), (x2, cov)])
    stacked = np.vstack([x1.to_numpy(), x2.to_numpy()])
    off = ~np.eye(6, dtype=bool)
    cat = cs.session_fc(ts, q, "pearson", combine="concatenate")
    assert np.allclose(cat[off], np.corrcoef(stacked.T)[off], atol=1e-10)
    avg = cs.session_fc(ts, q, "pearson", combine="average")
    with np.errstate(divide="ignore"):  # the diagonal (r = 1) is not compared
        z1, z2 = (np.arctanh(np.corrcoef(x.T.to_numpy())) for x in (x1, x2))
    want = np.tanh((80.0 * z1 + 50.0 * z2) / 130.0)
    assert np.allclose(avg[off], want[off], atol=1e-10)
    # a parcel one run does not cover is missing from the session
    cov2 = cov.assign(kept=[True] * 5 + [False])
    ts2, cov_s = cs.combine_timeseries([(x1, cov), (x2.assign(p5=np.nan), cov2)])
    assert ts2["p5"].isna().all() and not cov_s["kept"].iloc[5] and ts2["p0"].notna().all()
