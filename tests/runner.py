"""Running the workflow from tests: the Snakemake invocation, the dry-run job table and the small
study configs (one copy of each, shared by every workflow test)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

__all__ = ["COARSE_ANAT", "ROOT", "SMALL_SIMULATION", "TINY", "dry_run_jobs", "small_config",
           "snakemake"]

ROOT = Path(__file__).resolve().parents[1]

# Coarse simulated sizes: every file and sidecar of the demo, at a fraction of its cost.
SMALL_SIMULATION = {"anat": {"voxel_mm": 4.0}, "bold": {"n_volumes": 30, "voxel_mm": 6.0},
                    "pet": {"voxel_mm": 6.0}}

# Unit tests of one modality that take the simulator's geometry as known use its affine part
# (t1w_to_mni) alone; the nonlinear anatomy is scored where registration is tested.
AFFINE_ANATOMY = {"warp_mm": 0.0, "size_sd": 0.0}

# A whole study (fMRI, PET, statistics, report) at the smallest sizes every stage still handles:
# the sizes of config/examples/small.yaml (the replicate studies' config), without its QC rules.
# Its coarse (4 mm) anatomy registers with SyN's first level only; the default levels are tested
# in test_anat.py and test_anat_workflow.py.
TINY = {k: v for k, v in yaml.safe_load((ROOT / "config/examples/small.yaml").read_text()).items()
        if k != "stats"}
COARSE_ANAT = TINY["anat"]


def snakemake(*args, cwd, check=True):
    """Run the workflow in a subprocess; on failure raise with the tail of its output."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *args]
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                         env={**os.environ, "PYTHONHASHSEED": "0"})
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


def dry_run_jobs(output):
    """Jobs a dry run schedules, from its job-stats table.

    Parameters
    ----------
    output : str or subprocess.CompletedProcess
        The dry run's text, or the finished process (its stdout and stderr are read).

    Returns
    -------
    dict
        ``{rule: job count}`` without the ``total`` row; empty when nothing is to be done.
    """
    if isinstance(output, subprocess.CompletedProcess):
        output = (output.stdout or "") + (output.stderr or "")
    jobs, inside = {}, False
    for line in output.splitlines():
        if re.match(r"^job\s+count\s*$", line.strip()):
            inside, jobs = True, {}
            continue
        if not inside:
            continue
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if m is None:
            if line.strip() and not set(line.strip()) <= set("- "):
                inside = False
        elif m.group(1) == "total":
            inside = False
        else:
            jobs[m.group(1)] = int(m.group(2))
    return jobs


def small_config(tmp_path, n=2, filename="config.yaml", **extra):
    """Write participants.tsv and a config for an n-participant coarse simulated study.

    Parameters
    ----------
    tmp_path : pathlib.Path
        Folder of the two files; results go to ``tmp_path/results`` unless ``results_dir`` is
        given.
    n : int
        Participants (sub-01 ... with age and followup_days).
    filename : str
        Name of the config file, for several configs in one folder.
    **extra
        Top-level config keys; each replaces the default's whole value.

    Returns
    -------
    pathlib.Path
        The config file.
    """
    part = tmp_path / "participants.tsv"
    rows = "".join(f"sub-{i + 1:02d}\t{30 + i}\t{1 + 6 * (i % 2)}\n" for i in range(n))
    text = "participant_id\tage\tfollowup_days\n" + rows
    # rewritten only when it changes: a newer participants.tsv would make earlier results stale
    if not part.exists() or part.read_text() != text:
        part.write_text(text)
    cfg = {
        "participants": str(part),
        "results_dir": str(tmp_path / "results"),
        "simulate": SMALL_SIMULATION,
        "anat": COARSE_ANAT,
        # 4 mm anatomy holds a GM-masked 12 mm sphere in a few dozen voxels: the default 1 mL
        # minimum is meant for 1 mm T1w images
        "pet": {"min_volume_ml": 0.2},
        **extra,
    }
    path = tmp_path / filename
    path.write_text(yaml.safe_dump(cfg))
    return path
