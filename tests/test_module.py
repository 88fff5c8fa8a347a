"""The workflow as a Snakemake module of another workflow, with and without a rule prefix.

A study folder outside the repository holds its own Snakefile that imports prepost with
``module`` and ``use rule * from prepost [as prepost_*]``, as the Snakemake catalog composes
workflows, and runs a small simulated study to the report (with the prefix; without it, the DAG is checked).
"""

import html
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from runner import ROOT, TINY, dry_run_jobs, small_config

from prepost.report.stage import output_paths as report_paths
from prepost.stats.stage import output_paths as stats_paths

pytestmark = pytest.mark.slow

HOST = """\
configfile: "config.yaml"


module prepost:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from prepost{alias}
"""


def _run_host(folder, *args):
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    res = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res


@pytest.mark.parametrize("prefix", ["prepost_", ""], ids=["prefixed", "plain"])
def test_study_runs_through_the_module_to_the_report(tmp_path, prefix):
    small_config(tmp_path, **TINY)
    alias = f" as {prefix}*" if prefix else ""
    (tmp_path / "Snakefile").write_text(HOST.format(snakefile=ROOT / "Snakefile", alias=alias))

    jobs = dry_run_jobs(_run_host(tmp_path, "-n").stdout)
    assert jobs[f"{prefix}simulate_subject"] == 2 and jobs[f"{prefix}report_html"] == 1
    assert all(rule.startswith(prefix) for rule in jobs if rule not in {"all", "total"}), jobs
    if not prefix:
        return  # without a prefix the rules are the workflow's own, run end to end elsewhere

    _run_host(tmp_path)
    # the importing workflow's config names no hypothesis: the defaults (the schema's) hold them
    results = tmp_path / "results"
    report = open(report_paths(results)["html"]).read()
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    names = [h["name"] for h in config["stats"]["hypotheses"]]
    missing = [n for n in names if html.escape(n) not in report]
    assert not missing, missing
    verdicts = pd.read_csv(stats_paths(results)["hypotheses"], sep="\t")
    assert verdicts.name.tolist() == names
