"""Conda environments agree with pyproject.toml, and every rule names an existing one."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in meta["dependencies"]]
    return {r.name.lower(): r.specifier for r in reqs}


def _env_requirements(path):
    env = yaml.safe_load(path.read_text())
    out, pip = [], []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep.get("pip", [])
        else:
            out.append(dep)
    return env, out, pip


ENV_FILES = sorted((ROOT / "envs").glob("*.yaml"))


def test_there_is_an_env_per_stage():
    names = {p.stem for p in ENV_FILES}
    assert {"simulate", "bids", "anat", "fmri", "connectivity", "pet", "stats"} <= names


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_versions_agree_with_pyproject(path):
    pins = _pyproject()
    env, conda, pip = _env_requirements(path)
    assert "conda-forge" in env["channels"]
    assert "-e ../" in pip, "the env must install the prepost package itself"
    checked = 0
    for dep in conda + [p for p in pip if not p.startswith("-e")]:
        if dep.startswith("python=") or dep == "pip":
            continue
        # conda's single '=' pin is PEP 440's '=='
        req = Requirement(re.sub(r"(?<![<>=!])=(?!=)", "==", dep))
        name = req.name.lower()
        if name in pins:
            assert req.specifier == pins[name], f"{path.name}: {dep} vs pyproject {name}{pins[name]}"
            checked += 1
    assert checked >= 5


def test_every_rule_names_an_existing_env():
    rules = sorted((ROOT / "workflow/rules").glob("*.smk"))
    found = 0
    for smk in rules:
        for rel in re.findall(r'conda:\s*\n\s*"([^"]+)"', smk.read_text()):
            assert (smk.parent / rel).resolve().exists(), f"{smk.name}: {rel}"
            found += 1
    assert found >= 5
