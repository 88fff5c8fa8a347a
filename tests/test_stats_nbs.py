"""Tests of the paired Network-Based Statistic (prepost.stats.nbs)."""

import contextlib
import io
import itertools

import numpy as np
import pytest
from scipy import stats
from scipy.sparse.csgraph import connected_components

from prepost.errors import InputError
from prepost.stats.nbs import bct_sign_flips, nbs_paired, paired_edge_t
from prepost.stats.paired import sign_flips


def simulate(n_subjects=11, n_nodes=30, planted=(0, 1, 2, 3, 4, 5), effect=1.0, seed=0):
    rng = np.random.default_rng(seed)
    pre = rng.normal(0.3, 0.3, (n_subjects, n_nodes, n_nodes))
    pre = (pre + pre.transpose(0, 2, 1)) / 2
    noise = rng.normal(0, 0.3, (n_subjects, n_nodes, n_nodes))
    post = pre + (noise + noise.transpose(0, 2, 1)) / 2
    eff = np.zeros((n_nodes, n_nodes))
    eff[np.ix_(planted, planted)] = effect * 0.3
    np.fill_diagonal(eff, 0)
    return pre, post + eff


def _reference_null(D, thresh, tail, size, flips):
    """Loop-per-pattern NBS null written from the definition (slow, for checking)."""
    n, N, _ = D.shape
    iu = np.triu_indices(N, 1)
    out = []
    for s in flips:
        d = D[:, iu[0], iu[1]] * np.asarray(s, float)[:, None]
        t = stats.ttest_1samp(d, 0.0, axis=0).statistic
        st = {"both": np.abs(t), "right": t, "left": -t}[tail]
        sup = st > thresh
        A = np.zeros((N, N))
        A[iu[0][sup], iu[1][sup]] = 1
        _, lab = connected_components(A + A.T, directed=False)
        best = 0.0
        for c in np.unique(lab[iu[0][sup]]):
            e = sup.copy()
            e[sup] = lab[iu[0][sup]] == c
            best = max(best, e.sum() if size == "extent" else np.sum(st[e] - thresh))
        out.append(best)
    return np.array(out, float)


def test_edge_t_matches_ttest_rel():
    pre, post = simulate(n_nodes=15)
    t = paired_edge_t(pre, post)
    ref = stats.ttest_rel(post, pre, axis=0).statistic
    iu = np.triu_indices(15, 1)
    np.testing.assert_allclose(t[iu], ref[iu], rtol=1e-10)
    np.testing.assert_allclose(t, t.T)
    assert np.all(np.diag(t) == 0)
    np.testing.assert_allclose(paired_edge_t(post - pre), t)


def test_planted_subnetwork_found():
    planted = (0, 3, 7, 9, 12, 20, 25)
    pre, post = simulate(planted=planted, effect=1.2, seed=1)
    res = nbs_paired(pre, post, thresh=3.0, tail="both")
    assert res.exact and res.n_perm == 2**11
    assert res.pvals[0] < 0.05
    assert set(planted) <= set(res.nodes[0].tolist())
    assert res.sizes[0] == len(res.components[0])
    # adjacency labels agree with the component edge lists
    e = res.components[0]
    assert np.all(res.adj[e[:, 0], e[:, 1]] == 1) and np.all(res.adj[e[:, 1], e[:, 0]] == 1)
    res_r = nbs_paired(pre, post, thresh=3.0, tail="right")
    assert res_r.pvals[0] < 0.05
    res_l = nbs_paired(pre, post, thresh=3.0, tail="left")
    assert res_l.pvals.size == 0 or res_l.pvals.min() > 0.05


def test_null_dataset_not_significant():
    pre, post = simulate(effect=0.0, seed=3)
    res = nbs_paired(pre, post, thresh=2.5, tail="both")
    assert res.pvals.size > 0
    assert res.pvals.min() > 0.05
    res_i = nbs_paired(pre, post, thresh=2.5, tail="both", size="intensity")
    assert res_i.pvals.min() > 0.05


@pytest.mark.parametrize("tail", ["both", "right", "left"])
@pytest.mark.parametrize("size", ["extent", "intensity"])
def test_exact_null_matches_definition(tail, size):
    pre, post = simulate(n_subjects=6, n_nodes=12, planted=(0, 1, 2, 3), seed=4)
    flips = list(itertools.product([1, -1], repeat=6))
    ref = _reference_null(post - pre, 2.0, tail, size, flips)
    res = nbs_paired(pre, post, thresh=2.0, tail=tail, size=size)
    assert res.exact and res.n_perm == 64
    np.testing.assert_allclose(np.sort(res.null), np.sort(ref), rtol=1e-9)
    for s, p in zip(res.sizes, res.pvals):
        assert p == pytest.approx(np.mean(ref >= s - 1e-9))


def test_half_enumeration_equals_full_for_both_tails():
    pre, post = simulate(n_subjects=8, n_nodes=20, seed=5)
    full, _ = sign_flips(8)
    a = nbs_paired(pre, post, thresh=2.5, tail="both")
    b = nbs_paired(pre, post, thresh=2.5, tail="both", flips=full)
    np.testing.assert_array_equal(a.null, b.null)
    np.testing.assert_array_equal(a.pvals, b.pvals)


def test_monte_carlo_seeded_and_include_observed():
    pre, post = simulate(n_subjects=8, n_nodes=20, seed=6)
    a = nbs_paired(pre, post, thresh=2.5, n_perm=300, max_exact=5, seed=2)
    b = nbs_paired(pre, post, thresh=2.5, n_perm=300, max_exact=5, seed=2)
    c = nbs_paired(pre, post, thresh=2.5, n_perm=300, max_exact=5, seed=2,
                   include_observed=True)
    assert not a.exact and a.n_perm == 300
    np.testing.assert_array_equal(a.null, b.null)
    counts = np.array([np.sum(a.null >= s) for s in a.sizes])
    np.testing.assert_allclose(a.pvals, counts / 300)
    np.testing.assert_allclose(c.pvals, (1 + counts) / 301)


def test_bad_input():
    pre, post = simulate(n_nodes=10)
    with pytest.raises(InputError):
        nbs_paired(pre, post[:, :9, :9])
    asym = post.copy()
    asym[:, 0, 1] += 1.0
    with pytest.raises(InputError):
        nbs_paired(pre, asym)
    with pytest.raises(InputError):
        nbs_paired(pre, post, tail="up")
    with pytest.raises(InputError):
        nbs_paired(pre, post, flips=np.ones((5, 3)))


def test_no_suprathreshold_edge_gives_empty_result():
    pre, post = simulate(effect=0.0, n_nodes=10)
    res = nbs_paired(pre, post, thresh=50.0)
    assert res.components == [] and res.pvals.size == 0 and res.null.max() == 0


@pytest.mark.parametrize("tail", ["both", "right", "left"])
def test_identical_to_bctpy_with_same_permutations(tail):
    bct = pytest.importorskip("bct")
    planted = (0, 2, 4, 6, 8, 10)
    pre, post = simulate(n_subjects=9, n_nodes=24, planted=planted, effect=1.2, seed=7)
    if tail == "left":
        pre, post = post, pre
    k, seed, thresh = 60, 42, 2.5
    x, y = post.transpose(1, 2, 0).copy(), pre.transpose(1, 2, 0).copy()
    with contextlib.redirect_stdout(io.StringIO()):
        p_bct, adj_bct, null_bct = bct.nbs_bct(x, y, thresh, k=k, tail=tail, paired=True,
                                               seed=seed)
    res = nbs_paired(pre, post, thresh=thresh, tail=tail, flips=bct_sign_flips(k, 9, seed))
    np.testing.assert_array_equal(res.null, null_bct)
    iu = np.triu_indices(24, 1)
    bct_sets = {frozenset(zip(iu[0][adj_bct[iu] == c + 1].tolist(),
                              iu[1][adj_bct[iu] == c + 1].tolist())): p
                for c, p in enumerate(p_bct)}
    ours = {frozenset(map(tuple, e.tolist())): p for e, p in zip(res.components, res.pvals)}
    assert set(bct_sets) == set(ours)
    for key, p in bct_sets.items():
        assert ours[key] == p
    assert min(ours.values()) < 0.05


# --------------------------------------------------------------------------------------------
# Two-sample NBS (session x arm interaction of a parallel design)
# --------------------------------------------------------------------------------------------
def _arm_changes(n_active=6, n_control=6, n_nodes=14, planted=(0, 1, 2, 3, 4), effect=0.0,
                 control_sd=1.0, seed=0):
    """Symmetric change matrices of two arms; the active arm's planted block moves by
    ``effect`` (in SDs of the noise)."""
    rng = np.random.default_rng(seed)

    def sym(n, sd):
        x = rng.normal(0, sd, (n, n_nodes, n_nodes))
        x = (x + x.transpose(0, 2, 1)) / np.sqrt(2)
        x[:, np.arange(n_nodes), np.arange(n_nodes)] = 0
        return x

    a, c = sym(n_active, 1.0), sym(n_control, control_sd)
    block = np.zeros((n_nodes, n_nodes))
    block[np.ix_(planted, planted)] = effect
    np.fill_diagonal(block, 0)
    return a + block, c


def test_two_sample_edge_t_is_welch_t():
    from prepost.stats.nbs import nbs_two_sample

    a, c = _arm_changes(7, 5, control_sd=2.0, seed=1)
    res = nbs_two_sample(a, c, thresh=2.0, n_perm=50)
    ref = stats.ttest_ind(a, c, axis=0, equal_var=False).statistic
    iu = np.triu_indices(a.shape[1], 1)
    np.testing.assert_allclose(res.t[iu], ref[iu], rtol=1e-9)
    np.testing.assert_allclose(res.t, res.t.T)


@pytest.mark.parametrize("tail,size", [("both", "extent"), ("right", "intensity")])
def test_two_sample_exact_null_matches_definition(tail, size):
    """4 vs 4: all 70 relabelings, each scored from scipy's Welch t and a fresh component
    search; p counts the observed labeling among them."""
    from prepost.stats.nbs import nbs_two_sample

    a, c = _arm_changes(4, 4, n_nodes=10, planted=(0, 1, 2, 3), effect=2.0, seed=2)
    res = nbs_two_sample(a, c, thresh=2.0, tail=tail, size=size)
    assert res.exact and res.n_perm == 70
    X = np.concatenate([a, c])
    N = a.shape[1]
    iu = np.triu_indices(N, 1)
    ref = []
    for idx in itertools.combinations(range(8), 4):
        m = np.zeros(8, bool)
        m[list(idx)] = True
        t = stats.ttest_ind(X[m][:, iu[0], iu[1]], X[~m][:, iu[0], iu[1]], axis=0,
                            equal_var=False).statistic
        st = np.abs(t) if tail == "both" else t
        sup = st > 2.0
        A = np.zeros((N, N))
        A[iu[0][sup], iu[1][sup]] = 1
        _, lab = connected_components(A + A.T, directed=False)
        best = 0.0
        for comp in np.unique(lab[iu[0][sup]]):
            e = sup.copy()
            e[sup] = lab[iu[0][sup]] == comp
            best = max(best, e.sum() if size == "extent" else np.sum(st[e] - 2.0))
        ref.append(best)
    ref = np.array(ref)
    np.testing.assert_allclose(np.sort(res.null), np.sort(ref), rtol=1e-9)
    assert len(res.sizes) >= 1
    for s, p in zip(res.sizes, res.pvals):
        assert p == pytest.approx(np.mean(ref >= s - 1e-9))


def test_two_sample_finds_a_planted_interaction_and_not_a_shared_change():
    from prepost.stats.nbs import nbs_two_sample

    planted = (0, 2, 5, 7, 9)
    a, c = _arm_changes(8, 8, n_nodes=20, planted=planted, effect=2.5, seed=3)
    res = nbs_two_sample(a, c, thresh=3.0)
    assert res.exact and res.n_perm == 12870  # C(16, 8)
    assert res.pvals[0] < 0.01 and set(planted) <= set(res.nodes[0].tolist())
    mc = nbs_two_sample(a, c, thresh=3.0, n_perm=999, max_relabelings=1000, seed=1)
    assert not mc.exact and mc.n_perm == 1000 and mc.sizes[0] == res.sizes[0]
    assert mc.pvals[0] == pytest.approx(res.pvals[0], abs=0.01)
    # the same change in both arms is no interaction
    block = np.zeros((20, 20))
    block[np.ix_(planted, planted)] = 2.5
    np.fill_diagonal(block, 0)
    res0 = nbs_two_sample(a, c + block, thresh=3.0, n_perm=999, seed=1)
    assert res0.pvals.size == 0 or res0.pvals.min() > 0.05


def test_two_sample_false_positive_rate_with_unequal_arms():
    """1,000 null studies, 8 vs 5 participants (all 1,287 relabelings): the largest component is
    significant at 0.05 in 3-7 % of them (4.2 %; binomial SE 0.7 %). (With the 5-participant
    arm twice as variable the arms are not exchangeable and no relabeling test is exact: Welch's
    t gives 17 % there, the pooled t 30 %; at 10 vs 6, 8.7 % and 28 %, over 300 studies.)"""
    from prepost.stats.nbs import nbs_two_sample

    hits = 0
    for k in range(1000):
        a, c = _arm_changes(8, 5, n_nodes=12, seed=100 + k)
        res = nbs_two_sample(a, c, thresh=2.5, seed=k)
        hits += bool(res.pvals.size and res.pvals.min() < 0.05)
    assert 0.03 <= hits / 1000 <= 0.07, hits / 1000


def test_nbs_matrices_of_the_interaction():
    from prepost.stats.group import nbs_matrices

    a, c = _arm_changes(5, 5, n_nodes=12, planted=(0, 1, 2, 3), effect=0.0, seed=5)
    pre = np.tanh(np.full((10, 12, 12), 0.3))
    post = np.tanh(0.3 + 0.05 * np.concatenate([a, c]))
    arm = [True] * 5 + [False] * 5
    summary, edges, t = nbs_matrices(pre, post, thresh=2.0, active=arm)
    assert (summary["n_active"], summary["n_control"]) == (5, 5)
    assert summary["exact"] and summary["n_perm"] == 252
    few, _, _ = nbs_matrices(pre, post, thresh=2.0, active=[True] + [False] * 9)
    assert "in an arm (1 active, 9 control)" in few["note"] and few["components"] == []
