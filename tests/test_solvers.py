import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import make_data
from hypothesis import given, settings, strategies as st
from sklearn.linear_model import Lasso

import jaxlmm
from jaxlmm.losses import quasi_likelihood

SOLVERS = [jaxlmm.ProximalGradient(rtol=1e-12), jaxlmm.CoordinateDescent(rtol=1e-12)]


@pytest.fixture(scope="module")
def problem():
    data, _ = make_data(0, [3, 9, 4, 7, 2, 8, 5, 6, 4, 10], p=40, q=2)
    a = 1.3
    fn, args = quasi_likelihood(data, a)
    w = jaxlmm.whiten(data, a)
    return data, a, fn, args, np.asarray(w.X), np.asarray(w.y), float(w.effective_sample_size)


def sklearn_lasso(X, y, alpha, **kw):
    return Lasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=1_000_000, **kw).fit(X, y).coef_


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("lam", [0.02, 0.1, 0.4])
def test_lasso_equals_sklearn_on_dense_whitened_data(problem, solver, lam):
    data, a, fn, args, Xa, ya, tr = problem
    sol = jaxlmm.solve(fn, jaxlmm.L1(lam), solver, jnp.zeros(data.n_features), args)
    # ours: ‖y_a − X_a β‖²/(2 tr) + λ‖β‖₁ ; sklearn: ‖·‖²/(2N) + α‖β‖₁  ⇒  α = λ tr / N
    expected = sklearn_lasso(Xa, ya, lam * tr / data.n_obs)
    np.testing.assert_allclose(sol.value, expected, atol=1e-6)
    assert sol.converged and float(sol.kkt_residual) < 1e-9
    # KKT, checked independently with the dense gradient
    grad = -Xa.T @ (ya - Xa @ np.asarray(sol.value)) / tr
    beta = np.asarray(sol.value)
    on = beta != 0
    np.testing.assert_allclose(grad[on], -lam * np.sign(beta[on]), atol=1e-8)
    assert np.all(np.abs(grad[~on]) <= lam + 1e-8)


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
def test_weights_and_unpenalized_match_rescaled_sklearn(problem, solver):
    """Weighted L1 = Lasso on columns divided by w_k; an unpenalised column is profiled out."""
    data, a, fn, args, Xa, ya, tr = problem
    p = data.n_features
    rng = np.random.default_rng(1)
    weights = rng.uniform(0.5, 2.0, p)
    unpen = np.zeros(p, bool)
    unpen[3] = True
    lam = 0.05
    sol = jaxlmm.solve(fn, jaxlmm.L1(lam, jnp.asarray(weights), jnp.asarray(unpen)), solver,
                       jnp.zeros(p), args)
    # Reference: project column 3 out (Frisch–Waugh), Lasso on X_k / w_k, map back.
    x3 = Xa[:, 3]
    P = lambda v: v - np.outer(x3, x3 @ v) / (x3 @ x3) if v.ndim == 2 else v - x3 * (x3 @ v) / (x3 @ x3)
    others = np.flatnonzero(~unpen)
    gamma = sklearn_lasso(P(Xa[:, others] / weights[others]), P(ya), lam * tr / data.n_obs)
    beta_ref = np.zeros(p)
    beta_ref[others] = gamma / weights[others]
    beta_ref[3] = x3 @ (ya - Xa[:, others] @ beta_ref[others]) / (x3 @ x3)
    np.testing.assert_allclose(sol.value, beta_ref, atol=1e-6)


def test_infinite_weight_drops_a_column(problem):
    data, a, fn, args, *_ = problem
    weights = jnp.ones(data.n_features).at[0].set(jnp.inf)
    sol = jaxlmm.solve(fn, jaxlmm.L1(0.01, weights), jaxlmm.CoordinateDescent(), jnp.zeros(data.n_features), args)
    assert float(sol.value[0]) == 0.0 and np.isfinite(float(sol.objective))


def test_user_written_loss_works_with_proximal_gradient(problem):
    """A plain `def f(params, args)` (here a Huber loss, checked against CD on least squares
    for huge δ, where Huber is exactly least squares on these residuals)."""
    data, a, fn, args, *_ = problem

    def huber(beta, args):
        r = args.y - args.X @ beta
        delta = 1e6
        h = jnp.where(jnp.abs(r) <= delta, 0.5 * r * r, delta * (jnp.abs(r) - 0.5 * delta))
        return jnp.sum(h) / args.scale

    p = data.n_features
    ours = jaxlmm.solve(huber, jaxlmm.L1(0.05), jaxlmm.ProximalGradient(rtol=1e-11), jnp.zeros(p), args)
    ref = jaxlmm.solve(fn, jaxlmm.L1(0.05), jaxlmm.CoordinateDescent(rtol=1e-12), jnp.zeros(p), args)
    np.testing.assert_allclose(ours.value, ref.value, atol=1e-8)


def test_coordinate_descent_rejects_general_loss(problem):
    data, a, fn, args, *_ = problem
    with pytest.raises(ValueError, match="has no `least_squares_form"):
        jaxlmm.solve(lambda b, args: jnp.sum(b**2), jaxlmm.L1(0.1), jaxlmm.CoordinateDescent(),
                     jnp.zeros(data.n_features), args)


def test_loop_vmap_and_scan_over_lambda_agree(problem):
    data, a, fn, args, *_ = problem
    p = data.n_features
    solver = jaxlmm.CoordinateDescent(rtol=1e-12)
    lam_max, start = jaxlmm.lambda_max(fn, args, solver, jnp.zeros(p))
    lams = jaxlmm.lambda_grid(lam_max, 12, 0.02)
    loop = np.stack([jaxlmm.solve(fn, jaxlmm.L1(l), solver, jnp.zeros(p), args).value for l in lams])
    vmapped = jax.vmap(lambda l: jaxlmm.solve(fn, jaxlmm.L1(l), solver, jnp.zeros(p), args, throw=False).value)(lams)
    path = jaxlmm.solve_path(fn, args, lams, solver, start)
    np.testing.assert_allclose(vmapped, loop, atol=1e-9)
    np.testing.assert_allclose(path.coef, loop, atol=1e-9)
    assert bool(path.converged.all())
    # λ_max is the KKT boundary: zero at λ_max, nonzero just below it.
    assert np.all(loop[0] == 0)
    below = jaxlmm.solve(fn, jaxlmm.L1(0.99 * lam_max), solver, jnp.zeros(p), args).value
    assert np.count_nonzero(below) >= 1


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
def test_vmap_over_datasets_equals_loop(solver):
    sizes = [3, 5, 2, 6, 4]
    datas = [make_data(seed, sizes, p=15, q=2)[0] for seed in range(4)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *datas)

    def fit(data):
        fn, args = quasi_likelihood(data, 0.7)
        return jaxlmm.solve(fn, jaxlmm.L1(0.05), solver, jnp.zeros(15), args, throw=False).value

    batched = jax.vmap(fit)(stacked)
    for i, d in enumerate(datas):
        np.testing.assert_allclose(batched[i], fit(d), atol=1e-9)


def test_no_recompilation_across_lambda_or_a(problem):
    """`run` executes in Python only while tracing: new λ or a values must not re-trace."""
    data, *_ = problem
    traces = []

    class CountingCD(jaxlmm.CoordinateDescent):
        def run(self, *a, **kw):
            traces.append(1)
            return super().run(*a, **kw)

    solver = CountingCD()
    p = data.n_features
    for a in (0.5, 2.0):
        fn, args = quasi_likelihood(data, a)
        for lam in (0.3, 0.1, 0.03):
            jaxlmm.solve(fn, jaxlmm.L1(lam), solver, jnp.zeros(p), args)
        if a == 0.5:
            after_first = len(traces)
    assert after_first == 1 and len(traces) == 1


def test_throw_and_result_codes(problem):
    data, a, fn, args, *_ = problem
    p = data.n_features
    solver = jaxlmm.ProximalGradient(max_steps=2, rtol=1e-14)
    sol = jaxlmm.solve(fn, jaxlmm.L1(0.01), solver, jnp.zeros(p), args, throw=False)
    assert sol.result == jaxlmm.RESULTS.max_steps_reached and not bool(sol.converged)
    with pytest.raises(Exception, match="max_steps"):
        jaxlmm.solve(fn, jaxlmm.L1(0.01), solver, jnp.zeros(p), args)


def test_nonfinite_data_gives_result_code_not_silent_nan(problem):
    data, a, fn, args, *_ = problem
    bad = jaxlmm.losses.LeastSquaresData(args.X, args.y.at[0].set(jnp.nan), args.weights, args.scale)
    sol = jaxlmm.solve(fn, jaxlmm.L1(0.1), jaxlmm.CoordinateDescent(), jnp.zeros(data.n_features),
                       bad, throw=False)
    assert sol.result == jaxlmm.RESULTS.nonfinite


@pytest.mark.parametrize("penalty,message", [
    (jaxlmm.L1(-0.1), "`lam` must be ≥ 0"),
    (jaxlmm.L1(0.1, weights=jnp.ones(3)), "`weights` must have length p"),
    (jaxlmm.L1(0.1, weights=-jnp.ones(40)), "`weights` must be ≥ 0"),
    (jaxlmm.L0(41), "`k` must be between 0"),
    (jaxlmm.L0(2.5), "`k` must be an integer"),
])
def test_bad_penalties_raise(problem, penalty, message):
    data, a, fn, args, *_ = problem
    solver = jaxlmm.BestSubset() if isinstance(penalty, jaxlmm.L0) else jaxlmm.CoordinateDescent()
    with pytest.raises(ValueError, match=message):
        jaxlmm.solve(fn, penalty, solver, jnp.zeros(data.n_features), args)


def test_mismatched_penalty_and_solver_raise(problem):
    data, a, fn, args, *_ = problem
    y0 = jnp.zeros(data.n_features)
    with pytest.raises(ValueError, match="needs `solver=jaxlmm.solvers.BestSubset"):
        jaxlmm.solve(fn, jaxlmm.L0(2), jaxlmm.CoordinateDescent(), y0, args)
    with pytest.raises(ValueError, match="BestSubset solves an L0"):
        jaxlmm.solve(fn, jaxlmm.L1(0.1), jaxlmm.BestSubset(), y0, args)


@settings(max_examples=50, deadline=None)
@given(
    z=st.lists(st.floats(-10, 10), min_size=1, max_size=8),
    t=st.floats(0, 5),
    step=st.floats(0.01, 3),
)
def test_property_l1_prox_is_the_minimiser(z, t, step):
    """prox_{step·t|·|}(z) minimises ½(b − z)² + step·t|b|, and its KKT residual is 0."""
    z = jnp.asarray(z)
    pen = jaxlmm.L1(jnp.asarray(t))
    b = pen.prox(z, step)
    grid = np.linspace(-12, 12, 4801)
    for zi, bi in zip(np.asarray(z), np.asarray(b)):
        vals = 0.5 * (grid - zi) ** 2 + step * t * np.abs(grid)
        assert 0.5 * (bi - zi) ** 2 + step * t * abs(bi) <= vals.min() + 1e-12
    # b = prox(z) ⇔ (z − b)/step ∈ t ∂|b|  ⇔  KKT residual of the gradient (b − z)/step is 0
    np.testing.assert_allclose(pen.kkt_residual(b, (b - z) / step), 0.0, atol=1e-9)


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
def test_max_nonzero_stops_a_filling_fit(problem, solver):
    """`run(..., max_nonzero=k)` (glmnet's dfmax) stops with `saturated` once an iterate has
    more than k nonzero coefficients; a limit no iterate can exceed (k = p) changes nothing."""
    data, a, fn, args, Xa, ya, tr = problem
    y0 = jnp.zeros(data.n_features)
    penalty = jaxlmm.L1(0.005)
    free, free_result, *_ = jax.jit(lambda: solver.run(fn, penalty, y0, args))()
    nnz = int(jnp.sum(free != 0))
    assert free_result == jaxlmm.RESULTS.successful and nnz > 10
    capped, capped_result, *_ = jax.jit(lambda k: solver.run(fn, penalty, y0, args, max_nonzero=k))(5)
    assert capped_result == jaxlmm.RESULTS.saturated and int(jnp.sum(capped != 0)) > 5
    loose, loose_result, *_ = jax.jit(lambda k: solver.run(fn, penalty, y0, args, max_nonzero=k))(data.n_features)
    assert loose_result == jaxlmm.RESULTS.successful
    np.testing.assert_allclose(loose, free, atol=1e-10)
    # The start does not count: from the filled-up solution, a λ whose solution is sparse is
    # reached and not reported as saturated (regression: the limit was checked on y0 itself).
    sparse = jaxlmm.L1(0.3)
    target, *_ = jax.jit(lambda: solver.run(fn, sparse, y0, args))()
    assert 0 < int(jnp.sum(target != 0)) <= 5
    emptied, emptied_result, *_ = jax.jit(lambda k: solver.run(fn, sparse, free, args, max_nonzero=k))(5)
    assert emptied_result == jaxlmm.RESULTS.successful
    np.testing.assert_allclose(emptied, target, atol=1e-6)


def test_newton_and_lbfgs_report_results_like_every_solver():
    """The small-problem solvers return the same `Solution`/`RESULTS` as `solve`: a smooth convex
    function is solved (`successful`, the closed-form minimiser, gradient ≈ 0), a step budget
    too small says `max_steps_reached`, and a NaN start says `nonfinite`."""
    from jaxlmm.solvers.lbfgs import minimise_lbfgs
    from jaxlmm.solvers.newton import damped_newton

    A = jnp.asarray([[3.0, 1.0], [1.0, 2.0]])
    b = jnp.asarray([1.0, -2.0])

    def f(x):  # strictly convex, not quadratic: Newton needs several steps
        return 0.5 * x @ A @ x - b @ x + 0.1 * jnp.sum(x**4)

    x_star = jax.jit(lambda x: damped_newton(f, x, 50))(jnp.zeros(2))
    assert x_star.result == jaxlmm.RESULTS.successful and float(x_star.kkt_residual) < 1e-10
    np.testing.assert_allclose(jax.grad(f)(x_star.value), 0.0, atol=1e-10)
    assert 1 < int(x_star.stats["num_steps"]) < 50
    assert jax.jit(lambda x: damped_newton(f, x, 1))(jnp.zeros(2)).result == jaxlmm.RESULTS.max_steps_reached
    assert jax.jit(lambda x: damped_newton(f, x, 50))(jnp.full(2, jnp.nan)).result == jaxlmm.RESULTS.nonfinite

    value_and_grad = jax.value_and_grad(lambda x: (f(x), None), has_aux=True)
    run = jax.jit(lambda x, steps: minimise_lbfgs(value_and_grad, x, steps, 1e-10)[0], static_argnums=1)
    found = run(jnp.zeros(2), 200)
    assert found.result == jaxlmm.RESULTS.successful
    np.testing.assert_allclose(found.value, x_star.value, atol=1e-8)
    assert run(jnp.zeros(2), 2).result == jaxlmm.RESULTS.max_steps_reached
