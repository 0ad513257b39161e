"""Derivatives of solutions (implicit differentiation) against central finite differences."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlmm


def _design(kind):
    rng = np.random.default_rng({"intercept": 0, "slope": 1, "wide": 2}[kind])
    if kind == "intercept":  # balanced, random intercept, p < N
        sizes, p, q = [6] * 15, 20, 1
    elif kind == "slope":  # unbalanced clusters, random intercept and slope
        sizes, p, q = list(rng.integers(3, 10, size=18)), 15, 2
    else:  # p > N
        sizes, p, q = [4] * 12, 80, 1
    n_obs = int(np.sum(sizes))
    groups = np.repeat(np.arange(len(sizes)), sizes)
    X = rng.normal(size=(n_obs, p))
    Z = np.ones((n_obs, 1)) if q == 1 else np.column_stack([np.ones(n_obs), rng.normal(size=n_obs)])
    b = rng.normal(size=(len(sizes), q))[groups]
    y = 2 * X[:, 0] - 1.5 * X[:, 1] + X[:, 2] + np.sum(Z * b, axis=1) + rng.normal(size=n_obs)
    return jaxlmm.LMMData.from_arrays(X, y, groups, Z)


DESIGNS = {kind: _design(kind) for kind in ("intercept", "slope", "wide")}
SOLVER = jaxlmm.CoordinateDescent(rtol=1e-13)


def _objective(data, direction):
    @jax.jit
    def f(a, lam, y):
        fit = jaxlmm.quasi_lasso_core(eqx.tree_at(lambda d: d.y, data, y), a, lam, SOLVER)
        return jnp.dot(fit.coef, direction) + fit.intercept

    return f


def _central(f, x, h):
    return (f(x + h) - f(x - h)) / (2 * h)


def _five_point(f, x, h):
    """The fourth-order central difference: steps large enough to rise above an iterative
    solver's stopping noise in f, with a truncation error O(h⁴) still far below the tolerance."""
    return (8 * (f(x + h) - f(x - h)) - (f(x + 2 * h) - f(x - 2 * h))) / (12 * h)


@pytest.mark.parametrize("kind", sorted(DESIGNS))
def test_gradients_match_central_differences(kind):
    data = DESIGNS[kind]
    p = data.n_features
    direction = jnp.asarray(np.random.default_rng(7).normal(size=p))
    f = _objective(data, direction)
    a, lam = 0.8, 0.05
    g_a, g_lam, g_y = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(a, lam, data.y)
    fd_a = _central(lambda x: f(x, lam, data.y), a, 1e-6)
    fd_lam = _central(lambda x: f(a, x, data.y), lam, 1e-7)
    assert float(g_a) == pytest.approx(float(fd_a), rel=1e-5, abs=1e-9)
    assert float(g_lam) == pytest.approx(float(fd_lam), rel=1e-5)
    for t in (0, 7, data.n_obs - 1):
        e = jnp.zeros(data.n_obs).at[t].set(1.0)
        fd = _central(lambda s: f(a, lam, data.y + s * e), 0.0, 1e-6)
        assert float(g_y[t]) == pytest.approx(float(fd), rel=1e-5, abs=1e-9)
    # Forward mode gives the same derivative.
    assert float(jax.jvp(lambda x: f(a, x, data.y), (lam,), (1.0,))[1]) == pytest.approx(float(g_lam), rel=1e-8)


def test_derivative_at_a_coefficient_about_to_enter():
    """Just above λ_max nothing is selected and β̂ does not move (derivative 0); just below, one
    coefficient has entered and the derivative is that of the new support. At λ_max itself β̂ has
    a kink: the derivative returned is the one-sided derivative of the support held at the time."""
    data = DESIGNS["intercept"]
    fn, args = jaxlmm.losses.quasi_likelihood(data, 0.8, intercept=True)
    unpen = jnp.zeros(data.n_features + 1, bool).at[0].set(True)
    lam_max, _ = jaxlmm.lambda_max(fn, args, SOLVER, jnp.zeros(data.n_features + 1), None, unpen)
    direction = jnp.ones(data.n_features)
    f = _objective(data, direction)
    for factor, active in ((1.0 + 1e-4, 0), (1.0 - 1e-4, 1)):
        lam = float(lam_max) * factor
        coef = jaxlmm.quasi_lasso_core(data, 0.8, lam, SOLVER).coef
        assert np.count_nonzero(np.asarray(coef)) == active
        g = float(jax.grad(f, argnums=1)(0.8, lam, data.y))
        fd = float(_central(lambda x: f(0.8, x, data.y), lam, lam * 1e-7))
        assert g == pytest.approx(fd, rel=1e-5, abs=1e-9)
        assert (g == 0.0) == (active == 0)


@pytest.mark.parametrize("name", ["ElasticNet", "MCP", "SCAD", "GroupLasso"])
def test_gradient_through_other_penalties(name):
    data = DESIGNS["intercept"]
    p = data.n_features
    fn, args = jaxlmm.losses.quasi_likelihood(data, 0.8)
    make = {
        "ElasticNet": lambda lam: jaxlmm.ElasticNet(lam, 0.5),
        "MCP": lambda lam: jaxlmm.MCP(lam, 3.0),
        "SCAD": lambda lam: jaxlmm.SCAD(lam, 3.7),
        "GroupLasso": lambda lam: jaxlmm.GroupLasso(lam, jnp.arange(p) // 4, p // 4),
    }[name]
    # FISTA (the group Lasso's solver) stops at a KKT residual of 1e-10, not 1e-13: looser match.
    solver, rel = (jaxlmm.ProximalGradient(rtol=1e-10), 1e-4) if name == "GroupLasso" else (SOLVER, 1e-5)

    @jax.jit
    def f(lam):
        return jnp.sum(jaxlmm.solve(fn, make(lam), solver, jnp.zeros(p), args).value ** 2)

    lam = 0.08
    assert float(jax.jit(jax.grad(f))(lam)) == pytest.approx(float(_central(f, lam, 1e-6)), rel=rel)


def test_differentiating_through_iterations_agrees_and_vmap_works():
    data = DESIGNS["slope"]
    fn, args = jaxlmm.losses.quasi_likelihood(data, 0.8)
    p = data.n_features

    def f(lam, how):
        return jnp.sum(jaxlmm.solve(fn, jaxlmm.L1(lam), SOLVER, jnp.zeros(p), args, differentiate=how).value ** 2)

    grad = jax.jit(jax.grad(f), static_argnums=1)
    implicit = float(grad(0.05, "implicit"))
    assert float(grad(0.05, "iterations")) == pytest.approx(implicit, rel=1e-3)
    lams = jnp.asarray([0.03, 0.05, 0.1])
    batched = jax.jit(jax.vmap(lambda lam: grad(lam, "implicit")))(lams)
    np.testing.assert_allclose(batched, [float(grad(lam, "implicit")) for lam in lams], rtol=1e-9)


def test_influence_is_the_jacobian_of_the_fit():
    data = DESIGNS["intercept"]
    fit = jaxlmm.fit_quasi(data, a=0.8, lam=0.05, progress=False)
    inf = jaxlmm.influence(fit, data)
    assert inf.observation.shape == (data.n_obs, data.n_features) and inf.cluster.shape == (15, data.n_features)
    # Dense reference on the support: ∂β̂_S/∂y = (X̃_Sᵀ X̃_S)⁻¹ X̃_Sᵀ Σ_a^{-1/2}, X̃ = Σ_a^{-1/2}[1, X].
    from helpers import dense_sigma

    X, y = np.asarray(data.X), np.asarray(data.y)
    groups = np.asarray(data.cluster)
    sigma = dense_sigma(list(groups), np.asarray(data.Z), 0.8)
    w, V = np.linalg.eigh(sigma)
    root = V @ np.diag(w**-0.5) @ V.T
    S = np.concatenate([[0], fit.support + 1])
    design = root @ np.column_stack([np.ones(len(y)), X])[:, S]
    dense = np.linalg.solve(design.T @ design, design.T @ root)[1:]
    sorted_rows = inf.observation[np.asarray(data.order)]  # back to the sorted row order of `data`
    np.testing.assert_allclose(sorted_rows[:, fit.support].T, dense, atol=1e-7)
    assert np.all(sorted_rows[:, np.setdiff1d(np.arange(data.n_features), fit.support)] == 0)


def _small_lmm():
    rng = np.random.default_rng(11)
    n, m, p = 15, 6, 8
    groups = np.repeat(np.arange(n), m)
    X = rng.normal(size=(n * m, p))
    y = 2 * X[:, 0] - 1.5 * X[:, 1] + np.repeat(rng.normal(size=n), m) + rng.normal(size=n * m)
    return jaxlmm.LMMData.from_arrays(X, y, groups)


CGD = jaxlmm.MixedModelCGD(tol=1e-13, max_steps=5000, beta_solver=jaxlmm.CoordinateDescent(rtol=1e-13))
CORES = {
    # (core at (λ, y), λ, finite-difference steps in λ and in y)
    # CGD's and ECM's stopping rules leave f accurate to only ~1e-9, which moves with the jaxlib
    # release (a 1e-4 step was 2e-4 off under one and exact under another): fourth-order
    # differences with steps of 1e-2 keep that noise and the truncation error below 1e-6.
    "lmmlasso": (lambda data, lam: jaxlmm.lmmlasso_core(data, lam, solver=CGD), 5.0, 1e-2, 1e-2),
    "shel": (lambda data, lam: jaxlmm.shel_core(data, lam, None, SOLVER), 0.05, 1e-7, 1e-5),
    "eb_ridge": (lambda data, lam: jaxlmm.eb_ridge_core(data, lam, 0.5, jnp.eye(1), tol=1e-16), 1.0, 1e-2, 1e-2),
}


@pytest.mark.parametrize("name", sorted(CORES))
def test_method_cores_differentiate_in_lambda_and_y(name):
    data = _small_lmm()
    core, lam, h, h_y = CORES[name]
    direction = jnp.asarray(np.random.default_rng(2).normal(size=data.n_features))

    def with_status(lam, y):
        fit = core(eqx.tree_at(lambda d: d.y, data, y), lam)
        variance = 0.0 if fit.sigma2 is None else fit.sigma2
        return jnp.dot(fit.coef, direction) + fit.intercept + variance, fit.converged

    f = jax.jit(lambda lam, y: with_status(lam, y)[0])
    # The gradient program also reports convergence: one compilation fewer than a separate check.
    (g_lam, g_y), converged = jax.jit(jax.grad(with_status, argnums=(0, 1), has_aux=True))(lam, data.y)
    assert bool(converged)
    difference = _central if name == "shel" else _five_point
    assert float(g_lam) == pytest.approx(float(difference(lambda x: f(x, data.y), lam, h)), rel=1e-5)
    for t in (3, 40):
        e = jnp.zeros(data.n_obs).at[t].set(1.0)
        assert float(g_y[t]) == pytest.approx(float(difference(lambda s: f(lam, data.y + s * e), 0.0, h_y)), rel=1e-5)


def test_eb_core_differentiates_in_the_prior_weight():
    data = _small_lmm()

    @jax.jit
    def f(b):
        fit = jaxlmm.eb_ridge_core(data, 1.0, b, jnp.eye(1), tol=1e-16)
        return fit.psi[0, 0] + fit.sigma2

    assert float(jax.grad(f)(0.5)) == pytest.approx(float(_central(f, 0.5, 1e-5)), rel=1e-5)


def test_gradient_tuning_descends_the_cv_error():
    data = DESIGNS["intercept"]
    tuned = jaxlmm.tune_by_gradient(data, a0=1.0, n_folds=3, steps=12, learning_rate=0.2, progress=False)
    assert tuned.history.shape == (12, 3) and np.all(np.isfinite(tuned.history))
    # The best point visited beats the start by a clear margin (λ0 = 0.1 λ_max over-shrinks here).
    assert tuned.history[:, 2].min() < 0.98 * tuned.history[0, 2]
    assert tuned.fit.a == pytest.approx(tuned.a) and tuned.fit.lam == pytest.approx(tuned.lam)
    assert tuned.n_solves == 36
    with pytest.raises(ValueError, match="`a0` must be > 0"):
        jaxlmm.tune_by_gradient(data, a0=0.0)


def test_best_subset_differentiates_its_refit_on_the_chosen_support():
    """`quasi_best_subset_core` is `fit_quasi(k=...)`'s refit on its support, and its derivative
    in a and y (the support held) equals central differences."""
    data = DESIGNS["intercept"]
    fit = jaxlmm.fit_quasi(data, a=0.8, k=3, progress=False, variance=False)
    support = tuple(int(j) for j in fit.support)
    core = jaxlmm.quasi_best_subset_core(data, 0.8, support)
    np.testing.assert_allclose(core.coef, fit.coef, atol=1e-8)
    assert float(core.intercept) == pytest.approx(fit.intercept, abs=1e-8)

    direction = jnp.asarray(np.random.default_rng(3).normal(size=data.n_features))

    @jax.jit
    def f(a, y):
        refit = jaxlmm.quasi_best_subset_core(eqx.tree_at(lambda d: d.y, data, y), a, support)
        return refit.coef @ direction + refit.intercept

    g_a, g_y = jax.grad(f, argnums=(0, 1))(0.8, data.y)
    assert float(g_a) == pytest.approx(float(_central(lambda x: f(x, data.y), 0.8, 1e-6)), rel=1e-6)
    e = jnp.zeros(data.n_obs).at[11].set(1.0)
    assert float(g_y[11]) == pytest.approx(float(_central(lambda s: f(0.8, data.y + s * e), 0.0, 1e-6)), rel=1e-6)
