"""Scoring of network FC against the simulator's truth, and what limits its recovery."""

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
