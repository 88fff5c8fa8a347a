"""Running the workflow from tests: one Snakemake invocation helper and the small test config."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# Coarse simulated sizes: every file and sidecar of the demo, at a fraction of its cost.
SMALL_SIMULATION = {"anat": {"voxel_mm": 4.0}, "bold": {"n_volumes": 30, "voxel_mm": 6.0},
                    "pet": {"voxel_mm": 6.0}}


def snakemake(*args, cwd, check=True):
    """Run the workflow in a subprocess; on failure raise with the tail of its output."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *args]
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                         env={**os.environ, "PYTHONHASHSEED": "0"})
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


def small_config(tmp_path, n=2, **extra):
    """Write participants.tsv and config.yaml for an n-participant coarse simulated study."""
    part = tmp_path / "participants.tsv"
    rows = "".join(f"sub-{i + 1:02d}\t{30 + i}\t{1 + 6 * (i % 2)}\n" for i in range(n))
    part.write_text("participant_id\tage\tfollowup_days\n" + rows)
    cfg = {
        "participants": str(part),
        "results_dir": str(tmp_path / "results"),
        "simulate": SMALL_SIMULATION,
        # 4 mm anatomy holds a GM-masked 12 mm sphere in a few dozen voxels: the default 1 mL
        # minimum is meant for 1 mm T1w images
        "pet": {"min_volume_ml": 0.2},
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
