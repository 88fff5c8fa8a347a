"""Power planning: the simulated studies run the workflow's own tests, the Monte Carlo power
agrees with statsmodels' closed forms, and the study's changes are what the plan starts from."""

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats
from statsmodels.stats.power import TTestIndPower, TTestPower

from prepost.errors import ConfigError
from prepost.stats import hypotheses as hyp
from prepost.stats import power
from prepost.stats.paired import paired_test, sign_flip_pvalue
from prepost.stats.parallel import arm_test

HYPS = hyp.validate_hypotheses([
    {"name": "FC falls", "test": "paired", "measure": "fc_within", "region": "Default",
     "direction": "decrease"},
    {"name": "VT rises", "test": "paired", "measure": "VT_1tcm", "region": "PCC",
     "direction": "increase"},
    {"name": "no global VT change", "test": "paired", "measure": "VT_1tcm", "region": "global",
     "direction": "none"},
    {"name": "dVT ~ dFC", "test": "correlation", "x": {"measure": "VT_1tcm", "region": "PCC"},
     "y": {"measure": "fc_within", "region": "Default"}, "direction": "any"},
])


def _effect(mean, sd=1.0, control_mean=0.0, control_sd=None, direction="increase"):
    return {"name": f"d={mean}", "measure": "m", "region": "r", "direction": direction,
            "active": None, "control": None, "mean_active": mean, "sd_active": sd,
            "mean_control": control_mean, "sd_control": control_sd or sd, "source": "config",
            "note": ""}


@pytest.mark.parametrize("n", [9, 23])
def test_simulated_studies_get_the_p_values_of_the_workflows_paired_tests(n):
    """Exact sign flips at n = 9, random ones at n = 23: the same p as sign_flip_pvalue with
    the same seed; t and Wilcoxon as paired_test."""
    rng = np.random.default_rng(n)
    d = rng.normal(0.4, 1.0, (5, n))
    p_perm, est = power.simulated_pvalues(d, p_value="p_perm", n_perm=999, max_exact=16, seed=3)
    p_t, _ = power.simulated_pvalues(d, p_value="p_t")
    p_w, _ = power.simulated_pvalues(d, p_value="p_wilcoxon")
    for i in range(len(d)):
        ref, _ = sign_flip_pvalue(d[i], n_perm=999, max_exact=16, seed=3)
        assert p_perm[i] == pytest.approx(ref, rel=1e-12)
        full = paired_test(np.zeros(n), d[i], n_perm=999, n_boot=100, seed=3)
        assert p_t[i] == pytest.approx(full["p_t"], rel=1e-10)
        assert p_w[i] == pytest.approx(full["p_wilcoxon"], rel=1e-10)
        assert est[i] == pytest.approx(d[i].mean(), rel=1e-12)


@pytest.mark.parametrize("na, nc", [(5, 6), (14, 12)])
def test_simulated_studies_get_the_p_values_of_the_workflows_arm_tests(na, nc):
    """All 462 relabelings at 5 vs 6, random ones at 14 vs 12: the same p as arm_test."""
    rng = np.random.default_rng(na)
    a, c = rng.normal(0.8, 1.0, (4, na)), rng.normal(0.0, 1.5, (4, nc))
    got = {k: power.simulated_pvalues(a, c, p_value=k, n_perm=999, seed=5)[0]
           for k in ("p_perm", "p_t", "p_wilcoxon")}
    for i in range(len(a)):
        ref = arm_test(a[i], c[i], n_perm=999, seed=5)
        for k in got:
            assert got[k][i] == pytest.approx(ref[k], rel=1e-10), k


@pytest.mark.parametrize("design", ["prepost", "parallel", "crossover"])
def test_power_of_the_t_tests_agrees_with_statsmodels(design):
    """4,000 studies per n: Monte Carlo power within 3.5 standard errors of the noncentral t
    (the directional verdict of a two-sided test is one tail at alpha / 2). Welch's t is
    compared with the pooled t of TTestIndPower (equal arms and SDs: they differ by < 0.005);
    a crossover's paired t of the contrast with TTestPower at d = mean / sqrt(2 sd^2)."""
    sims = 4000
    es = 0.5 / np.sqrt(2) if design == "crossover" else 0.5
    curves = power.power_curves([_effect(0.5)], designs=[design], n=[10, 20, 40],
                                simulations=sims, p_value="p_t", seed=1)
    for r in curves.itertuples():
        ref = TTestIndPower().power(es, r.n, 0.025, ratio=1.0, alternative="larger") \
            if design == "parallel" else TTestPower().power(es, r.n, 0.025, alternative="larger")
        se = np.sqrt(ref * (1 - ref) / sims)
        assert abs(r.power - ref) < 3.5 * se + (0.005 if design == "parallel" else 0), r.n
        assert r.power_low < r.power < r.power_high
        assert r.effect_size == pytest.approx(es)


def test_permutation_power_matches_the_t_test_and_the_null_gives_alpha_over_two():
    """The sign-flip and relabeling tests have the t-test's power for normal changes (within
    Monte Carlo error and 0.02); with no effect a directional verdict comes in alpha / 2 of the
    studies."""
    sims = 3000
    perm = power.power_curves([_effect(0.6)], n=[12, 30], simulations=sims, seed=2)
    t = power.power_curves([_effect(0.6)], n=[12, 30], simulations=sims, p_value="p_t", seed=2)
    se = np.sqrt(0.25 / sims)
    assert np.abs(perm["power"].to_numpy() - t["power"].to_numpy()).max() < 3 * se * 1.41 + 0.02
    null = power.power_curves([_effect(0.0)], n=[12, 30], simulations=sims, seed=4)
    assert np.abs(null["power"] - 0.025).max() < 3.5 * np.sqrt(0.025 * 0.975 / sims)


def _pilot_table(arms=None, seed=0):
    """Group table of 12 participants: fc_within(Default) changes by -0.1 (SD 0.1), VT(PCC) by
    +1 (SD 2) in every participant of arm 'ketamine' (or everyone without arms); 0 otherwise."""
    rng = np.random.default_rng(seed)
    rows, changes = [], {}
    for i in range(12):
        pid = f"sub-{i + 1:02d}"
        on = arms is None or arms[pid] == "ketamine"
        for measure, region, base, eff, sd in (("fc_within", "Default", 0.5, -0.1, 0.1),
                                               ("VT_1tcm", "PCC", 20.0, 1.0, 2.0),
                                               ("VT_1tcm", "global", 18.0, 0.0, 2.0)):
            dv = (eff if on else 0.0) + sd * rng.standard_normal()
            changes[(pid, measure, region)] = dv
            for ses, v in (("pre", base), ("post", base + dv)):
                rows.append({"participant_id": pid, "session": ses, "modality": "x",
                             "measure": measure, "region": region, "value": v})
    return pd.DataFrame(rows), changes


def test_study_effects_from_a_pre_post_study():
    table, ch = _pilot_table()
    eff = {e["name"]: e for e in power.study_effects(HYPS, table)}
    fc = np.array([ch[(f"sub-{i:02d}", "fc_within", "Default")] for i in range(1, 13)])
    e = eff["FC falls"]
    assert e["mean_active"] == pytest.approx(fc.mean(), rel=1e-12)
    assert e["sd_active"] == pytest.approx(fc.std(ddof=1), rel=1e-12)
    # the planned control arm: no change, the same SD
    assert e["mean_control"] == 0.0 and e["sd_control"] == e["sd_active"]
    assert e["source"] == "study" and e["note"] == ""
    assert "direction 'none'" in eff["no global VT change"]["note"]
    # sizes in config replace the study's; an unknown name is an error
    e2 = {e["name"]: e for e in power.study_effects(
        HYPS, table, effects={"VT rises": {"mean": 2.0, "sd": 4.0, "control_mean": 0.5}})}
    assert (e2["VT rises"]["mean_active"], e2["VT rises"]["sd_active"],
            e2["VT rises"]["mean_control"], e2["VT rises"]["sd_control"]) == (2.0, 4.0, 0.5, 4.0)
    assert e2["VT rises"]["source"] == "config"
    with pytest.raises(ConfigError, match="stats.power.effects"):
        power.study_effects(HYPS, table, effects={"VT falls": {"mean": 1, "sd": 1}})


def test_study_effects_from_a_crossover_study():
    """The conditions' changes are the arms; the contrast's SD is the participants' own."""
    rng = np.random.default_rng(5)
    rows, d_k, d_p = [], {}, {}
    for i in range(12):
        pid = f"sub-{i + 1:02d}"
        shared = rng.normal(0, 0.08)  # a participant's changes go together: corr > 0
        d_k[pid], d_p[pid] = -0.1 + shared + rng.normal(0, 0.05), shared + rng.normal(0, 0.05)
        for ses, v in (("preKET", 0.5), ("postKET", 0.5 + d_k[pid]), ("prePLA", 0.5),
                       ("postPLA", 0.5 + d_p[pid])):
            rows.append({"participant_id": pid, "session": ses, "modality": "fmri",
                         "measure": "fc_within", "region": "Default", "value": v})
    hyps = hyp.validate_hypotheses([
        {"name": "FC falls more", "test": "interaction", "measure": "fc_within",
         "region": "Default", "direction": "decrease"}], arms=["ketamine", "placebo"])
    conditions = {"ketamine": ("preKET", "postKET"), "placebo": ("prePLA", "postPLA")}
    eff = power.study_effects(hyps, pd.DataFrame(rows), active="ketamine", control="placebo",
                              conditions=conditions)[0]
    k, p = np.array(list(d_k.values())), np.array(list(d_p.values()))
    assert eff["mean_active"] == pytest.approx(k.mean(), rel=1e-9)
    assert eff["mean_control"] == pytest.approx(p.mean(), rel=1e-9)
    assert eff["sd_contrast"] == pytest.approx((k - p).std(ddof=1), rel=1e-9)
    assert eff["sd_contrast"] < np.hypot(k.std(ddof=1), p.std(ddof=1))  # the pairing helps
    curves = power.power_curves([eff], designs=["crossover", "parallel"], n=[10],
                                simulations=300, seed=0)
    cx = curves.set_index("design").loc["crossover"]
    assert cx["effect_size"] == pytest.approx((k.mean() - p.mean()) / (k - p).std(ddof=1))
    assert cx["power"] > curves.set_index("design").loc["parallel", "power"]


def test_study_effects_from_a_parallel_study():
    arms = {f"sub-{i:02d}": "ketamine" if i % 2 else "placebo" for i in range(1, 13)}
    table, ch = _pilot_table(arms)
    hyps = hyp.validate_hypotheses([
        {"name": "FC falls more", "test": "interaction", "measure": "fc_within",
         "region": "Default", "direction": "decrease"},
        {"name": "FC falls under placebo", "test": "paired", "measure": "fc_within",
         "region": "Default", "direction": "decrease", "arm": "placebo"}], arms=["ketamine", "placebo"])
    eff = power.study_effects(hyps, table, arms=arms, active="ketamine", control="placebo")
    act = np.array([ch[(p, "fc_within", "Default")] for p, a in arms.items() if a == "ketamine"])
    ctl = np.array([ch[(p, "fc_within", "Default")] for p, a in arms.items() if a == "placebo"])
    assert eff[0]["mean_active"] == pytest.approx(act.mean(), rel=1e-12)
    assert eff[0]["mean_control"] == pytest.approx(ctl.mean(), rel=1e-12)
    assert eff[0]["sd_control"] == pytest.approx(ctl.std(ddof=1), rel=1e-12)
    # a paired hypothesis in the placebo arm is planned from that arm alone
    assert eff[1]["mean_active"] == pytest.approx(ctl.mean(), rel=1e-12)
    assert eff[1]["control"] is None
    # an interaction is planned as a parallel study only
    curves, ntab, _ = power.plan(
        hyps[:1], table, {"designs": ["prepost", "parallel"], "n": [10, 20], "target": 0.8,
                          "simulations": 200, "n_perm": 200, "sampling": "normal", "seed": 0},
        alpha=0.05, p_value="p_perm", max_exact=16, arms=arms, active="ketamine",
        control="placebo")
    assert set(curves["design"]) == {"parallel"} and list(ntab["design"]) == ["parallel"]


@pytest.mark.parametrize("method", ["spearman", "pearson"])
@pytest.mark.parametrize("n", [6, 15])
def test_simulated_correlations_get_the_p_values_of_change_correlation(method, n):
    """All 720 pairings at n = 6, random ones at n = 15: the p of change_correlation."""
    from prepost.stats.multimodal import change_correlation

    rng = np.random.default_rng(n)
    x = rng.standard_normal((4, n))
    y = 0.5 * x + rng.standard_normal((4, n))
    p, r = power.simulated_correlation_pvalues(x, y, method, n_perm=999, max_exact=8, seed=7)
    for i in range(len(x)):
        ref = change_correlation(x[i], y[i], method=method, n_perm=999, seed=7, max_exact=8)
        assert p[i] == pytest.approx(ref["p_perm"], rel=1e-12)
        assert r[i] == pytest.approx(ref["r"], rel=1e-10)


def test_correlation_power_agrees_with_fisher_z():
    """Pearson's permutation test at rho = 0.5: within 3.5 Monte Carlo SE and 0.02 of Fisher's
    z approximation at n = 20 and 40 (4,000 studies per n); planned as pre/post only."""
    sims = 4000
    e = {"name": "c", "measure": "VT_1tcm ~ alff", "region": "PCC ~ Default",
         "direction": "positive", "method": "pearson", "r": 0.5, "pairs": None,
         "mean_active": np.nan, "sd_active": np.nan, "mean_control": np.nan,
         "sd_control": np.nan, "source": "config", "note": ""}
    curves = power.power_curves([e], n=[20, 40], simulations=sims, seed=3)
    assert list(curves["design"]) == ["prepost", "prepost"]
    for r in curves.itertuples():
        ref = stats.norm.cdf(np.arctanh(0.5) * np.sqrt(r.n - 3) - stats.norm.ppf(0.975))
        assert abs(r.power - ref) < 3.5 * np.sqrt(ref * (1 - ref) / sims) + 0.02, r.n
    ntab = power.n_for_power(curves)
    assert ntab["n_closed_form"].iloc[0] == int(np.ceil(
        ((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) / np.arctanh(0.5)) ** 2 + 3))


def test_correlation_effects_from_the_study():
    table, ch = _pilot_table()
    eff = {e["name"]: e for e in power.study_effects(HYPS, table)}
    x = [ch[(f"sub-{i:02d}", "VT_1tcm", "PCC")] for i in range(1, 13)]
    y = [ch[(f"sub-{i:02d}", "fc_within", "Default")] for i in range(1, 13)]
    e = eff["dVT ~ dFC"]
    assert e["r"] == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12) and e["note"] == ""
    assert e["pairs"].shape == (2, 12) and e["method"] == "spearman"
    e2 = {e["name"]: e for e in power.study_effects(HYPS, table,
                                                    effects={"dVT ~ dFC": {"r": -0.3}})}
    assert e2["dVT ~ dFC"]["r"] == -0.3 and e2["dVT ~ dFC"]["source"] == "config"
    with pytest.raises(ConfigError, match="strictly between -1 and 1"):
        power.study_effects(HYPS, table, effects={"dVT ~ dFC": {"mean": 1, "sd": 1}})


def test_resampling_keeps_the_studys_spread_and_moves_its_mean():
    rng = np.random.default_rng(0)
    sample = rng.exponential(1.0, 15)  # skewed
    draws = power._draw(rng, 0.3, None, sample, (20000, 10), "resample")
    assert draws.mean() == pytest.approx(0.3, abs=0.01)
    assert draws.std() == pytest.approx(sample.std(ddof=1), rel=0.02)
    assert stats.skew(draws.ravel()) == pytest.approx(stats.skew(sample), abs=0.1)


def test_n_for_power_and_the_closed_form():
    curves = power.power_curves([_effect(-0.8, direction="decrease")], n=[10, 15, 20, 30],
                                simulations=1000, p_value="p_t", seed=0)
    ntab = power.n_for_power(curves, target=0.8)
    for r in ntab.itertuples():
        g = curves[curves["design"] == r.design].sort_values("n")
        assert r.n_target == g[g["power"] >= 0.8]["n"].min()
        es = abs(r.effect_size)
        ref = TTestIndPower().solve_power(es, alpha=0.025, power=0.8, alternative="larger") \
            if r.design == "parallel" else \
            TTestPower().solve_power(es, alpha=0.025, power=0.8, alternative="larger")
        assert r.n_closed_form == int(np.ceil(ref))
    # a change opposite to the prediction is said so
    bad = power.n_for_power(power.power_curves([_effect(0.5, direction="decrease")], n=[10],
                                               simulations=200, seed=0))
    assert (bad["note"] == "the study's change is opposite to the prediction").all()
    assert bad["n_target"].isna().all()


def test_bad_power_config_is_refused():
    with pytest.raises(ConfigError, match="stats.power.designs"):
        power.power_curves([_effect(1.0)], designs=["stepped"])
    with pytest.raises(ConfigError, match="stats.power.n"):
        power.power_curves([_effect(1.0)], n=[2])
    with pytest.raises(ConfigError, match="stats.p_value"):
        power.simulated_pvalues(np.zeros((2, 5)), p_value="p_z")


def test_prepost_power_command(tmp_path):
    """prepost-power on a group table and config files: both tables, the n of each design."""
    from prepost.io import write_tsv

    from runner import ROOT

    table, _ = _pilot_table(seed=1)
    write_tsv(table, tmp_path / "group_table.tsv")
    cfg = {"stats": {"hypotheses": [h for h in yaml.safe_load(yaml.safe_dump(
        [{k: v for k, v in h.items() if k != "method"} for h in HYPS[:2]]))],
        "power": {"n": [10, 20, 40], "simulations": 300}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert power.main([str(tmp_path / "group_table.tsv"), "--configfile", str(tmp_path / "c.yaml"),
                       "--snakefile", str(ROOT / "Snakefile"), "--designs", "parallel"]) == 0
    curves = pd.read_csv(tmp_path / "power.tsv", sep="\t")
    ntab = pd.read_csv(tmp_path / "power_n.tsv", sep="\t")
    assert set(curves["design"]) == {"parallel"} and sorted(set(curves["n"])) == [10, 20, 40]
    assert (curves["simulations"] == 300).all()
    assert list(ntab["name"]) == ["FC falls", "VT rises"]
    assert (ntab["n_target"] >= 10).all()
    # power grows with n
    for _, g in curves.groupby("name"):
        assert g.sort_values("n")["power"].is_monotonic_increasing
