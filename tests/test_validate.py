"""Scoring of network FC against the simulator's truth, and what limits its recovery."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import prepost.simulate as sim
from prepost.connectivity.networks import network_fc
from prepost.fmri.denoise import denoise
from prepost.validate import fc_recovery, network_pairs, read_network_fc

NET = sim.NETWORKS


def _write_estimate(path, Z):
    rows = [(a, b, "within" if a == b else "between", Z[i, j])
            for i, a in enumerate(NET) for j, b in enumerate(NET) if j >= i]
    pd.DataFrame(rows, columns=["network_a", "network_b", "type", "fc_z"]).to_csv(
        path, sep="\t", index=False, float_format="%.8f")


def test_fc_recovery_against_known_offsets(tmp_path):
    """Estimates = arctanh(truth) + a session offset: biases, t and r follow in closed form."""
    params = sim.merge_params({})
    truth, est = tmp_path / "truth", {}
    offsets = {"pre": 0.05, "post": 0.01}
    extra = {"01": 0.0, "02": 0.02, "03": -0.01}  # per-participant change-bias deviations
    for sub in extra:
        S = sim.subject_network_fc(params, sub)
        for ses in ("pre", "post"):
            tp = sim.truth_paths(truth, sub, ses)["network_fc"]
            tp.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(S[ses], index=NET, columns=NET).reset_index(names="network").to_csv(
                tp, sep="\t", index=False, float_format="%.10f")
            off = offsets[ses] + (extra[sub] if ses == "post" else 0.0)
            est[sub, ses] = tmp_path / f"{sub}_{ses}.tsv"
            _write_estimate(est[sub, ses], np.arctanh(S[ses]) + off)
    sessions, s = fc_recovery(est, truth)
    per = np.array([0.01 - 0.05 + extra[k] for k in extra])
    assert s["n_participants"] == 3
    assert s["bias_pre"] == pytest.approx(0.05, abs=1e-7)
    assert s["bias_post"] == pytest.approx(0.01 + np.mean(list(extra.values())), abs=1e-7)
    assert s["change_bias_mean"] == pytest.approx(per.mean(), abs=1e-7)
    assert s["change_bias_sd"] == pytest.approx(per.std(ddof=1), abs=1e-7)
    assert s["change_bias_t"] == pytest.approx(per.mean() / per.std(ddof=1) * np.sqrt(3), rel=1e-5)
    assert sessions["r"].min() == pytest.approx(1.0, abs=1e-9)
    assert len(read_network_fc(est["01", "pre"])) == len(network_pairs()) == 28


def _replicate_changes(n_volumes, n_participants, seed=7):
    """Per-participant change of network FC from ideal parcel signals after 36P denoising.

    The signals follow the simulator's model (7 network signals with sample covariance S, parcel
    noise), so this isolates what the regression and band-pass do to the change, without the
    images.
    """
    table = sim.schaefer400_table()
    idx = np.array([NET.index(n) for n in table.network])
    iu = np.triu_indices(len(NET))

    def netfc(x):
        z = np.arctanh(np.clip(np.corrcoef(x.T), -0.9999, 0.9999))
        return network_fc(z, table.network, NET).to_numpy()[iu]

    est, tru = [], []
    for i in range(n_participants):
        params = sim.merge_params({"seed": seed * 1000 + i})
        fc = sim.subject_network_fc(params, "01")
        d = {}
        for ses in ("pre", "post"):
            rng = sim.random_stream(seed * 1000 + i, ses, n_volumes)
            S = fc[ses]
            s = sim.network_signals(S, n_volumes, 2.0, rng)
            e = sim._bandpass(rng.standard_normal((n_volumes, len(idx))), 2.0, (0.01, 0.08))
            e = (e - e.mean(0)) / e.std(0, ddof=1)
            x = s[:, idx] + np.sqrt(1 - np.diag(S)[idx]) * e
            conf = sim.synthetic_confounds(n_volumes, rng)
            y = denoise(x, conf, t_r=2.0, strategy="36P", censor=False).data
            d[ses] = (netfc(y), np.arctanh(S)[iu])
        est.append(d["post"][0] - d["pre"][0])
        tru.append(d["post"][1] - d["pre"][1])
    return np.array(est), np.array(tru)


@pytest.mark.slow
def test_denoising_leaves_the_change_unbiased_and_run_length_sets_its_accuracy():
    """The cause of the demo's change 'bias': sampling error, not a systematic pipeline bias.

    Every parcel of a network shares the network's signal, so the sampling error of its
    covariance after regression and band-pass does not average out over parcel pairs. Over
    replicate participants the change is unbiased (within 3 SE); its agreement with the truth
    is set by the run's length: r < 0.8 for 5-minute runs, >= 0.8 for 10-minute runs.
    """
    r = {}
    for n_volumes in (150, 300):
        est, tru = _replicate_changes(n_volumes, 40)
        per = (est - tru).mean(1)
        assert abs(per.mean()) < 3 * per.std(ddof=1) / np.sqrt(len(per)), n_volumes
        r[n_volumes] = np.corrcoef(est.ravel(), tru.ravel())[0, 1]
    assert r[150] < 0.8 <= r[300], r
    assert sim.DEFAULTS["bold"]["n_volumes"] == 300


EFFECTS = {"within_default_dz": -0.10, "sommot_default_dz": 0.10, "global_dz": -0.05,
           "pcc_vt_pct": 10.0, "global_vt_pct": 0.0}
_TRUTH_NAMES = {"fc_within": "fc_within_z", "fc_between": "fc_between_z", "VT_1tcm": "VT"}


def test_self_check_scores_each_hypothesis_against_the_realised_truth():
    """Estimates = truth + a session offset; one participant's fMRI excluded by QC."""
    from test_stats_group import study_table
    from test_stats_hypotheses import KETAMINE

    from prepost.stats import group, hypotheses as hyp
    from prepost.validate import planted_power, self_check

    truth = study_table(n=11, seed=3)
    truth = truth[truth["measure"].isin(list(_TRUTH_NAMES))].assign(
        measure=lambda d: d["measure"].map(_TRUTH_NAMES))
    est = study_table(n=11, seed=3)
    est.loc[est.session == "post", "value"] += 0.03  # every change 0.03 too high
    est = est[~((est.participant_id == "sub-04") & (est.modality == "fmri"))]
    paired = group.paired_statistics(est, n_boot=200)
    hy = hyp.evaluate_hypotheses(hyp.validate_hypotheses(KETAMINE), est, paired, n_perm=200)
    chk = self_check(hy, est, truth, EFFECTS).set_index("name")

    def true_change(measure, region, drop=()):
        t = truth[(truth.measure == measure) & (truth.region == region)
                  & ~truth.participant_id.isin(drop)]
        w = t.pivot(index="participant_id", columns="session", values="value")
        return (w["post"] - w["pre"]).mean(), w["pre"].mean()

    dmn, _ = true_change("fc_within_z", "Default", ["sub-04"])
    smd, _ = true_change("fc_between_z", "SomMot-Default", ["sub-04"])
    pcc, pcc_pre = true_change("VT", "PCC")
    r = chk.loc["within-Default FC decreases"]
    assert r["realised"] == pytest.approx(dmn, abs=1e-12)
    assert r["estimate"] == pytest.approx(dmn + 0.03, abs=1e-9) and r["n"] == 10
    assert r["planted"] == -0.10 and r["expected"] == "supported"
    assert r["covered"] == bool(r["ci_low"] <= dmn <= r["ci_high"])
    assert chk.loc["SomMot-Default FC increases", "realised"] == pytest.approx(smd, abs=1e-12)
    assert chk.loc["PCC VT increases", "realised"] == pytest.approx(pcc, abs=1e-12)
    assert chk.loc["PCC VT increases", "planted"] == pytest.approx(0.10 * pcc_pre, rel=1e-12)
    assert chk.loc["no global VT change", "planted"] == 0.0
    assert chk.loc["no global VT change", "expected"] == "supported"
    # no truth of gradients; a PET-fMRI correlation is planted as 0
    g = chk.loc["gradient range decreases"]
    assert np.isnan(g["planted"]) and g["covered"] is None and g["agrees"] is None
    c = chk.loc["dVT(PCC) tracks dALFF(Default)"]
    assert c["planted"] == 0.0 and c["expected"] == "not supported"
    assert c["covered"] == bool(c["ci_low"] <= 0 <= c["ci_high"])
    for row in chk.itertuples():
        if row.agrees is not None:
            assert row.agrees == (row.verdict == row.expected)
    # with the simulator's gradient truth and its group-level planted changes
    grad = est[est.measure == "gradient1_range"]
    assert len(grad) > 0
    changes = [{"measure": "gradient1_range", "region": "global", "change": -0.02},
               {"measure": "fc_between", "region": "Default-SomMot", "change": 0.13}]
    chk = self_check(hy, est, pd.concat([truth, grad]), EFFECTS, changes=changes).set_index("name")
    g = chk.loc["gradient range decreases"]
    w = grad.pivot(index="participant_id", columns="session", values="value")
    assert g["planted"] == -0.02 and g["expected"] == "supported"
    assert g["realised"] == pytest.approx((w["post"] - w["pre"]).mean(), abs=1e-12)
    assert g["covered"] == bool(g["ci_low"] <= g["realised"] <= g["ci_high"])
    assert chk.loc["SomMot-Default FC increases", "planted"] == 0.13  # either order of the pair
    assert chk.loc["within-Default FC decreases", "planted"] == -0.10  # not listed: configured
    # the power of each planted change, from the spread of the estimated changes
    d = est[(est.measure == "fc_within") & (est.region == "Default")].pivot(
        index="participant_id", columns="session", values="value")
    r = chk.loc["within-Default FC decreases"]
    assert r["sd_change"] == pytest.approx((d["post"] - d["pre"]).std(ddof=1), rel=1e-12)
    # at this n, with the alpha of its verdict, adjusted over the six hypotheses
    assert (r["power"], r["power_adjusted"]) == planted_power(
        r["planted"], r["sd_change"], r["n"], r["direction"], r["alpha"], m=len(KETAMINE))
    assert len(KETAMINE) == 6
    assert 0.5 < r["power"] <= 1 and r["power_adjusted"] <= r["power"]
    assert np.isnan(chk.loc["no global VT change", "power"])  # no direction to find
    assert np.isnan(chk.loc["dVT(PCC) tracks dALFF(Default)", "power"])


@pytest.mark.parametrize("d,n", [(0.5, 20), (1.0, 11), (0.3, 40)])
def test_planted_power_is_the_t_test_power(d, n):
    """With the t-test, the Monte Carlo power of a planted change is statsmodels' closed form
    (two-sided; the wrong-sign rejections, < 1e-4 here, do not count), at alpha and at
    alpha / m; the exact sign-flip test has about the same power at n = 11."""
    from statsmodels.stats.power import TTestPower

    from prepost.validate import planted_power

    k = 20000
    p, p_adj = planted_power(-d * 0.2, 0.2, n, "decrease", 0.05, m=5, p_value="p_t",
                             simulations=k)
    for got, alpha in ((p, 0.05), (p_adj, 0.01)):
        want = TTestPower().power(d, n, alpha, alternative="two-sided")
        assert got == pytest.approx(want, abs=3.5 * np.sqrt(want * (1 - want) / k))
    if n == 11:
        perm, _ = planted_power(-d * 0.2, 0.2, n, "decrease", 0.05, simulations=4000)
        assert perm == pytest.approx(p, abs=0.05)
    assert planted_power(0.1, 0.2, n, "decrease", 0.05, p_value="p_t")[0] < 0.03  # wrong sign
    assert np.isnan(planted_power(0.1, 0.2, n, "none", 0.05)[0])
    assert np.isnan(planted_power(0.0, 0.2, n, "decrease", 0.05)[0])  # nothing planted


@pytest.mark.parametrize("direction,planted,expected", [
    ("decrease", -0.1, "supported"), ("decrease", 0.1, "opposite"),
    ("increase", 0.0, "not supported"), ("none", 0.0, "supported"),
    ("none", 0.2, "not supported"), ("any", 0.3, "supported"), ("any", np.nan, "")])
def test_expected_verdict(direction, planted, expected):
    from prepost.validate import expected_verdict

    assert expected_verdict(direction, planted) == expected


def test_planted_vt_change_combines_global_and_pcc_effects():
    from prepost.validate import planted_change

    eff = {**EFFECTS, "pcc_vt_pct": 5.0, "global_vt_pct": 10.0}
    assert planted_change(eff, "VT_logan", "PCC", 20.0) == pytest.approx(20 * (1.1 * 1.05 - 1))
    assert planted_change(eff, "VT_1tcm", "cortical_gm", 20.0) == pytest.approx(2.0)
    assert planted_change(eff, "VT_1tcm", "centrum_semiovale", 5.0) == 0.0
    assert planted_change(eff, "fc_between", "Default-SomMot") == 0.10
    assert planted_change(eff, "fc_between", "Vis-Cont") == -0.05
    assert np.isnan(planted_change(eff, "alff", "Default"))


def test_session_accuracy_gives_the_spread_of_the_vt_errors():
    """Per-session VT errors of known size: their SD over sessions and regions, as numpy has it."""
    from prepost.validate import session_accuracy

    cols = ["participant_id", "session", "modality", "measure", "region", "value"]
    scale = {("01", "pre"): 0.95, ("01", "post"): 1.08, ("02", "pre"): 1.0,
             ("02", "post"): 0.9, ("03", "pre"): 1.03, ("03", "post"): 1.01}
    truth, est, errors = [], [], []
    for (sub, ses), f in scale.items():
        for k, reg in enumerate(("PCC", "cortical_gm")):
            # true changes differ between participants: the change correlation is defined
            vt = 20.0 - 4 * k + int(sub) + (0.5 * int(sub) if ses == "post" else 0.0)
            g = f * (1 + 0.02 * k)
            truth.append((f"sub-{sub}", ses, "pet", "VT", reg, vt))
            est.append((f"sub-{sub}", ses, "pet", "VT_1tcm", reg, g * vt))
            errors.append(100 * (g - 1))
    acc = session_accuracy(pd.DataFrame(est, columns=cols), pd.DataFrame(truth, columns=cols))
    vt = acc.set_index("measure").loc["VT_1tcm"]
    assert vt["error_sd_pct"] == pytest.approx(np.std(errors, ddof=1), rel=1e-9)
    assert vt["bias_pct"] == pytest.approx(np.mean(errors), rel=1e-9)


def test_session_accuracy_from_the_group_table():
    """All 28 network pairs and three VT regions with known offsets and scale."""
    from prepost.validate import session_accuracy

    params = sim.merge_params({})
    truth, est = [], []
    extra = {"01": 0.0, "02": 0.02, "03": -0.01}
    for sub, x in extra.items():
        S = sim.subject_network_fc(params, sub)
        for ses, off in (("pre", 0.05), ("post", 0.01 + x)):
            Z = np.arctanh(S[ses])
            for i, a in enumerate(NET):
                for j, b in enumerate(NET[i:], start=i):
                    m, reg = ("fc_within", a) if i == j else ("fc_between", f"{a}-{b}")
                    truth.append((f"sub-{sub}", ses, "fmri", m + "_z", reg, Z[i, j]))
                    est.append((f"sub-{sub}", ses, "fmri", m, reg, Z[i, j] + off, "Schaefer400"))
            # gradient: range estimated at 0.8 of the truth, positions shifted by 0.01
            rng = 0.3 + 0.01 * int(sub) - (0.03 if ses == "post" else 0.0)
            truth.append((f"sub-{sub}", ses, "fmri", "gradient1_range", "global", rng))
            est.append((f"sub-{sub}", ses, "fmri", "gradient1_range", "global", 0.8 * rng,
                        "Schaefer400"))
            for k, a in enumerate(NET):
                pos = 0.1 * k - 0.3 + (0.002 * k * int(sub) if ses == "post" else 0.0)
                truth.append((f"sub-{sub}", ses, "fmri", "gradient1_position", a, pos))
                est.append((f"sub-{sub}", ses, "fmri", "gradient1_position", a, pos + 0.01,
                            "Schaefer400"))
            for k, reg in enumerate(("PCC", "cortical_gm", "centrum_semiovale")):
                vt = 20.0 - 5 * k + (2.0 + 0.5 * int(sub) if ses == "post" else 0.0) + int(sub)
                truth.append((f"sub-{sub}", ses, "pet", "VT", reg, vt))
                est.append((f"sub-{sub}", ses, "pet", "VT_1tcm", reg, 0.9 * vt, ""))
    cols = ["participant_id", "session", "modality", "measure", "region", "value"]
    acc = session_accuracy(pd.DataFrame(est, columns=cols + ["atlas"]),
                           pd.DataFrame(truth, columns=cols)).set_index("measure")
    fc, vt = acc.loc["network FC (Fisher z)"], acc.loc["VT_1tcm"]
    per = np.array([0.01 - 0.05 + x for x in extra.values()])
    assert fc["regions"] == 28 and fc["atlas"] == "Schaefer400" and fc["n_participants"] == 3
    assert fc["bias_pre"] == pytest.approx(0.05, abs=1e-9)
    assert fc["change_bias_mean"] == pytest.approx(per.mean(), abs=1e-9)
    assert fc["change_bias_t"] == pytest.approx(per.mean() / per.std(ddof=1) * np.sqrt(3))
    assert fc["session_r_min"] == pytest.approx(1.0, abs=1e-9)
    assert vt["regions"] == 3 and vt["bias_pct"] == pytest.approx(-10.0, abs=1e-9)
    assert vt["change_bias_mean"] == pytest.approx(-0.3, abs=1e-9)  # 0.9 x the true +3 on average
    assert vt["change_r"] == pytest.approx(1.0, abs=1e-9)
    assert vt["error_sd_pct"] == pytest.approx(0.0, abs=1e-9)  # every estimate 10 % low
    rg, pos = acc.loc["gradient1_range"], acc.loc["gradient1_position"]
    assert rg["regions"] == 1 and rg["bias_pre"] == pytest.approx(-0.2 * 0.32, abs=1e-9)
    assert rg["change_bias_mean"] == pytest.approx(-0.2 * -0.03, abs=1e-9)
    assert pos["regions"] == 7 and pos["session_r_min"] == pytest.approx(1.0, abs=1e-9)
    assert pos["bias_pre"] == pytest.approx(0.01, abs=1e-9)
    assert pos["change_bias_mean"] == pytest.approx(0.0, abs=1e-9)


def test_summarise_replicates_closed_form():
    from prepost.validate import summarise_replicates

    k = 10
    rows = []
    for i in range(k):
        rows.append({"name": "A", "planted": -0.1, "realised": -0.1 + 0.01 * i,
                     "estimate": -0.08 + 0.01 * i, "covered": i < 9, "p": 0.01 if i < 8 else 0.2,
                     "alpha": 0.05, "verdict": "supported" if i < 8 else "not supported",
                     "expected": "supported"})
        rows.append({"name": "B", "planted": 0.0, "realised": np.nan, "estimate": 0.01 * (i - 4),
                     "covered": True, "p": 0.03 if i == 0 else 0.5, "alpha": 0.05,
                     "verdict": "opposite" if i == 0 else "not supported",
                     "expected": "not supported"})
    s = summarise_replicates(pd.DataFrame(rows)).set_index("name")
    a, b = s.loc["A"], s.loc["B"]
    assert a["replicates"] == k and a["supported"] == 0.8
    assert a["supported_se"] == pytest.approx(np.sqrt(0.8 * 0.2 / k))
    assert a["bias"] == pytest.approx(0.02) and a["bias_se"] == pytest.approx(0.0, abs=1e-12)
    assert a["coverage"] == 0.9 and a["as_planted"] == 0.8
    # no realised truth: the error is taken against the planted 0
    assert b["bias"] == pytest.approx(np.mean([0.01 * (i - 4) for i in range(k)]))
    assert b["p_below_alpha"] == 0.1 and b["opposite"] == 0.1 and b["as_planted"] == 0.9


def _fake_check(i):
    """One replicate's self-check of hypothesis A: estimate and realised truth from its index."""
    return pd.DataFrame([{"name": "A", "planted": -0.1, "realised": -0.1 + 0.01 * i,
                          "estimate": -0.08 + 0.01 * i, "covered": True, "p": 0.01,
                          "alpha": 0.05, "verdict": "supported", "expected": "supported"}])


def _fake_accuracy(rep, baseline, followup):
    i = int(Path(rep).name[4:])
    return pd.DataFrame([{"measure": "network FC (Fisher z)", "atlas": "Schaefer100",
                          "change_bias_mean": 0.01 * i, "change_r": 0.8}])


def test_summarise_accuracy_closed_form():
    from prepost.validate import summarise_accuracy

    bias = np.array([-0.02, 0.0, 0.01, 0.03])
    acc = pd.DataFrame(
        [{"replicate": i, "measure": "network FC (Fisher z)", "atlas": "Schaefer100",
          "session_r_mean": 0.9, "session_r_min": 0.8, "change_bias_mean": b,
          "change_r": 0.7 + 0.1 * (i % 2), "bias_pct": np.nan, "error_sd_pct": np.nan}
         for i, b in enumerate(bias)]
        + [{"replicate": i, "measure": "VT_1tcm", "atlas": "", "session_r_mean": 0.99,
            "change_bias_mean": 0.1 * i, "bias_pct": -1.0 - i, "error_sd_pct": 4.0}
           for i in range(3)])
    s = summarise_accuracy(acc).set_index("measure")
    fc, vt = s.loc["network FC (Fisher z)"], s.loc["VT_1tcm"]
    assert fc["replicates"] == 4 and vt["replicates"] == 3 and vt["atlas"] == ""
    assert fc["change_bias_mean"] == pytest.approx(bias.mean())
    assert fc["change_bias_mean_se"] == pytest.approx(bias.std(ddof=1) / 2)
    assert fc["change_r"] == pytest.approx(0.75) and fc["session_r_min"] == pytest.approx(0.8)
    assert np.isnan(fc["bias_pct"]) and np.isnan(fc["bias_pct_se"])
    assert vt["bias_pct"] == pytest.approx(-2.0) and vt["bias_pct_se"] == pytest.approx(1 / np.sqrt(3))
    assert vt["error_sd_pct_se"] == pytest.approx(0.0) and np.isnan(vt["session_r_min"])


def test_concurrent_replicates_are_collected_in_replicate_order(tmp_path, monkeypatch):
    """--concurrent R runs R studies at once on cores / R each; the tables keep replicate order
    whatever order the studies finish in, and equal those of one study at a time."""
    import threading
    import time

    from runner import ROOT

    from prepost import validate

    calls, lock = [], threading.Lock()

    def fake(rep, overrides, n, snakefile, configfiles, cores, profile, keep, **_):
        i = int(Path(rep).name[4:])
        with lock:
            calls.append((i, cores))
        time.sleep(0.05 * (4 - i))  # later replicates finish first
        return _fake_check(i)

    monkeypatch.setattr(validate, "run_replicate", fake)
    monkeypatch.setattr(validate, "replicate_accuracy", _fake_accuracy)
    tables = {}
    for r in (1, 2):
        out = tmp_path / f"r{r}"
        validate.main([str(out), "-k", "4", "--cores", "2", "--concurrent", str(r),
                       "--snakefile", str(ROOT / "Snakefile")])
        tables[r] = (out / "replicates.tsv").read_text(), (out / "summary.tsv").read_text()
    assert sorted(calls) == sorted([(i, 2) for i in range(4)] + [(i, 1) for i in range(4)])
    assert tables[1] == tables[2]
    reps = pd.read_csv(tmp_path / "r2/replicates.tsv", sep="\t")
    assert reps["replicate"].tolist() == [0, 1, 2, 3]
    assert reps["estimate"].tolist() == pytest.approx([-0.08, -0.07, -0.06, -0.05])
    summ = pd.read_csv(tmp_path / "r2/summary.tsv", sep="\t").set_index("name")
    assert summ.loc["A", "bias"] == pytest.approx(0.02)
    acc = pd.read_csv(tmp_path / "r2/accuracy_summary.tsv", sep="\t")
    assert acc["replicates"].tolist() == [4]
    assert acc["change_bias_mean"].iloc[0] == pytest.approx(np.mean([0.01 * i for i in range(4)]))
    with pytest.raises(SystemExit):  # more studies at once than studies
        validate.main([str(tmp_path / "r3"), "-k", "2", "--concurrent", "3",
                       "--snakefile", str(ROOT / "Snakefile")])


def test_a_failed_replicate_stops_new_ones_and_keeps_the_finished(tmp_path, monkeypatch):
    from runner import ROOT

    from prepost import validate

    started = []

    def fake(rep, overrides, n, snakefile, configfiles, cores, profile, keep, **_):
        i = int(Path(rep).name[4:])
        started.append(i)
        if i == 1:
            raise RuntimeError(f"replicate {Path(rep).name} failed (exit 1)")
        return _fake_check(i)

    monkeypatch.setattr(validate, "run_replicate", fake)
    monkeypatch.setattr(validate, "replicate_accuracy", _fake_accuracy)
    (tmp_path / "v/rep-003").mkdir(parents=True)
    (tmp_path / "v/rep-003/self_check.tsv").write_text("finished by an earlier command\n")
    with pytest.raises(RuntimeError, match=r"rep-001 failed .*kept and in .*summary.tsv: the "
                                           r"same command continues"):
        validate.main([str(tmp_path / "v"), "-k", "4", "--snakefile", str(ROOT / "Snakefile")])
    assert started == [3, 0, 1]  # an earlier command's study is read back first
    # the tables hold the finished studies: a run cut short has the table of what it did
    reps = pd.read_csv(tmp_path / "v/replicates.tsv", sep="\t")
    assert reps["replicate"].unique().tolist() == [0, 3]
    summ = pd.read_csv(tmp_path / "v/summary.tsv", sep="\t").set_index("name")
    assert summ["replicates"].tolist() == [2] * len(summ)
    assert summ.loc["A", "bias"] == pytest.approx(0.02)  # -0.08 + 0.01 i against -0.1 + 0.01 i
    acc = pd.read_csv(tmp_path / "v/accuracy_summary.tsv", sep="\t")
    assert acc["replicates"].tolist() == [2]
    assert acc["change_bias_mean"].iloc[0] == pytest.approx(0.015)  # 0.01 i over i = 0, 3


def test_an_interrupt_starts_no_new_study(tmp_path, monkeypatch):
    """Ctrl-C while the studies run: the queued ones never start."""
    import threading
    import time

    from runner import ROOT

    from prepost import validate

    release, started = threading.Event(), []

    def fake(rep, overrides, n, snakefile, configfiles, cores, profile, keep, **_):
        started.append(int(Path(rep).name[4:]))
        release.wait(10)
        return _fake_check(0)

    def interrupted(futures):
        raise KeyboardInterrupt

    monkeypatch.setattr(validate, "run_replicate", fake)
    monkeypatch.setattr(validate, "replicate_accuracy", _fake_accuracy)
    monkeypatch.setattr(validate, "wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        validate.main([str(tmp_path / "v"), "-k", "4", "--snakefile", str(ROOT / "Snakefile")])
    release.set()
    time.sleep(0.5)  # room for a queued study to start, were it not cancelled
    assert set(started) <= {0}


def test_a_stopped_study_continues_and_one_folder_has_one_command(tmp_path, monkeypatch):
    """A study killed mid-run leaves Snakemake's lock: the next command (holding the output
    folder's lock, so no other command runs the study) removes it and redoes cut-short jobs;
    a second command on the same folder is refused."""
    import subprocess

    from runner import ROOT

    from prepost import validate

    out = tmp_path / "v"
    rep, over = validate.replicate_config(out, 0, 3, 7)
    (rep / ".snakemake" / "locks").mkdir(parents=True)
    (rep / ".snakemake" / "locks" / "0.input.lock").write_text("stale")
    (rep / "snakemake.log").write_text("the first run\n")
    calls = []

    def snakemake(cmd, **kw):
        calls.append(cmd)
        assert not (rep / ".snakemake" / "locks").exists()
        return subprocess.CompletedProcess(cmd, 1)

    monkeypatch.setattr(subprocess, "run", snakemake)
    with pytest.raises(RuntimeError, match="rep-000 failed"):
        validate.run_replicate(rep, over, 3, ROOT / "Snakefile")
    assert "--rerun-incomplete" in calls[0]
    assert (rep / "snakemake.log").read_text().startswith("the first run")
    held = validate.hold_lock(out)
    assert held is not None and validate.hold_lock(out) is None
    with pytest.raises(SystemExit):
        validate.main([str(out), "-k", "1", "--snakefile", str(ROOT / "Snakefile")])
    held.close()  # the lock ends with its holder
    again = validate.hold_lock(out)
    assert again is not None
    again.close()


def test_a_cluster_profile_is_found_from_each_study_folder(tmp_path, monkeypatch):
    """Each study's Snakemake runs in its own folder: a profile folder given relative to where
    the command runs is passed on as an absolute path, and with a profile --cores is passed on
    only when given (it caps every rule's threads, on the cluster too)."""
    import subprocess

    from runner import ROOT

    from prepost import validate

    got, run_replicate = [], validate.run_replicate
    monkeypatch.setattr(validate, "run_replicate",
                        lambda rep, over, n, snakefile, configfiles, cores, profile, keep:
                        got.append((cores, profile)) or _fake_check(0))
    monkeypatch.setattr(validate, "replicate_accuracy", _fake_accuracy)
    monkeypatch.chdir(ROOT)
    for i, (args, expected) in enumerate((
            (["--profile", "profiles/slurm"], (None, str(ROOT / "profiles" / "slurm"))),
            (["--profile", "profiles/slurm", "--cores", "8"], (8, str(ROOT / "profiles/slurm"))),
            (["--profile", "my-named-profile"], (None, "my-named-profile")),
            (["--cores", "4", "--concurrent", "2"], (2, None)),
            ([], (2, None)))):
        got.clear()
        validate.main([str(tmp_path / f"v{i}"), "-k", "2", *args])
        assert set(got) == {expected}, args
    calls = []
    monkeypatch.setattr(subprocess, "run",
                        lambda cmd, **kw: calls.append(cmd) or subprocess.CompletedProcess(cmd, 1))
    for cores in (None, 3):
        rep, over = validate.replicate_config(tmp_path / "c", cores or 0, 3, 7)
        with pytest.raises(RuntimeError):
            run_replicate(rep, over, 3, ROOT / "Snakefile", cores=cores,
                          profile=str(ROOT / "profiles/slurm"))
    assert "--cores" not in calls[0] and calls[1][calls[1].index("--cores") + 1] == "3"
    assert calls[0][calls[0].index("--profile") + 1] == str(ROOT / "profiles/slurm")


def test_a_replicate_folder_continues_only_under_its_own_settings(tmp_path, monkeypatch, capsys):
    """A folder of studies run with other settings (seed, --null, participants, configuration)
    is refused when the command starts, naming the setting, so no table mixes studies."""
    import subprocess

    from runner import ROOT

    from prepost import validate

    snakefile, small = ROOT / "Snakefile", ROOT / "config" / "examples" / "small.yaml"
    cfg = validate.study_config(snakefile)
    parts = validate.replicate_participants(4)
    rep, over = validate.replicate_config(tmp_path, 0, 4, 100)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1))
    with pytest.raises(RuntimeError, match="rep-000 failed"):  # a study cut short
        validate.run_replicate(rep, over, 4, snakefile)
    assert validate.replicate_conflict(rep, over, parts, cfg) is None
    assert validate.replicate_conflict(tmp_path / "rep-001", over, parts, cfg) is None  # new
    null = validate.replicate_config(tmp_path, 0, 4, 100, null=True)[1]
    assert "simulate.null_study = False; this command gives True" in \
        validate.replicate_conflict(rep, null, parts, cfg)
    seed = validate.replicate_config(tmp_path, 0, 4, 101)[1]
    assert "simulate.seed = 100; this command gives 101" in \
        validate.replicate_conflict(rep, seed, parts, cfg)
    assert "has 4 participants" in validate.replicate_conflict(
        rep, over, validate.replicate_participants(5), cfg)
    msg = validate.replicate_conflict(rep, over, parts, validate.study_config(snakefile, [small]))
    assert msg.startswith(str(rep / "study.yaml")) and "anat.reg_iterations" in msg
    # what each replicate sets for itself is not a setting of the study
    other = tmp_path / "paths.yaml"
    other.write_text("bids_dir: /data/bids\nresults_dir: elsewhere\nsimulate: {seed: 5}\n")
    assert validate.replicate_conflict(
        rep, over, parts, validate.study_config(snakefile, [other])) is None
    design = tmp_path / "design.yaml"  # a design change is named, not only its table's size
    design.write_text("design: {type: parallel}\n")
    msg = validate.replicate_conflict(rep, over, validate.replicate_participants(4, {
        "type": "parallel"}), validate.study_config(snakefile, [design]))
    assert "design.type = " in msg
    started = []
    monkeypatch.setattr(validate, "run_replicate", lambda *a, **kw: started.append(a))
    for args, setting in ((["--null"], "simulate.null_study"),
                          (["--configfile", str(small)], "anat.reg_iterations"),
                          (["-n", "5"], "has 4 participants")):
        with pytest.raises(SystemExit):
            validate.main([str(tmp_path), "-k", "1", "-n", "4", "--seed", "100", *args,
                           "--snakefile", str(snakefile)])
        err = capsys.readouterr().err
        assert "rep-000" in err and setting in err
    assert started == []


def test_replicate_participants_alternate_the_arms_of_a_parallel_design():
    from prepost import validate

    design = {"type": "parallel", "arm_column": "group", "active": "ket", "control": "pla"}
    t = validate.replicate_participants(5, design)
    assert list(t["group"]) == ["ket", "pla", "ket", "pla", "ket"]
    assert list(t["participant_id"]) == [f"sub-{i:02d}" for i in range(1, 6)]
    assert "group" not in validate.replicate_participants(3).columns


def test_self_check_of_a_crossover_scores_the_contrast_of_true_changes():
    """Truth and estimates of a crossover: the interaction is scored against the mean contrast
    of the true changes, a placebo paired hypothesis against a planted 0."""
    from prepost import validate

    ses = {"ketamine": ("preKET", "postKET"), "placebo": ("prePLA", "postPLA")}
    params = sim.merge_params({})
    truth, est = [], []
    for sub in ("01", "02", "03", "04"):
        S = sim.subject_network_fc(params, sub, [*ses["ketamine"], *ses["placebo"]],
                                   planted=["postKET"])
        d = NET.index("Default")
        for s_ in S:
            z = float(np.arctanh(S[s_][d, d]))
            truth.append((f"sub-{sub}", s_, "fmri", "fc_within_z", "Default", z))
            est.append((f"sub-{sub}", s_, "fmri", "fc_within", "Default", z + 0.01, "A"))
    cols = ["participant_id", "session", "modality", "measure", "region", "value"]
    tr = pd.DataFrame(truth, columns=cols)
    gt = pd.DataFrame(est, columns=cols + ["atlas"])
    hy = pd.DataFrame([
        {"name": "contrast", "test": "interaction", "measure": "fc_within", "region": "Default",
         "direction": "decrease", "arm": "", "estimate": -0.1, "ci_low": -0.3, "ci_high": 0.1,
         "verdict": "not supported"},
        {"name": "placebo", "test": "paired", "measure": "fc_within", "region": "Default",
         "direction": "none", "arm": "placebo", "estimate": 0.0, "ci_low": -0.2, "ci_high": 0.2,
         "verdict": "supported"}])
    chk = validate.self_check(hy, gt, tr, params["effects"], conditions=ses, active="ketamine",
                              control="placebo").set_index("name")
    z = tr.set_index(["participant_id", "session"])["value"]
    subs = [f"sub-{s}" for s in ("01", "02", "03", "04")]
    want = np.mean([(z[s, "postKET"] - z[s, "preKET"]) - (z[s, "postPLA"] - z[s, "prePLA"])
                    for s in subs])
    assert chk.loc["contrast", "realised"] == pytest.approx(want, abs=1e-12)
    assert chk.loc["contrast", "planted"] == params["effects"]["within_default_dz"]
    assert chk.loc["placebo", "planted"] == 0.0
    assert chk.loc["placebo", "realised"] == pytest.approx(
        np.mean([z[s, "postPLA"] - z[s, "prePLA"] for s in subs]), abs=1e-12)
    t = validate.replicate_participants(4, {"type": "crossover", "order_column": "first",
                                            "active": "ket", "control": "pla"})
    assert list(t["first"]) == ["ket", "pla", "ket", "pla"]


@pytest.mark.slow
def test_prepost_validate_runs_replicate_studies_through_the_workflow(tmp_path):
    """K = 2 replicate studies (2 participants, coarse fMRI only) through Snakemake, both at
    once: the summary
    counts both, each replicate's realised truth is its own truth table's mean change, the
    bulky derivatives are gone, and a second call reuses the replicates."""
    import yaml
    from runner import ROOT, TINY

    from prepost import simulate, validate

    cfg = {**{k: v for k, v in TINY.items() if k != "pet"}, "modalities": {"pet": False},
           "stats": {"hypotheses": [
               {"name": "within-Default FC falls", "test": "paired",
                "measure": "fc_within", "region": "Default", "direction": "decrease"}],
               "mixed": {"measures": ["fc_within"]}, "multimodal": {"pairs": []},
               # 60 volumes: the 240 s default QC rule would exclude every session
               "qc": {"rules": [{"measure": "retained_s", "op": "<", "value": 60,
                                 "exclude": "fmri"}]}}}
    base = tmp_path / "tiny.yaml"
    base.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "val"
    # both studies at once, one core each, as on a cluster
    args = [str(out), "-k", "2", "-n", "2", "--seed", "1000", "--configfile", str(base),
            "--snakefile", str(ROOT / "Snakefile"), "--cores", "2", "--concurrent", "2"]
    validate.main(args)
    summ = pd.read_csv(out / "summary.tsv", sep="\t").set_index("name")
    reps = pd.read_csv(out / "replicates.tsv", sep="\t")
    name = "within-Default FC falls"
    assert list(summ.index) == [name] and summ.loc[name, "replicates"] == 2
    # the configured -0.10 plus the hierarchy compression's share (the group-level change)
    planted = simulate.planted_changes(simulate.merge_params(cfg["simulate"]), n_draws=1).set_index(["measure", "region"])
    assert summ.loc[name, "planted"] == pytest.approx(planted.loc[("fc_within", "Default"),
                                                                  "change"], abs=1e-4)
    assert summ.loc[name, "planted"] < -0.12
    realised = []
    for i, seed in enumerate((1000, 1001)):
        rep = out / f"rep-{i:03d}"
        assert yaml.safe_load((rep / "config.yaml").read_text())["simulate"]["seed"] == seed
        truth = pd.read_csv(rep / "results/simulated/truth/truth.tsv", sep="\t")
        t = truth[(truth.measure == "fc_within_z") & (truth.region == "Default")]
        w = t.pivot(index="participant_id", columns="session", values="value")
        r = reps[reps.replicate == i].set_index("name").loc[name]
        assert r["realised"] == pytest.approx((w["post"] - w["pre"]).mean(), abs=1e-5)
        assert r["covered"] == (r["ci_low"] <= r["realised"] <= r["ci_high"])
        realised.append(r["realised"])
        assert sorted(p.name for p in (rep / "results").iterdir()) == ["group", "logs",
                                                                        "simulated"]
        assert not (rep / "results/simulated/bids").exists()
        paired = pd.read_csv(rep / "results/group/paired.tsv", sep="\t")
        row = paired[(paired.measure == "fc_within") & (paired.region == "Default")].iloc[0]
        assert row["n"] == 2 and row["mean_diff"] == pytest.approx(r["estimate"])
    assert realised[0] != realised[1]
    bias = reps.eval("estimate - realised").mean()
    assert summ.loc[name, "bias"] == pytest.approx(bias, abs=1e-4)
    # the chain's accuracy in each study, from the tables it keeps, and over the studies
    acc = pd.read_csv(out / "accuracy.tsv", sep="\t")
    fc = acc[acc.measure == "network FC (Fisher z)"].set_index("replicate")
    assert sorted(fc.index) == [0, 1] and set(fc.atlas) == {"Schaefer100"}
    for i in (0, 1):
        res = out / f"rep-{i:03d}" / "results"
        own = validate.session_accuracy(
            pd.read_csv(res / "group/group_table.tsv", sep="\t", dtype={"region": str}),
            pd.read_csv(res / "simulated/truth/truth.tsv", sep="\t", dtype={"region": str}))
        assert fc.loc[i, "change_bias_mean"] == pytest.approx(own["change_bias_mean"].iloc[0])
    over = pd.read_csv(out / "accuracy_summary.tsv", sep="\t").set_index("measure")
    row = over.loc["network FC (Fisher z)"]
    assert row["replicates"] == 2
    assert row["change_bias_mean"] == pytest.approx(fc["change_bias_mean"].mean(), abs=1e-4)
    # two-minute runs at 6 mm still order the 28 network pairs as the truth does (r 0.71 here;
    # pairs matched to the wrong truth give about 0)
    assert row["session_r_mean"] > 0.5
    # a second call finds both replicates done and writes the same summaries; a study finished
    # before its accuracy was kept gets it from its tables
    before = [(out / f).read_text() for f in ("summary.tsv", "accuracy_summary.tsv")]
    (out / "rep-000/accuracy.tsv").unlink()
    validate.main(args)
    assert [(out / f).read_text() for f in ("summary.tsv", "accuracy_summary.tsv")] == before
    # each study's record alone, copied to another folder (another machine), is read back by
    # the same command there: the same tables, and no study is run again
    moved = tmp_path / "moved"
    for i in (0, 1):
        (moved / f"rep-{i:03d}").mkdir(parents=True)
        for name in validate.RECORD.values():
            shutil.copy(out / f"rep-{i:03d}" / name, moved / f"rep-{i:03d}" / name)
    validate.main([str(moved), *args[1:]])
    assert [(moved / f).read_text() for f in ("summary.tsv", "accuracy_summary.tsv")] == before
    kept = sorted(p.name for p in (moved / "rep-000").iterdir())
    assert kept == sorted(validate.RECORD.values())  # no results/: nothing was run


def test_self_check_of_a_parallel_design():
    """Interaction: realised = active minus control mean true change; a paired hypothesis in the
    control arm is planted 0."""
    from prepost.stats import group, hypotheses as hyp, parallel
    from prepost.validate import self_check

    rng = np.random.default_rng(11)
    truth, est, arms = [], [], {}
    for i in range(12):
        pid, arm = f"sub-{i + 1:02d}", ("ketamine", "placebo")[i % 2]
        arms[pid] = arm
        base = 0.5 + 0.1 * rng.standard_normal()
        change = (-0.10 if arm == "ketamine" else 0.0) + 0.05 * rng.standard_normal()
        for ses, v in (("pre", base), ("post", base + change)):
            truth.append((pid, ses, "fmri", "fc_within_z", "Default", v))
            est.append((pid, ses, "fmri", "fc_within", "Default",
                        v + 0.02 * rng.standard_normal(), "Schaefer400"))
    cols = ["participant_id", "session", "modality", "measure", "region", "value"]
    truth = pd.DataFrame(truth, columns=cols)
    est = pd.DataFrame(est, columns=cols + ["atlas"])
    inter = parallel.interaction_table(est, arms, "ketamine", "placebo")
    paired = group.paired_statistics(est, arms=arms, n_boot=200)
    specs = hyp.validate_hypotheses([
        {"name": "arm", "test": "interaction", "measure": "fc_within", "region": "Default",
         "direction": "decrease"},
        {"name": "placebo", "test": "paired", "arm": "placebo", "measure": "fc_within",
         "region": "Default", "direction": "none"}], arms=["ketamine", "placebo"])
    hy = hyp.evaluate_hypotheses(specs, est, paired, interaction_table=inter,
                                 default_arm="ketamine")
    chk = self_check(hy, est, truth, EFFECTS, arms=arms, active="ketamine",
                     control="placebo").set_index("name")
    w = truth.pivot(index="participant_id", columns="session", values="value")
    d = (w["post"] - w["pre"]).groupby(pd.Series(arms)).mean()
    assert chk.loc["arm", "realised"] == pytest.approx(d["ketamine"] - d["placebo"], abs=1e-12)
    assert chk.loc["arm", "planted"] == -0.10 and chk.loc["arm", "expected"] == "supported"
    assert chk.loc["placebo", "realised"] == pytest.approx(d["placebo"], abs=1e-12)
    assert chk.loc["placebo", "planted"] == 0.0 and chk.loc["placebo", "expected"] == "supported"
