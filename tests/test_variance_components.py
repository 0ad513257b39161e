"""Variance components and BLUPs: dense per-cluster NumPy references (weighted least squares on
vectorised outer products), hypothesis tests on unbalanced, rank-deficient designs, the
random-intercept shrinkage identity of seed 003, and bad inputs."""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import make_data
from hypothesis import given, settings, strategies as st

import jaxlmm
from jaxlmm._covariance import blup, covariance_basis, project_psd
from jaxlmm._variance_components import estimate_variance_components, variance_components


def _blocks(data):
    """Per-cluster (Z_i, rows) in cluster index order, from the sorted layout."""
    cluster = np.asarray(data.cluster)
    Z = np.asarray(data.Z)
    return [(Z[cluster == i], np.flatnonzero(cluster == i)) for i in range(data.n_clusters)]


def dense_variance_components(data, a, residual, basis, fixed_df=0):
    """The estimator written literally: lstsq projections for σ̂_e², and η̂ as the least-squares
    solution of the stacked, vectorised W_i^{1/2}(r_i r_iᵀ − σ̂² I)W_i^{1/2} on the
    W_i^{1/2} Z_i G_j Z_iᵀ W_i^{1/2} (dense m_i × m_i matrices, eigh square roots)."""
    blocks = _blocks(data)
    rss = dof = 0.0
    for Zi, rows in blocks:
        ri = residual[rows]
        coef, *_ = np.linalg.lstsq(Zi, ri, rcond=None)
        rss += np.sum((ri - Zi @ coef) ** 2)
        dof += len(rows) - np.linalg.matrix_rank(Zi)
    sigma2 = rss / (dof - fixed_df)
    target, design = [], []
    for Zi, rows in blocks:
        ri = residual[rows]
        w, V = np.linalg.eigh(a * Zi @ Zi.T + np.eye(len(rows)))
        half = V @ np.diag(w**-0.5) @ V.T
        target.append((half @ (np.outer(ri, ri) - sigma2 * np.eye(len(rows))) @ half).ravel())
        design.append(np.stack([(half @ Zi @ G @ Zi.T @ half).ravel() for G in basis], axis=1))
    eta = np.linalg.lstsq(np.concatenate(design), np.concatenate(target), rcond=None)[0]
    psi_raw = np.einsum("j,jab->ab", eta, basis)
    w, V = np.linalg.eigh(psi_raw)
    psi = V @ np.diag(np.maximum(w, 0)) @ V.T
    ranef = np.stack([psi @ Zi.T @ np.linalg.solve(Zi @ psi @ Zi.T + sigma2 * np.eye(len(rows)), residual[rows])
                      for Zi, rows in blocks])
    return sigma2, eta, psi, ranef


def _ours(data, a, residual, basis):
    est = estimate_variance_components(data, jnp.asarray(a), jnp.asarray(residual), jnp.asarray(basis))
    return float(est.sigma2), np.asarray(est.eta), np.asarray(est.psi), np.asarray(est.ranef)


@pytest.mark.parametrize("structure", ["identity", "diagonal", "full", "toeplitz"])
def test_matches_dense_weighted_least_squares(structure):
    data, _ = make_data(5, [3, 6, 4, 9, 5, 2, 7, 8], p=4, q=3)
    q = 3
    basis = (covariance_basis(structure, q) if structure != "toeplitz"
             else np.stack([np.eye(q), np.eye(q, k=1) + np.eye(q, k=-1)]))
    residual = np.asarray(data.y - data.X @ jnp.array([0.5, -0.2, 0.0, 0.1]))
    expected = dense_variance_components(data, 0.7, residual, basis)
    for got, want in zip(_ours(data, 0.7, residual, basis), expected):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)


@settings(max_examples=10, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=3, max_size=8),
    q=st.integers(1, 3),
    a=st.floats(0.0, 20.0),
    structure=st.sampled_from(["identity", "diagonal", "full"]),
    seed=st.integers(0, 10_000),
    collapse=st.booleans(),
)
def test_moment_fit_property(sizes, q, a, structure, seed, collapse):
    """Random unbalanced clusters (some smaller than q), Z_i made rank-deficient in one cluster
    by duplicating a column inside it: the q×q moment algebra equals the dense WLS fit."""
    if sum(max(m - q, 0) for m in sizes) == 0:
        sizes = sizes + [q + 2]
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    groups = np.repeat(np.arange(len(sizes)), sizes)
    Z = rng.normal(size=(n, q))
    if collapse and q > 1:
        first = groups == 0
        Z[first, 1] = 2.0 * Z[first, 0]
    X = rng.normal(size=(n, 2))
    y = rng.normal(size=n) + Z[:, 0] * rng.normal(size=len(sizes))[groups]
    data = jaxlmm.LMMData.from_arrays(X, y, groups, Z)
    basis = covariance_basis(structure, q)
    residual = np.asarray(data.y)
    expected = dense_variance_components(data, a, residual, basis)
    got = _ours(data, a, residual, basis)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-8)
    scale = max(1.0, np.max(np.abs(expected[2])))
    for g, e in zip(got[1:], expected[1:]):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-8 * scale)


def test_psd_projection_is_nearest():
    M = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3, −1
    P = np.asarray(project_psd(jnp.asarray(M)))
    np.testing.assert_allclose(P, 1.5 * np.ones((2, 2)), atol=1e-12)
    assert np.min(np.linalg.eigvalsh(P)) > -1e-12


def test_random_intercept_blup_is_partial_pooling():
    """Seed 003: for a random intercept, b̂_i = ρ_i (ȳ_i − μ) with ρ_i = τ²/(τ² + σ²/n_i), so
    μ + b̂_i = ρ_i ȳ_i + (1 − ρ_i) μ."""
    sizes = [1, 2, 4, 8, 16, 3]
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(len(sizes)), sizes)
    y = rng.normal(size=len(groups)) + rng.normal(size=len(sizes))[groups]
    data = jaxlmm.LMMData.from_arrays(np.ones((len(y), 1)), y, groups)
    tau2, sigma2, mu = 0.8, 1.3, np.mean(y)
    b = np.asarray(blup(data, jnp.array([[tau2]]), sigma2, data.y - mu))[:, 0]
    ybar = np.array([y[groups == i].mean() for i in range(len(sizes))])
    rho = tau2 / (tau2 + sigma2 / np.asarray(sizes))
    np.testing.assert_allclose(mu + b, rho * ybar + (1 - rho) * mu, rtol=1e-12)


def test_blup_with_a_zero_variance_component():
    """Ψ singular (one variance exactly 0): the q×q push-through form stays finite and equals
    the dense Ψ Zᵀ V⁻¹ r, and that random effect is predicted as 0."""
    data, _ = make_data(4, [5, 6, 7], p=2, q=2)
    psi = np.diag([0.7, 0.0])
    r = np.asarray(data.y)
    got = np.asarray(blup(data, jnp.asarray(psi), 0.5, data.y))
    want = np.stack([psi @ Zi.T @ np.linalg.solve(Zi @ psi @ Zi.T + 0.5 * np.eye(len(rows)), r[rows])
                     for Zi, rows in _blocks(data)])
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_array_equal(got[:, 1], 0.0)


@pytest.fixture(scope="module")
def simulated_fit():
    sim = jaxlmm.simulate.li_cai_li_design(seed=11, n_clusters=60, p=40)
    data = jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups, sim.Z)
    fit = jaxlmm.fit_quasi(data, a=1.0, lam="universal", unpenalized=[0], progress=False)
    return sim, data, fit


def test_variance_components_from_a_fit(simulated_fit):
    """On data with Ψ = diag(1, .5), σ² = 1: estimates in the right range, BLUPs in label
    order, and the public entry point equals the dense reference on the fit's residuals."""
    sim, data, fit = simulated_fit
    comps = variance_components(fit, data, "diagonal")
    assert comps.groups == tuple(range(60)) and comps.ranef.shape == (60, 2) and comps.identifiable
    residual = np.asarray(data.y - data.X @ jnp.asarray(fit.coef)) - fit.intercept
    # σ̂_e²'s denominator loses one degree of freedom per selected column.
    sigma2, eta, psi, ranef = dense_variance_components(data, 1.0, residual, comps.basis, np.sum(fit.coef != 0))
    np.testing.assert_allclose([comps.sigma2, *np.diag(comps.psi)], [sigma2, *np.diag(psi)], rtol=1e-9)
    np.testing.assert_allclose(comps.ranef, ranef, rtol=1e-8, atol=1e-10)
    assert 0.7 < comps.sigma2 < 1.4 and 0.5 < comps.psi[0, 0] < 1.6
    # BLUPs track the realised random effects.
    assert np.corrcoef(comps.ranef[:, 0], sim.ranef[:, 0])[0, 1] > 0.8


def test_variance_components_bad_inputs(simulated_fit):
    _, data, fit = simulated_fit
    with pytest.raises(ValueError, match="`structure`"):
        variance_components(fit, data, "banded")
    with pytest.raises(ValueError, match="q×q"):
        variance_components(fit, data, [np.eye(3)])
    with pytest.raises(ValueError, match="symmetric"):
        variance_components(fit, data, [np.array([[1.0, 1.0], [0.0, 1.0]])])
    with pytest.raises(ValueError, match="linearly dependent"):
        variance_components(fit, data, [np.eye(2), 2 * np.eye(2)])
    with pytest.raises(ValueError, match="LMMData"):
        variance_components(fit, data.X)
    tiny = jaxlmm.LMMData.from_arrays(np.random.default_rng(0).normal(size=(6, 3)), np.arange(6.0),
                                      [0, 0, 1, 1, 2, 2], np.column_stack([np.ones(6), np.arange(6.0)]))
    tiny_fit = jaxlmm.fit_quasi(tiny, a=1.0, lam=0.1, progress=False)
    with pytest.raises(ValueError, match="m_i ≤ rank"):
        variance_components(tiny_fit, tiny)


def test_sigma2_after_a_cross_validated_fit_counts_the_selected_columns():
    """A CV λ overfits (tens of noise columns on Li, Cai & Li's random-slope design, σ² = 0.25):
    without the degrees-of-freedom correction σ̂_e² averaged 0.70 σ² over 200 replicates, with it
    0.95 σ² (benchmarks/study_coverage.py). Three replicates, margins of about 3 sd."""
    sizes = np.random.default_rng(2026).integers(3, 10, size=50)
    ratios = []
    for seed in range(3):
        sim = jaxlmm.simulate.li_cai_li_design(seed=seed, cluster_size=sizes, n_clusters=50, p=200, q=2, sigma=0.5,
                                                support=(0, 1, 2), values=(1.0, 0.3, 0.3))
        data = jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups, sim.Z)
        fit = jaxlmm.fit_quasi(data, a=1.0, progress=False)
        assert len(fit.support) > 10  # the CV fit has overfitted, as the correction assumes
        ratios.append(variance_components(fit, data).sigma2 / sim.sigma**2)
    assert 0.82 < np.mean(ratios) < 1.2, ratios
