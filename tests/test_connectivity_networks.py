"""Network summaries recover the planted network covariance of the simulator."""

import numpy as np
import pytest

from prepost import simulate as sim
from prepost.connectivity import fc
from prepost.connectivity import networks as nw
from prepost.connectivity.atlas import load_atlas


@pytest.fixture(scope="module")
def planted():
    """Parcel signals x_p = s_k + sqrt(1 - S_kk) e_p on Schaefer 400 (T = 2000)."""
    atlas = load_atlas("Schaefer400")
    S = sim.subject_network_fc(sim.merge_params(), "01")["post"]
    rng = np.random.default_rng(11)
    T, t_r = 2000, 2.0
    s = sim.network_signals(S, T, t_r, rng)
    k = np.array([sim.NETWORKS.index(n) for n in atlas.parcel_networks])
    e = rng.standard_normal((T, 400))
    ts = s[:, k] + np.sqrt(1 - np.diag(S))[k] * e
    return atlas, S, ts, fc.fisher_z(fc.pearson(ts))


def test_within_between_match_planted_S(planted):
    atlas, S, ts, z = planted
    nf = nw.network_fc(z, atlas.parcel_networks, sim.NETWORKS)
    err = np.abs(nf.to_numpy() - np.arctanh(S))
    assert err.max() < 0.03, err.max()
    within = nw.within_network_fc(z, atlas.parcel_networks)
    d = sim.NETWORKS.index("Default")
    assert within["Default"] == pytest.approx(np.arctanh(S[d, d]), abs=0.03)


def _chan_closed_form(S, networks):
    """Chan et al. 2014 segregation from S: pooled parcel-pair means of max(z, 0)."""
    n = np.array([np.sum(networks == k) for k in sim.NETWORKS], float)
    Z = np.maximum(np.arctanh(S), 0.0)
    w_pairs = n * (n - 1) / 2
    W = np.sum(w_pairs * np.diag(Z)) / w_pairs.sum()
    iu = np.triu_indices(len(n), 1)
    b_pairs = np.outer(n, n)[iu]
    B = np.sum(b_pairs * Z[iu]) / b_pairs.sum()
    return (W - B) / W


def test_segregation_matches_closed_form(planted):
    atlas, S, ts, z = planted
    nets = atlas.parcel_networks
    exact = _chan_closed_form(S, nets)
    truth_z = fc.fisher_z(sim.parcel_fc_truth(S, nets))
    assert nw.segregation_index(truth_z, nets) == pytest.approx(exact, abs=1e-12)
    assert nw.segregation_index(z, nets) == pytest.approx(exact, abs=0.01)


def test_integration_global_and_gs_amplitude(planted):
    atlas, S, ts, z = planted
    nets = atlas.parcel_networks
    integ = nw.integration(z, nets)
    i, j = sim.NETWORKS.index("SomMot"), sim.NETWORKS.index("Default")
    assert integ["SomMot-Default"] == pytest.approx(np.arctanh(S[i, j]), abs=0.03)
    Z = np.arctanh(S)
    n = np.array([np.sum(nets == k) for k in sim.NETWORKS], float)
    lo = [sim.NETWORKS.index(k) for k in ("Vis", "SomMot")]
    hi = [sim.NETWORKS.index(k) for k in ("Default", "Cont")]
    w = np.outer(n[lo], n[hi])
    assert integ["lower-higher"] == pytest.approx(np.sum(w * Z[np.ix_(lo, hi)]) / w.sum(), abs=0.03)
    # global FC: pair-weighted mean of the planted z
    tz = fc.fisher_z(sim.parcel_fc_truth(S, nets))
    assert nw.global_fc(z) == pytest.approx(nw.global_fc(tz), abs=0.01)
    # global signal: var(mean_p x_p) = (1/N^2) sum_pq C_pq with unit-variance parcels
    R = sim.parcel_fc_truth(S, nets)
    assert nw.global_signal_amplitude(ts) == pytest.approx(np.sqrt(R.mean()), rel=0.03)


def test_nan_parcels_keep_size_and_do_not_bias(planted):
    atlas, S, ts, z = planted
    ts = ts.copy()
    ts[:, [0, 150, 399]] = np.nan
    r = fc.pearson(ts)
    assert r.shape == (400, 400) and np.isnan(r[150]).all()
    zz = fc.fisher_z(r)
    nf = nw.network_fc(zz, atlas.parcel_networks, sim.NETWORKS)
    assert np.abs(nf.to_numpy() - np.arctanh(S)).max() < 0.03
    assert np.isfinite(nw.segregation_index(zz, atlas.parcel_networks))


def test_tidy_rows(planted):
    atlas, S, ts, z = planted
    df = nw.tidy_fmri_measures("sub-01", "post", ts[:600], atlas, t_r=2.0, densities=(0.1,))
    assert list(df.columns) == nw.TIDY_COLUMNS
    assert (df.modality == "fmri").all() and (df.participant_id == "sub-01").all()
    got = df.set_index(["measure", "region"])["value"]
    for key in [("fc_within", "Default"), ("fc_between", "SomMot-Default"), ("segregation", "global"),
                ("global_fc", "global"), ("gs_amplitude", "global"), ("alff", "Default"),
                ("falff", "Vis"), ("eigenvector_centrality", "PCC"), ("gradient1_range", "global"),
                ("gradient1_position", "Default"), ("integration", "lower-higher"),
                ("modularity", "global")]:
        assert key in got.index and np.isfinite(got[key]), key
    i, j = sim.NETWORKS.index("SomMot"), sim.NETWORKS.index("Default")
    assert got[("fc_between", "SomMot-Default")] == pytest.approx(np.arctanh(S[i, j]), abs=0.05)
    # oriented unimodal -> transmodal
    assert got[("gradient1_position", "Default")] > got[("gradient1_position", "SomMot")]
    # the simulated signals are band-limited to 0.01-0.08 Hz: most amplitude is in the band
    assert got[("falff", "Default")] > 0.33  # white noise alone: ~0.28 (band share of bins)
    # censoring: FC from retained volumes, ALFF by Lomb-Scargle
    keep = np.ones(600, bool)
    keep[::7] = False
    dc = nw.tidy_fmri_measures("sub-01", "post", ts[:600], atlas, t_r=2.0, sample_mask=keep,
                               measures=("fc", "alff"))
    g2 = dc.set_index(["measure", "region"])["value"]
    assert g2[("fc_within", "Default")] == pytest.approx(got[("fc_within", "Default")], abs=0.03)
    assert g2[("falff", "Default")] > 0.33
