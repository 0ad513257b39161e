"""Key-driven batches (`simulate.draw`): the data are laid out as `LMMData.from_arrays` lays them
out, and the draws have the moments their NumPy generators define."""

import jax
import numpy as np
import pytest

import jaxlmm
from jaxlmm.simulate import _symmetric_sqrt_abs, draw

KEYS = jax.random.split(jax.random.key(7), 2000)


def _check_layout(batch, b):
    X, y, Z, groups = (np.asarray(a[b]) for a in (batch.data.X, batch.data.y, batch.data.Z, batch.data.cluster))
    ref = jaxlmm.LMMData.from_arrays(X, y, groups, Z)
    np.testing.assert_allclose(batch.data.z_singular[b], ref.z_singular, rtol=1e-12, atol=1e-12)
    ours = jax.tree.map(lambda a: a[b], batch.data)
    # The SVD's signs may differ; what uses it (the whitening) may not.
    for a in (0.5, 3.0):
        np.testing.assert_allclose(jaxlmm.whiten(ours, a).X, jaxlmm.whiten(ref, a).X, rtol=1e-10, atol=1e-12)


def _covariance(rows):
    rows = rows - rows.mean(0)
    return rows.T @ rows / len(rows)


def test_li_cai_li_layout_and_moments():
    sizes = np.array([3, 5, 4, 6, 2, 5])
    batch = draw("li_cai_li", KEYS, sizes, p=6, q=2, psi_diag=(1.0, 0.5), sigma=0.7)
    _check_layout(batch, 3)
    X = np.asarray(batch.data.X).reshape(-1, 6)
    np.testing.assert_allclose(_covariance(X), np.eye(6), atol=0.03)  # 2000 × 25 rows: sd ≈ 0.0045
    np.testing.assert_allclose(_covariance(np.asarray(batch.ranef).reshape(-1, 2)), batch.Psi, atol=0.07)
    noise = _noise(batch)
    np.testing.assert_allclose(noise.var(), 0.49, rtol=0.05)
    assert abs(noise.mean()) < 0.02


def test_scope_example_draws_the_seeds_covariance():
    batch = draw("scope_example", KEYS, 4, n_clusters=5, p=6, q=3, support=(1, 4), values=(1.0, 0.5))
    _check_layout(batch, 0)
    rows = np.concatenate([np.asarray(batch.data.X), np.asarray(batch.data.Z)], axis=-1).reshape(-1, 9)
    root = _symmetric_sqrt_abs(_scope_cov(6, 3))  # rows are drawn from |C|, as the seed's sampler does
    np.testing.assert_allclose(_covariance(rows), root @ root, atol=0.05)
    np.testing.assert_allclose(_covariance(np.asarray(batch.ranef).reshape(-1, 3)), batch.Psi, atol=0.08)


def _scope_cov(p, q, rho=0.2):
    j, l = np.meshgrid(np.arange(p), np.arange(q), indexing="ij")
    cross = np.where(np.maximum(j, l) <= q - 1, rho ** np.abs(j - l), 0.0)
    return np.block([[np.eye(p), cross], [cross.T, np.eye(q)]])


def test_schelldorfer_covariates_are_ar1():
    batch = draw("schelldorfer", KEYS[:40], None, variant="H2")  # 30 clusters of 6, p = 500
    _check_layout(batch, 1)
    X = np.asarray(batch.data.X)[..., :5].reshape(-1, 5)
    np.testing.assert_allclose(_covariance(X), 0.2 ** np.abs(np.subtract.outer(np.arange(5), np.arange(5))), atol=0.06)
    assert batch.intercept == 1.0 and batch.beta.shape == (40, 499)


def test_target_shift_proxies_follow_the_latent_effects():
    batch = draw("target_shift", KEYS, 5, n_clusters=8, p=20, n_proxy=3, c=1.5)
    _check_layout(batch, 2)
    alpha = np.asarray(batch.extra["alpha"])  # B × n
    X = np.asarray(batch.data.X)
    means = np.stack([X[:, np.asarray(batch.data.cluster[0]) == i].mean(1) for i in range(8)], axis=1)  # B × n × p
    # Cov(cluster mean of x_k, α_i) = c for a proxy (α_sd = 1), 0 otherwise.
    cov = np.einsum("bnk,bn->k", means - means.mean((0, 1)), alpha - alpha.mean()) / alpha.size
    np.testing.assert_allclose(cov[:3], 1.5, atol=0.12)
    np.testing.assert_allclose(cov[3:], 0.0, atol=0.12)
    np.testing.assert_array_equal(batch.extra["proxies"], [0, 1, 2])


def _noise(batch):
    """y − Xβ − Z_i b_i per replicate and row (what is left is σε)."""
    ranef_rows = np.take_along_axis(np.asarray(batch.ranef), np.asarray(batch.data.cluster)[..., None], axis=1)
    return (np.asarray(batch.data.y) - np.einsum("btp,bp->bt", batch.data.X, batch.beta)
            - np.einsum("btq,btq->bt", batch.data.Z, ranef_rows))


@pytest.mark.parametrize("times, q", [("uniform", 4), ("normal", 2)])
def test_eb_ridge_design_draws_the_seeds_priors(times, q):
    """Seed 002: Σ ~ IW(ν, (ν − q − 1)I) and β ~ N(0, I) per replicate. Σ⁻¹ is Wishart(ν, I/(ν − q − 1))
    (mean ν/(ν − q − 1) I, finite variance, unlike Σ's at ν = q + 2), and Σ_11 is inverse gamma
    ((ν − q + 1)/2, (ν − q − 1)/2); the NumPy generator draws the same Σ_11 distribution."""
    from scipy import stats

    nu = q + 2
    batch = draw("eb_ridge", KEYS, 3, n_clusters=6, p=3, q=q, times=times, sigma=0.5)
    _check_layout(batch, 0)
    Psi = np.asarray(batch.Psi)
    assert Psi.shape == (2000, q, q) and batch.beta.shape == (2000, 3)
    # E Σ⁻¹ = ν I: sd of an entry's mean over 2,000 draws ≤ √(2ν/2000) ≈ 0.08-0.11, so 0.5 is > 4.5 sd.
    np.testing.assert_allclose(np.linalg.inv(Psi).mean(0), nu * np.eye(q), atol=0.5)
    invgamma = stats.invgamma((nu - q + 1) / 2, scale=(nu - q - 1) / 2)
    assert stats.kstest(Psi[:, 0, 0], invgamma.cdf).pvalue > 1e-3
    numpy_draws = [jaxlmm.simulate.eb_ridge_design(seed, 6, 3, 3, q, times=times).Psi[0, 0] for seed in range(500)]
    assert stats.kstest(numpy_draws, invgamma.cdf).pvalue > 1e-3
    np.testing.assert_allclose(_covariance(np.asarray(batch.beta)), np.eye(3), atol=0.12)
    # b_i | Σ ~ N(0, Σ): whitened by each replicate's Σ they are standard normal.
    roots = np.linalg.cholesky(Psi)
    white = np.linalg.solve(roots[:, None], np.asarray(batch.ranef)[..., None])[..., 0].reshape(-1, q)
    np.testing.assert_allclose(_covariance(white), np.eye(q), atol=0.04)  # 12,000 rows
    t = np.asarray(batch.data.Z)[..., 1].ravel()
    np.testing.assert_allclose(np.asarray(batch.data.Z), t.reshape(2000, 18, 1) ** np.arange(q), rtol=1e-12)
    np.testing.assert_allclose(t.var(), 1 / 3 if times == "uniform" else 1.0, rtol=0.03)
    assert stats.kstest(t, stats.uniform(-1, 2).cdf if times == "uniform" else stats.norm.cdf).pvalue > 1e-3
    noise = _noise(batch)
    np.testing.assert_allclose(noise.var(), 0.25, rtol=0.05)
    assert abs(noise.mean()) < 0.01


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="design"):
        draw("H5", KEYS, 5)
    with pytest.raises(ValueError, match="cluster_size"):
        draw("li_cai_li", KEYS, [5])
    with pytest.raises(ValueError, match="cluster_size"):
        draw("schelldorfer", KEYS, 6)
    with pytest.raises(ValueError, match="cluster_size"):
        draw("target_shift", KEYS, None)
    with pytest.raises(ValueError, match="unknown option"):
        draw("li_cai_li", KEYS, 5, n_groups=3)
    with pytest.raises(ValueError, match="times"):
        draw("eb_ridge", KEYS, 3, times="U(-1, 1)")
    with pytest.raises(ValueError, match="nu"):
        jaxlmm.simulate.eb_ridge_design(0, q=2, nu=3)
