"""Exact re-runs after a parameter change, byte-identical repeated runs, and resuming after SIGKILL.

One small simulated study (2 participants, fMRI + PET + statistics) is run once for the module;
the re-run checks are dry runs against it.
"""

import filecmp
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from runner import ROOT, TINY, dry_run_jobs, small_config, snakemake

pytestmark = pytest.mark.slow


def _config(tmp_path, name):
    """A 2-participant TINY study whose results go to tmp_path/name."""
    return small_config(tmp_path, filename=f"{name}.yaml", results_dir=str(tmp_path / name),
                        **TINY)


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
    "FC kind": ({"connectivity": {"fc_kinds": ["pearson", "partial"]}}, {"connectivity_session"},
                UPSTREAM_FMRI | {"fmri_denoise", "connectivity_alff_maps",
                                 "connectivity_session_qc"} | PET),
    "SUVR window": ({"pet": {"suvr_window_s": [3000, 5400]}}, {"pet_kinetics", "stats_paired"},
                    UPSTREAM_FMRI | CONN | {"fmri_denoise", "pet_tacs", "pet_coreg"}),
    "permutation count": ({"stats": {"paired": {"n_perm": 500}}}, {"stats_paired"},
                          UPSTREAM_FMRI | CONN | PET | {"fmri_denoise"}),
}


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
