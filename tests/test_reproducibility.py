"""A whole study end to end; exact re-runs after a parameter change, byte-identical repeated
runs, and resuming after SIGKILL.

One small simulated study (2 participants, the default config at coarse sizes: fMRI, PET with its
maps, every atlas and FC kind, statistics, report) is run once for the module; the re-run checks
are dry runs against it.
"""

import filecmp
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from runner import ROOT, dry_run_jobs, small_config, snakemake

pytestmark = pytest.mark.slow


def _config(tmp_path, name):
    """A 2-participant coarse study whose results go to tmp_path/name."""
    return small_config(tmp_path, filename=f"{name}.yaml", results_dir=str(tmp_path / name))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("repro")
    cfg = _config(tmp, "results")
    snakemake("--cores", "2", "--configfile", str(cfg), cwd=tmp)
    return tmp, cfg


def _scheduled(tmp, cfg, overlay):
    over = tmp / "overlay.yaml"
    over.write_text(yaml.safe_dump(overlay))
    res = snakemake("-n", "--cores", "2", "--configfile", str(cfg), str(over), cwd=tmp)
    return set(dry_run_jobs(res)) - {"all"}


UPSTREAM_FMRI = {"anat", "fmri_preproc", "simulate_subject", "simulate_dataset", "bids_inventory"}
PET = {"pet_motion", "pet_coreg", "pet_tacs", "pet_kinetics", "pet_maps"}
CONN = {"connectivity_session_qc", "connectivity_session", "connectivity_alff_maps",
        "connectivity_tangent", "connectivity_gradients"}

# parameter: (overlay, rules that must run, rules that must not)
CHANGES = {
    "band-pass": ({"fmri": {"denoise": {"low_pass": 0.1}}}, {"fmri_denoise", "stats_paired"},
                  UPSTREAM_FMRI | PET),
    "atlas": ({"connectivity": {"atlases": ["Schaefer200"]}},
              {"connectivity_session", "stats_paired"},
              UPSTREAM_FMRI | {"fmri_denoise", "connectivity_alff_maps"} | PET),
    "FC kind": ({"connectivity": {"fc_kinds": ["pearson"]}}, {"connectivity_session"},
                UPSTREAM_FMRI | {"fmri_denoise", "connectivity_alff_maps",
                                 "connectivity_session_qc"} | PET),
    "SUVR window": ({"pet": {"suvr_window_s": [3000, 5400]}}, {"pet_kinetics", "stats_paired"},
                    UPSTREAM_FMRI | CONN | {"fmri_denoise", "pet_tacs", "pet_coreg"}),
    "permutation count": ({"stats": {"paired": {"n_perm": 500}}}, {"stats_paired"},
                          UPSTREAM_FMRI | CONN | PET | {"fmri_denoise"}),
}


def test_small_simulated_study_runs_end_to_end(study):
    tmp, cfg = study
    results = tmp / "results"
    inv = pd.read_csv(results / "qc/bids_inventory.tsv", sep="\t")
    assert len(inv) == 4 and set(inv.bold_volumes) == {30} and set(inv.pet_frames) == {31}
    truth = pd.read_csv(results / "simulated/truth/truth.tsv", sep="\t")
    assert set(truth.participant_id) == {"sub-01", "sub-02"}
    desc = yaml.safe_load((results / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    assert desc["Configuration"]["simulate"]["bold"]["n_volumes"] == 30
    assert (results / "report/report.html").stat().st_size > 0
    # the same study is reachable as a user's dataset through bids_dir: the same jobs but the
    # simulation, and the same inventory (the chain after it is the one run above)
    results2 = tmp / "results2"
    cfg2 = small_config(tmp, filename="bids.yaml", bids_dir=str(results / "simulated/bids"),
                        results_dir=str(results2))
    ran = dry_run_jobs(snakemake("-n", "--cores", "2", "--configfile", str(cfg), "-F", cwd=tmp))
    user = dry_run_jobs(snakemake("-n", "--cores", "2", "--configfile", str(cfg2), cwd=tmp))
    assert user == {k: v for k, v in ran.items() if not k.startswith("simulate_")}
    snakemake("--cores", "2", "--configfile", str(cfg2), "--",
              str(results2 / "qc/bids_inventory.tsv"), cwd=tmp)
    inv2 = pd.read_csv(results2 / "qc/bids_inventory.tsv", sep="\t")
    assert inv2.equals(inv)  # paths are relative to the dataset root


def test_completed_run_has_nothing_to_do(study):
    tmp, cfg = study
    res = snakemake("-n", "--cores", "2", "--configfile", str(cfg), cwd=tmp)
    assert "Nothing to be done" in res.stdout + res.stderr


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_a_parameter_change_reruns_its_rule_and_downstream_only(study, change):
    tmp, cfg = study
    overlay, must, must_not = CHANGES[change]
    jobs = _scheduled(tmp, cfg, overlay)
    assert must <= jobs, f"missing {must - jobs} in {sorted(jobs)}"
    assert not (jobs & must_not), f"upstream re-run: {sorted(jobs & must_not)}"


def _tables(root):
    return sorted(p.relative_to(root) for p in root.rglob("*.tsv")
                  if not {"logs", "benchmarks"} & set(p.relative_to(root).parts))


def test_a_second_run_killed_and_resumed_gives_byte_identical_tsv(study):
    """A second clean run of the same config, SIGKILLed mid-way and resumed, writes the first
    run's tables byte for byte: every output is computed afresh (before or after the kill), so
    this checks repeated runs and resuming at once."""
    tmp, _ = study
    cfg2 = _config(tmp, "killed")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2",
           "--configfile", str(cfg2)]
    proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    marker = tmp / "killed" / "sub-01" / "ses-pre" / "anat"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not any(marker.glob("*_desc-preproc_T1w.nii.gz")):
        time.sleep(1)
    time.sleep(3)  # let the next jobs start, so some outputs are half-written
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp / "killed" / "report").exists()
    # a killed Snakemake leaves its lock behind: release it, then resume
    snakemake("--unlock", "--cores", "1", "--configfile", str(cfg2), cwd=tmp)
    snakemake("--cores", "2", "--rerun-incomplete", "--configfile", str(cfg2), cwd=tmp)
    first, second = _tables(tmp / "results"), _tables(tmp / "killed")
    assert first == second and len(first) > 30
    differ = [str(r) for r in first if not filecmp.cmp(tmp / "results" / r, tmp / "killed" / r,
                                                       shallow=False)]
    assert not differ
