"""The statistics and report rules run by Snakemake on ready-made tidy tables and FC matrices."""

import zipfile

import numpy as np
import pandas as pd
import pytest
import yaml

from prepost.connectivity import stage as conn_stage
from prepost.stats import hypotheses as hyp
from prepost.stats import stage as stats_stage
from prepost.stats.group import change_scores
from runner import ROOT, dry_run_jobs, small_config, snakemake
from test_report import dry_run_job
from test_stats_group import participants, study_table


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
    # headers as many BIDS datasets write them: 'Age' enters the formula as the term age
    part = participants(n).rename(columns={"age": "Age"})
    part["Gender"] = ["F", "M"] * (n // 2) + ["n/a"] * (n % 2)
    part.to_csv(tmp / "participants.tsv", sep="\t", index=False)
    results = tmp / "results"
    cfg = {"participants": str(tmp / "participants.tsv"), "results_dir": str(results),
           "modalities": {"fmri": False, "pet": False},
           "stats": {"extra_tables": [str(tmp / "measures.tsv")],
                     "paired": {"n_boot": 500},
                     "multimodal": {"n_perm": 2000},
                     "power": {"n": [10, 20, 40], "simulations": 300}}}
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    targets = list(stats_stage.output_paths(results).values()) + [str(results / "report/report.html")]
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
    cov = pd.read_csv(results / "group/covariates.tsv", sep="\t").set_index("column")
    assert cov.loc["Age", "term"] == "age" and cov.loc["Gender", "kind"] == "categorical"
    assert cov.loc["Gender", "n_missing"] == 1
    log = (results / "logs/stats/group_table.log").read_text()
    assert "participants.tsv column 'Age' -> formula term 'age'" in log
    html = (results / "report/report.html").read_text()
    assert "sub-05" in html and "Hypotheses" in html
    # power planning from the group table, as prepost.stats.power computes it in-process
    from prepost.stats import power
    from prepost.validate import study_config

    cfg = study_config(ROOT / "Snakefile", [tmp / "config.yaml"])
    curves, n_table, _ = power.plan(
        hyp.validate_hypotheses(cfg["stats"]["hypotheses"]),
        stats_stage.read_group_table(results / "group/group_table.tsv"), cfg["stats"]["power"],
        alpha=0.05, p_value="p_perm", max_exact=16)
    got = pd.read_csv(results / "group/power.tsv", sep="\t")
    # 4 predicted changes x 3 designs and 1 correlation (pre/post only), at 3 n each
    assert len(got) == len(curves) == (4 * 3 + 1) * 3
    np.testing.assert_allclose(got["power"], curves["power"], rtol=0, atol=1e-12)
    got_n = pd.read_csv(results / "group/power_n.tsv", sep="\t")
    assert list(got_n["n_target"].fillna(-1)) == list(n_table["n_target"].fillna(-1))
    assert ">Power planning<" in html

    # snakemake --report bundles the tables and the page
    snakemake(*targets, "--cores", "1", "--configfile", str(tmp / "config.yaml"), "--report",
              str(tmp / "report.zip"), cwd=tmp)
    with zipfile.ZipFile(tmp / "report.zip") as z:
        names = z.namelist()
    for f in ("hypotheses.tsv", "paired.tsv", "exclusions.tsv", "multimodal.tsv",
              "report.html"):
        assert any(n.endswith(f) for n in names), (f, names[:20])

    # changing the significance level reruns only the verdicts, the power plan and the report
    (tmp / "alpha.yaml").write_text(yaml.safe_dump({"stats": {"alpha": 0.01}}))
    res = snakemake(*targets, "-n", "--cores", "1", "--configfile", str(tmp / "config.yaml"),
                    str(tmp / "alpha.yaml"), cwd=tmp)
    jobs = {rule for rule in dry_run_jobs(res) if rule.startswith(("stats_", "report_"))}
    assert jobs == {"stats_hypotheses", "stats_power", "report_html"}, res.stdout[-2000:]
    # and a power-planning setting reruns only the power tables and the report
    (tmp / "power.yaml").write_text(yaml.safe_dump({"stats": {"power": {"target": 0.9}}}))
    res = snakemake(*targets, "-n", "--cores", "1", "--configfile", str(tmp / "config.yaml"),
                    str(tmp / "power.yaml"), cwd=tmp)
    jobs = {rule for rule in dry_run_jobs(res) if rule.startswith(("stats_", "report_"))}
    assert jobs == {"stats_power", "report_html"}, res.stdout[-2000:]


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


def test_participants_column_names_checked_at_dag_time(tmp_path):
    # a formula naming a column as written in the file is told its term; a bad age names the line
    parts = tmp_path / "participants.tsv"
    parts.write_text("participant_id\tAge\tfollowup_days\nsub-01\t30\t1\nsub-02\tn/a\t7\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"results_dir": str(tmp_path / "results"), "participants": str(parts),
                                   "stats": {"mixed": {"formula": "value ~ session + Age"}}}))
    res = snakemake("-n", "--cores", "1", "--configfile", str(cfg), cwd=tmp_path, check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "stats.mixed.formula" in out and "'Age' is written 'age'" in out
    parts.write_text("participant_id\tAge\nsub-01\t30\nsub-02\tthirty\n")
    res = snakemake("-n", "--cores", "1", "--configfile", str(cfg), cwd=tmp_path, check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and f"{parts}: line 3, column 'Age'" in out and "'thirty'" in out


def test_nbs_reads_the_connectivity_stage_matrices(tmp_path):
    # NBS takes the Pearson matrices connectivity_session writes, for every participant and session
    cfg = small_config(tmp_path, connectivity={**yaml.safe_load(
        (ROOT / "config" / "config.yaml").read_text())["connectivity"], "atlases": ["Schaefer100"]})
    res = snakemake("-n", "--cores", "1", "--configfile", str(cfg), cwd=tmp_path)
    job = dry_run_job(res.stdout, "stats_nbs")
    fmri = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["fmri"]
    expected = {
        conn_stage.output_paths(tmp_path / "results", sub=sub, ses=ses, task="rest",
                                space="MNI152NLin2009aSym", res=str(fmri["resolution_mm"]),
                                atlas="Schaefer100", meas="pearson")["relmat"]
        for sub in ("01", "02") for ses in ("pre", "post")}
    assert set(job["input"]) == expected | {stats_stage.output_paths(tmp_path / "results")["exclusions"]}
    assert "connectivity_session" in dry_run_jobs(res)


def test_parallel_design_nbs_reads_each_arms_matrices(tmp_path):
    """The active arm's change (stats_nbs) and the interaction (stats_nbs_interaction, both
    arms' matrices) are two jobs; the report reads the interaction's summary."""
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg = small_config(tmp_path, n=4, connectivity={**default["connectivity"],
                                                    "atlases": ["Schaefer100"]},
                       design={"type": "parallel", "arm_column": "arm", "active": "ketamine",
                               "control": "placebo"})
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tage\tfollowup_days\tarm\n" + "".join(
            f"sub-0{i}\t{30 + i}\t7\t{'ketamine' if i % 2 else 'placebo'}\n"
            for i in range(1, 5)))
    res = snakemake("-n", "--cores", "1", "--configfile", str(cfg), cwd=tmp_path)

    def relmats(subs):
        return {conn_stage.output_paths(
            tmp_path / "results", sub=sub, ses=ses, task="rest", space="MNI152NLin2009aSym",
            res=str(default["fmri"]["resolution_mm"]), atlas="Schaefer100",
            meas="pearson")["relmat"] for sub in subs for ses in ("pre", "post")}

    exc = {stats_stage.output_paths(tmp_path / "results")["exclusions"]}
    assert set(dry_run_job(res.stdout, "stats_nbs")["input"]) == relmats(["01", "03"]) | exc
    inter = dry_run_job(res.stdout, "stats_nbs_interaction")
    assert set(inter["input"]) == relmats(["01", "02", "03", "04"]) | exc
    out = stats_stage.nbs_output_paths(tmp_path / "results", atlas="Schaefer100",
                                       baseline="pre", followup="post", interaction=True)
    assert set(inter["output"]) == set(out.values())
    assert out["summary"] in dry_run_job(res.stdout, "report_html")["input"]


def test_nbs_atlas_without_connectivity_matrices_fails_at_dag_time(tmp_path):
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg = small_config(tmp_path, connectivity={**default["connectivity"], "atlases": ["Schaefer100"]},
                       stats={**default["stats"], "nbs": {**default["stats"]["nbs"],
                                                          "atlases": ["Schaefer200"]}})
    res = snakemake("-n", "--cores", "1", "--configfile", str(cfg), cwd=tmp_path, check=False)
    assert res.returncode != 0
    assert "stats.nbs.atlases" in res.stdout + res.stderr and "Schaefer200" in res.stdout + res.stderr


def _parallel_study(tmp, n_per_arm=8):
    """Tidy tables of a placebo-controlled study: effects in the ketamine arm only."""
    ket = study_table(n=n_per_arm, seed=2)
    pla = study_table(n=n_per_arm, seed=3, null=True)
    pla["participant_id"] = pla["participant_id"].map(
        lambda s: f"sub-{int(s[4:]) + n_per_arm:02d}")
    table = pd.concat([ket, pla], ignore_index=True)
    table.to_csv(tmp / "measures.tsv", sep="\t", index=False)
    part = participants(2 * n_per_arm)
    part["arm"] = ["ketamine"] * n_per_arm + ["placebo"] * n_per_arm
    part.to_csv(tmp / "participants.tsv", sep="\t", index=False)
    cfg = {"participants": str(tmp / "participants.tsv"), "results_dir": str(tmp / "results"),
           "modalities": {"fmri": False, "pet": False},
           "design": {"type": "parallel", "arm_column": "arm", "active": "ketamine",
                      "control": "placebo"},
           "stats": {"extra_tables": [str(tmp / "measures.tsv")],
                     "paired": {"n_boot": 300},
                     "power": {"n": [10, 20], "simulations": 300},
                     "mixed": {"formula": "value ~ session * arm + age"},
                     "multimodal": {"n_perm": 500},
                     "hypotheses": [
                         {"name": "ketamine lowers DMN FC", "test": "interaction",
                          "measure": "fc_within", "region": "Default", "direction": "decrease"},
                         {"name": "ketamine raises PCC VT", "test": "interaction",
                          "measure": "VT_1tcm", "region": "PCC", "direction": "increase"},
                         {"name": "DMN FC falls under ketamine", "test": "paired",
                          "measure": "fc_within", "region": "Default", "direction": "decrease"},
                         {"name": "no DMN change under placebo", "test": "paired",
                          "arm": "placebo", "measure": "fc_within", "region": "Default",
                          "direction": "none"}]}}
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    return table, part


@pytest.mark.slow
def test_parallel_design_stats_and_report(tmp_path):
    from prepost.stats import parallel

    table, part = _parallel_study(tmp_path)
    results = tmp_path / "results"
    targets = [*stats_stage.output_paths(results, interaction=True).values(),
               str(results / "report/report.html")]
    snakemake(*targets, "--cores", "2", "--configfile", str(tmp_path / "config.yaml"),
              cwd=tmp_path)
    gt = stats_stage.read_group_table(results / "group/group_table.tsv")
    arms = dict(zip(part.participant_id, part.arm))
    want = parallel.interaction_table(gt, arms, "ketamine", "placebo", n_perm=10000)
    got = stats_stage.read_paired(results / "group/interaction.tsv")
    assert len(got) == len(want) == 8
    pd.testing.assert_frame_equal(got[["measure", "region", "diff", "p_perm", "p_t"]],
                                  want[["measure", "region", "diff", "p_perm", "p_t"]],
                                  check_dtype=False, rtol=1e-9)
    h = pd.read_csv(results / "group/hypotheses.tsv", sep="\t").set_index("name")
    row = want.set_index(["measure", "region"]).loc[("fc_within", "Default")]
    assert h.loc["ketamine lowers DMN FC", "estimate"] == pytest.approx(row["diff"], rel=1e-9)
    assert h.loc["ketamine lowers DMN FC", "verdict"] == "supported"
    assert h.loc["ketamine raises PCC VT", "verdict"] == "supported"
    # paired hypotheses are judged within their arm (the active one unless named)
    paired = stats_stage.read_paired(results / "group/paired.tsv")
    assert set(paired["arm"]) == {"ketamine", "placebo"}
    ket = paired[(paired.arm == "ketamine") & (paired.measure == "fc_within")
                 & (paired.region == "Default")].iloc[0]
    assert h.loc["DMN FC falls under ketamine", "estimate"] == pytest.approx(ket["mean_diff"])
    assert h.loc["DMN FC falls under ketamine", "arm"] == "ketamine"
    assert h.loc["no DMN change under placebo", "arm"] == "placebo"
    assert ket["n"] == 8
    mixed = pd.read_csv(results / "group/mixed.tsv", sep="\t")
    assert "session[T.post]:arm[T.placebo]" in set(mixed.term)
    text = (results / "report/report.html").read_text()
    assert "Session x arm: ketamine minus placebo change" in text
    assert "Parallel arms (ketamine and placebo" in text
    # the interactions are planned as parallel studies from both arms' changes
    ntab = pd.read_csv(results / "group/power_n.tsv", sep="\t").set_index(["name", "design"])
    assert ("ketamine lowers DMN FC", "parallel") in ntab.index
    assert ("ketamine lowers DMN FC", "prepost") not in ntab.index
    curves = pd.read_csv(results / "group/power.tsv", sep="\t")
    c = curves[curves.name == "ketamine lowers DMN FC"].iloc[0]
    d = change_scores(gt, "pre", "post")[("fc_within", "Default", "")]
    ket_d = d[[p for p in d.index if arms[p] == "ketamine"]]
    pla_d = d[[p for p in d.index if arms[p] == "placebo"]]
    assert c["mean_active"] == pytest.approx(ket_d.mean(), rel=1e-9)
    assert c["mean_control"] == pytest.approx(pla_d.mean(), rel=1e-9)
    assert ">Power planning<" in text


CROSSOVER = {"type": "crossover", "order_column": "order", "active": "ketamine",
             "control": "placebo",
             "sessions": {"ketamine": {"baseline": "preKET", "followup": "postKET"},
                          "placebo": {"baseline": "prePLA", "followup": "postPLA"}}}


def _crossover_study(tmp, n=8):
    """Tidy tables of a crossover study: effects in the ketamine visit only."""
    ket = study_table(n=n, seed=2)
    pla = study_table(n=n, seed=3, null=True)
    ket["session"] = ket["session"].map({"pre": "preKET", "post": "postKET"})
    pla["session"] = pla["session"].map({"pre": "prePLA", "post": "postPLA"})
    table = pd.concat([ket, pla], ignore_index=True)
    table.to_csv(tmp / "measures.tsv", sep="\t", index=False)
    part = participants(n)
    part["order"] = ["ketamine", "placebo"] * (n // 2)
    part.to_csv(tmp / "participants.tsv", sep="\t", index=False)
    cfg = {"participants": str(tmp / "participants.tsv"), "results_dir": str(tmp / "results"),
           "modalities": {"fmri": False, "pet": False}, "design": CROSSOVER,
           "stats": {"extra_tables": [str(tmp / "measures.tsv")],
                     "paired": {"n_boot": 300},
                     "power": {"n": [10, 20], "simulations": 300},
                     "mixed": {"formula": "value ~ timepoint * condition + period + age"},
                     "multimodal": {"n_perm": 500},
                     "hypotheses": [
                         {"name": "ketamine lowers DMN FC", "test": "interaction",
                          "measure": "fc_within", "region": "Default", "direction": "decrease"},
                         {"name": "ketamine raises PCC VT", "test": "interaction",
                          "measure": "VT_1tcm", "region": "PCC", "direction": "increase"},
                         {"name": "no DMN change under placebo", "test": "paired",
                          "arm": "placebo", "measure": "fc_within", "region": "Default",
                          "direction": "none"}]}}
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    return table, part


@pytest.mark.slow
def test_crossover_design_stats_and_report(tmp_path):
    from prepost.stats import crossover

    table, part = _crossover_study(tmp_path)
    results = tmp_path / "results"
    targets = [*stats_stage.output_paths(results, interaction=True).values(),
               str(results / "report/report.html")]
    snakemake(*targets, "--cores", "2", "--configfile", str(tmp_path / "config.yaml"),
              cwd=tmp_path)
    gt = stats_stage.read_group_table(results / "group/group_table.tsv")
    # the four sessions, with condition, timepoint and period of each row
    assert set(gt.session) == {"preKET", "postKET", "prePLA", "postPLA"}
    row = gt[(gt.participant_id == "sub-02") & (gt.session == "prePLA")].iloc[0]
    assert (row.condition, row.timepoint, row.period) == ("placebo", "baseline", 1)
    sessions = crossover.condition_sessions(CROSSOVER)
    orders = dict(zip(part.participant_id, part.order))
    want = crossover.contrast_table(gt, sessions, "ketamine", "placebo", orders=orders,
                                    n_boot=300)
    got = stats_stage.read_paired(results / "group/interaction.tsv")
    assert len(got) == len(want) == 8
    cols = ["measure", "region", "diff", "p_perm", "p_t", "diff_period_adjusted"]
    pd.testing.assert_frame_equal(got[cols], want[cols], check_dtype=False, rtol=1e-9)
    h = pd.read_csv(results / "group/hypotheses.tsv", sep="\t").set_index("name")
    dmn = want.set_index(["measure", "region"]).loc[("fc_within", "Default")]
    assert h.loc["ketamine lowers DMN FC", "estimate"] == pytest.approx(dmn["diff"], rel=1e-9)
    assert h.loc["ketamine lowers DMN FC", "n"] == 8
    assert h.loc["ketamine lowers DMN FC", "verdict"] == "supported"
    assert h.loc["ketamine raises PCC VT", "verdict"] == "supported"
    paired = stats_stage.read_paired(results / "group/paired.tsv")
    pla = paired[(paired.arm == "placebo") & (paired.measure == "fc_within")
                 & (paired.region == "Default")].iloc[0]
    assert h.loc["no DMN change under placebo", "estimate"] == pytest.approx(pla["mean_diff"])
    mixed = pd.read_csv(results / "group/mixed.tsv", sep="\t")
    assert {"timepoint[T.followup]:condition[T.ketamine]", "period"} <= set(mixed.term)
    text = (results / "report/report.html").read_text()
    assert "Session x condition: ketamine minus placebo change" in text
    assert "Crossover: every participant had both conditions" in text
    ntab = pd.read_csv(results / "group/power_n.tsv", sep="\t").set_index(["name", "design"])
    assert ("ketamine lowers DMN FC", "parallel") in ntab.index
    # a crossover replication is planned from the participants' own contrasts
    curves = pd.read_csv(results / "group/power.tsv", sep="\t")
    cx = curves[(curves.name == "ketamine lowers DMN FC") & (curves.design == "crossover")]
    d_k = change_scores(gt, "preKET", "postKET")[("fc_within", "Default", "")]
    d_p = change_scores(gt, "prePLA", "postPLA")[("fc_within", "Default", "")]
    assert cx["sd_contrast"].iloc[0] == pytest.approx((d_k - d_p).std(ddof=1), rel=1e-9)


def test_crossover_nbs_reads_both_conditions_matrices(tmp_path):
    """stats_nbs tests the ketamine visit's change; stats_nbs_interaction reads all four
    sessions of every participant; every session is simulated and processed."""
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg = small_config(tmp_path, n=2, connectivity={**default["connectivity"],
                                                    "atlases": ["Schaefer100"]},
                       design=CROSSOVER)
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tage\tfollowup_days\torder\nsub-01\t30\t7\tketamine\n"
        "sub-02\t31\t7\tplacebo\n")
    res = snakemake("-n", "--cores", "1", "--configfile", str(cfg), cwd=tmp_path)

    def relmats(sessions):
        return {conn_stage.output_paths(
            tmp_path / "results", sub=sub, ses=ses, task="rest", space="MNI152NLin2009aSym",
            res=str(default["fmri"]["resolution_mm"]), atlas="Schaefer100",
            meas="pearson")["relmat"] for sub in ("01", "02") for ses in sessions}

    exc = {stats_stage.output_paths(tmp_path / "results")["exclusions"]}
    assert set(dry_run_job(res.stdout, "stats_nbs")["input"]) == \
        relmats(["preKET", "postKET"]) | exc
    inter = dry_run_job(res.stdout, "stats_nbs_interaction")
    assert set(inter["input"]) == relmats(["preKET", "postKET", "prePLA", "postPLA"]) | exc
    assert dry_run_jobs(res)["connectivity_session"] == 8


@pytest.mark.parametrize("design,participants_text,needle", [
    ({"type": "parallel"}, "participant_id\tage\nsub-01\t30\nsub-02\t31\n",
     "field 'arm': expected a participants.tsv column naming each participant's arm"),
    ({"type": "parallel"}, "participant_id\tarm\nsub-01\tketamine\nsub-02\tplacbo\n"
     "sub-03\tplacebo\nsub-04\tketamine\n", "line 3 (sub-02), column 'arm': expected 'ketamine' "
     "or 'placebo'"),
    ({"type": "parallel"}, "participant_id\tarm\nsub-01\tketamine\nsub-02\tplacebo\n"
     "sub-03\tplacebo\n", "at least 2 participants in arm 'ketamine', found 1"),
    ({"type": "parallel", "control": "ketamine"}, "participant_id\tarm\nsub-01\tketamine\n",
     "design.control"),
    (CROSSOVER, "participant_id\tage\nsub-01\t30\nsub-02\t31\n",
     "field 'order': expected a participants.tsv column naming the condition each participant "
     "received first"),
    (CROSSOVER, "participant_id\torder\nsub-01\tketamine\nsub-02\tKP\n",
     "line 3 (sub-02), column 'order': expected the condition given first, 'ketamine' or "
     "'placebo'"),
    ({**CROSSOVER, "sessions": {"ketamine": {"baseline": "a", "followup": "b"}}},
     "participant_id\torder\nsub-01\tketamine\nsub-02\tplacebo\n",
     "design.sessions"),
])
def test_design_checked_against_participants_at_dag_time(tmp_path, design, participants_text,
                                                          needle):
    parts = tmp_path / "participants.tsv"
    parts.write_text(participants_text)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"results_dir": str(tmp_path / "results"),
                                   "participants": str(parts), "design": design}))
    res = snakemake("-n", "--cores", "1", "--configfile", str(cfg), cwd=tmp_path, check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and needle in out, out[-2000:]
    assert not (tmp_path / "results").exists()


def test_interaction_hypothesis_needs_a_parallel_design(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "results_dir": str(tmp_path / "results"),
        "stats": {"hypotheses": [{"name": "arm effect", "test": "interaction",
                                  "measure": "fc_within", "region": "Default",
                                  "direction": "decrease"}]}}))
    res = snakemake("-n", "--cores", "1", "--configfile", str(cfg), cwd=tmp_path, check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "arm effect" in out and "design.type: parallel" in out
