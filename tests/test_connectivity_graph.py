"""Graph measures against networkx and bctpy on small graphs."""

import numpy as np
import pytest

from prepost.connectivity import graph

nx = pytest.importorskip("networkx")


def _fc(n=30, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((300, n))
    x[:, :10] += rng.standard_normal((300, 1))
    x[:, 10:20] += 0.8 * rng.standard_normal((300, 1))
    W = np.corrcoef(x.T)
    np.fill_diagonal(W, 0.0)
    return W, np.repeat([0, 1, 2], 10)


def test_proportional_threshold_matches_bct():
    bct = pytest.importorskip("bct")
    W, _ = _fc()
    for p in (0.05, 0.1, 0.2, 0.4):
        A = graph.proportional_threshold(W, p)
        assert np.allclose(A, A.T) and np.all(np.diag(A) == 0)
        assert (A > 0).sum() // 2 == round(p * 30 * 29 / 2)
        assert np.allclose(A, bct.threshold_proportional(W, p))
    # only positive edges are ever kept
    A = graph.proportional_threshold(W, 1.0)
    assert (A > 0).sum() // 2 == (W[np.triu_indices(30, 1)] > 0).sum()
    assert A.min() >= 0


def test_strength_centrality_participation_modularity():
    bct = pytest.importorskip("bct")
    W, part = _fc()
    A = graph.proportional_threshold(W, 0.4)
    G = nx.from_numpy_array(A)
    assert np.allclose(graph.strength(A), bct.strengths_und(A))
    ec = nx.eigenvector_centrality_numpy(G, weight="weight")
    assert np.allclose(graph.eigenvector_centrality(A), [ec[i] for i in range(30)], atol=1e-10)
    assert np.allclose(graph.participation_coefficient(A, part),
                       bct.participation_coef(A, part + 1), atol=1e-12)
    comms = [set(np.flatnonzero(part == c)) for c in range(3)]
    assert graph.modularity(A, part) == pytest.approx(
        nx.community.modularity(G, comms, weight="weight"), abs=1e-12)
    assert graph.modularity(A, part, resolution=0.5) == pytest.approx(
        nx.community.modularity(G, comms, weight="weight", resolution=0.5), abs=1e-12)
    labels, q = graph.louvain_partition(A, seed=1)
    found = [set(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    assert q == pytest.approx(nx.community.modularity(G, found, weight="weight"), abs=1e-12)
    assert q >= graph.modularity(A, part) - 0.02


def test_graph_measures_regions_and_nan_parcels():
    W, part = _fc()
    W[4, :] = W[:, 4] = np.nan
    names = [f"n{i}_pCunPCC" if i in (1, 2, 3) else f"n{i}" for i in range(30)]
    parcels, summary = graph.graph_measures(W, part, densities=(0.2, 0.4), names=names,
                                            regions={"PCC": "pCunPCC"})
    assert len(parcels) == 60
    assert parcels.loc[parcels.parcel == 4, "eigenvector_centrality"].isna().all()
    ec = summary.query("measure == 'eigenvector_centrality' and region == 'PCC' and density == 0.4")
    p04 = parcels[parcels.density == 0.4].set_index("parcel")
    assert ec["value"].item() == pytest.approx(p04.loc[[1, 2, 3], "eigenvector_centrality"].mean())
    assert set(summary.region) >= {"PCC", "0", "1", "2", "global"}
    # the parcel degree counts only valid nodes: 29 nodes -> round(0.2 * 406) edges
    A = graph.proportional_threshold(W, 0.2)
    assert (A > 0).sum() // 2 == round(0.2 * 29 * 28 / 2)
