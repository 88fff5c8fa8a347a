"""The PET stage as a workflow: the real chain on a small simulated study, scored against the truth.

One participant (pre and post sessions, PET at 4 mm) runs simulate -> anat -> PET with snakemake;
the tests score TACs, VT, SUVR, the arterial input and the parametric maps against the simulator's
truth, then check the flagging of failed fits and which rules a parameter change re-schedules.
"""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from prepost import simulate as psim
from prepost.pet import kinetics, pvc, roi, stage, tacs
from runner import dry_run_jobs, snakemake

SPACE = "MNI152NLin2009aSym"
SESSIONS = ("pre", "post")
NETWORKS = ["Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default"]
PET_RULES = {"pet_motion", "pet_coreg", "pet_rois", "pet_tacs", "pet_blood", "pet_kinetics",
             "pet_maps"}
UNTIL = ["--until", "pet_kinetics", "pet_maps"]


def stem(results, ses, sub="01"):
    return Path(results) / f"sub-{sub}" / f"ses-{ses}" / "pet" / f"sub-{sub}_ses-{ses}_trc-UCBJ"


ROIS = ([{"name": "PCC", "type": "atlas", "atlas": "Schaefer400", "pattern": "Default_pCunPCC"},
         {"name": "cortical_gm", "type": "tissue", "tissue": "gm", "threshold": 0.5},
         {"name": "whole_brain", "type": "tissue", "tissue": "brain"},
         {"name": "centrum_semiovale", "type": "reference", "method": "semiovale"}]
        + [{"name": n, "type": "atlas", "atlas": "Schaefer400", "pattern": f"_{n}_"}
           for n in NETWORKS])


def run_study(tmp, sim_extra=None, until=UNTIL):
    """Simulate one participant and run the chain; returns (work dir, config, results, truth)."""
    part = tmp / "participants.tsv"
    part.write_text("participant_id\tage\tfollowup_days\nsub-01\t30\t7\n")
    cfg = {
        "participants": str(part),
        "results_dir": str(tmp / "results"),
        "modalities": {"fmri": False, "pet": True},
        "simulate": {"anat": {"voxel_mm": 3.0}, "bold": {"n_volumes": 20, "voxel_mm": 8.0},
                     "pet": {"voxel_mm": 4.0}, **(sim_extra or {})},
        # effective resolution of the simulated 4 mm images: the 5 mm scanner blur and the
        # simulator's anti-aliasing before sampling (sigma 4/2.355 - 0.4 mm)
        "pet": {"rois": ROIS, "plot_regions": ["PCC", "cortical_gm", "centrum_semiovale"],
                "psf_fwhm_mm": 5.86},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    for name, pet in (("models", {"models": ["1tcm", "srtm", "suvr"]}),
                      ("window", {"suvr_window_s": [3000, 5400]}),
                      ("bounds", {"vt_bounds": [0.5, 8.0]})):
        (tmp / f"{name}.yaml").write_text(yaml.safe_dump({"pet": pet}))
    snakemake("--cores", "2", "--configfile", str(path), *until, cwd=tmp)
    return tmp, path, tmp / "results", tmp / "results" / "simulated" / "truth"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The demo's planted sizes (regional VT spread 2 %)."""
    return run_study(tmp_path_factory.mktemp("petwf"))


@pytest.fixture(scope="module")
def spread_study(tmp_path_factory):
    """Network VT spread of 20 % instead of 2 %, so that SUVR has regional differences to rank."""
    return run_study(tmp_path_factory.mktemp("petwf_spread"),
                     {"variability": {"vt_region_sd_pct": 20.0}}, ["--until", "pet_kinetics"])


def truth_regions(truth, ses):
    return pd.read_csv(truth / "sub-01" / f"sub-01_ses-{ses}_pet-regions.tsv", sep="\t").set_index("region")


def read(path):
    return pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)


# --------------------------------------------------------------------------------------------
# fast: the arterial input on noise-free recordings
# --------------------------------------------------------------------------------------------
def test_metabolite_corrected_input_matches_truth_on_clean_samples(tmp_path):
    """Manual + autosampler recordings sampled from the simulator's input without noise: the
    metabolite-corrected plasma equals the true parent input up to interpolation error."""
    inp = {"feng": [400.0, 8.0, 2.5, -4.0, -0.25, -0.015], "delay_min": 0.25,
           "parent_fraction_hill": [0.15, 1.8, 12.0], "blood_plasma_ratio": 0.9}
    cp, cb = psim.input_functions(inp)
    tm = np.array([10, 20, 30, 45, 60, 75, 90, 120, 150, 180, 240, 300, 420, 600, 900, 1200, 1800,
                   2400, 3000, 3600, 4500, 5400], float)
    frac = psim.hill_parent_fraction(tm / 60 - inp["delay_min"], *inp["parent_fraction_hill"])
    pf = np.where(np.isin(tm, [300, 900, 1800, 3600, 5400]), frac, np.nan)
    man = pd.DataFrame({"time": tm, "plasma_radioactivity": cp(tm / 60) / frac,
                        "whole_blood_radioactivity": 0.9 * cp(tm / 60) / frac,
                        "metabolite_parent_fraction": pf})
    ta = np.arange(0, 601, 2.0)
    auto = pd.DataFrame({"time": ta, "whole_blood_radioactivity": cb(ta / 60)})
    rec = {}
    for label, df, avail in (("manual", man, (True, True, True)), ("autosampler", auto, (False, True, False))):
        tsv, js = tmp_path / f"{label}_blood.tsv", tmp_path / f"{label}_blood.json"
        df.to_csv(tsv, sep="\t", index=False, na_rep="n/a")
        meta = {"PlasmaAvail": avail[0], "WholeBloodAvail": avail[1], "MetaboliteAvail": avail[2],
                "time": {"Units": "s"}}
        for c in df.columns[1:]:
            meta[c] = {"Units": "kBq/mL"} if "radioactivity" in c else {"Units": "unitless"}
        if avail[2]:
            meta.update(MetaboliteMethod="HPLC", MetaboliteRecoveryCorrectionApplied=False)
        js.write_text(json.dumps(meta))
        rec[label], rec[f"{label}_json"] = str(tsv), str(js)
    df, meta = stage.blood_step(rec, scan_end_s=5400.0, units="kBq/mL", parent_fraction_model="hill")
    t = df["time"].to_numpy()
    true = cp(t / 60)
    after = t >= 120  # past the peak: between-sample interpolation of a smooth curve
    rel = np.abs(df["parent_plasma"].to_numpy()[after] / true[after] - 1)
    assert np.median(rel) < 0.01 and rel.max() < 0.04
    auc = np.trapezoid(df["parent_plasma"], t) / np.trapezoid(true, t)
    assert abs(auc - 1) < 0.02
    assert meta["parent_plasma"]["Units"] == "kBq/mL"


def test_basis_function_srtm_recovers_bpnd():
    """Noise-free 1TCM target and reference curves: BPND = VT / VT_ref - 1 voxel by voxel."""
    fs, fd = psim.frame_timing(psim.DEFAULTS["pet"]["frames"])
    inp = {"feng": [400.0, 8.0, 2.5, -4.0, -0.25, -0.015], "delay_min": 0.25,
           "parent_fraction_hill": [0.15, 1.8, 12.0], "blood_plasma_ratio": 0.9}
    ref = psim.one_tcm_frames(inp, 0.12, 0.12 / 5.0, 0.0, fs, fd)
    vts = np.linspace(8, 30, 12)
    curves = np.stack([psim.one_tcm_frames(inp, 0.3, 0.3 / v, 0.0, fs, fd) for v in vts])
    img = nib.Nifti1Image(curves.reshape(3, 4, 1, -1).astype(np.float32), np.eye(4))
    bp, r1, _ = tacs.voxelwise_srtm_bpnd(img, fs, fd, ref)
    np.testing.assert_allclose(bp.get_fdata().ravel(), vts / 5.0 - 1, rtol=0.02)  # basis grid
    np.testing.assert_allclose(r1.get_fdata().ravel(), 2.5, rtol=0.01)
    # the regional NLS fit agrees
    fit = kinetics.srtm(curves[5], ref, fs, fd)
    assert abs(fit.estimates["BPND"] - bp.get_fdata().ravel()[5]) < 0.02


def test_gtm_recovers_compartment_concentrations():
    """A phantom built the simulator's way (tissue fractions sampled on a coarse PET grid, then
    blurred there) : the GTM undoes the partial-volume loss the ROI means show."""
    from scipy import ndimage

    t1_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    t1_aff[:3, 3] = -56
    x, y, z = np.indices((56, 56, 56)) * 2.0 - 56
    r = np.sqrt(x ** 2 + y ** 2 + z ** 2)
    gm = np.clip((36 - r) / 4, 0, 1) * np.clip((r - 20) / 4, 0, 1)  # a soft grey-matter shell
    wm = np.clip((24 - r) / 4, 0, 1)                                  # white-matter core
    csf = np.clip(1 - gm - wm, 0, 1) * (r < 44)
    roi_gm = (gm > 0.5).astype(np.float32)
    roi_ant = ((x > 14) & (r < 40)).astype(np.float32)  # an atlas-like region, GM more active
    roi_wm = (wm > 0.9).astype(np.float32)
    roi_brain = (r < 44).astype(np.float32)
    truth = {"gm": 20.0, "gm_ant": 30.0, "wm": 5.0, "csf": 1.0}
    pet_aff = np.diag([4.0, 4.0, 4.0, 1.0])
    pet_aff[:3, 3] = -56
    # simulator-like forward model on the 4 mm grid
    xs = np.indices((28, 28, 28)).reshape(3, -1) * 2.0  # PET voxel centres in T1w voxel units
    samp = lambda a: ndimage.map_coordinates(ndimage.gaussian_filter(a, 0.6), xs, order=1).reshape(28, 28, 28)  # noqa: E731
    act = (samp(gm * (x <= 14)) * truth["gm"] + samp(gm * (x > 14)) * truth["gm_ant"]
           + samp(wm) * truth["wm"] + samp(csf) * truth["csf"])
    frame = ndimage.gaussian_filter(act, 5.0 / 2.3548 / 4.0)
    pet = nib.Nifti1Image(np.stack([frame, 0.5 * frame], -1).astype(np.float32), pet_aff)
    rois_t1 = {n: nib.Nifti1Image(m, t1_aff) for n, m in
               (("ant", roi_ant), ("gm", roi_gm), ("wm", roi_wm), ("brain", roi_brain))}
    tissue = {k: nib.Nifti1Image(v.astype(np.float32), t1_aff) for k, v in
              (("gm", gm), ("wm", wm), ("csf", csf))}
    specs = roi.validate_roi_config([
        {"name": "ant", "type": "sphere", "center_mni": [0, 0, 0], "radius_mm": 1},
        {"name": "gm", "type": "tissue", "tissue": "gm"},
        {"name": "wm", "type": "tissue", "tissue": "wm"},
        {"name": "brain", "type": "tissue", "tissue": "brain"}])
    pet_rois, _ = roi.masks_to_pet(rois_t1, nib.Nifti1Image(frame.astype(np.float32), pet_aff),
                                   np.eye(4), min_volume_ml=0.1)
    raw, _ = tacs.extract_tacs(pet, pet_rois, [0, 60], [60, 60])
    fr, table, overlap = pvc.gtm_compartments(rois_t1, tissue, min_compartment_ml=0.5)
    # effective resolution: the 5 mm blur and the 1.2 mm-sigma anti-aliasing before sampling
    fwhm = np.hypot(5.0, 1.2 * 2.3548)
    corr, _, info = pvc.gtm_correct(raw, specs, fr, table, overlap, t1_aff, pet, None, fwhm)
    gm_true = (truth["gm"] * (gm * (x <= 14) * roi_gm).sum()
               + truth["gm_ant"] * (gm * (x > 14) * roi_gm).sum()) / (gm * roi_gm).sum()
    for name, want in (("ant", truth["gm_ant"]), ("gm", gm_true), ("wm", truth["wm"])):
        assert abs(corr[name][0] / want - 1) < 0.05, (name, corr[name][0], want)
        assert abs(corr[name][1] / corr[name][0] - 0.5) < 1e-6  # linear in the data
    assert raw["ant"][0] / truth["gm_ant"] < 0.85  # partial-volume loss before correction
    assert info["condition_number"] < 1000


# --------------------------------------------------------------------------------------------
# slow: the chain
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_chain_writes_every_output(study):
    _, _, results, _ = study
    for ses in SESSIONS:
        t = stem(results, ses)
        tacs = read(f"{t}_seg-study_tacs.tsv")
        meta = json.loads(Path(f"{t}_seg-study_tacs.json").read_text())
        names = [r["name"] for r in ROIS]
        assert list(tacs.columns) == ["frame_start", "frame_end", *names]
        assert meta["Units"] == "kBq/mL" and set(meta["ROIs"]) == set(names)
        assert meta["ROIs"]["centrum_semiovale"]["volume_ml"] > 1.0
        motion = read(f"{t}_desc-motion_timeseries.tsv")
        assert len(motion) == len(tacs) == 31
        assert {"trans_x", "rot_z", "fd_mm", "corrected"} <= set(motion.columns)
        assert (motion.loc[motion.frame_start < 120, "corrected"] == 0).all()
        qc = json.loads(Path(f"{t}_desc-coreg_qc.json").read_text())
        assert qc["mutual_information"] < qc["mutual_information_init"] and qc["dice_brain"] > 0.8
        assert Path(f"{t}_from-pet_to-T1w_mode-image_xfm.mat").stat().st_size > 0
        for q in ("motion", "coreg", "tacs"):
            assert Path(f"{t}_desc-{q}_qc.png").stat().st_size > 5000
        kin = read(f"{t}_desc-kinetics_table.tsv")
        assert {"roi", "model", "parameter", "estimate", "se", "aic", "fit_ok", "flag", "pvc"} <= set(kin)
        assert set(kin.model) == {"1tcm", "logan", "ma1", "srtm", "logan_ref", "suvr"}
        long = read(f"{t}_desc-pet_long.tsv")
        assert list(long.columns) == ["participant_id", "session", "modality", "measure", "region",
                                      "value", "flag"]
        assert set(long.modality) == {"pet"} and set(long.session) == {ses}
        assert {"VT_1tcm", "VT_logan", "VT_ma1", "K1_1tcm", "SUVR", "BPND_srtm", "DVR_logan"} <= set(long.measure)
        assert (long.flag == "").all()  # nothing failed on clean simulated data
        for stat in ("SUVR", "VTlogan", "BPNDsrtm"):
            img = nib.load(f"{t}_space-{SPACE}_res-2_stat-{stat}_petmap.nii.gz")
            assert img.shape == (99, 117, 95)
            assert np.isfinite(img.get_fdata()).mean() > 0.15


@pytest.mark.slow
def test_partial_volume_effect_and_gtm_correction(study):
    """Uncorrected TACs are far below the tissue truth; GTM TACs match it (noise-free truth TACs
    of PCC and centrum semiovale), and 1TCM VT with the true input recovers the true VT."""
    _, _, results, truth = study
    for ses in SESSIONS:
        t = stem(results, ses)
        raw = read(f"{t}_seg-study_tacs.tsv")
        gtm = read(f"{t}_seg-study_desc-gtm_tacs.tsv")
        true = read(truth / "sub-01" / f"sub-01_ses-{ses}_pet-tacs.tsv")
        late = raw.frame_start >= 600
        for roi in ("PCC", "centrum_semiovale"):
            r_raw = np.median(raw[roi][late] / true[roi][late])
            r_gtm = np.median(gtm[roi][late] / true[roi][late])
            assert abs(r_gtm - 1) < 0.06, (ses, roi, r_gtm)
            if roi == "PCC":
                assert r_raw < 0.8  # grey matter diluted by partial volume
        inp = json.loads((truth / "sub-01" / f"sub-01_ses-{ses}_input-function.json").read_text())
        cp, cb = psim.input_functions(inp)
        tt = np.arange(0, 5401, 1.0)
        reg = truth_regions(truth, ses)
        fs, fd = gtm.frame_start.to_numpy(), (gtm.frame_end - gtm.frame_start).to_numpy()
        # cortical_gm: the ROI (GM > 0.5) also holds cerebellar and deep grey matter, which the
        # truth's parcel-weighted cortical VT leaves out
        errors = {}
        for roi_name, tol in (("PCC", 0.08), ("centrum_semiovale", 0.08), ("cortical_gm", 0.12)):
            fit = kinetics.one_tcm(tt, cp(tt / 60), cb(tt / 60), fs, fd, gtm[roi_name].to_numpy())
            errors[roi_name] = (fit.estimates["VT"] / reg.VT[roi_name] - 1, tol)
        assert all(abs(e) < tol for e, tol in errors.values()), (ses, errors)


@pytest.mark.slow
def test_vt_against_truth_with_and_without_pvc(study):
    """Workflow VT (its own input function): uncorrected VT is biased low in grey matter; GTM
    VT is within the error the noisy metabolite samples allow."""
    _, _, results, truth = study
    for ses in SESSIONS:
        kin = read(f"{stem(results, ses)}_desc-kinetics_table.tsv")
        reg = truth_regions(truth, ses)

        def vt(pvc, roi):
            s = kin[(kin.pvc == pvc) & (kin.roi == roi) & (kin.model == "1tcm") & (kin.parameter == "VT")]
            return float(s.estimate.iloc[0])

        for roi in ("PCC", "cortical_gm"):
            assert vt("gtm", roi) / vt("none", roi) > 1.2  # the correction restores grey matter
            assert abs(vt("gtm", roi) / reg.VT[roi] - 1) < 0.25, (ses, roi)
        assert abs(vt("gtm", "centrum_semiovale") / reg.VT["centrum_semiovale"] - 1) < 0.25


@pytest.mark.slow
def test_suvr_rank_correlates_with_true_vt(spread_study):
    """Across the 7 networks and the PCC, SUVR ranks the true VT, from the GTM-corrected TACs (the
    tidy table) and from the uncorrected ones (kinetics table)."""
    _, _, results, truth = spread_study
    names = NETWORKS + ["PCC"]
    rho = {}
    for ses in SESSIONS:
        t = stem(results, ses)
        long = read(f"{t}_desc-pet_long.tsv")
        kin = read(f"{t}_desc-kinetics_table.tsv")
        reg = truth_regions(truth, ses)
        true = [reg.VT[f"network-{n}" if n in NETWORKS else n] for n in names]
        suvr = long[long.measure == "SUVR"].set_index("region").value
        raw = kin[(kin.pvc == "none") & (kin.model == "suvr")].set_index("roi").estimate
        rho[ses] = (stats.spearmanr([suvr[n] for n in names], true)[0],
                    stats.spearmanr([raw[n] for n in names], true)[0])
    gtm, raw = np.mean([v[0] for v in rho.values()]), np.mean([v[1] for v in rho.values()])
    assert gtm > 0.5 and raw > 0.5, rho
    assert all(min(v) > 0.3 for v in rho.values()), rho


@pytest.mark.slow
def test_params_change_reschedules_only_kinetics(study):
    tmp, cfg, _, _ = study
    res = snakemake("-n", "--cores", "2", "--configfile", str(cfg), *UNTIL, cwd=tmp)
    assert not dry_run_jobs(res)  # nothing to do
    res = snakemake("-n", "--cores", "2", "--configfile", str(cfg), *UNTIL,
                    "--config", "pet={models: [1tcm, srtm, suvr]}", cwd=tmp)
    assert dry_run_jobs(res) == {"pet_kinetics": 2}
    # the same change from a second config file (numbers inside --config mappings stay strings)
    res = snakemake("-n", "--cores", "2", "--configfile", str(cfg), str(tmp / "models.yaml"),
                    *UNTIL, cwd=tmp)
    assert dry_run_jobs(res) == {"pet_kinetics": 2}
    res = snakemake("-n", "--cores", "2", "--configfile", str(cfg), str(tmp / "window.yaml"),
                    *UNTIL, cwd=tmp)
    # the SUVR window is a parameter of the kinetic models and of the voxel-wise SUVR map
    assert dry_run_jobs(res) == {"pet_kinetics": 2, "pet_maps": 2}


@pytest.mark.slow
def test_failed_fit_is_flagged_not_dropped(study):
    """A VT range that excludes grey matter makes those fits implausible: rows stay, flagged."""
    tmp, cfg, results, _ = study
    try:
        res = snakemake("--cores", "2", "--configfile", str(cfg), str(tmp / "bounds.yaml"),
                        *UNTIL, cwd=tmp)
        long = read(f"{stem(results, 'pre')}_desc-pet_long.tsv")
    finally:
        # the shared study goes back to its own parameters, whatever order the tests run in
        snakemake("--cores", "2", "--configfile", str(cfg), *UNTIL, cwd=tmp)
    ran = {line.split()[-1].rstrip(":") for line in (res.stdout + res.stderr).splitlines()
           if line.strip().startswith(("rule ", "localrule "))}
    assert ran == {"pet_kinetics"}
    gm = long[(long.measure == "VT_1tcm") & (long.region == "PCC")]
    assert len(gm) == 1 and np.isfinite(gm.value.iloc[0])
    assert "outside plausible range" in gm.flag.iloc[0]
    wm = long[(long.measure == "VT_1tcm") & (long.region == "centrum_semiovale")]
    assert wm.flag.iloc[0] == ""
