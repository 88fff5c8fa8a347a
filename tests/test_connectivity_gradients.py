"""Diffusion-map gradients (BrainSpace defaults), Procrustes alignment, summaries."""

import numpy as np
import pytest
from scipy.stats import spearmanr, special_ortho_group

from prepost.connectivity import gradients as gr


def test_kernel_and_sparsity_hand_computed():
    x = np.array([[1.0, 0.8, 0.1, 0.3],
                  [0.8, 1.0, 0.2, 0.4],
                  [0.1, 0.2, 1.0, 0.8],
                  [0.3, 0.4, 0.8, 1.0]])
    # sparsity 0.5: each row keeps its int(4 * 0.5) = 2 largest entries
    sp = gr.sparsify_rows(x, 0.5)
    assert np.array_equal(sp, [[1, 0.8, 0, 0], [0.8, 1, 0, 0], [0, 0, 1, 0.8], [0, 0, 0.8, 1]])
    # rows 0 and 1 (and 2 and 3): cos = (0.8 + 0.8) / (1 + 0.64); rows 0 and 2: orthogonal,
    # angle pi/2 -> 0.5
    a01 = 1 - np.arccos(1.6 / 1.64) / np.pi
    expect = np.array([[1, a01, 0.5, 0.5], [a01, 1, 0.5, 0.5],
                       [0.5, 0.5, 1, a01], [0.5, 0.5, a01, 1]])
    A = gr.affinity_matrix(x, sparsity=0.5)
    assert np.allclose(A, expect, atol=1e-7)
    # diffusion map: equal degrees, so P = A / (2 + a01 + ... ) and the first non-trivial
    # eigenvector is (1, 1, -1, -1) with eigenvalue l = a01 / (2 + a01), rescaled l / (1 - l) = a01/2
    emb, lam = gr.diffusion_map(A, n_components=1)
    assert lam[0] == pytest.approx(a01 / 2)
    assert np.allclose(np.abs(emb[:, 0]), a01 / 2)
    assert emb[0, 0] == pytest.approx(emb[1, 0]) and emb[0, 0] == pytest.approx(-emb[2, 0])


def test_brainspace_default_row_count():
    x = np.random.default_rng(0).standard_normal((400, 400))
    sp = gr.sparsify_rows(x, 0.9)
    # BrainSpace keeps int(400 * (1 - 0.9)) = 39 per row (floating point of 1 - 0.9)
    assert set((sp != 0).sum(axis=1)) == {int(400 * (1 - 0.9))}
    assert np.all(sp.max(axis=1) == x.max(axis=1))


def _ordered_fc(n=300, noise=None, seed=0):
    """Parcels at evenly spaced positions u on a 1-D axis, mixing two sources by angle u*pi/2:
    FC_ij = 0.5 cos(theta_i - theta_j) (noise None), or a sample estimate from T = 2000."""
    u = np.linspace(0, 1, n)
    theta = u * np.pi / 2
    if noise is None:
        R = 0.5 * np.cos(theta[:, None] - theta[None, :])
        np.fill_diagonal(R, 1.0)
        return R, u
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((2000, 2))
    x = np.cos(theta) * s[:, [0]] + np.sin(theta) * s[:, [1]] + noise * rng.standard_normal((2000, n))
    return np.corrcoef(x.T), u


def test_first_gradient_recovers_ordering_and_nan_parcels():
    R, u = _ordered_fc()
    perm = np.random.default_rng(0).permutation(300)  # parcel order must not matter
    R, u = R[np.ix_(perm, perm)], u[perm]
    g, lam = gr.fc_gradients(R)
    assert g.shape == (300, 10) and np.all(np.diff(lam) <= 1e-12)
    assert abs(np.corrcoef(g[:, 0], u)[0, 1]) > 0.95
    assert abs(spearmanr(g[:, 0], u)[0]) > 0.99
    R[7, :] = R[:, 7] = np.nan
    g2, _ = gr.fc_gradients(R)
    ok = np.arange(300) != 7
    assert np.isnan(g2[7]).all()
    assert abs(np.corrcoef(g2[ok, 0], u[ok])[0, 1]) > 0.95
    bad = R.copy()
    bad[1, 2] = np.nan
    with pytest.raises(Exception):
        gr.fc_gradients(bad)
    Rn, u = _ordered_fc(noise=0.7, seed=1)
    gn, _ = gr.fc_gradients(Rn)
    assert abs(np.corrcoef(gn[:, 0], u)[0, 1]) > 0.93


def test_procrustes_recovers_rotation_and_sign_flip():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((100, 3))
    Q = special_ortho_group.rvs(3, random_state=4)
    Q = Q @ np.diag([1, -1, 1])  # include a reflection (sign flip)
    moved = ref @ Q
    assert np.allclose(gr.procrustes_align(moved, ref), ref, atol=1e-10)
    # NaN rows are ignored in the fit and stay NaN
    moved[5] = np.nan
    out = gr.procrustes_align(moved, ref)
    assert np.isnan(out[5]).all() and np.allclose(out[np.arange(100) != 5], ref[np.arange(100) != 5])
    # generalised: subjects = rotated noisy copies of a common shape
    subjects = [(ref + 0.05 * rng.standard_normal(ref.shape)) @ special_ortho_group.rvs(
        3, random_state=10 + i) for i in range(5)]
    aligned, mean = gr.align_gradients(subjects)
    for a in aligned:
        assert np.abs(a - mean).max() < 0.3
    R, _ = gr.align_gradients([mean], reference=ref)
    assert np.allclose(R[0], ref, atol=0.1)


def test_summary_and_orientation():
    g = np.array([-2.0, -1.0, 0.0, 1.0, np.nan, 3.0])
    nets = np.array(["Vis", "Vis", "SomMot", "Default", "Default", "Default"])
    s = gr.gradient_summary(g, nets)
    assert s["range"] == 5.0 and s["variance"] == pytest.approx(np.var([-2, -1, 0, 1, 3]))
    assert s["position"] == {"Vis": -1.5, "SomMot": 0.0, "Default": 2.0}
    assert np.array_equal(gr.orient_gradient(-g, nets), g, equal_nan=True)


def test_group_steps_with_every_run_excluded_give_nan_not_a_crash():
    import pandas as pd

    from prepost.connectivity import stage
    from prepost.connectivity.atlas import load_atlas

    atlas = load_atlas("Schaefer100")
    rng = np.random.default_rng(0)
    ts = [pd.DataFrame(rng.standard_normal((40, 100))) for _ in range(2)]
    mats, mean = stage.tangent_fc(ts, [True, True])
    assert len(mats) == 2 and np.isnan(mean).all() and all(np.isnan(m).all() for m in mats)
    ref, aligned, rows = stage.group_gradients(ts, [True, True], atlas,
                                               [("sub-01", "pre"), ("sub-01", "post")])
    assert ref.shape == (100, 7) and ref.filter(like="gradient").isna().all().all()
    assert len(aligned) == 200 and aligned.filter(like="gradient").isna().all().all()
    assert len(rows) == 2 and rows[0]["value"].isna().all()
    # one included run: its own gradients are finite
    ref, aligned, rows = stage.group_gradients(ts, [False, True], atlas,
                                               [("sub-01", "pre"), ("sub-01", "post")])
    assert np.isfinite(ref.gradient1).all() and rows[1]["value"].isna().all()
    assert np.isfinite(rows[0]["value"]).any()
