"""A real single-node SLURM cluster runs the workflow and gives the same outputs as a local run.

`.ci/run` starts the cluster with tests/slurm/cluster.sh and sets PREPOST_REQUIRE_SLURM=1, so there
the test cannot be skipped. Elsewhere it runs when `sinfo` answers.
"""

import filecmp
import os
import shutil
import subprocess
import time

import pytest
from runner import ROOT, small_config, snakemake


def _cluster_up():
    if shutil.which("sinfo") is None:
        return False
    res = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return res.returncode == 0 and any(s in res.stdout for s in ("idle", "mixed", "alloc"))


pytestmark = [pytest.mark.slow, pytest.mark.slurm]


@pytest.fixture(scope="module")
def cluster():
    if not _cluster_up():
        if os.environ.get("PREPOST_REQUIRE_SLURM") == "1":
            pytest.fail("PREPOST_REQUIRE_SLURM=1 but no SLURM cluster answers (sinfo)")
        pytest.skip("no SLURM cluster: start one with `bash tests/slurm/cluster.sh start`")


def _config(tmp_path, name):
    """One participant at the coarsest sizes; results in tmp_path/name."""
    return small_config(tmp_path, n=1, filename=f"{name}.yaml", results_dir=str(tmp_path / name),
                        simulate={"anat": {"voxel_mm": 6.0},
                                  "bold": {"n_volumes": 20, "voxel_mm": 8.0},
                                  "pet": {"voxel_mm": 8.0}})


def _targets(tmp_path, name):
    res = tmp_path / name
    return [str(res / "qc/bids_inventory.tsv"), str(res / "simulated/truth/truth.tsv")]


def test_slurm_run_equals_local_run(cluster, tmp_path):
    local = _config(tmp_path, "local")
    # targets go before --configfile, which takes several values
    snakemake(*_targets(tmp_path, "local"), "--cores", "2", "--configfile", str(local),
              cwd=tmp_path)
    slurm = _config(tmp_path, "slurm")
    t0 = time.monotonic()
    res = snakemake(*_targets(tmp_path, "slurm"), "--workflow-profile",
                    str(ROOT / "profiles/slurm"), "--configfile", str(slurm), cwd=tmp_path)
    elapsed = time.monotonic() - t0
    out = res.stdout + res.stderr
    assert "submitted with SLURM jobid" in out  # the jobs really went through sbatch
    print(f"SLURM run: {elapsed:.1f} s")
    compared = 0
    for f in sorted((tmp_path / "local").rglob("*")):
        rel = f.relative_to(tmp_path / "local")
        if f.is_dir() or rel.parts[0] in ("logs", "benchmarks"):
            continue
        other = tmp_path / "slurm" / rel
        assert other.exists(), rel
        if f.suffix in (".tsv", ".gz", ".json") and f.name != "dataset_description.json":
            assert filecmp.cmp(f, other, shallow=False), rel
            compared += 1
    assert compared > 20
