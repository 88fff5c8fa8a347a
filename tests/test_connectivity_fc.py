"""FC estimators: Pearson, partial correlation, tangent, Fisher z; NaN parcels keep the size."""

import numpy as np
import pytest

from prepost.connectivity import fc
from prepost.errors import InputError


def _ts(T=400, n=25, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, n))
    x[:, 1:6] += rng.standard_normal((T, 1))  # a correlated block
    return x


def test_pearson_equals_corrcoef_and_keeps_nan_parcels():
    x = _ts()
    r = fc.pearson(x)
    assert np.allclose(r, np.corrcoef(x.T), atol=1e-12)
    x[:, 4] = np.nan
    x[:, 10] = 3.0  # constant
    r = fc.pearson(x)
    assert r.shape == (25, 25)
    assert np.isnan(r[4]).all() and np.isnan(r[:, 10]).all()
    keep = np.setdiff1d(np.arange(25), [4, 10])
    assert np.allclose(r[np.ix_(keep, keep)], np.corrcoef(x[:, keep].T), atol=1e-12)


def test_partial_correlation_equals_inverse_covariance_formula():
    x = _ts()
    x[:, 7] = np.nan
    p = fc.partial_correlation(x)
    keep = np.setdiff1d(np.arange(25), [7])
    P = np.linalg.inv(np.cov(x[:, keep].T))
    d = np.sqrt(np.diag(P))
    expect = -P / np.outer(d, d)
    np.fill_diagonal(expect, 1.0)
    assert np.allclose(p[np.ix_(keep, keep)], expect, atol=1e-10)
    assert np.isnan(p[7]).all()
    with pytest.raises(InputError, match="more volumes"):
        fc.partial_correlation(_ts(T=20))
    from sklearn.covariance import LedoitWolf

    assert np.isfinite(fc.partial_correlation(_ts(T=20), cov_estimator=LedoitWolf())).all()


def test_tangent_identical_subjects_zero_and_group_mean():
    x = _ts()
    mats, mean = fc.fit_tangent([x, x.copy(), x.copy()])
    assert mats.shape == (3, 25, 25)
    assert np.abs(mats).max() < 1e-8
    assert np.allclose(mean, np.cov(x.T, bias=True), rtol=1e-6, atol=1e-10)
    y = _ts(seed=1)
    y[:, 3] = np.nan
    mats, mean = fc.fit_tangent([x, y])
    assert np.isnan(mats[:, 3]).all() and np.isnan(mean[3]).all()
    assert np.abs(np.nan_to_num(mats)).max() > 0.01
    # the two subjects sit symmetrically about the geometric mean of two matrices
    keep = np.setdiff1d(np.arange(25), [3])
    assert np.allclose(mats[0][np.ix_(keep, keep)], -mats[1][np.ix_(keep, keep)], atol=1e-8)


def test_fisher_z_diagonal_conventions():
    r = np.array([[1.0, 0.5], [0.5, 1.0]])
    z = fc.fisher_z(r)
    assert np.isnan(z[0, 0]) and z[0, 1] == pytest.approx(np.arctanh(0.5))
    assert fc.fisher_z(r, diagonal=0.0)[1, 1] == 0.0
    assert np.isfinite(fc.fisher_z(np.array([[1.0, 1.0], [1.0, 1.0]]), diagonal=None)).all()
