import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import dense_inverse_sqrt, dense_sigma, make_data
from hypothesis import given, settings, strategies as st

import jaxlmm


@pytest.mark.parametrize("a", [0.0, 0.3, 2.5, 50.0])
def test_whitening_equals_dense_eigh(a):
    # Clusters of 1 and 2 rows have fewer rows than q = 3 (rank-deficient Z_i).
    data, (X, y, groups, Z) = make_data(0, [1, 2, 7, 3, 12, 2, 5], p=5, q=3)
    L = dense_inverse_sqrt(dense_sigma(groups, Z, a))
    out = jaxlmm.whiten(data, a)
    np.testing.assert_allclose(out.X, L @ X, atol=1e-10, rtol=0)
    np.testing.assert_allclose(out.y, L @ y, atol=1e-10, rtol=0)
    S = dense_sigma(groups, Z, a)
    np.testing.assert_allclose(out.effective_sample_size, np.trace(np.linalg.inv(S)), rtol=1e-12)


def _whitening_operator(data, a):
    """Σ_a^{-1/2} as a dense matrix (caller's order) by whitening the identity: test-only."""
    n = data.n_obs
    eye_sorted = jnp.eye(n)[data.order]
    cols = eqx.filter_jit(jaxlmm._whiten.inverse_sqrt_apply)(data, a, eye_sorted)
    return np.asarray(data.to_caller_order(cols))


def test_whitener_is_symmetric_and_whitens():
    data, (X, y, groups, Z) = make_data(1, [4, 1, 6, 3], p=2, q=2)
    a = 1.7
    L = _whitening_operator(data, a)
    S = dense_sigma(groups, Z, a)
    np.testing.assert_allclose(L @ S @ L.T, np.eye(data.n_obs), atol=1e-10)
    np.testing.assert_allclose(L, L.T, atol=1e-12)


def test_effective_sample_size_limits():
    data, (X, y, groups, Z) = make_data(2, [5, 6, 2], p=2, q=2)
    assert float(jaxlmm.effective_sample_size(data, 0.0)) == pytest.approx(13.0)
    # a → ∞: Σ_i (m_i − rank Z_i) = (5−2) + (6−2) + (2−2)
    assert float(jaxlmm.effective_sample_size(data, 1e12)) == pytest.approx(7.0, abs=1e-9)


def test_differentiable_in_a():
    data, _ = make_data(3, [3, 5, 4], p=3, q=2)

    def summary(a):
        w = jaxlmm.whiten(data, a)
        return jnp.sum(w.X**2) + jnp.sum(w.y) + w.effective_sample_size

    a, h = 0.8, 1e-6
    fd = (summary(a + h) - summary(a - h)) / (2 * h)
    np.testing.assert_allclose(jax.grad(summary)(a), fd, rtol=1e-6)


def test_vmap_and_jit_over_a_equal_loop():
    data, _ = make_data(4, [2, 6, 3, 4], p=4, q=2)
    grid = jnp.array([0.0, 0.5, 3.0, 20.0])
    batched = jax.vmap(lambda a: jaxlmm.whiten(data, a))(grid)
    jitted = jax.jit(lambda a: jaxlmm.whiten(data, a))
    for i, a in enumerate(grid):
        loop = jaxlmm.whiten(data, float(a))
        np.testing.assert_allclose(batched.X[i], loop.X, atol=1e-13)
        np.testing.assert_allclose(jitted(a).y, loop.y, atol=1e-13)


def test_negative_a_raises():
    data, _ = make_data(5, [2, 3], p=2, q=1)
    with pytest.raises(ValueError, match="`a` must be a finite scalar"):
        jaxlmm.whiten(data, -1.0)


@settings(max_examples=10, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=2, max_size=7),
    q=st.integers(1, 4),
    a=st.floats(0.0, 30.0),
    seed=st.integers(0, 10_000),
    duplicate=st.booleans(),
)
def test_property_whitening_identities(sizes, q, a, seed, duplicate):
    """For random unbalanced clusters (some with m_i < q, some with rank-deficient Z_i):
    the SVD formula equals dense eigh, L Σ_a Lᵀ = I, and tr(Σ_a^{-1}) matches."""
    rng = np.random.default_rng(seed)
    n_obs = sum(sizes)
    groups = np.repeat(np.arange(len(sizes)), sizes)[rng.permutation(n_obs)]
    Z = rng.normal(size=(n_obs, q))
    if duplicate and q > 1:
        # Make Z_i rank-deficient in the first cluster while Z keeps full rank overall.
        first = groups == 0
        Z[first, 1] = 2.0 * Z[first, 0]
    X = rng.normal(size=(n_obs, 3))
    y = rng.normal(size=n_obs)
    if np.linalg.matrix_rank(Z) < q:
        return
    data = jaxlmm.LMMData.from_arrays(X, y, groups, Z)
    S = dense_sigma(groups, Z, a)
    L = dense_inverse_sqrt(S)
    out = jaxlmm.whiten(data, a)
    np.testing.assert_allclose(out.X, L @ X, atol=1e-9)
    np.testing.assert_allclose(out.effective_sample_size, np.trace(np.linalg.inv(S)), rtol=1e-10)
    Lj = _whitening_operator(data, a)
    np.testing.assert_allclose(Lj @ S @ Lj.T, np.eye(n_obs), atol=1e-9)
