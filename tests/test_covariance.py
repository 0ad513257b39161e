"""`ClusterCovariance` (V_i = σ²I + Z_iΨZ_iᵀ by q×q algebra) against the dense N×N matrix: the one
operator behind whitening, the ML likelihood, BLUPs and the EB posterior and evidence."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import dense_v
from hypothesis import given, settings, strategies as st

import jaxlmm
from jaxlmm._covariance import (
    ClusterCovariance,
    cluster_covariance,
    cluster_cross,
    cluster_sum,
    isotropic_covariance,
    proxy_covariance,
    small_cholesky,
    small_triangular_solve,
)


def _dense_blocks(cluster, Z, psi, sigma2):
    """Per-cluster index sets and the dense V (rows sorted by cluster, as in LMMData)."""
    return dense_v(cluster, Z, psi, sigma2), [np.flatnonzero(cluster == i) for i in range(cluster.max() + 1)]


@eqx.filter_jit
def _everything(data, psi, sigma2, L, M, r):
    """Every operator quantity in one program (one compilation per drawn shape)."""
    plain = cluster_covariance(data, psi, sigma2)
    factored = cluster_covariance(data, psi, sigma2, factor=L).with_eigen(data)
    Ztr, rr = cluster_sum(data, data.Z * r[:, None]), cluster_sum(data, r * r)
    return dict(
        log_det=plain.log_det(), quadratic=plain.quadratic(Ztr, rr), inverse=plain.inverse_apply(data, M),
        inverse_eigen=factored.inverse_apply(data, M), trace=plain.trace_inverse(),
        trace_eigen=factored.trace_inverse(), sqrt=factored.inverse_sqrt_apply(data, M),
        mean=plain.posterior_mean(Ztr), cov=plain.posterior_covariance(),
    )


@settings(max_examples=8, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 7), min_size=2, max_size=6),
    q=st.integers(1, 3),
    seed=st.integers(0, 10_000),
    duplicate=st.booleans(),
    singular=st.booleans(),
)
def test_operator_equals_dense_algebra(sizes, q, seed, duplicate, singular):
    """Unbalanced clusters, clusters with m_i < q, a rank-deficient Z_i (a duplicated column) and
    a singular Ψ: log|V|, rᵀV⁻¹r, V⁻¹M (both routes), tr V_i⁻¹, V^{-1/2} (which squares to V⁻¹)
    and the posterior moments of b_i equal their dense N×N definitions."""
    rng = np.random.default_rng(seed)
    n_obs = sum(sizes)
    groups = np.repeat(np.arange(len(sizes)), sizes)
    Z = rng.normal(size=(n_obs, q))
    if duplicate and q > 1:
        Z[groups == 0, 1] = 2.0 * Z[groups == 0, 0]
    data = jaxlmm.LMMData.from_arrays(rng.normal(size=(n_obs, 2)), rng.normal(size=n_obs), groups, Z)
    L = np.tril(rng.normal(size=(q, q)))
    if singular:
        L[:, 0] = 0.0  # Ψ = L Lᵀ of rank q − 1 (zero when q = 1): a variance component at 0
    psi, sigma2 = L @ L.T, float(rng.uniform(0.2, 2.0))
    M, r = rng.normal(size=(n_obs, 3)), rng.normal(size=n_obs)
    out = {k: np.asarray(v) for k, v in _everything(data, jnp.asarray(psi), sigma2, jnp.asarray(L),
                                                      jnp.asarray(M), jnp.asarray(r)).items()}
    Zs = np.asarray(data.Z)  # rows sorted by cluster, like M and r here
    V, blocks = _dense_blocks(np.asarray(data.cluster), Zs, psi, sigma2)
    V_inv = np.linalg.inv(V)
    np.testing.assert_allclose(out["log_det"], np.linalg.slogdet(V)[1], rtol=1e-10)
    np.testing.assert_allclose(out["quadratic"], r @ V_inv @ r, rtol=1e-9)
    np.testing.assert_allclose(out["inverse"], V_inv @ M, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(out["inverse_eigen"], V_inv @ M, rtol=1e-8, atol=1e-10)
    trace = [np.trace(V_inv[np.ix_(idx, idx)]) for idx in blocks]
    np.testing.assert_allclose(out["trace"], trace, rtol=1e-10)
    np.testing.assert_allclose(out["trace_eigen"], trace, rtol=1e-10)
    w, E = np.linalg.eigh(V)
    np.testing.assert_allclose(out["sqrt"], E @ np.diag(w**-0.5) @ E.T @ M, rtol=1e-8, atol=1e-10)
    for i, idx in enumerate(blocks):
        Zi_V = Zs[idx].T @ V_inv[np.ix_(idx, idx)]
        np.testing.assert_allclose(out["mean"][i], psi @ Zi_V @ r[idx], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(out["cov"][i], psi - psi @ Zi_V @ Zs[idx] @ psi, rtol=1e-8, atol=1e-10)


def test_proxy_covariance_is_the_isotropic_operator():
    """Σ_a from each cluster's SVD equals the general operator with Ψ = aI, σ² = 1 (its eigh route),
    and stays exact where the LU route would lose digits (a = 1e12: tr Σ_a^{-1} → Σ(m_i − r_i))."""
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(4), [1, 3, 5, 2])
    data = jaxlmm.LMMData.from_arrays(rng.normal(size=(11, 2)), rng.normal(size=11), groups,
                                      rng.normal(size=(11, 2)))
    M = jnp.asarray(rng.normal(size=(11, 3)))
    a = 2.5
    general = ClusterCovariance(cluster_cross(data, data.Z, data.Z), data.cluster_sizes.astype(float),
                                a * jnp.eye(2), jnp.asarray(1.0), jnp.sqrt(a) * jnp.eye(2)).with_eigen(data)
    proxy = proxy_covariance(data, a, cluster_cross(data, data.Z, data.Z))
    np.testing.assert_allclose(proxy.inverse_sqrt_apply(data, M), general.inverse_sqrt_apply(data, M), atol=1e-12)
    np.testing.assert_allclose(proxy.trace_inverse(), general.trace_inverse(), rtol=1e-12)
    # m_i − rank Z_i per cluster: 0, 1, 3, 0.
    np.testing.assert_allclose(proxy_covariance(data, 1e12).trace_inverse(), [0, 1, 3, 0], atol=1e-10)


@eqx.filter_jit
def _isotropic(data, tau2, sigma2, r, M):
    covariance = isotropic_covariance(data, tau2, sigma2)
    Utr, rr = cluster_sum(data, data.z_basis * r[:, None]), cluster_sum(data, r * r)
    return covariance.log_det(), covariance.projected_quadratic(Utr, rr), covariance.inverse_sqrt_apply(data, M)


@settings(max_examples=8, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 7), min_size=2, max_size=6),
    q=st.integers(1, 3),
    seed=st.integers(0, 10_000),
    tau2=st.sampled_from([0.0, 1e-3, 0.7, 40.0]),
    sigma2=st.sampled_from([0.05, 1.0, 9.0]),
)
def test_isotropic_operator_equals_dense_algebra(sizes, q, seed, tau2, sigma2):
    """Ψ = τ²I through the eigenpairs of each cluster's SVD (no factorisation): log|V|, rᵀV⁻¹r
    and V^{-1/2}M equal the dense N×N algebra, on clusters smaller than q and a variance at 0."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(len(sizes)), sizes)
    n = len(groups)
    data = jaxlmm.LMMData.from_arrays(rng.normal(size=(n, 2)), rng.normal(size=n), groups, rng.normal(size=(n, q)))
    r, M = rng.normal(size=n), rng.normal(size=(n, 2))
    log_det, quadratic, sqrt = _isotropic(data, tau2, sigma2, jnp.asarray(r), jnp.asarray(M))
    V, _ = _dense_blocks(np.asarray(data.cluster), np.asarray(data.Z), tau2 * np.eye(q), sigma2)
    np.testing.assert_allclose(log_det, np.linalg.slogdet(V)[1], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(quadratic, r @ np.linalg.solve(V, r), rtol=1e-9)
    w, E = np.linalg.eigh(V)
    np.testing.assert_allclose(sqrt, E @ np.diag(w**-0.5) @ E.T @ M, rtol=1e-8, atol=1e-10)


@settings(max_examples=20, deadline=None)
@given(q=st.integers(1, 4), batch=st.integers(1, 5), k=st.integers(1, 3), seed=st.integers(0, 10_000),
       written_out=st.sampled_from([True, False, None]))
def test_small_factorisations_equal_lapack(q, batch, k, seed, written_out):
    """The written-out Cholesky factor and triangular solves (forced, or chosen by size: LAPACK
    for these small batches) equal NumPy's on random SPD batches, transposed solves included; a
    non-PD matrix gives NaN."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(batch, q, q))
    M = A @ np.swapaxes(A, 1, 2) + 0.05 * np.eye(q)
    B = rng.normal(size=(batch, q, k))
    C = small_cholesky(jnp.asarray(M), written_out)
    np.testing.assert_allclose(C, np.linalg.cholesky(M), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(small_triangular_solve(C, jnp.asarray(B), written_out=written_out),
                               np.linalg.solve(C, B), rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(small_triangular_solve(C, jnp.asarray(B), transpose=True, written_out=written_out),
                               np.linalg.solve(np.swapaxes(C, 1, 2), B), rtol=1e-8, atol=1e-9)
    assert np.isnan(small_cholesky(jnp.asarray(-M), written_out)).any()


def test_written_out_route_is_chosen_by_size():
    from jaxlmm._covariance import SMALL_Q, WRITTEN_OUT_FROM, _written_out

    assert _written_out(jnp.zeros((WRITTEN_OUT_FROM, SMALL_Q, SMALL_Q)), None)
    assert not _written_out(jnp.zeros((WRITTEN_OUT_FROM - 1, SMALL_Q, SMALL_Q)), None)
    assert not _written_out(jnp.zeros((WRITTEN_OUT_FROM, SMALL_Q + 1, SMALL_Q + 1)), None)


@pytest.mark.timeout(120)
def test_many_clusters_gradient_does_not_deadlock():
    """jaxlib 0.10's batched LAPACK kernels deadlocked (4 runs in 6) on a 2-core machine for the
    gradient of two chained triangular solves over 50,000 clusters; the operator's written-out
    q×q algebra has no such kernel."""
    rng = np.random.default_rng(0)
    n, q = 50_000, 2
    Z = rng.normal(size=(n, 4, q))
    ZtZ = jnp.asarray(np.einsum("nia,nib->nab", Z, Z))
    ZtM = jnp.asarray(rng.normal(size=(n, q, 2)))

    def total(theta):
        L = jnp.array([[theta[0], 0.0], [theta[1], theta[2]]])
        operator = ClusterCovariance(ZtZ, jnp.full(n, 4.0), L @ L.T, jnp.ones(()), L)
        return jnp.sum(operator.posterior_mean(ZtM)) + operator.log_det()

    gradient = jax.jit(jax.grad(total))(jnp.array([1.0, 0.2, 0.8]))
    assert np.all(np.isfinite(np.asarray(gradient)))
