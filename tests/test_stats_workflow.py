"""The statistics and report rules run by Snakemake on ready-made tidy tables and FC matrices."""

import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import yaml

from test_stats_group import participants, study_table
from runner import dry_run_jobs, snakemake




def write_relmats(results, n, rng):
    """Schaefer100 Pearson matrices with a planted within-Default decrease."""
    from prepost.connectivity.atlas import load_atlas

    atlas = load_atlas("Schaefer100")
    names, nets = atlas.table["name"].tolist(), atlas.parcel_networks
    base = np.arctanh(np.where(nets[:, None] == nets[None, :], 0.5, 0.15))
    dm = nets == "Default"
    for i in range(1, n + 1):
        subj = 0.05 * rng.standard_normal(base.shape)
        for ses, eff in (("pre", 0.0), ("post", -0.15)):
            z = base + subj + 0.08 * rng.standard_normal(base.shape)
            z[np.ix_(dm, dm)] += eff
            r = np.tanh((z + z.T) / 2)
            np.fill_diagonal(r, 1.0)
            d = results / f"sub-{i:02d}/ses-{ses}/func"
            d.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(r, index=pd.Index(names, name="node"), columns=names).to_csv(
                d / f"sub-{i:02d}_ses-{ses}_task-rest_atlas-Schaefer100_meas-pearson_relmat.tsv",
                sep="\t", float_format="%.6f")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("statswf")
    n = 11
    table = study_table(n=n, seed=1)
    table.loc[(table.participant_id == "sub-05") & (table.session == "post")
              & (table.measure == "mean_fd"), "value"] = 0.7
    table["flag"] = ""
    table.loc[(table.participant_id == "sub-02") & (table.session == "pre")
              & (table.measure == "VT_1tcm") & (table.region == "PCC"), "flag"] = "1TCM failed"
    table.to_csv(tmp / "measures.tsv", sep="\t", index=False)
    participants(n).to_csv(tmp / "participants.tsv", sep="\t", index=False)
    results = tmp / "results"
    write_relmats(results, n, np.random.default_rng(0))
    cfg = {"participants": str(tmp / "participants.tsv"), "results_dir": str(results),
           "modalities": {"fmri": False, "pet": False},
           "stats": {"extra_tables": [str(tmp / "measures.tsv")],
                     "paired": {"n_boot": 500},
                     "nbs": {"atlases": ["Schaefer100"]},
                     "multimodal": {"n_perm": 2000}}}
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    targets = [str(results / f"group/{f}") for f in (
        "group_table.tsv", "exclusions.tsv", "paired.tsv", "mixed.tsv", "multimodal.tsv",
        "hypotheses.tsv", "nbs/atlas-Schaefer100_meas-pearson_nbs.json")]
    targets.append(str(results / "report/report.html"))
    return tmp, results, targets


@pytest.mark.slow
def test_stats_and_report_rules_run(study):
    tmp, results, targets = study
    snakemake(*targets, "--cores", "2", "--configfile", str(tmp / "config.yaml"), cwd=tmp)
    exc = pd.read_csv(results / "group/exclusions.tsv", sep="\t")
    assert set(exc.rule) == {"mean_fd > 0.5", "flag"}
    assert exc[exc.rule == "flag"].reason.iloc[0] == "flagged: 1TCM failed"
    paired = pd.read_csv(results / "group/paired.tsv", sep="\t")
    vt = paired[(paired.measure == "VT_1tcm") & (paired.region == "PCC")].iloc[0]
    fcw = paired[(paired.measure == "fc_within") & (paired.region == "Default")].iloc[0]
    assert vt.n == 10 and vt.n_dropped == 1 and fcw.n == 10 and fcw.n_dropped == 1
    h = pd.read_csv(results / "group/hypotheses.tsv", sep="\t").set_index("name")
    assert h.loc["within-Default FC decreases", "verdict"] == "supported"
    assert h.loc["SomMot-Default FC increases", "verdict"] == "supported"
    mixed = pd.read_csv(results / "group/mixed.tsv", sep="\t")
    assert {"session[T.post]", "followup_days", "age"} <= set(mixed.term)
    nbs = json.loads((results / "group/nbs/atlas-Schaefer100_meas-pearson_nbs.json").read_text())
    # sub-05's post fMRI session is excluded by QC, so it is left out of the NBS
    assert nbs["left_out"] == ["sub-05"] and nbs["n_subjects"] == 10 and nbs["exact"]
    assert nbs["components"][0]["p"] < 0.01
    html = (results / "report/report.html").read_text()
    assert "glass brain Schaefer100" in html and "sub-05" in html

    # snakemake --report bundles the tables and the page
    snakemake(*targets, "--cores", "1", "--configfile", str(tmp / "config.yaml"), "--report",
              str(tmp / "report.zip"), cwd=tmp)
    with zipfile.ZipFile(tmp / "report.zip") as z:
        names = z.namelist()
    for f in ("hypotheses.tsv", "paired.tsv", "exclusions.tsv", "multimodal.tsv",
              "report.html", "atlas-Schaefer100_meas-pearson_nbs.json"):
        assert any(n.endswith(f) for n in names), (f, names[:20])

    # changing the significance level reruns only the hypotheses and the report
    (tmp / "alpha.yaml").write_text(yaml.safe_dump({"stats": {"alpha": 0.01}}))
    res = snakemake(*targets, "-n", "--cores", "1", "--configfile", str(tmp / "config.yaml"),
                    str(tmp / "alpha.yaml"), cwd=tmp)
    jobs = {rule for rule in dry_run_jobs(res) if rule.startswith(("stats_", "report_"))}
    assert jobs == {"stats_hypotheses", "report_html"}, res.stdout[-2000:]


def test_no_tables_means_no_stats_targets(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"results_dir": str(tmp_path / "results"),
                                   "modalities": {"fmri": False, "pet": False}}))
    res = snakemake("-n", "--cores", "1", "--configfile", str(cfg), cwd=tmp_path)
    out = res.stdout + res.stderr
    assert "stats_group_table" not in out and "report_html" not in out


def test_unknown_hypothesis_measure_fails_at_dag_time(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "results_dir": str(tmp_path / "results"),
        "stats": {"hypotheses": [{"name": "DMN drops", "measure": "fc_withn",
                                  "region": "Default", "direction": "decrease"}]}}))
    res = snakemake("-n", "--cores", "1", "--configfile", str(cfg), cwd=tmp_path, check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "DMN drops" in out and "fc_withn" in out


def test_formula_with_unknown_covariate_fails_at_dag_time(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"results_dir": str(tmp_path / "results"),
                                   "stats": {"mixed": {"formula": "value ~ session + bmi"}}}))
    res = snakemake("-n", "--cores", "1", "--configfile", str(cfg), cwd=tmp_path, check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "bmi" in out and "stats.mixed.formula" in out
