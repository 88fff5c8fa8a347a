"""The workflow as a whole: DAG building, lint, scripts and steps (a small simulated study runs end
to end in test_reproducibility.py)."""

import ast
import logging
import re
import runpy
import sys

import pandas as pd
import pytest
from runner import ROOT, dry_run_jobs, small_config, snakemake


def test_default_config_builds_a_dag(tmp_path):
    res = snakemake("-n", "--cores", "2", "--config", f"results_dir={tmp_path}/results",
                    cwd=ROOT)
    jobs = dry_run_jobs(res)
    # one simulation job per participant of config/participants.tsv
    n = len(pd.read_csv(ROOT / "config/participants.tsv", sep="\t"))
    assert jobs["simulate_subject"] == n and jobs["simulate_dataset"] == jobs["bids_inventory"] == 1


def test_unknown_config_key_fails_before_any_job(tmp_path):
    res = snakemake("-n", "--cores", "1", "--config", "bids_dri=/data", cwd=tmp_path, check=False)
    assert res.returncode != 0
    assert "bids_dri" in res.stderr + res.stdout


def test_broken_user_dataset_fails_at_dag_time(tmp_path, small_study):
    import json
    import shutil

    bids = tmp_path / "bids"
    shutil.copytree(small_study / "bids", bids)
    js = bids / "sub-02/ses-pre/pet/sub-02_ses-pre_trc-UCBJ_pet.json"
    meta = json.loads(js.read_text())
    del meta["InjectedRadioactivity"]
    js.write_text(json.dumps(meta))
    cfg = small_config(tmp_path, bids_dir=str(bids))
    res = snakemake("-n", "--cores", "1", "--configfile", str(cfg), cwd=tmp_path, check=False)
    assert res.returncode != 0
    err = res.stdout + res.stderr
    assert str(js) in err and "InjectedRadioactivity" in err


# ------------------------------------------------------------------------------------------------
# Scripts choose their step from params.step (never from the rule's name, which a module prefix
# changes), and every rule names a step its script knows.
SCRIPTS = ROOT / "workflow" / "scripts"


def _script_steps(script):
    """Keys of the script's STEPS table (None for a one-step script)."""
    for node in ast.walk(ast.parse(script.read_text())):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(getattr(t, "id", None) == "STEPS" for t in node.targets)):
            return {k.value for k in node.value.keys}
    return None


def _rule_steps():
    """(rule, step, script) for every rule of workflow/rules that runs a script."""
    out = []
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        blocks = re.split(r"^\s*rule (\w+):\s*$", smk.read_text(), flags=re.M)
        for name, body in zip(blocks[1::2], blocks[2::2]):
            script = re.search(r'script:\s*"\.\./scripts/(\w+\.py)"', body)
            if script:
                step = re.search(r'^\s*step="(\w+)"', body, re.M)
                out.append((name, step and step.group(1), script.group(1)))
    return out


def test_every_rule_names_a_step_its_script_knows():
    rules = _rule_steps()
    assert len(rules) > 20
    for name, step, script in rules:
        steps = _script_steps(SCRIPTS / script)
        assert steps is None or step in steps, (name, step, script, steps)
    for script in SCRIPTS.glob("*.py"):
        assert "snakemake.rule" not in script.read_text(), script.name
        assert "snakemake.config" not in script.read_text(), script.name


class _Anything:
    """Stands for the snakemake object: any attribute or item is another _Anything."""

    def __init__(self, **values):
        self.__dict__.update(values)

    def __getattr__(self, name):
        return _Anything()

    def __getitem__(self, key):
        return _Anything()

    def __iter__(self):
        return iter(())


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.py")
                                          if _script_steps(p) is not None))
def test_an_unknown_step_raises_naming_the_known_ones(tmp_path, script, monkeypatch):
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # the scripts' log set-up replaces it
    fake = _Anything(params=_Anything(step="no_such_step"), log=[str(tmp_path / "x.log")])
    with pytest.raises(ValueError, match="no_such_step") as info:
        runpy.run_path(str(SCRIPTS / script), init_globals={"snakemake": fake})
    assert all(step in str(info.value) for step in _script_steps(SCRIPTS / script))
    logging.getLogger("prepost").handlers.clear()
