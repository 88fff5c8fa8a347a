"""Parallel-arm designs: the difference of changes between arms, against scipy and statsmodels,
its false-positive rate under the null, and hypotheses judged on it."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from prepost.errors import ConfigError
from prepost.stats import hypotheses as hyp
from prepost.stats.parallel import arm_test, interaction_table, relabelings


def test_welch_and_mann_whitney_agree_with_scipy_and_statsmodels():
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

    rng = np.random.default_rng(1)
    a, c = rng.normal(0.3, 1.0, 9), rng.normal(0.0, 2.0, 7)
    r = arm_test(a, c, ci=0.9)
    ref = stats.ttest_ind(a, c, equal_var=False)
    assert r["t"] == pytest.approx(ref.statistic, rel=1e-12)
    assert r["p_t"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert r["df"] == pytest.approx(ref.df, rel=1e-12)
    lo, hi = CompareMeans(DescrStatsW(a), DescrStatsW(c)).tconfint_diff(alpha=0.1,
                                                                          usevar="unequal")
    assert (r["ci_t_low"], r["ci_t_high"]) == pytest.approx((lo, hi), rel=1e-10)
    mw = stats.mannwhitneyu(a, c, alternative="two-sided")
    assert r["u"] == mw.statistic and r["p_wilcoxon"] == pytest.approx(mw.pvalue, rel=1e-12)
    assert r["diff"] == pytest.approx(a.mean() - c.mean(), rel=1e-12)
    assert (r["n_active"], r["n_control"]) == (9, 7)


def _welch(x, y, axis=-1):
    """|Welch t|, one-sided in scipy: the share of relabelings with |t*| >= |t| (scipy's own
    two-sided p doubles the smaller tail instead, which differs for an asymmetric null)."""
    return np.abs(stats.ttest_ind(x, y, equal_var=False, axis=axis).statistic)


def test_exact_relabeling_p_equals_scipy_permutation_test():
    """The permuted statistic is Welch's t (studentized permutation test)."""
    rng = np.random.default_rng(2)
    a, c = rng.normal(1.0, 1.0, 6), rng.normal(0.0, 1.0, 5)
    r = arm_test(a, c)
    assert r["perm_exact"] and r["n_relabelings"] == math.comb(11, 6)
    ref = stats.permutation_test((a, c), _welch, permutation_type="independent",
                                 n_resamples=np.inf, alternative="greater")
    assert r["p_perm"] == pytest.approx(ref.pvalue, rel=1e-12)


def test_random_relabelings_include_the_observed_one():
    masks, exact = relabelings(20, 20, n_perm=999, max_exact=1000, seed=3)
    assert not exact and masks.shape == (1000, 40)
    assert (masks[0, :20] == 1).all() and (masks[0, 20:] == 0).all()
    assert (masks.sum(1) == 20).all()
    rng = np.random.default_rng(4)
    a, c = rng.normal(0.0, 1.0, 20), rng.normal(0.0, 1.0, 20)
    r = arm_test(a, c, n_perm=999, max_exact=1000, seed=3)
    assert not r["perm_exact"] and r["n_relabelings"] == 1000
    assert r["p_perm"] >= 1 / 1000
    # a Monte Carlo p within its standard error of the exact-by-scipy one
    ref = stats.permutation_test((a, c), _welch, permutation_type="independent",
                                 n_resamples=20000, random_state=0,
                                 alternative="greater").pvalue
    assert abs(r["p_perm"] - ref) < 4 * np.sqrt(ref * (1 - ref) / 1000) + 0.005


def test_hedges_g_closed_form():
    a = np.array([1.0, 2.0, 3.0, 4.0, 6.0])
    c = np.array([0.0, 1.0, 1.5, 2.0])
    r = arm_test(a, c, ci=0.95)
    n1, n2 = 5, 4
    sp = np.sqrt(((n1 - 1) * a.var(ddof=1) + (n2 - 1) * c.var(ddof=1)) / (n1 + n2 - 2))
    d = (a.mean() - c.mean()) / sp
    df = n1 + n2 - 2
    j = math.gamma(df / 2) / (math.sqrt(df / 2) * math.gamma((df - 1) / 2))
    assert j == pytest.approx(1 - 3 / (4 * df - 1), abs=2e-3)  # the usual approximation
    g = j * d
    se = np.sqrt((n1 + n2) / (n1 * n2) + g**2 / (2 * (n1 + n2)))
    assert r["hedges_g"] == pytest.approx(g, rel=1e-12)
    assert r["g_ci_low"] == pytest.approx(g - 1.959963984540054 * se, rel=1e-10)


def test_too_few_in_an_arm_is_a_note_not_a_crash():
    r = arm_test([1.0, 2.0, np.nan], [0.5])
    assert np.isnan(r["p_perm"]) and "fewer than 2" in r["note"]
    assert r["n_active"] == 2 and r["mean_change_active"] == 1.5


@pytest.mark.parametrize("n_active,n_control,sd_control", [(8, 8, 1.0), (10, 6, 2.0)])
def test_false_positive_rate_under_the_null(n_active, n_control, sd_control):
    """2,000 null studies: each test rejects at 5 % in 3-7 % of them (SE about 0.5 %); the
    permutation and Welch tests also with unequal arm sizes and a control arm twice as variable
    (where permuting the raw difference of means rejects in 11 %)."""
    rng = np.random.default_rng(n_active * 100 + n_control)
    p = {"p_perm": [], "p_t": [], "p_wilcoxon": []}
    for _ in range(2000):
        r = arm_test(rng.normal(0, 1.0, n_active), rng.normal(0, sd_control, n_control),
                     n_perm=999, max_exact=20000, seed=int(rng.integers(1 << 31)))
        for k in p:
            p[k].append(r[k])
    # Mann-Whitney tests stochastic equality: with unequal variances and sizes it is not a test
    # of equal means (measured: 7.6 % here), so only the equal-variance case holds it to 3-7 %
    tests = p if sd_control == 1.0 else ("p_perm", "p_t")
    for k in tests:
        rate = np.mean(np.array(p[k]) < 0.05)
        assert 0.03 <= rate <= 0.07, (k, rate)


def _two_arm_table(n=8, effect=-0.3, seed=5):
    """Group table of a parallel study: arm 'ketamine' carries ``effect`` in fc_within/Default."""
    rows, arms = [], {}
    rng = np.random.default_rng(seed)
    for i in range(2 * n):
        pid, arm = f"sub-{i + 1:02d}", "ketamine" if i < n else "placebo"
        arms[pid] = arm
        for region, mu in (("Default", 0.5), ("Vis", 0.6)):
            subj = mu + 0.1 * rng.standard_normal()
            eff = effect if (arm == "ketamine" and region == "Default") else 0.0
            for ses, e in (("pre", 0.0), ("post", eff)):
                rows.append((pid, ses, "fmri", "fc_within", region,
                             subj + e + 0.05 * rng.standard_normal(), "Schaefer100"))
        rows.append((pid, "pre", "qc", "mean_fd", "global", 0.1, ""))
    arms["sub-99"] = "other"
    cols = ["participant_id", "session", "modality", "measure", "region", "value", "atlas"]
    return pd.DataFrame(rows, columns=cols), arms


def test_interaction_table_recovers_a_planted_arm_difference():
    table, arms = _two_arm_table()
    out = interaction_table(table, arms, "ketamine", "placebo", n_perm=999)
    assert list(out["region"]) == ["Default", "Vis"]  # qc rows are not tested
    d = out.set_index("region")
    delta = table.pivot_table(index=["participant_id", "region"], columns="session",
                              values="value").eval("post - pre").unstack()
    ket = [p for p, a in arms.items() if a == "ketamine"]
    pla = [p for p, a in arms.items() if a == "placebo"]
    want = delta.loc[ket, "Default"].mean() - delta.loc[pla, "Default"].mean()
    assert d.loc["Default", "diff"] == pytest.approx(want, rel=1e-12)
    assert d.loc["Default", "p_perm"] < 0.001 and d.loc["Vis", "p_perm"] > 0.05
    assert d.loc["Default", "perm_exact"]  # C(16, 8) = 12,870 relabelings
    assert (d["n_active"] == 8).all() and (d["n_control"] == 8).all()
    pre = table[(table.session == "pre") & (table.region == "Default")]["value"].mean()
    assert d.loc["Default", "mean_pre"] == pytest.approx(pre, rel=1e-12)
    for m in ("fdr_bh", "holm"):
        assert f"p_perm_{m}" in out.columns and (out[f"p_perm_{m}"] >= out["p_perm"]).all()
    assert set(out["family"]) == {"Schaefer100/fmri/fc_within"}


def test_interaction_hypotheses_are_judged_on_the_arm_difference():
    table, arms = _two_arm_table()
    inter = interaction_table(table, arms, "ketamine", "placebo", n_perm=999)
    specs = hyp.validate_hypotheses([
        {"name": "ketamine lowers within-Default FC more than placebo", "test": "interaction",
         "measure": "fc_within", "region": "Default", "direction": "decrease"},
        {"name": "no arm difference in Vis", "test": "interaction", "measure": "fc_within",
         "region": "Vis", "direction": "none"}], arms=["ketamine", "placebo"])
    res = hyp.evaluate_hypotheses(specs, table, pd.DataFrame(columns=["measure", "region"]),
                                  interaction_table=inter, adjustment="holm").set_index("name")
    r = res.loc["ketamine lowers within-Default FC more than placebo"]
    row = inter.set_index("region").loc["Default"]
    assert r["verdict"] == "supported" and r["estimate"] == row["diff"]
    assert (r["ci_low"], r["ci_high"]) == (row["ci_t_low"], row["ci_t_high"])
    assert r["n"] == 16 and r["effect_size"] == row["hedges_g"]
    assert res.loc["no arm difference in Vis", "verdict"] in ("supported", "not supported")
    # without an interaction table (a pre/post design) the hypothesis is not tested, with why
    none = hyp.evaluate_hypotheses(specs[:1], table, pd.DataFrame(columns=["measure", "region"]))
    assert none.loc[0, "verdict"] == "not tested" and "parallel" in none.loc[0, "reason"]


def test_interaction_hypothesis_needs_measure_and_direction():
    with pytest.raises(Exception, match="direction"):
        hyp.validate_hypotheses([{"name": "x", "test": "interaction", "measure": "fc_within",
                                  "region": "Default", "direction": "up"}])
    with pytest.raises(Exception, match="paired, interaction or correlation"):
        hyp.validate_hypotheses([{"name": "x", "test": "anova"}])


def test_interaction_and_arm_need_a_parallel_design():
    inter = {"name": "x", "test": "interaction", "measure": "fc_within", "region": "Default",
             "direction": "decrease"}
    with pytest.raises(ConfigError, match=r"stats.hypotheses\[0\] \('x'\).test.*needs "
                                          "design.type: parallel"):
        hyp.validate_hypotheses([inter])
    paired = {**inter, "name": "y", "test": "paired", "arm": "placebo"}
    with pytest.raises(ConfigError, match="no arm in a pre/post design"):
        hyp.validate_hypotheses([paired])
    with pytest.raises(ConfigError, match="'ketamine' or 'control' in a parallel or crossover design"):
        hyp.validate_hypotheses([paired], arms=["ketamine", "control"])
    assert len(hyp.validate_hypotheses([inter, paired], arms=["ketamine", "placebo"])) == 2


def test_interaction_power_with_a_large_effect():
    """Planted difference of 1.5 SD of the change, 10 per arm: most null rejections (> 80 %)."""
    rng = np.random.default_rng(9)
    hits = [arm_test(rng.normal(1.5, 1, 10), rng.normal(0, 1, 10), n_perm=499,
                     max_exact=0, seed=k)["p_perm"] < 0.05 for k in range(300)]
    # closed form of Welch/two-sample t power at d = 1.5, n = 10 per arm: about 0.89
    from statsmodels.stats.power import TTestIndPower

    want = TTestIndPower().power(effect_size=1.5, nobs1=10, alpha=0.05, ratio=1.0)
    assert abs(np.mean(hits) - want) < 4 * np.sqrt(want * (1 - want) / 300) + 0.02
