"""The PET chain on a published BIDS-PET example: bids-examples pet002 (two participants, sessions
baseline/rescan, no trc- entity, no blood; sub-01's baseline has 32 frames ending at 3,216 s, the
other scans 36 frames ending at 5,400 s).

Its JSON and TSV files are used as published; the images are synthetic (the simulator's anatomy
and PET at coarse grids, with each sidecar's frames). Fast: the DAG of an SUV study is refused
without a body weight (naming the sidecar field and the participants key) and accepted with the
participants' weight column; the sidecars cut to one frame make a static study that keeps SUVR.
Slow: sub-01's two sessions (32 and 36 frames) run the PET chain to
the kinetic table with snakemake (reference-tissue models and SUVR inside the 3,216 s scan) and
every region has finite values.
"""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from runner import ROOT, dry_run_jobs, snakemake

from prepost import simulate as psim
from prepost.pet import stage

EXAMPLE = ROOT.parent / "shared" / "realworld" / "bids-examples-pet" / "pet002"
SESSIONS = ("baseline", "rescan")
PARTICIPANTS = ("01", "02")
MODELS = ["srtm", "logan_ref", "suvr"]
# the simulator's ROIs at a 4 mm anatomy: the GM-masked sphere is small
ROIS = [{"name": "PCC", "type": "atlas", "atlas": "Schaefer100", "pattern": "Default_pCunPCC"},
        {"name": "cortical_gm", "type": "tissue", "tissue": "gm", "threshold": 0.5},
        {"name": "centrum_semiovale", "type": "reference", "method": "semiovale"}]

pytestmark = pytest.mark.skipif(not EXAMPLE.is_dir(), reason="real-world corpus not found")


def frame_blocks(meta):
    """``[[count, seconds], ...]`` of a sidecar's contiguous frames (the simulator's format)."""
    durations = [float(d) for d in meta["FrameDuration"]]
    starts = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    assert np.allclose(starts, meta["FrameTimesStart"])  # pet002's frames follow each other
    blocks = []
    for d in durations:
        if blocks and blocks[-1][1] == d:
            blocks[-1][0] += 1
        else:
            blocks.append([1, d])
    return blocks


def copy_example(root, images=True, participants=PARTICIPANTS):
    """pet002's JSON and TSV files of ``participants`` under ``root``, with synthetic T1w and PET
    images (as many frames as each sidecar lists); returns ``{(participant, session): PET
    sidecar}``."""
    for src in EXAMPLE.rglob("*"):
        rel = src.relative_to(EXAMPLE)
        if src.is_file() and (not rel.parts[0].startswith("sub-") or rel.parts[0][4:] in participants):
            dst = root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    table = pd.read_csv(EXAMPLE / "participants.tsv", sep="\t", dtype=str, keep_default_na=False)
    table = table[table.participant_id.isin([f"sub-{p}" for p in participants])]
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    metas = {}
    sim = root.parent / "simulated"
    for sub in participants:
        for ses in SESSIONS:
            stem = f"sub-{sub}/ses-{ses}"
            metas[sub, ses] = meta = json.loads(
                (EXAMPLE / f"{stem}/pet/sub-{sub}_ses-{ses}_pet.json").read_text())
            t1w = root / f"{stem}/anat/sub-{sub}_ses-{ses}_T1w.nii"
            pet = root / f"{stem}/pet/sub-{sub}_ses-{ses}_pet.nii.gz"
            if not images:  # a dry run reads headers only
                nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), t1w)
                nib.save(nib.Nifti1Image(np.ones((4, 4, 4, len(meta["FrameDuration"])),
                                                 np.float32), np.eye(4)), pet)
                continue
            params = {"anat": {"voxel_mm": 4.0}, "bold": {"n_volumes": 10, "voxel_mm": 8.0},
                      "pet": {"voxel_mm": 6.0, "frames": frame_blocks(meta), "blood": False,
                              "autosampler": False}}
            psim.simulate_subject(sim / "bids", sim / "truth", sub, sessions=(ses,), params=params)
            bp = psim.bids_paths(sim / "bids", sub, ses)
            nib.save(nib.load(bp["t1w"]), t1w)
            shutil.copyfile(bp["pet"], pet)
    return metas


def write_config(tmp_path, bids, **pet):
    cfg = {"bids_dir": str(bids), "participants": str(bids / "participants.tsv"),
           "results_dir": str(tmp_path / "results"),
           "sessions": {"baseline": SESSIONS[0], "followup": SESSIONS[1]},
           "modalities": {"fmri": False, "pet": True},
           "bids": {"tracer": None},
           # pet002's participants table has age, gender, height and weight
           "stats": {"mixed": {"formula": "value ~ session + age"}},
           "pet": {"rois": ROIS, "plot_regions": ["PCC", "centrum_semiovale"], "pvc": "none",
                   "min_volume_ml": 0.2, "parametric_maps": False, **pet}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# --------------------------------------------------------------------------------------------
# fast: SUV inputs at DAG time
# --------------------------------------------------------------------------------------------
def test_suv_without_body_weight_is_refused_at_dag_time(tmp_path):
    """pet002's sidecars give InjectedRadioactivity but no BodyWeight; its participants table has
    a weight column, used only when pet.weight_column names it."""
    bids = tmp_path / "bids"
    copy_example(bids, images=False)
    cfg = write_config(tmp_path, bids, models=["suv", "suvr"], suvr_window_s=[2400, 3216],
                       tstar_s=1200)
    res = snakemake("-n", "--cores", "1", "--configfile", str(cfg), "--until", "pet_kinetics",
                    cwd=tmp_path, check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "sub-01_ses-baseline_pet.json" in out and "'BodyWeight'" in out
    assert "pet.weight_column" in out
    cfg = write_config(tmp_path, bids, models=["suv", "suvr"], suvr_window_s=[2400, 3216],
                       tstar_s=1200, weight_column="weight")
    res = snakemake("-n", "--cores", "1", "--configfile", str(cfg), "--until", "pet_kinetics",
                    cwd=tmp_path)
    assert dry_run_jobs(res)["pet_kinetics"] == 4
    # no trc- entity in the data: none in the derivative names
    assert "_pet.json" in res.stdout and "trc-" not in res.stdout


def test_single_frame_scans_keep_suvr_and_say_what_is_left_out(tmp_path):
    """pet002's sidecars cut to one 20-min frame (a static scan): with the SUVR window to the scan
    end the DAG keeps SUVR, says which models it leaves out, and builds no blood input."""
    bids = tmp_path / "bids"
    for (sub, ses), meta in copy_example(bids, images=False).items():
        stem = bids / f"sub-{sub}/ses-{ses}/pet/sub-{sub}_ses-{ses}"
        meta.update(FrameTimesStart=[0], FrameDuration=[1200])
        Path(f"{stem}_pet.json").write_text(json.dumps(meta))
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 1), np.float32), np.eye(4)), f"{stem}_pet.nii.gz")
    cfg = write_config(tmp_path, bids, models=MODELS, suvr_window_s=[0, None])
    res = snakemake("-n", "--cores", "1", "--configfile", str(cfg), "--until", "pet_kinetics",
                    cwd=tmp_path)
    out = res.stdout + res.stderr
    assert "models ['srtm', 'logan_ref'] need a dynamic scan" in out
    assert "no frame motion correction" in out
    assert dry_run_jobs(res) == {"anat": 4, "pet_motion": 4, "pet_coreg": 4, "pet_tacs": 4,
                                 "pet_kinetics": 4}


# --------------------------------------------------------------------------------------------
# slow: the chain to the kinetic table
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_pet002_runs_to_the_kinetic_table(tmp_path):
    """sub-01 (its baseline scan is the short one; CI time): simulate -> anat -> PET chain."""
    bids = tmp_path / "bids"
    metas = copy_example(bids, participants=("01",))
    ends = {k: m["FrameTimesStart"][-1] + m["FrameDuration"][-1] for k, m in metas.items()}
    assert min(ends.values()) == ends["01", "baseline"] == 3216  # the SUVR window lies within
    cfg = write_config(tmp_path, bids, models=MODELS, suvr_window_s=[2400, 3216], tstar_s=1200)
    # no N4 on the noise-free synthetic T1w: the anatomy is the costly step here
    cfg.write_text(yaml.safe_dump({**yaml.safe_load(cfg.read_text()),
                                   "anat": {"bias_correction": False}}))
    snakemake("--cores", "2", "--configfile", str(cfg), "--until", "pet_kinetics", cwd=tmp_path)
    regions = [r["name"] for r in ROIS if r["type"] != "reference"]
    for sub in ("01",):
        for ses in SESSIONS:
            out = stage.output_paths(tmp_path / "results", sub=sub, ses=ses, trc=None)
            assert "trc-" not in out["kinetics"]
            kin = pd.read_csv(out["kinetics"], sep="\t")
            est = kin[kin.parameter.isin(["BPND", "DVR", "SUVR"])]
            # one row per region, model and parameter: SRTM BPND, Logan DVR and BPND, SUVR
            assert sorted(est.groupby(["roi", "model"]).size().index) == sorted(
                (r, m) for r in regions for m in MODELS)
            assert np.isfinite(est.estimate).all(), est
            long = pd.read_csv(out["long"], sep="\t")
            assert set(long.measure) == {"BPND_srtm", "R1_srtm", "DVR_logan", "BPND_logan", "SUVR"}
            assert set(long.session) == {ses} and set(long.participant_id) == {f"sub-{sub}"}
            assert np.isfinite(long.value).all()
