"""Crossover designs: the within-participant contrast of changes against scipy/statsmodels, its
false-positive rate under the null, the period adjustment, the mixed model, the NBS of the
contrast and the simulator's crossover layout."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from prepost import simulate
from prepost.errors import ConfigError, ValidationReport
from prepost.stats import crossover, group
from test_stats_group import study_table

SESSIONS = {"ketamine": ("preKET", "postKET"), "placebo": ("prePLA", "postPLA")}
DESIGN = {"type": "crossover", "active": "ketamine", "control": "placebo",
          "sessions": {c: {"baseline": b, "followup": f} for c, (b, f) in SESSIONS.items()}}


def crossover_table(n=8, seed=0, null=False):
    """A crossover group table: study_table's effects in the ketamine visit, none in placebo."""
    ket = study_table(n=n, seed=seed, null=null)
    pla = study_table(n=n, seed=seed + 100, null=True)
    ket["session"] = ket["session"].map({"pre": "preKET", "post": "postKET"})
    pla["session"] = pla["session"].map({"pre": "prePLA", "post": "postPLA"})
    return pd.concat([ket, pla], ignore_index=True)


def test_condition_sessions_and_orders_are_checked():
    assert crossover.condition_sessions(DESIGN) == SESSIONS
    with pytest.raises(ConfigError, match="one entry per condition"):
        crossover.condition_sessions({**DESIGN, "sessions": {"ketamine": DESIGN["sessions"]
                                                             ["ketamine"]}})
    same = {**DESIGN, "sessions": {**DESIGN["sessions"],
                                   "placebo": {"baseline": "preKET", "followup": "postPLA"}}}
    with pytest.raises(ConfigError, match="four different session labels"):
        crossover.condition_sessions(same)
    part = pd.DataFrame({"participant_id": ["sub-01", "sub-02", "sub-03"],
                         "order": ["ketamine", "placebo", "ketamine"]})
    assert crossover.participant_orders(part, "p.tsv", "order", "ketamine", "placebo") == {
        "sub-01": "ketamine", "sub-02": "placebo", "sub-03": "ketamine"}
    with pytest.raises(ConfigError, match="design.order_column"):
        crossover.participant_orders(part, "p.tsv", "sequence", "ketamine", "placebo")
    bad = part.assign(order=["ketamine", "KP", "placebo"])
    with pytest.raises(ValidationReport, match=r"line 3 \(sub-02\), column 'order'.*found 'KP'"):
        crossover.participant_orders(bad, "p.tsv", "order", "ketamine", "placebo")
    one = part.assign(order="ketamine")
    with pytest.raises(ValidationReport, match="receiving 'placebo' first"):
        crossover.participant_orders(one, "p.tsv", "order", "ketamine", "placebo")


def test_contrast_test_matches_scipy():
    rng = np.random.default_rng(1)
    a, c = rng.normal(0.3, 1, 12), rng.normal(0, 1, 12)
    c[3] = np.nan  # dropped with its pair
    res = crossover.contrast_test(a, c, n_boot=0, max_exact=16)
    ok = np.isfinite(c)
    ref = stats.ttest_rel(a[ok], c[ok])
    assert res["n"] == 11 and res["n_dropped"] == 1
    assert res["diff"] == pytest.approx(np.mean(a[ok] - c[ok]), rel=1e-12)
    assert res["t"] == pytest.approx(ref.statistic, rel=1e-12)
    assert res["p_t"] == pytest.approx(ref.pvalue, rel=1e-12)
    ci = ref.confidence_interval(0.95)
    assert (res["ci_t_low"], res["ci_t_high"]) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert res["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a[ok], c[ok]).pvalue, rel=1e-12)
    # exact sign flips of the contrast = scipy's exact paired permutation test of the mean
    perm = stats.permutation_test((a[ok], c[ok]), lambda x, y: np.mean(x - y),
                                  permutation_type="samples", n_resamples=np.inf)
    assert res["perm_exact"] and res["p_perm"] == pytest.approx(perm.pvalue, rel=1e-12)
    d = a[ok] - c[ok]
    assert res["cohens_dz"] == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12)


def test_period_adjusted_contrast_equals_the_two_period_regression():
    # unbalanced orders (8 ketamine first, 4 placebo first) and a period effect on the change:
    # the mean contrast is biased, the average of the two orders' means is not
    rng = np.random.default_rng(2)
    n, effect, period = 12, 0.5, 0.8
    first = np.array(["ketamine"] * 8 + ["placebo"] * 4)
    # the second visit's change is larger by `period`
    d_ket = effect + np.where(first == "placebo", period, 0) + rng.normal(0, 0.05, n)
    d_pla = np.where(first == "ketamine", period, 0) + rng.normal(0, 0.05, n)
    res = crossover.contrast_test(d_ket, d_pla, first=first, active_label="ketamine", n_boot=0)
    assert res["n_active_first"] == 8 and res["n_control_first"] == 4
    # d ~ sequence with sum coding: the intercept is the average of the sequence means
    import statsmodels.formula.api as smf

    fit = smf.ols("d ~ C(seq, Sum)", pd.DataFrame({"d": d_ket - d_pla, "seq": first})).fit()
    assert res["diff_period_adjusted"] == pytest.approx(fit.params["Intercept"], rel=1e-10)
    assert abs(res["diff_period_adjusted"] - effect) < 0.05
    assert res["diff"] - effect == pytest.approx(period * (4 - 8) / 12, abs=0.05)  # biased


def test_false_positive_rate_of_the_contrast_under_the_null():
    """1,000 null crossover studies of 12 participants (exact sign flips): 3-7 % per test."""
    rng = np.random.default_rng(3)
    first = np.array(["ketamine", "placebo"] * 6)
    hits = {"p_perm": 0, "p_t": 0, "p_wilcoxon": 0}
    n_studies = 1000
    for _ in range(n_studies):
        a, c = rng.normal(0, 1, 12), rng.normal(0, 1, 12)  # changes under each condition
        res = crossover.contrast_test(a, c, first=first, n_boot=0, max_exact=16)
        for k in hits:
            hits[k] += res[k] < 0.05
    rates = {k: v / n_studies for k, v in hits.items()}
    assert all(0.03 <= r <= 0.07 for r in rates.values()), rates


def test_contrast_table_tests_each_measure_and_corrects_within_families():
    table = crossover_table(n=10, seed=4)
    orders = {f"sub-{i:02d}": "ketamine" if i % 2 else "placebo" for i in range(1, 11)}
    out = crossover.contrast_table(table, SESSIONS, "ketamine", "placebo", orders=orders,
                                   n_boot=200)
    assert "qc" not in set(out["modality"])
    row = out.set_index(["measure", "region"]).loc[("fc_within", "Default")]
    d_k = group.change_scores(table, *SESSIONS["ketamine"])[("fc_within", "Default", "")]
    d_p = group.change_scores(table, *SESSIONS["placebo"])[("fc_within", "Default", "")]
    assert row["diff"] == pytest.approx((d_k - d_p).mean(), rel=1e-12)
    assert row["p_t"] == pytest.approx(stats.ttest_rel(d_k, d_p).pvalue, rel=1e-12)
    assert row["n"] == 10 and row["p_perm"] < 0.01 and row["diff"] < 0
    null_row = out.set_index(["measure", "region"]).loc[("fc_within", "Vis")]
    assert null_row["p_perm"] > 0.01
    # FDR within (atlas, modality, measure): the fc_within family has three regions
    fam = out[out["measure"] == "fc_within"]
    from prepost.stats.paired import correct

    assert np.allclose(fam["p_perm_fdr_bh"], correct(fam["p_perm"], method="fdr_bh"))


def test_paired_statistics_by_condition_and_the_mixed_model_interaction():
    table = crossover_table(n=8, seed=5)
    out = group.paired_statistics(table, conditions=SESSIONS, n_boot=0, n_perm=1000)
    assert list(dict.fromkeys(out["arm"])) == ["ketamine", "placebo"]
    for cond, (pre, post) in SESSIONS.items():
        alone = group.paired_statistics(table, pre, post, n_boot=0, n_perm=1000)
        mine = out[out["arm"] == cond].reset_index(drop=True)
        assert np.allclose(mine["mean_diff"], alone["mean_diff"])
        assert np.allclose(mine["p_perm_fdr_bh"], alone["p_perm_fdr_bh"])
    # timepoint x condition of a balanced, complete crossover = the mean contrast of changes
    orders = {f"sub-{i:02d}": "ketamine" if i % 2 else "placebo" for i in range(1, 9)}
    ann = crossover.annotate(table, SESSIONS, orders)
    assert set(ann["period"]) == {1.0, 2.0}
    assert (ann.loc[ann.participant_id == "sub-01", "period"].where(
        ann.condition == "ketamine").dropna() == 1).all()
    sub = ann[(ann.measure == "fc_within") & (ann.region == "Default")]
    mx = group.mixed_models(sub, ["fc_within"], formula="value ~ timepoint * condition + period",
                            references={"condition": "placebo", "timepoint": "baseline"})
    term = mx.set_index("term").loc["timepoint[T.followup]:condition[T.ketamine]", "estimate"]
    d_k = group.change_scores(sub, *SESSIONS["ketamine"]).iloc[:, 0]
    d_p = group.change_scores(sub, *SESSIONS["placebo"]).iloc[:, 0]
    assert term == pytest.approx((d_k - d_p).mean(), abs=1e-6)


def test_nbs_of_the_contrast_finds_an_active_only_change():
    rng = np.random.default_rng(6)
    n, k = 10, 12
    base = np.tanh(rng.normal(0.3, 0.1, (k, k)))
    base = (base + base.T) / 2

    def mats(delta=0.0):
        z = np.arctanh(base)[None] + rng.normal(0, 0.05, (n, k, k))
        z = (z + z.transpose(0, 2, 1)) / 2
        z[:, :4, :4] += delta
        r = np.tanh(z)
        r[:, np.arange(k), np.arange(k)] = 1.0
        return r

    pre_a, post_a, pre_c, post_c = mats(), mats(0.3), mats(), mats()
    summary, edges, t = group.nbs_matrices(pre_a, post_a, thresh=5.0, control=(pre_c, post_c),
                                           n_perm=2000)
    assert summary["components"] and summary["components"][0]["p"] < 0.01
    found = set(zip(edges["parcel_i"], edges["parcel_j"]))
    planted = {(str(i), str(j)) for i in range(4) for j in range(i + 1, 4)}
    assert planted <= found and len(found - planted) <= 1  # a chance edge at |t| > 5 may join
    # the edge t is the paired t of the contrast of Fisher-z changes
    za = np.arctanh(post_a[:, 0, 1]) - np.arctanh(pre_a[:, 0, 1])
    zc = np.arctanh(post_c[:, 0, 1]) - np.arctanh(pre_c[:, 0, 1])
    assert t.iloc[0, 1] == pytest.approx(stats.ttest_rel(za, zc).statistic, rel=1e-9)
    # a change shared by both conditions is no interaction
    pre_c2, post_c2 = mats(), mats(0.3)
    shared, _, _ = group.nbs_matrices(pre_a, post_a, thresh=5.0, control=(pre_c2, post_c2),
                                      n_perm=2000)
    assert all(c["p"] > 0.05 for c in shared["components"])


def test_simulator_plants_the_effects_in_the_active_visit_only():
    params = simulate.merge_params()
    ses = ("preKET", "postKET", "prePLA", "postPLA")
    fc = simulate.subject_network_fc(params, "03", ses, planted=["postKET"])
    default = simulate.subject_network_fc(params, "03")
    # the ketamine visit draws as the pre/post study does; placebo has its own session noise
    assert np.allclose(fc["preKET"], default["pre"]) and np.allclose(fc["postKET"], default["post"])
    quiet = simulate.merge_params({"variability": {"fc_session_sd_z": 0.0}})
    q = simulate.subject_network_fc(quiet, "03", ses, planted=["postKET"])
    dz = simulate.planted_effect_z(params["effects"])
    zk = np.arctanh(q["postKET"]) - np.arctanh(q["preKET"])
    zp = np.arctanh(q["postPLA"]) - np.arctanh(q["prePLA"])
    d, s = simulate.NETWORKS.index("Default"), simulate.NETWORKS.index("SomMot")
    assert zk[d, s] == pytest.approx(dz[d, s], abs=0.02)
    assert zp[d, s] == pytest.approx(0.0, abs=1e-9)
    vt = simulate.pet_region_truth(simulate.merge_params({"variability": {
        "vt_session_sd_pct": 0.0, "vt_region_sd_pct": 0.0}}), "03", ses, planted=["postKET"])
    pcc = simulate.schaefer400_table().is_pcc.to_numpy()
    ratio_k = vt["postKET"]["parcel_vt"][pcc] / vt["preKET"]["parcel_vt"][pcc]
    ratio_p = vt["postPLA"]["parcel_vt"][pcc] / vt["prePLA"]["parcel_vt"][pcc]
    eff = params["effects"]
    assert ratio_k == pytest.approx((1 + eff["global_vt_pct"] / 100)
                                    * (1 + eff["pcc_vt_pct"] / 100), rel=1e-9)
    assert ratio_p == pytest.approx(1.0, rel=1e-12)
