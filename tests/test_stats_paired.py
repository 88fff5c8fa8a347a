"""Tests of prepost.stats.paired against scipy/statsmodels references and hand computations."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from prepost.errors import InputError
from prepost.stats.paired import (correct, mixed_model, paired_table, paired_test,
                                  sign_flip_pvalue, sign_flips)


def _brute_sign_flip(d, stat, alternative):
    d = np.asarray(d, float)
    obs = stat(d)
    null = np.array([stat(d * np.array(s)) for s in itertools.product([1, -1], repeat=d.size)])
    tol = abs(obs) * 1e-12
    if alternative == "two-sided":
        return np.mean(np.abs(null) >= abs(obs) - tol)
    if alternative == "greater":
        return np.mean(null >= obs - tol)
    return np.mean(null <= obs + tol)


def _t(d):
    return d.mean() / (d.std(ddof=1) / np.sqrt(d.size))


# ---------------------------------------------------------------- sign flips
def test_sign_flips_enumerates_every_pattern_once():
    flips, exact = sign_flips(5)
    assert exact and flips.shape == (32, 5)
    assert len({tuple(r) for r in flips.tolist()}) == 32
    assert np.all(flips[0] == 1)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_exact_sign_flip_matches_brute_force_and_scipy(alternative):
    d = np.array([0.8, -0.3, 1.2, 0.5, 0.05, 0.9, -0.6, 1.4, 0.35])
    p, exact = sign_flip_pvalue(d, alternative=alternative)
    assert exact
    assert p == pytest.approx(_brute_sign_flip(d, np.mean, alternative), abs=1e-15)
    # The t statistic orders the patterns like the mean does: same p.
    assert p == pytest.approx(_brute_sign_flip(d, _t, alternative), abs=1e-15)
    ref = stats.permutation_test((d,), np.mean, permutation_type="samples",
                                 n_resamples=np.inf, alternative=alternative)
    assert p == pytest.approx(ref.pvalue, abs=1e-12)


def test_exact_sign_flip_known_value():
    # All 6 differences positive: only the identity and its negation are as extreme.
    p, exact = sign_flip_pvalue([1, 2, 3, 4, 5, 6])
    assert exact and p == pytest.approx(2 / 64)


def test_monte_carlo_sign_flip_is_seeded_and_close_to_exact():
    rng = np.random.default_rng(5)
    d = rng.normal(0.4, 1.0, 18)
    p_exact, ex = sign_flip_pvalue(d, max_exact=18)
    p1, ex1 = sign_flip_pvalue(d, n_perm=20000, max_exact=16, seed=3)
    p2, _ = sign_flip_pvalue(d, n_perm=20000, max_exact=16, seed=3)
    assert ex and not ex1
    assert p1 == p2
    assert abs(p1 - p_exact) < 0.01
    # p = (1 + #) / (1 + n_perm) with the documented draw.
    flips, _ = sign_flips(18, n_perm=20000, max_exact=16, seed=3)
    count = np.sum(np.abs(flips @ d / 18) >= abs(d.mean()) * (1 - 1e-13))
    assert p1 == pytest.approx((1 + count) / 20001)


# ---------------------------------------------------------------- paired_test
def test_paired_test_matches_scipy():
    rng = np.random.default_rng(0)
    pre = rng.normal(10, 2, 11)
    post = pre + rng.normal(0.8, 1.0, 11)
    r = paired_test(pre, post, n_boot=1000)
    ref = stats.ttest_rel(post, pre)
    assert r["t"] == pytest.approx(ref.statistic, rel=1e-12)
    assert r["p_t"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert r["df"] == 10
    w = stats.wilcoxon(post - pre, method="exact")
    assert r["p_wilcoxon"] == pytest.approx(w.pvalue, rel=1e-12)
    assert r["w"] == w.statistic and r["wilcoxon_method"] == "exact"
    d = post - pre
    half = stats.t.ppf(0.975, 10) * d.std(ddof=1) / np.sqrt(11)
    assert r["ci_t_low"] == pytest.approx(d.mean() - half, rel=1e-10)
    assert r["ci_t_high"] == pytest.approx(d.mean() + half, rel=1e-10)
    assert r["p_perm"] == pytest.approx(_brute_sign_flip(d, np.mean, "two-sided"))
    assert r["perm_exact"] is True
    assert r["pct_change"] == pytest.approx(100 * d.mean() / pre.mean())
    assert r["cohens_dz"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert r["note"] == ""


def test_hedges_g_av_lakens_example():
    # Lakens (2013), movie ratings of 10 people: means 8.7 and 7.7, d_z = 1.50, d_av = 1.13.
    movie1 = np.array([9, 7, 8, 9, 8, 9, 9, 10, 9, 9], float)
    movie2 = np.array([9, 6, 7, 8, 7, 9, 8, 8, 8, 7], float)
    r = paired_test(movie2, movie1, n_boot=0)
    # Hand computation: SD1 = sqrt(6.1 / 9), SD2 = sqrt(8.1 / 9).
    d_av = 1.0 / ((np.sqrt(6.1 / 9) + np.sqrt(8.1 / 9)) / 2)
    j = 1 - 3 / (4 * 9 - 1)
    assert round(d_av, 2) == 1.13
    assert r["mean_diff"] == pytest.approx(1.0)
    assert r["cohens_dz"] == pytest.approx(1.5)
    assert r["hedges_g_av"] == pytest.approx(d_av * j, rel=1e-12)
    assert r["hedges_g_av"] == pytest.approx(1.0319, abs=1e-4)


def test_bootstrap_ci_deterministic_and_covers_truth():
    rng = np.random.default_rng(11)
    pre = rng.normal(0, 1, 11)
    post = pre + rng.normal(0.5, 1, 11)
    a = paired_test(pre, post, n_boot=2000, seed=4)
    b = paired_test(pre, post, n_boot=2000, seed=4)
    c = paired_test(pre, post, n_boot=2000, seed=5)
    assert (a["ci_boot_low"], a["ci_boot_high"]) == (b["ci_boot_low"], b["ci_boot_high"])
    assert a["ci_boot_low"] != c["ci_boot_low"]
    assert a["ci_boot_low"] < a["mean_diff"] < a["ci_boot_high"]

    truth, hits, n_sim = 0.5, 0, 200
    for s in range(n_sim):
        r = np.random.default_rng(1000 + s)
        x = r.normal(0, 1, 11)
        res = paired_test(x, x + r.normal(truth, 1, 11), n_boot=1000, seed=s, n_perm=0)
        hits += res["ci_boot_low"] <= truth <= res["ci_boot_high"]
    # Bootstrap intervals under-cover a little at n = 11; 95% nominal, binomial sd ~1.5%.
    assert 0.85 <= hits / n_sim <= 0.99


def test_incomplete_pairs_dropped_and_small_n_soft():
    pre = [1.0, 2.0, np.nan, 4.0, 5.0]
    post = [1.5, np.nan, 3.0, 4.2, 6.0]
    r = paired_test(pre, post, n_boot=200)
    assert r["n"] == 3 and r["n_dropped"] == 2
    ref = stats.ttest_rel([1.5, 4.2, 6.0], [1.0, 4.0, 5.0])
    assert r["t"] == pytest.approx(ref.statistic)
    r1 = paired_test([1.0, np.nan], [2.0, 3.0])
    assert r1["n"] == 1 and np.isnan(r1["t"]) and np.isnan(r1["p_perm"])
    assert "fewer than 2" in r1["note"]
    r0 = paired_test([], [])
    assert r0["n"] == 0 and np.isnan(r0["mean_diff"])
    with pytest.raises(InputError):
        paired_test([1, 2, 3], [1, 2])


def test_constant_differences_do_not_raise():
    r = paired_test([1, 2, 3, 4], [2, 3, 4, 5], n_boot=100)
    assert r["mean_diff"] == pytest.approx(1.0)
    assert np.isnan(r["cohens_dz"]) and r["note"]


# ---------------------------------------------------------------- correction
@pytest.mark.parametrize("method", ["fdr_bh", "holm"])
def test_correct_matches_multipletests_and_is_nan_safe(method):
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.2, 0.001])
    out = correct(p, method=method)
    ok = ~np.isnan(p)
    assert np.isnan(out[2])
    np.testing.assert_allclose(out[ok], multipletests(p[ok], method=method)[1])
    fam = np.array(["a", "a", "a", "b", "b", "b"])
    out2 = correct(p, method=method, families=fam)
    np.testing.assert_allclose(out2[:2], multipletests(p[:2], method=method)[1])
    np.testing.assert_allclose(out2[3:], multipletests(p[3:], method=method)[1])
    s = correct(pd.Series(p, index=list("uvwxyz")), method=method)
    assert list(s.index) == list("uvwxyz")


def test_correct_rejects_bad_input():
    with pytest.raises(InputError):
        correct([0.1, 1.5])
    with pytest.raises(InputError):
        correct([0.1], method="nope")


# ---------------------------------------------------------------- paired_table
def _long_table(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for modality, shift in (("pet", 0.8), ("fmri", 0.0)):
        for region in ("r1", "r2", "r3"):
            base = rng.normal(5, 1, 11)
            follow = base + rng.normal(shift, 0.5, 11)
            for i in range(11):
                rows.append(dict(participant_id=f"sub-{i:02d}", session="pre",
                                 modality=modality, region=region, value=base[i]))
                if not (modality == "pet" and region == "r1" and i == 0):
                    rows.append(dict(participant_id=f"sub-{i:02d}", session="post",
                                     modality=modality, region=region, value=follow[i]))
    return pd.DataFrame(rows)


def test_paired_table_groups_and_family_correction():
    df = _long_table()
    tab = paired_table(df, by=["modality", "region"], family="modality", n_boot=200)
    assert len(tab) == 6
    row = tab[(tab.modality == "pet") & (tab.region == "r1")].iloc[0]
    assert row["n"] == 10 and row["n_dropped"] == 1
    g = df[(df.modality == "fmri") & (df.region == "r2")]
    pre = g[g.session == "pre"].set_index("participant_id").value.sort_index()
    post = g[g.session == "post"].set_index("participant_id").value.sort_index()
    ref = stats.ttest_rel(post, pre)
    fr = tab[(tab.modality == "fmri") & (tab.region == "r2")].iloc[0]
    assert fr["t"] == pytest.approx(ref.statistic)
    for mod in ("pet", "fmri"):
        sub = tab[tab.modality == mod]
        np.testing.assert_allclose(sub["p_t_fdr_bh"], multipletests(sub["p_t"], method="fdr_bh")[1])
    assert set(tab["family"]) == {"pet", "fmri"} and set(tab["correction"]) == {"fdr_bh"}


def test_paired_table_rejects_duplicates():
    df = _long_table()
    df = pd.concat([df, df.iloc[[0]]])
    with pytest.raises(InputError):
        paired_table(df, by=["modality", "region"])


# ---------------------------------------------------------------- mixed model
def test_mixed_model_recovers_planted_session_effect():
    rng = np.random.default_rng(2)
    rows = []
    for i in range(11):
        u = rng.normal(0, 1.0)
        days = int(rng.integers(80, 120))
        for ses in ("pre", "post"):
            rows.append(dict(participant_id=f"s{i}", session=ses,
                             followup_days=days if ses == "post" else 0,
                             age=float(rng.normal(40, 5)),
                             value=10 + u + (1.0 if ses == "post" else 0.0) + rng.normal(0, 0.3)))
    df = pd.DataFrame(rows)
    tab = mixed_model(df, formula="value ~ session + age")
    eff = tab.set_index("term").loc["session[T.post]"]
    assert tab["converged"].all()
    assert abs(eff["estimate"] - 1.0) < 0.3
    assert eff["ci_low"] < 1.0 < eff["ci_high"]
    assert eff["p"] < 1e-4
    assert tab.attrs["fit"]["n_groups"] == 11 and tab.attrs["fit"]["n_obs"] == 22


def test_mixed_model_fails_softly():
    df = pd.DataFrame(dict(participant_id=["a", "a", "b", "b"], session=["pre", "post"] * 2,
                           value=[1.0, 2.0, 1.5, 2.5]))
    tab = mixed_model(df, formula="value ~ session + missing_column")
    assert not tab.attrs["fit"]["converged"]
    assert "fit failed" in tab.attrs["fit"]["note"]
