"""The package as a user installs it: the package list of pyproject.toml is complete, and a
regular (non-editable) install in a fresh virtual environment finds its atlases as package data and
builds the demo's DAG from a copy of the repository, with no source tree importable."""

import os
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
from setuptools import find_packages

from runner import ROOT


def test_pyproject_lists_every_package():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    assert listed == set(find_packages(ROOT / "src")) | {"prepost.resources"}
    assert cfg["package-dir"]["prepost.resources"] == "resources"
    assert (ROOT / cfg["package-dir"]["prepost.resources"] / "__init__.py").is_file()


def _run(cmd, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, env=env)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


@pytest.mark.slow
def test_regular_install_runs_the_demo_dry_run(tmp_path):
    # a clean copy of the repository (its tracked and new files), as a clone would be
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    repo = tmp_path / "repo"
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            (repo / f).write_bytes(src.read_bytes())
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    py = env_dir / "bin" / "python"
    # the build backend runs in the venv (no build isolation): setuptools must know PEP 639
    _run([py, "-m", "pip", "install", "-q", "setuptools>=77"], tmp_path)
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", repo], tmp_path)
    where = _run([py, "-c", "import importlib.resources, prepost; print(prepost.__file__); "
                  "print(importlib.resources.files('prepost.resources'))"], repo).split()
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     repo).strip())
    assert Path(where[0]).parent == site / "prepost"
    assert Path(where[1]) == site / "prepost" / "resources"
    out = _run([py, "-m", "snakemake", "-n", "--cores", "1"], repo)
    assert "report_html" in out and "connectivity_session" in out
    assert not (repo / "results").exists()
