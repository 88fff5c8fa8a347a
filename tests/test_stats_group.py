"""Group table, QC exclusions, paired statistics per family, mixed models, NBS and multimodal."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from prepost.connectivity.stage import read_relmat
from prepost.errors import ConfigError, InputError
from prepost.stats import group


def tidy(rows):
    return pd.DataFrame(rows, columns=["participant_id", "session", "modality", "measure",
                                       "region", "value"])


def participants(n):
    return pd.DataFrame({"participant_id": [f"sub-{i:02d}" for i in range(1, n + 1)],
                         "age": np.arange(20, 20 + n), "followup_days": [1, 7] * (n // 2)
                         + [1] * (n % 2)})


def study_table(n=11, effects=None, seed=0, null=False):
    """Truth-like tidy table with planted fMRI and PET effects (dz about 1.5-2)."""
    rng = np.random.default_rng(seed)
    effects = effects or {("fmri", "fc_within", "Default"): -0.10,
                          ("fmri", "fc_between", "SomMot-Default"): 0.10,
                          ("pet", "VT_1tcm", "PCC"): 2.0}
    base = {("fmri", "fc_within", "Default"): (0.6, 0.1, 0.05),
            ("fmri", "fc_within", "Vis"): (0.7, 0.1, 0.05),
            ("fmri", "fc_within", "SomMot"): (0.6, 0.1, 0.05),
            ("fmri", "fc_between", "SomMot-Default"): (0.1, 0.1, 0.05),
            ("fmri", "gradient1_range", "global"): (1.0, 0.1, 0.05),
            ("fmri", "alff", "Default"): (1.0, 0.2, 0.1),
            ("pet", "VT_1tcm", "PCC"): (22.0, 2.5, 0.8),
            ("pet", "VT_1tcm", "cortical_gm"): (20.0, 2.5, 0.8)}
    rows = []
    for i in range(n):
        sid = f"sub-{i + 1:02d}"
        for key, (mu, sd_s, sd_w) in base.items():
            subj = mu + sd_s * rng.standard_normal()
            eff = 0.0 if null else effects.get(key, 0.0)
            for ses, e in (("pre", 0.0), ("post", eff)):
                rows.append((sid, ses, *key, subj + e + sd_w * rng.standard_normal()))
        for ses in ("pre", "post"):
            rows.append((sid, ses, "qc", "mean_fd", "global", 0.15))
    return tidy(rows)


def test_read_tidy_joins_tables_and_normalises_flags(tmp_path):
    a = tidy([("sub-01", "pre", "fmri", "fc_within", "Default", 0.5)])
    b = tidy([("sub-01", "pre", "pet", "VT_1tcm", "PCC", 20.0),
              ("sub-01", "post", "pet", "VT_1tcm", "PCC", 21.0)])
    b["flag"] = ["", "fit failed: K1 at bound"]
    pa, pb = tmp_path / "a.tsv", tmp_path / "b.tsv"
    a.to_csv(pa, sep="\t", index=False)
    b.to_csv(pb, sep="\t", index=False, na_rep="n/a")
    t = group.read_tidy([pa, pb])
    assert len(t) == 3
    assert list(t["flag"]) == ["", "", "fit failed: K1 at bound"]
    assert list(t["source"]) == ["a.tsv", "b.tsv", "b.tsv"]


def test_read_tidy_rejects_missing_columns_and_duplicates(tmp_path):
    with pytest.raises(InputError, match="region"):
        group.read_tidy([tidy([("sub-01", "pre", "fmri", "x", "y", 1.0)]).drop(columns="region")])
    row = ("sub-01", "pre", "fmri", "fc_within", "Default", 0.5)
    with pytest.raises(InputError, match="duplicates"):
        group.read_tidy([tidy([row]), tidy([row])])


def test_group_table_joins_covariates_per_participant():
    t = group.read_tidy([study_table(n=4)])
    joined = group.join_covariates(t, participants(4))
    assert len(joined) == len(t)
    sub3 = joined[joined.participant_id == "sub-03"]
    assert set(sub3.age) == {22} and set(sub3.followup_days) == {1}
    assert set(joined[joined.participant_id == "sub-02"].followup_days) == {7}


def test_group_table_rejects_unknown_participant():
    t = group.read_tidy([study_table(n=4)])
    with pytest.raises(InputError, match="sub-04"):
        group.join_covariates(t, participants(3))


def test_qc_exclusions_are_applied_with_reasons():
    t = study_table(n=4)
    t.loc[(t.participant_id == "sub-02") & (t.session == "post") & (t.measure == "mean_fd"),
          "value"] = 0.62
    extra = tidy([("sub-03", "pre", "qc", "retained_s", "global", 180.0),
                  ("sub-01", "pre", "qc", "retained_s", "global", 290.0),
                  ("sub-04", "post", "qc", "excluded", "global", 1.0)])
    t = pd.concat([t, extra], ignore_index=True)
    t["flag"] = ""
    flagged = (t.participant_id == "sub-01") & (t.session == "post") & \
        (t.measure == "VT_1tcm") & (t.region == "PCC")
    t.loc[flagged, "flag"] = "1TCM fit failed"
    t = group.read_tidy([t])
    kept, exc = group.apply_qc(t, group.DEFAULT_QC["rules"])
    # sub-02 post fMRI, sub-03 pre fMRI, sub-04 post fMRI gone; PET and QC rows stay
    for sid, ses in (("sub-02", "post"), ("sub-03", "pre"), ("sub-04", "post")):
        s = kept[(kept.participant_id == sid) & (kept.session == ses)]
        assert not (s.modality == "fmri").any()
        assert (s.modality == "pet").sum() == 2 and (s.modality == "qc").any()
    assert not (flagged.any() and ((kept.participant_id == "sub-01") & (kept.session == "post")
                                   & (kept.measure == "VT_1tcm")
                                   & (kept.region == "PCC")).any())
    assert len(kept) == len(t) - 3 * 6 - 1
    assert len(exc) == 4
    fd = exc[exc.rule == "mean_fd > 0.5"].iloc[0]
    assert (fd.participant_id, fd.session, fd.modality, fd.n_rows) == ("sub-02", "post", "fmri", 6)
    assert "0.62" in fd.reason
    assert exc[exc.rule == "retained_s < 240"].participant_id.tolist() == ["sub-03"]
    fl = exc[exc.rule == "flag"].iloc[0]
    assert (fl.measure, fl.region, fl.reason) == ("VT_1tcm", "PCC", "flagged: 1TCM fit failed")


def test_qc_rule_errors_name_the_field():
    t = group.read_tidy([study_table(n=2)])
    with pytest.raises(ConfigError, match=r"rules\[0\].op"):
        group.apply_qc(t, [{"measure": "mean_fd", "op": "=>", "value": 1, "exclude": "fmri"}])


def test_paired_statistics_families_and_dropped_pairs():
    t = study_table(n=11)
    t = t[~((t.participant_id == "sub-05") & (t.session == "post") & (t.measure == "alff"))]
    res = group.paired_statistics(t, n_boot=0)
    row = res[(res.measure == "alff")].iloc[0]
    assert row.n == 10 and row.n_dropped == 1
    # family = modality/measure: fc_within holds three regions; Holm within it matches statsmodels
    fam = res[res.family == "fmri/fc_within"].sort_values("region")
    from statsmodels.stats.multitest import multipletests
    np.testing.assert_allclose(fam.p_perm_holm, multipletests(fam.p_perm, method="holm")[1])
    np.testing.assert_allclose(fam.p_t_fdr_bh, multipletests(fam.p_t, method="fdr_bh")[1])
    # a single-member family is not corrected
    g = res[res.measure == "gradient1_range"].iloc[0]
    assert g.p_perm_fdr_bh == pytest.approx(g.p_perm)
    d = res[(res.measure == "fc_within") & (res.region == "Default")].iloc[0]
    wide = t[(t.measure == "fc_within") & (t.region == "Default")].pivot(
        index="participant_id", columns="session", values="value")
    ref = stats.ttest_rel(wide.post, wide.pre)
    assert d.t == pytest.approx(ref.statistic) and d.p_t == pytest.approx(ref.pvalue)
    assert d.perm_exact and d.mean_diff < 0


def test_formula_checks():
    assert group.formula_variables("value ~ session + followup_days + C(sex) + np.log(age)") == \
        ["value", "session", "followup_days", "sex", "age"]
    group.check_formula("value ~ session + age", ["value", "session", "age"])
    with pytest.raises(ConfigError, match="weight"):
        group.check_formula("value ~ session + weight", ["value", "session", "age"])


def test_mixed_models_session_effect_matches_paired_mean():
    t = group.join_covariates(group.read_tidy([study_table(n=11)]), participants(11))
    res = group.mixed_models(t, ["fc_within", "missing_measure"], formula="value ~ session")
    assert set(res.region) == {"Default", "Vis", "SomMot"}
    sess = res[(res.region == "Default") & res.term.str.startswith("session")].iloc[0]
    wide = t[(t.measure == "fc_within") & (t.region == "Default")].pivot(
        index="participant_id", columns="session", values="value")
    # balanced complete pairs: the REML session effect equals the mean paired difference
    assert sess.estimate == pytest.approx((wide.post - wide.pre).mean(), abs=1e-6)
    assert sess.p < 0.05


def test_multimodal_correlations_of_changes():
    rng = np.random.default_rng(3)
    n = 11
    dx = rng.standard_normal(n)
    dy = 0.9 * dx + 0.3 * rng.standard_normal(n)
    rows = []
    for i in range(n):
        sid = f"sub-{i + 1:02d}"
        rows += [(sid, "pre", "pet", "VT_1tcm", "PCC", 20.0),
                 (sid, "post", "pet", "VT_1tcm", "PCC", 20.0 + dx[i]),
                 (sid, "pre", "fmri", "alff", "Default", 1.0),
                 (sid, "post", "fmri", "alff", "Default", 1.0 + dy[i])]
    t = tidy(rows)
    pairs = [{"x": {"measure": "VT_1tcm", "region": "PCC"},
              "y": {"measure": "alff", "region": "Default"}},
             {"x": {"measure": "VT_1tcm", "region": "PCC"},
              "y": {"measure": "eigenvector_centrality", "region": "PCC"}}]
    res = group.multimodal_correlations(t, pairs, n_perm=2000)
    sp = res[(res.method == "spearman") & (res.y == "alff(Default)")].iloc[0]
    assert sp.r == pytest.approx(stats.spearmanr(dx, dy).statistic)
    assert sp.p_perm < 0.01 and sp.n == n
    missing = res[res.y == "eigenvector_centrality(PCC)"]
    assert missing.r.isna().all() and missing.note.str.contains("not in the group table").all()


def test_nbs_matrices_find_planted_component_and_drop_missing_parcels():
    rng = np.random.default_rng(0)
    n, p = 10, 12
    base = rng.uniform(0.1, 0.4, (p, p))
    base = (base + base.T) / 2
    pre, post = [], []
    for _ in range(n):
        a = base + 0.03 * rng.standard_normal((p, p))
        b = base + 0.03 * rng.standard_normal((p, p))
        b[:4, :4] += 0.15
        for m in (a, b):
            m[:] = (m + m.T) / 2
            np.fill_diagonal(m, 1.0)
        pre.append(a), post.append(b)
    pre, post = np.array(pre), np.array(post)
    pre[3, 11, :] = pre[3, :, 11] = np.nan
    labels = [f"p{i}" for i in range(p)]
    summary, edges, t = group.nbs_matrices(pre, post, labels, thresh=3.0)
    assert summary["exact"] and summary["n_perm"] == 2**n
    assert summary["dropped_parcels"] == ["p11"]
    c1 = summary["components"][0]
    # flips of at most one subject (and their negations) keep the effect: p = 22 / 1024
    assert c1["n_edges"] == 6 and c1["p"] == pytest.approx(22 / 1024)
    assert set(edges[edges.component == 1].parcel_i) | set(edges[edges.component == 1].parcel_j) \
        == {"p0", "p1", "p2", "p3"}
    assert np.isnan(t.loc["p11", "p0"]) and t.loc["p0", "p1"] > 3


def test_read_relmat(tmp_path):
    m = pd.DataFrame(np.eye(3), index=["a", "b", "c"], columns=["a", "b", "c"])
    m.index.name = "parcel"
    m.to_csv(tmp_path / "m.tsv", sep="\t")
    assert read_relmat(tmp_path / "m.tsv").shape == (3, 3)
    m.iloc[:, :2].to_csv(tmp_path / "bad.tsv", sep="\t")
    with pytest.raises(InputError, match="square"):
        read_relmat(tmp_path / "bad.tsv")
    m.rename(columns={"c": "d"}).to_csv(tmp_path / "labels.tsv", sep="\t")
    with pytest.raises(InputError, match="same node labels"):
        read_relmat(tmp_path / "labels.tsv")


def test_nbs_matrices_with_one_participant_say_why():
    m = np.eye(4)[None] * 0.5 + 0.2
    summary, edges, t = group.nbs_matrices(m, m, list("abcd"))
    assert summary["components"] == [] and "fewer than 2" in summary["note"]
    assert edges.empty and t.isna().all().all()
