"""Penalties: every prox against its definition (hypothesis), and every penalty through `solve`,
`solve_path` and the cluster cross-validation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import jaxlmm
from jaxlmm._select import cluster_folds, cross_validated_path, training_weights
from jaxlmm.losses import quasi_likelihood

finite = st.floats(-5.0, 5.0, allow_nan=False)
SEPARABLE = {
    "L1": lambda lam: jaxlmm.L1(lam),
    "ElasticNet": lambda lam: jaxlmm.ElasticNet(lam, 0.3),
    "MCP": lambda lam: jaxlmm.MCP(lam, 3.0),
    "SCAD": lambda lam: jaxlmm.SCAD(lam, 3.7),
}


GRID = jnp.linspace(-6.0, 6.0, 2401)


@functools.cache
def _prox_against_grid(name):
    """One compiled program per penalty: its prox at z, the prox objective ½(b − z)² + step·P(b)
    there and on a dense grid, and the KKT residual of the prox's optimality condition."""

    @jax.jit
    def run(z, lam, step):
        penalty = SEPARABLE[name](lam)
        out = penalty.prox(z[None], step)[0]

        def objective(b):
            return 0.5 * (b - z) ** 2 + step * jax.vmap(lambda v: penalty(v[None]))(b)

        kkt = penalty.kkt_residual(out[None], ((out - z) / step)[None])[0]
        return out, objective(out[None])[0], objective(GRID), kkt

    return run


@pytest.mark.parametrize("name", sorted(SEPARABLE))
@settings(max_examples=30, deadline=None)
@given(z=finite, lam=st.floats(0.0, 2.0), step=st.floats(0.05, 0.9))
def test_separable_prox_minimises_its_definition(name, z, lam, step):
    """prox(z) = argmin_b ½(b − z)² + step·P(b): compared with a dense grid (the problem is
    strictly convex for step < γ (MCP) and step < a − 1 (SCAD), which the draws respect)."""
    out, at_out, on_grid, kkt = _prox_against_grid(name)(jnp.asarray(z), jnp.asarray(lam), jnp.asarray(step))
    best = float(GRID[jnp.argmin(on_grid)])
    assert float(at_out) <= float(jnp.min(on_grid)) + 1e-12
    assert abs(float(out) - best) <= 6e-3
    # The prox's optimality condition is the KKT residual of P at (out, (out − z)/step).
    assert float(kkt) <= 1e-9


@settings(max_examples=30, deadline=None)
@given(z=st.lists(finite, min_size=6, max_size=6), lam=st.floats(0.0, 2.0), step=st.floats(0.05, 2.0))
def test_group_prox_satisfies_its_optimality_conditions(z, lam, step):
    groups = jnp.asarray([0, 0, 1, 1, 1, -1])
    penalty = jaxlmm.GroupLasso(jnp.asarray(lam), groups, 2)
    z = jnp.asarray(z)
    out = penalty.prox(z, step)
    weights = np.sqrt([2.0, 3.0])
    for g, members in enumerate([[0, 1], [2, 3, 4]]):
        zg, xg = np.asarray(z)[members], np.asarray(out)[members]
        level = step * lam * weights[g]
        if np.linalg.norm(zg) <= level:
            np.testing.assert_allclose(xg, 0.0, atol=1e-12)
        else:  # block soft-thresholding: x_g = (1 − level/‖z_g‖) z_g
            np.testing.assert_allclose(xg, (1 - level / np.linalg.norm(zg)) * zg, rtol=1e-10, atol=1e-12)
    assert float(out[5]) == pytest.approx(float(z[5]))  # unpenalised
    assert float(jnp.max(penalty.kkt_residual(out, (out - z) / step))) <= 1e-9


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(3)
    n, m, p = 16, 6, 12
    X = rng.normal(size=(n * m, p))
    y = 1.5 * X[:, 0] - X[:, 1] + 0.8 * X[:, 2] + np.repeat(rng.normal(size=n), m) + rng.normal(size=n * m)
    data = jaxlmm.LMMData.from_arrays(X, y, np.repeat(np.arange(n), m))
    fn, args = quasi_likelihood(data, 1.0)
    return data, fn, args


PENALTIES = {
    "L1": (jaxlmm.L1(0.1), jaxlmm.CoordinateDescent(rtol=1e-10)),
    "ElasticNet": (jaxlmm.ElasticNet(0.1, 0.5), jaxlmm.CoordinateDescent(rtol=1e-10)),
    "MCP": (jaxlmm.MCP(0.1, 3.0), jaxlmm.CoordinateDescent(rtol=1e-10)),
    "SCAD": (jaxlmm.SCAD(0.1, 3.7), jaxlmm.CoordinateDescent(rtol=1e-10)),
    "GroupLasso": (jaxlmm.GroupLasso(0.1, jnp.arange(12) // 3, 4), jaxlmm.ProximalGradient(rtol=1e-10)),
}


@pytest.mark.parametrize("name", sorted(PENALTIES))
def test_every_penalty_through_solve_path_and_cv(problem, name):
    data, fn, args = problem
    penalty, solver = PENALTIES[name]
    p = args.X.shape[1]
    sol = jaxlmm.solve(fn, penalty, solver, jnp.zeros(p), args)
    assert float(sol.kkt_residual) <= 1e-6
    # The other solver agrees where it applies (FISTA solves every penalty).
    other = jaxlmm.solve(fn, penalty, jaxlmm.ProximalGradient(rtol=1e-10), jnp.zeros(p), args)
    np.testing.assert_allclose(sol.value, other.value, atol=1e-6)
    path = jaxlmm.solve_path(fn, args, jnp.geomspace(1.0, 0.05, 8), solver, jnp.zeros(p), relative=True,
                             penalty=penalty)
    assert np.all(np.asarray(path.converged))
    assert np.count_nonzero(path.coef[0]) == 0 and np.count_nonzero(path.coef[-1]) >= 3
    # λ_max is where the first coefficient (or group) enters.
    just_below = penalty.with_lam(path.lambda_max * 0.98)
    assert np.count_nonzero(jaxlmm.solve(fn, just_below, solver, jnp.zeros(p), args).value) >= 1
    folds = cluster_folds(data.n_clusters, 4, 0)
    train = training_weights(folds, 4, args.X.dtype)

    def fold_problem(cluster_weights):
        return quasi_likelihood(data, 1.0, cluster_weights)

    def score(fargs, coef, test_w):
        return jnp.sum(test_w[data.cluster][:, None] * (fargs.y[:, None] - fargs.X @ coef.T) ** 2, axis=0)

    full, sse, fitted, codes = cross_validated_path(fold_problem, jnp.ones(data.n_clusters), train, 1.0 - train,
                                        jnp.geomspace(1.0, 0.05, 8), solver, jnp.zeros(p), score, relative=True,
                                        penalty=penalty)
    # A fold's error is finite where it fitted λ (at least the first 5) and NaN past its early stop.
    sse, fitted = np.asarray(sse), np.asarray(fitted)
    assert sse.shape == (4, 8) and fitted[:, :5].all()
    assert np.all(np.isfinite(sse[fitted])) and np.all(np.isnan(sse[~fitted]))
    from jaxlmm._solution import result_names

    assert set(result_names(codes).ravel()) == {"successful"}  # every fold's fit succeeded at every λ


def test_coordinate_descent_names_what_it_needs(problem):
    _, fn, args = problem
    with pytest.raises(ValueError, match="needs a separable penalty"):
        jaxlmm.solve(fn, PENALTIES["GroupLasso"][0], jaxlmm.CoordinateDescent(), jnp.zeros(12), args)
    with pytest.raises(ValueError, match="least_squares_form"):
        jaxlmm.solve(lambda b, a: jnp.sum(b**2), jaxlmm.L1(0.1), jaxlmm.CoordinateDescent(), jnp.zeros(12), args)


def test_custom_penalty_in_ten_lines(problem):
    """The README's example: a user's penalty (here the Lasso written again) solves like L1."""

    class MyLasso(jaxlmm.AbstractPenalty):
        lam: jax.Array

        def __call__(self, beta):
            return self.lam * jnp.sum(jnp.abs(beta))

        def prox(self, beta, step):
            return jnp.sign(beta) * jnp.maximum(jnp.abs(beta) - step * self.lam, 0.0)

        def coordinate_prox(self, z, step, k):
            return self.prox(z, step)

        def kkt_residual(self, beta, grad):
            at_zero = jnp.maximum(jnp.abs(grad) - self.lam, 0.0)
            return jnp.where(beta == 0, at_zero, jnp.abs(grad + self.lam * jnp.sign(beta)))

        def thresholds(self):
            return self.lam

    _, fn, args = problem
    mine = jaxlmm.solve(fn, MyLasso(jnp.asarray(0.1)), jaxlmm.CoordinateDescent(rtol=1e-10), jnp.zeros(12), args)
    ours = jaxlmm.solve(fn, jaxlmm.L1(0.1), jaxlmm.CoordinateDescent(rtol=1e-10), jnp.zeros(12), args)
    np.testing.assert_allclose(mine.value, ours.value, atol=1e-12)


def test_dropped_coefficient_at_zero_lambda():
    """w_k = inf keeps β_k at 0 for every λ, λ = 0 included (0·inf would be NaN), and the
    penalty's value and its gradient in λ stay finite there."""
    weights = jnp.array([1.0, jnp.inf, 2.0])
    pen = jaxlmm.L1(jnp.asarray(0.0), weights)
    np.testing.assert_array_equal(pen.levels(), [0.0, np.inf, 0.0])
    np.testing.assert_array_equal(pen.prox(jnp.array([1.0, 1.0, -1.0]), 1.0), [1.0, 0.0, -1.0])
    beta = jnp.array([0.5, 0.0, -1.0])

    def value(lam):
        return jaxlmm.L1(lam, weights)(beta)

    np.testing.assert_allclose(value(0.3), 0.3 * 0.5 + 0.6 * 1.0)
    np.testing.assert_allclose(jax.grad(value)(0.0), 2.5)
