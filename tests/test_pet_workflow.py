"""The PET stage as a workflow: the real chain on a small simulated study, scored against the truth.

Fast: dry runs show that the PET file names follow the anatomy's template resolution and the tracer
entity, and that the PET script refuses an unknown step; what static scans support (plan, DAG),
SUV against its closed form and its missing inputs. Slow: one participant (pre and post
sessions, PET at 4 mm, a 30 % planted PCC VT increase) runs simulate -> anat -> PET with
snakemake; the tests score TACs, VT, its pre/post change, SUVR and the parametric maps against the
simulator's truth, then check which rules a parameter change re-schedules and the flagging of failed
fits (on a copy of the study, so no test changes what another reads).
"""

import json
import runpy
import shutil
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
import runner
from runner import ROOT, dry_run_jobs, small_config, snakemake
from scipy import stats

from prepost import simulate as psim
from prepost.errors import InputError
from prepost.pet import kinetics, stage

SPACE = "MNI152NLin2009aSym"
SESSIONS = ("pre", "post")
NETWORKS = ["Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default"]
UNTIL = ["--until", "pet_kinetics", "pet_maps"]
# planted PCC VT increase from pre to post (%), far above the errors the tests allow (measured on
# this study: GTM TACs within 7 % of the truth, VT within 6 %, the change within 5 points)
PCC_CHANGE_PCT = 30.0
TAC_TOLERANCE = 0.08
VT_TOLERANCE = 0.10
CHANGE_TOLERANCE = 0.10

ROIS = ([{"name": "PCC", "type": "atlas", "atlas": "Schaefer400", "pattern": "Default_pCunPCC"},
         {"name": "cortical_gm", "type": "tissue", "tissue": "gm", "threshold": 0.5},
         {"name": "whole_brain", "type": "tissue", "tissue": "brain"},
         {"name": "centrum_semiovale", "type": "reference", "method": "semiovale"}]
        + [{"name": n, "type": "atlas", "atlas": "Schaefer400", "pattern": f"_{n}_"}
           for n in NETWORKS])


def outputs(results, ses, sub="01"):
    """The PET file names of one session (tracer UCBJ, 2 mm maps)."""
    return stage.output_paths(results, sub=sub, ses=ses, trc="UCBJ", space=SPACE, res=2)


def jobs_of(res, rule):
    """``[(inputs, outputs)]`` of every job of ``rule`` in a dry run's listing."""
    lines = (res.stdout + res.stderr).splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.strip() in (f"rule {rule}:", f"localrule {rule}:"):
            block = {}
            for follow in lines[i + 1:i + 12]:
                key, _, value = follow.strip().partition(": ")
                if key in ("input", "output"):
                    block[key] = value.split(", ")
            found.append((block.get("input", []), block.get("output", [])))
    return found


# --------------------------------------------------------------------------------------------
# fast: file names and the script's steps
# --------------------------------------------------------------------------------------------
def test_output_paths_follow_the_entities():
    with_tracer = stage.output_paths("r", sub="01", ses="pre", trc="UCBJ", res=2)
    assert with_tracer["tacs"] == "r/sub-01/ses-pre/pet/sub-01_ses-pre_trc-UCBJ_seg-study_tacs.tsv"
    assert with_tracer["fits"].endswith("sub-01_ses-pre_trc-UCBJ_seg-study_desc-fits_tacs.tsv")
    assert with_tracer["map_SUVR"].endswith(f"_trc-UCBJ_space-{SPACE}_res-2_stat-SUVR_petmap.nii.gz")
    without = stage.output_paths("r", sub="01", ses="pre", trc=None, res=1)
    assert set(without) == set(with_tracer)
    for key, path in without.items():
        assert "trc-" not in path and path == with_tracer[key].replace("_trc-UCBJ", "").replace(
            "res-2", "res-1"), key


def test_template_resolution_1_builds_the_dag(tmp_path):
    """1 mm templates: pet_maps reads the 1 mm T1w in MNI and writes res-1 maps. The simulated
    PET carries trc-UCBJ, which every PET name keeps (a dataset without trc-:
    test_pet_realworld)."""
    cfg = small_config(tmp_path, n=1, anat={"template_resolution": 1}, bids={"tracer": None})
    res = snakemake("-n", "--cores", "1", "--configfile", str(cfg), *UNTIL, cwd=tmp_path)
    assert dry_run_jobs(res)["pet_maps"] == 2
    results = tmp_path / "results"
    for ses in SESSIONS:
        want = stage.output_paths(results, sub="01", ses=ses, trc="UCBJ", space=SPACE, res=1)
        maps = [(i, o) for i, o in jobs_of(res, "pet_maps") if want["map_SUVR"] in o]
        assert len(maps) == 1, ses
        inputs, outs = maps[0]
        assert sorted(outs) == sorted(want[f"map_{m}"] for m in ("SUVR", "BPNDsrtm", "VTlogan"))
        mni = [p for p in inputs if p.endswith("_desc-preproc_T1w.nii.gz")]
        assert mni == [f"{results}/sub-01/ses-{ses}/anat/sub-01_ses-{ses}_space-{SPACE}_res-1"
                       "_desc-preproc_T1w.nii.gz"]
        assert want["tacs"] in inputs
    pet_files = [p for rule in ("pet_motion", "pet_tacs", "pet_kinetics", "pet_maps")
                 for _, outs in jobs_of(res, rule) for p in outs]
    assert pet_files and all("_trc-UCBJ_" in p for p in pet_files)


def test_script_rejects_an_unknown_step(tmp_path):
    fake = SimpleNamespace(params=SimpleNamespace(step="nope"), log=[str(tmp_path / "x.log")],
                           input=None, output=None, wildcards=None, threads=1)
    with pytest.raises(ValueError, match=r"unknown PET step 'nope'.*'kinetics'"):
        runpy.run_path(str(ROOT / "workflow" / "scripts" / "pet.py"), {"snakemake": fake})


# --------------------------------------------------------------------------------------------
# fast: what static scans support, SUV inputs
# --------------------------------------------------------------------------------------------
DEMO_FRAMES = psim.frame_timing(psim.DEFAULTS["pet"]["frames"])
PLAN_ARGS = {"models": ["1tcm", "logan", "srtm", "logan_ref", "suvr", "suv"],
             "maps": ["SUVR", "BPNDsrtm", "VTlogan", "SUV"], "suvr_window_s": [3600, 5400],
             "coreg_window_s": [1200, None], "motion_min_start_s": 120.0, "tstar_s": 1800}


def test_dynamic_plan_keeps_the_configuration():
    frames = {("01", s): (*DEMO_FRAMES, "pet.json") for s in SESSIONS}
    plan = stage.plan_study(frames, **PLAN_ARGS)
    assert plan["kind"] == "dynamic" and plan["messages"] == []
    assert plan["models"] == PLAN_ARGS["models"] and plan["maps"] == PLAN_ARGS["maps"]
    for params in plan["sessions"].values():
        assert params == {"suvr_window_s": [3600, 5400], "coreg_window_s": [1200, None],
                          "motion_min_start_s": 120.0, "tstar_s": 1800, "tstar_frames": None}


def test_static_plan_keeps_suv_and_suvr_and_says_what_it_leaves_out():
    frames = {("01", "pre"): (np.array([0.0]), np.array([1200.0]), "pre.json"),
              ("01", "post"): (np.array([0.0]), np.array([1800.0]), "post.json")}
    plan = stage.plan_study(frames, **{**PLAN_ARGS, "suvr_window_s": [600, 1500]})
    assert plan["kind"] == "static"
    assert plan["models"] == ["suvr", "suv"] and plan["maps"] == ["SUVR", "SUV"]
    text = "\n".join(plan["messages"])
    for word in ("['1tcm', 'logan', 'srtm', 'logan_ref']", "['BPNDsrtm', 'VTlogan']",
                 "no frame motion correction", "sub-01 ses-pre", "pre.json"):
        assert word in text
    assert "ses-post" not in text  # [600, 1500] s lies within the 1800 s scan
    to_end = stage.plan_study(frames, **{**PLAN_ARGS, "suvr_window_s": [0, None]})
    assert to_end["sessions"]["01", "pre"]["suvr_window_s"] == [0, None]  # None: the scan end
    assert "pet.suvr_window_s" not in "\n".join(to_end["messages"])
    assert plan["sessions"]["01", "pre"]["suvr_window_s"] == [0.0, 1200.0]
    assert plan["sessions"]["01", "post"]["suvr_window_s"] == [600, 1500]
    assert plan["sessions"]["01", "pre"]["coreg_window_s"] == [0.0, None]
    # a few late frames: every frame is registered
    late = {("01", "pre"): (np.array([3000.0, 3300, 3600, 3900]), np.full(4, 300.0), "p.json")}
    plan = stage.plan_study(late, **PLAN_ARGS)
    assert plan["sessions"]["01", "pre"]["motion_min_start_s"] == 3000.0
    assert "4 frames: every frame is registered" in "\n".join(plan["messages"])


@pytest.mark.parametrize("change, words", [
    ({"frames": "mixed"}, ["same kind of PET scan", "dynamic: sub-01 ses-pre",
                           "static: sub-01 ses-post"]),
    ({"models": ["srtm", "logan"], "frames": "static"}, ["'pet.models'", "suv"]),
    ({"tstar_frames": 5}, ["pet.tstar_s: null"]),
    ({"tstar_frames": 40, "tstar_s": None}, ["pre.json", "more frames than pet.tstar_frames"]),
])
def test_plan_refuses(change, words):
    kind = change.pop("frames", "dynamic")
    static = (np.array([0.0]), np.array([1200.0]))
    frames = {("01", "pre"): (*(static if kind == "static" else DEMO_FRAMES), "pre.json"),
              ("01", "post"): (*(DEMO_FRAMES if kind == "dynamic" else static), "post.json")}
    with pytest.raises(InputError) as err:
        stage.plan_study(frames, **{**PLAN_ARGS, **change})
    for word in words:
        assert word in str(err.value)


def test_suv_of_a_uniform_image_is_the_closed_form():
    """A uniform 2.5 kBq/mL image, 370 MBq injected, 72.5 kg: SUV = 2500 Bq/mL / (370e6 Bq /
    72500 g), whatever unit the TACs carry; the regional value to 1e-9, the float32 map to
    1e-6."""
    meta = {"InjectedRadioactivity": 370.0, "InjectedRadioactivityUnits": "MBq", "BodyWeight": 72.5}
    dose, weight = stage.check_suv_inputs(meta, source="pet.json")
    assert dose == 370e6 and weight == 72.5
    expected = 2500.0 / (370e6 / 72500.0)
    start, duration = np.array([0.0]), np.array([1200.0])
    roi = np.zeros((4, 4, 3), bool)
    roi[1:3, 1:3, :] = True
    for units, value in (("kBq/mL", 2.5), ("Bq/mL", 2500.0)):
        img = nib.Nifti1Image(np.full((4, 4, 3, 1), value, np.float32), np.eye(4))
        df, _, _, _ = stage.tacs_step(img, start, duration, {"roi": roi, "ref": ~roi},
                                      units=units, pvc_method="none", psf_fwhm_mm=5.0)
        kin = stage.kinetics_step({"none": (df, "tacs.tsv")}, input_df=None, models=["suv", "suvr"],
                                  reference_roi="ref", tstar_s=None, suvr_window_s=[0, 1200],
                                  vb=None, vt_bounds=[0.5, 100], bp_bounds=[-0.5, 30],
                                  injected_dose_bq=dose, weight_kg=weight, units=units)
        suv = kin[(kin.roi == "roi") & (kin.parameter == "SUV")].estimate.iloc[0]
        assert suv == pytest.approx(expected, rel=1e-9), units
        assert kin[(kin.roi == "roi") & (kin.parameter == "SUVR")].estimate.iloc[0] == pytest.approx(1.0)
        # the voxel-wise SUV map of the same image (float32 values)
        maps, _ = stage.maps_step(img, start, duration, None, reference_tac=[value],
                                  input_df=None, suvr_window_s=[0, 1200], tstar_s=None, vb=None,
                                  k2a_range=[0.003, 1.0], n_basis=10, maps=["SUVR", "SUV"],
                                  suv={"injected_dose_bq": dose, "weight_kg": weight,
                                       "units": units})
        np.testing.assert_allclose(np.asarray(maps["SUV"].dataobj), expected, rtol=1e-6)


@pytest.mark.parametrize("meta, weight, words", [
    ({"BodyWeight": 70}, None, ["'InjectedRadioactivity'", "pet.json"]),
    ({"InjectedRadioactivity": 300, "InjectedRadioactivityUnits": "MBqq", "BodyWeight": 70}, None,
     ["'InjectedRadioactivityUnits'", "'MBqq'"]),
    ({"InjectedRadioactivity": 300}, None, ["'InjectedRadioactivityUnits'", "it missing"]),
    ({"InjectedRadioactivity": 300, "InjectedRadioactivityUnits": "MBq"}, None,
     ["'BodyWeight'", "set pet.weight_column"]),
    ({"InjectedRadioactivity": 300, "InjectedRadioactivityUnits": "MBq"}, float("nan"),
     ["'BodyWeight'", "column 'weight'"]),
])
def test_suv_inputs_name_the_missing_field(meta, weight, words):
    column = "weight" if weight is not None else None
    with pytest.raises(InputError) as err:
        stage.check_suv_inputs(meta, weight, source="pet.json", participants="participants.tsv",
                               weight_column=column)
    for word in words:
        assert word in str(err.value)
    # the participants' weight is used when the sidecar has none
    assert stage.check_suv_inputs({"InjectedRadioactivity": 10, "InjectedRadioactivityUnits": "mCi"},
                                  68.0, source="pet.json") == (3.7e8, 68.0)


@pytest.mark.parametrize("n_frames", [1, 3])
def test_pet_to_mni_keeps_the_frame_axis(tmp_path, n_frames):
    """Identity transforms give the image back, also a one-frame (static) PET."""
    from prepost import registration

    eye = registration.write_ants_affine(np.eye(4), tmp_path / "id.mat")
    data = np.random.default_rng(0).uniform(0, 1, (6, 5, 4, n_frames)).astype(np.float32)
    ref = nib.Nifti1Image(np.zeros((6, 5, 4), np.float32), np.eye(4))
    out = stage.pet_to_mni(nib.Nifti1Image(data, np.eye(4)), eye, [eye], ref)
    assert out.shape == data.shape
    np.testing.assert_allclose(np.asarray(out.dataobj), data, atol=1e-6)


def test_static_maps_are_the_suvr_of_the_one_frame():
    """maps_step on a one-frame PET with maps ['SUVR']: the frame over the reference value, and
    no dynamic map is attempted (no input, no reference-tissue basis)."""
    data = np.random.default_rng(1).uniform(1, 3, (4, 4, 3, 1)).astype(np.float32)
    mask = nib.Nifti1Image(np.ones((4, 4, 3), np.uint8), np.eye(4))
    maps, _ = stage.maps_step(nib.Nifti1Image(data, np.eye(4)), [0.0], [1200.0], mask,
                              reference_tac=[2.0], input_df=None, suvr_window_s=[0.0, 1200.0],
                              tstar_s=None, vb=None, k2a_range=[0.003, 1.0], n_basis=10,
                              maps=["SUVR"])
    assert list(maps) == ["SUVR"]
    np.testing.assert_allclose(np.asarray(maps["SUVR"].dataobj), data[..., 0] / 2.0, rtol=1e-6)


def test_static_single_frame_study_dag(tmp_path):
    """One 20-min frame: the DAG says what is left out; no blood, every other step runs."""
    sim = {**runner.SMALL_SIMULATION, "pet": {**runner.SMALL_SIMULATION["pet"],
                                              "frames": [[1, 1200]]}}
    cfg = small_config(tmp_path, n=1, simulate=sim,
                       pet={"min_volume_ml": 0.2, "models": ["srtm", "logan", "suvr", "suv"]})
    res = snakemake("-n", "--cores", "1", "--configfile", str(cfg), *UNTIL, cwd=tmp_path)
    out = res.stdout + res.stderr
    assert dry_run_jobs(res) == {"simulate_subject": 1, "anat": 2, "pet_motion": 2, "pet_coreg": 2,
                                 "pet_tacs": 2, "pet_kinetics": 2, "pet_maps": 2}
    for words in ("models ['srtm', 'logan'] need a dynamic scan", "fitted: ['suvr', 'suv']",
                  "parametric maps ['BPNDsrtm', 'VTlogan'] are left out",
                  "static scan 0-1200 s", "no frame motion correction"):
        assert words in out
    maps = jobs_of(res, "pet_maps")
    assert len(maps) == 2
    for _, outs in maps:
        assert sorted(o.rsplit("_stat-", 1)[1] for o in outs) == ["SUVR_petmap.nii.gz",
                                                                   "SUV_petmap.nii.gz"]


# --------------------------------------------------------------------------------------------
# slow: the chain
# --------------------------------------------------------------------------------------------
def run_study(tmp, sim_extra=None, until=UNTIL):
    """Simulate one participant and run the chain in ``tmp``; returns (work dir, config,
    results, truth). Paths in the config are relative, so a copy of ``tmp`` is a study of its own."""
    (tmp / "participants.tsv").write_text("participant_id\tage\tfollowup_days\nsub-01\t30\t7\n")
    cfg = {
        "participants": "participants.tsv",
        "results_dir": "results",
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
    """The demo's regional VT spread (2 %) and a 30 % PCC VT increase from pre to post."""
    return run_study(tmp_path_factory.mktemp("petwf"),
                     {"effects": {"pcc_vt_pct": PCC_CHANGE_PCT}})


@pytest.fixture(scope="module")
def spread_study(tmp_path_factory):
    """Network VT spread of 20 % instead of 2 %, so that SUVR has regional differences to rank."""
    return run_study(tmp_path_factory.mktemp("petwf_spread"),
                     {"variability": {"vt_region_sd_pct": 20.0}}, ["--until", "pet_kinetics"])


def copy_of(study, tmp_path):
    """A copy of a study's folder (results and Snakemake's records), for tests that change it."""
    work = tmp_path / "study"
    shutil.copytree(study[0], work, symlinks=True)
    return work, work / "config.yaml", work / "results", work / "results" / "simulated" / "truth"


def truth_regions(truth, ses):
    return pd.read_csv(truth / "sub-01" / f"sub-01_ses-{ses}_pet-regions.tsv", sep="\t").set_index("region")


def read(path):
    return pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)


def vt(kin, pvc, roi, model="1tcm"):
    s = kin[(kin.pvc == pvc) & (kin.roi == roi) & (kin.model == model) & (kin.parameter == "VT")]
    return float(s.estimate.iloc[0])


@pytest.mark.slow
def test_chain_writes_every_output(study):
    _, _, results, _ = study
    for ses in SESSIONS:
        out = outputs(results, ses)
        tacs = read(out["tacs"])
        meta = json.loads(Path(out["tacs_json"]).read_text())
        names = [r["name"] for r in ROIS]
        assert list(tacs.columns) == ["frame_start", "frame_end", *names]
        assert meta["Units"] == "kBq/mL" and set(meta["ROIs"]) == set(names)
        assert meta["ROIs"]["centrum_semiovale"]["volume_ml"] > 1.0
        motion = read(out["motion"])
        assert len(motion) == len(tacs) == 31
        assert {"trans_x", "rot_z", "fd_mm", "corrected"} <= set(motion.columns)
        assert (motion.loc[motion.frame_start < 120, "corrected"] == 0).all()
        qc = json.loads(Path(out["coreg_qc"]).read_text())
        assert qc["mutual_information"] < qc["mutual_information_init"] and qc["dice_brain"] > 0.8
        assert Path(out["xfm"]).stat().st_size > 0
        for q in ("motion_qc", "coreg_png", "tacs_qc"):
            assert Path(out[q]).stat().st_size > 5000
        kin = read(out["kinetics"])
        assert {"roi", "model", "parameter", "estimate", "se", "aic", "fit_ok", "flag", "pvc"} <= set(kin)
        assert set(kin.model) == {"1tcm", "logan", "ma1", "srtm", "logan_ref", "suvr"}
        long = read(out["long"])
        assert list(long.columns) == ["participant_id", "session", "modality", "measure", "region",
                                      "value", "flag"]
        assert set(long.modality) == {"pet"} and set(long.session) == {ses}
        assert {"VT_1tcm", "VT_logan", "VT_ma1", "K1_1tcm", "SUVR", "BPND_srtm", "DVR_logan"} <= set(long.measure)
        assert (long.flag == "").all()  # nothing failed on clean simulated data
        for stat in ("SUVR", "VTlogan", "BPNDsrtm"):
            img = nib.load(out[f"map_{stat}"])
            assert img.shape == (99, 117, 95)
            assert np.isfinite(img.get_fdata()).mean() > 0.15


@pytest.mark.slow
def test_partial_volume_effect_and_gtm_correction(study):
    """Uncorrected TACs are far below the tissue truth; GTM TACs match it (noise-free truth TACs
    of PCC and centrum semiovale), and 1TCM VT with the true input recovers the true VT."""
    _, _, results, truth = study
    for ses in SESSIONS:
        out = outputs(results, ses)
        raw, gtm = read(out["tacs"]), read(out["pvc"])
        true = read(truth / "sub-01" / f"sub-01_ses-{ses}_pet-tacs.tsv")
        late = raw.frame_start >= 600
        for roi in ("PCC", "centrum_semiovale"):
            r_raw = np.median(raw[roi][late] / true[roi][late])
            r_gtm = np.median(gtm[roi][late] / true[roi][late])
            assert abs(r_gtm - 1) < TAC_TOLERANCE, (ses, roi, r_gtm)
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
    VT is within the error the noisy metabolite samples allow, well below the planted change."""
    _, _, results, truth = study
    for ses in SESSIONS:
        kin = read(outputs(results, ses)["kinetics"])
        reg = truth_regions(truth, ses)
        for roi in ("PCC", "cortical_gm"):
            assert vt(kin, "gtm", roi) / vt(kin, "none", roi) > 1.2  # the correction restores GM
            assert abs(vt(kin, "gtm", roi) / reg.VT[roi] - 1) < VT_TOLERANCE, (ses, roi)
        assert abs(vt(kin, "gtm", "centrum_semiovale") / reg.VT["centrum_semiovale"] - 1) < VT_TOLERANCE


@pytest.mark.slow
def test_planted_pcc_change_is_recovered(study):
    """The pre -> post PCC VT change measured by the workflow (GTM, 1TCM) equals the true change
    (the planted 30 % and the session variability) within a few per cent."""
    _, _, results, truth = study
    kin = {ses: read(outputs(results, ses)["kinetics"]) for ses in SESSIONS}
    true = truth_regions(truth, "post").VT["PCC"] / truth_regions(truth, "pre").VT["PCC"] - 1
    measured = vt(kin["post"], "gtm", "PCC") / vt(kin["pre"], "gtm", "PCC") - 1
    assert true > 0.2  # the planted increase is there
    assert abs(measured - true) < CHANGE_TOLERANCE, (measured, true)


@pytest.mark.slow
def test_suvr_rank_correlates_with_true_vt(spread_study):
    """Across the 7 networks and the PCC, SUVR ranks the true VT, from the GTM-corrected TACs (the
    tidy table) and from the uncorrected ones (kinetics table)."""
    _, _, results, truth = spread_study
    names = NETWORKS + ["PCC"]
    rho = {}
    for ses in SESSIONS:
        out = outputs(results, ses)
        long, kin = read(out["long"]), read(out["kinetics"])
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
    assert dry_run_jobs(res) == {}  # nothing to do
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
def test_failed_fit_is_flagged_not_dropped(study, tmp_path):
    """A VT range that excludes grey matter makes those fits implausible: rows stay, flagged.
    Runs on a copy of the study: only pet_kinetics reruns, once per session."""
    work, cfg, results, _ = copy_of(study, tmp_path)
    res = snakemake("--cores", "2", "--configfile", str(cfg), str(work / "bounds.yaml"), *UNTIL,
                    cwd=work)
    assert dry_run_jobs(res) == {"pet_kinetics": 2}
    long = read(outputs(results, "pre")["long"])
    gm = long[(long.measure == "VT_1tcm") & (long.region == "PCC")]
    assert len(gm) == 1 and np.isfinite(gm.value.iloc[0])
    assert "outside plausible range" in gm.flag.iloc[0]
    wm = long[(long.measure == "VT_1tcm") & (long.region == "centrum_semiovale")]
    assert wm.flag.iloc[0] == ""


def test_vt_evaluation_of_a_folder_with_no_simulated_study_says_so(tmp_path, capsys):
    """``python -m prepost.pet.evaluate`` on a folder without a simulated study's PET kinetics
    names what it expected and exits 1 (it printed an empty table and crashed)."""
    from prepost.pet import evaluate

    assert evaluate.main([str(tmp_path)]) == 1
    assert "desc-kinetics_table.tsv" in capsys.readouterr().err
    assert evaluate.main(["--help"]) == 0
