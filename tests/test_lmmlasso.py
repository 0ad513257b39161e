"""lmmLasso: the likelihood against dense NumPy, ML against statsmodels, the R lmmlasso 0.1-2 fits
on the H1 reference data, the degenerate basin, BLUPs, solver agreement and bad inputs."""

import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from helpers import make_data

import jaxlmm
from jaxlmm._covariance import cholesky_factor
from jaxlmm.lmmlasso import _fit_single, _standardised_design, fit_lmmlasso, information_criteria
from jaxlmm.losses import MixedModelParams, mixed_model_nll

REFERENCE = Path(__file__).parent / "data" / "lmmlasso_H1_101"  # copied from ../shared/reference-data


def dense_nll(X, y, groups, Z, beta, Psi, sigma2):
    """−log L with every V_i formed and factorised densely."""
    total = 0.5 * len(y) * np.log(2 * np.pi)
    for g in np.unique(groups):
        idx = groups == g
        V = Z[idx] @ Psi @ Z[idx].T + sigma2 * np.eye(idx.sum())
        r = y[idx] - X[idx] @ beta
        total += 0.5 * np.linalg.slogdet(V)[1] + 0.5 * r @ np.linalg.solve(V, r)
    return total


@pytest.mark.parametrize(
    "structure, theta",
    [("identity", [0.7]), ("diagonal", [0.8, 0.0]), ("full", [0.7, -0.4, 0.3]), ("none", [])],
)
def test_nll_and_gradient_match_dense(structure, theta):
    """Value and gradient (β, θ, log σ) equal the dense formula, including a variance
    component at exactly 0, on unbalanced clusters in shuffled rows."""
    data, _ = make_data(2, [3, 6, 2, 8, 5, 4], p=4, q=2)
    fn, args = mixed_model_nll(data, structure=structure)
    X, y, Z, groups = (np.asarray(v) for v in (data.X, data.y, data.Z, data.cluster))
    params = MixedModelParams(jnp.array([0.4, -0.3, 0.2, 0.1]), jnp.asarray(theta, float), jnp.log(jnp.asarray(0.9)))

    def dense(beta, theta_v, log_sigma):
        L = np.asarray(cholesky_factor(jnp.asarray(theta_v, float), structure, 2))
        return dense_nll(X, y, groups, Z, beta, L @ L.T, np.exp(2 * log_sigma))

    flat = np.concatenate([params.beta, params.theta, [params.log_sigma]])
    split = lambda v: (v[:4], v[4:-1], v[-1])
    np.testing.assert_allclose(float(fn(params, args)), dense(*split(flat)), rtol=1e-12)
    grad = jax.grad(fn)(params, args)
    ours = np.concatenate([grad.beta, grad.theta, [grad.log_sigma]])
    h = 1e-6
    numeric = np.array([(dense(*split(flat + h * e)) - dense(*split(flat - h * e))) / (2 * h)
                        for e in np.eye(len(flat))])
    np.testing.assert_allclose(ours, numeric, rtol=1e-6, atol=1e-7)


def _mixed_data(seed=0, n=40):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 10, size=n)
    groups = np.repeat(np.arange(n), sizes)
    N = len(groups)
    X = rng.normal(size=(N, 3))
    Z = np.column_stack([np.ones(N), X[:, 0]])
    Psi = np.array([[1.0, 0.3], [0.3, 0.5]])
    b = rng.multivariate_normal(np.zeros(2), Psi, size=n)
    y = 1.0 + X @ np.array([0.5, -1.0, 0.3]) + np.einsum("tk,tk->t", Z, b[groups]) + rng.normal(scale=0.8, size=N)
    return X, y, groups, Z


@pytest.mark.parametrize("cov", ["identity", "full", "diagonal"])
def test_lambda_zero_is_maximum_likelihood(cov):
    """λ = 0, p < N: fixed effects, σ², Ψ and log-likelihood equal statsmodels MixedLM
    (reml=False) for a random intercept, intercept + slope with full Ψ, and diagonal Ψ."""
    from statsmodels.regression.mixed_linear_model import MixedLM, MixedLMParams

    X, y, groups, Z = _mixed_data()
    Zc = Z[:, :1] if cov == "identity" else Z
    data = jaxlmm.LMMData.from_arrays(X, y, groups, Zc)
    solver = jaxlmm.solvers.MixedModelCGD(tol=1e-12, max_steps=2000)
    fit = fit_lmmlasso(data, lam=0.0, cov=cov, solver=solver)
    model = MixedLM(y, np.column_stack([np.ones(len(y)), X]), groups=groups, exog_re=Zc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if cov == "diagonal":
            free = MixedLMParams.from_components(np.ones(4), np.eye(2))
            ref = model.fit(reml=False, free=free)
        else:
            ref = model.fit(reml=False)
    assert fit.converged
    np.testing.assert_allclose(np.concatenate([[fit.intercept], fit.coef]), ref.fe_params, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fit.sigma2, ref.scale, rtol=1e-4)
    np.testing.assert_allclose(fit.psi, np.asarray(ref.cov_re), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fit.loglik, ref.llf, rtol=1e-6)


@pytest.fixture(scope="module")
def h1():
    frame = pd.read_csv(f"{REFERENCE}/data.csv")
    fits = pd.read_csv(f"{REFERENCE}/lmmlasso_fits.csv")
    X = frame.filter(like="X").to_numpy()
    y = frame["y"].to_numpy()
    Z = np.column_stack([np.ones(len(y)), X[:, 0]])
    return jaxlmm.LMMData.from_arrays(X, y, frame["group"].to_numpy(), Z), fits


@pytest.mark.parametrize("lam", [60, 75])
def test_reproduces_r_lmmlasso_on_h1(h1, lam):
    """Same λ, same kind of start (CV Lasso ignoring groups, profile-likelihood variances),
    standardised columns, Ψ = θ²I, intercept and x2 unpenalised (R's nonpen = 1:2): the same
    solution as R lmmlasso 0.1-2 — coefficients to 1e-3, σ² and Ψ to 1e-2 relative."""
    data, fits = h1
    ref = fits[fits["lambda"] == lam].iloc[0]
    fit = fit_lmmlasso(data, lam=lam)
    coef_r = np.array([float(v) for v in ref["coef"].split(";")])
    np.testing.assert_array_equal(fit.unpenalized, [0])
    np.testing.assert_allclose(np.concatenate([[fit.intercept], fit.coef]), coef_r, atol=1e-3)
    np.testing.assert_allclose(fit.sigma2, ref["sigma2"], rtol=1e-2)
    np.testing.assert_allclose(np.diag(fit.psi), [float(v) for v in ref["psi_diag"].split(";")], rtol=1e-2)
    np.testing.assert_allclose(fit.objective, ref["objective"], rtol=1e-4)
    np.testing.assert_allclose(fit.loglik, ref["loglik"], rtol=1e-3)
    np.testing.assert_allclose(fit.bic, ref["bic"], rtol=1e-3)
    assert fit.start == "cold" and fit.converged


def test_degenerate_basin_is_avoided(h1):
    """At λ = 60 the warm start from the λ = ∞ fit stays where σ² absorbs the signal: a LOWER
    penalised objective than R's solution (the issue: 501 vs 729) but a far worse BIC. The
    estimator keeps the cold fit; on the BIC path the warm path never leaves the basin."""
    data, fits = h1
    design, center, scale = _standardised_design(data, True)
    _, args = mixed_model_nll(data, jnp.asarray(design))
    from jaxlmm.lmmlasso import _cold_start

    mask = np.zeros(design.shape[1], bool)
    mask[:2] = True
    cold_beta = jnp.asarray(_cold_start(data, center, scale, 0))
    warm, cold = _fit_single(args, "identity", jnp.asarray(60.0), jnp.ones(design.shape[1]), jnp.asarray(mask),
                             cold_beta, jaxlmm.solvers.MixedModelCGD())
    assert int(jnp.sum(warm.params.beta != 0)) == 2  # intercept and x2 only
    assert float(warm.objective) < 550 < float(cold.objective)
    np.testing.assert_allclose(float(cold.objective), fits.loc[fits["lambda"] == 60, "objective"].iloc[0], rtol=1e-4)
    bic_warm, bic_cold = (float(information_criteria(f, data.n_obs)[0]) for f in (warm, cold))
    assert bic_cold < bic_warm - 500
    path_fit = fit_lmmlasso(data)
    assert path_fit.start == "cold"
    np.testing.assert_array_equal(path_fit.support, [0, 1, 2, 3])  # x2..x5, the true support
    assert np.all(np.asarray(path_fit.path.nnz_warm) == 2)  # the warm path is trapped throughout
    assert path_fit.bic < 380


def test_proximal_gradient_beta_block_agrees(h1):
    """The same problem with FISTA as the β-block solver reaches the same solution."""
    data, _ = h1
    cd = fit_lmmlasso(data, lam=75)
    fista = jaxlmm.solvers.MixedModelCGD(beta_solver=jaxlmm.ProximalGradient(rtol=1e-10))
    pg = fit_lmmlasso(data, lam=75, solver=fista)
    np.testing.assert_allclose(pg.coef, cd.coef, atol=1e-4)
    np.testing.assert_allclose(pg.sigma2, cd.sigma2, rtol=1e-4)


def test_random_intercept_blup_is_partial_pooling():
    """Seed 003: with X carrying no signal (its coefficient penalised to 0), the BLUP of a
    random intercept is b̂_i = ρ_i (ȳ_i − μ̂), ρ_i = τ̂²/(τ̂² + σ̂²/n_i)."""
    rng = np.random.default_rng(4)
    sizes = rng.integers(2, 15, size=20)
    groups = np.repeat(np.arange(20), sizes)
    y = 2.0 + rng.normal(size=20)[groups] + rng.normal(size=len(groups))
    data = jaxlmm.LMMData.from_arrays(rng.normal(size=(len(y), 1)), y, groups)
    fit = fit_lmmlasso(data, lam=1e6)
    assert fit.coef[0] == 0.0
    tau2, sigma2, mu = fit.psi[0, 0], fit.sigma2, fit.intercept
    ybar = np.array([y[groups == i].mean() for i in range(20)])
    rho = tau2 / (tau2 + sigma2 / sizes)
    np.testing.assert_allclose(fit.ranef[:, 0], rho * (ybar - mu), rtol=1e-8)
    conditional = fit.predict(np.zeros((20, 1)), groups=list(range(20)))
    np.testing.assert_allclose(conditional, rho * ybar + (1 - rho) * mu, rtol=1e-8)


def test_adaptive_and_none_structure(h1):
    """lmmadLasso keeps the true support with less shrinkage; cov="none" is the plain Lasso
    with σ² by ML (larger σ̂², as in the paper's Table 2)."""
    data, _ = h1
    first = fit_lmmlasso(data, lam=75)
    adaptive = fit_lmmlasso(data, lam=75, adaptive=True)
    np.testing.assert_array_equal(adaptive.support, [0, 1, 2, 3])
    assert np.all(np.abs(adaptive.coef[1:4]) >= np.abs(first.coef[1:4]))
    lasso = fit_lmmlasso(data, lam=75, cov="none")
    assert lasso.psi.shape == (2, 2) and np.all(lasso.psi == 0) and lasso.sigma2 > 2 * first.sigma2


def test_adaptive_path_reaches_every_first_stage_column():
    """lmmadLasso by BIC: the second stage's grid extends by the spread of the weights 1/|β̂_k|,
    so a weakly selected first-stage column can stay in when BIC prefers it. On this H1
    replicate BIC keeps both noise columns of the first stage (as in the paper's Table 2, where
    lmmadLasso's |S| is close to lmmLasso's): a lower BIC than every path fit with the true
    support alone, which is all a path ending at 0.01·λ_max could reach."""
    sim = jaxlmm.simulate.schelldorfer_design(seed=1000, design="H1")
    data = jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups, sim.Z)
    first = fit_lmmlasso(data)
    adaptive = fit_lmmlasso(data, adaptive=True)
    np.testing.assert_array_equal(first.support, [0, 1, 2, 3, 120, 140])
    np.testing.assert_array_equal(adaptive.support, first.support)
    path = adaptive.path
    truth_only = np.concatenate([np.asarray(path.bic_warm)[np.asarray(path.nnz_warm) == 5],
                                 np.asarray(path.bic_cold)[np.asarray(path.nnz_cold) == 5]])
    assert truth_only.size and adaptive.bic < truth_only.min() - 10
    # Less shrinkage towards 0 of the strong penalised coefficients than in the first stage.
    assert np.all(np.abs(adaptive.coef[1:4]) > np.abs(first.coef[1:4]))


def test_bad_inputs(h1):
    data, _ = h1
    with pytest.raises(ValueError, match="`cov`"):
        fit_lmmlasso(data, lam=1.0, cov="banded")
    with pytest.raises(ValueError, match="`lam`"):
        fit_lmmlasso(data, lam=-1.0)
    with pytest.raises(ValueError, match="`lam`"):
        fit_lmmlasso(data, lam=[1.0, 2.0])
    with pytest.raises(ValueError, match="`unpenalized`"):
        fit_lmmlasso(data, lam=1.0, unpenalized=[400])
    with pytest.raises(ValueError, match="`weights`"):
        fit_lmmlasso(data, lam=1.0, weights=np.ones(3))
    with pytest.raises(ValueError, match="LMMData"):
        fit_lmmlasso(np.ones((3, 3)), lam=1.0)
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(5), 2)
    tiny = jaxlmm.LMMData.from_arrays(rng.normal(size=(10, 3)), rng.normal(size=10), groups, rng.normal(size=(10, 2)))
    with pytest.raises(ValueError, match="rank"):
        fit_lmmlasso(tiny, lam=1.0)
    X = rng.normal(size=(30, 3))
    X[:, 1] = 2.0
    const = jaxlmm.LMMData.from_arrays(X, rng.normal(size=30), np.repeat(np.arange(6), 5))
    with pytest.raises(ValueError, match="constant columns"):
        fit_lmmlasso(const, lam=1.0)


def _small_design(seed, n=12, m=5, p=30):
    """A small high-dimensional design like H1: random intercept and slope on x_0, 4 true effects."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n), m)
    X = rng.normal(size=(n * m, p))
    Z = np.column_stack([np.ones(n * m), X[:, 0]])
    b = rng.normal(scale=0.7, size=(n, 2))
    y = 1.0 + X[:, :4] @ [2.0, 1.5, -1.0, 1.0] + np.einsum("tk,tk->t", Z, b[groups]) + 0.5 * rng.normal(size=n * m)
    return jaxlmm.LMMData.from_arrays(X, y, groups, Z)


def _prepared(data):
    from jaxlmm.lmmlasso import _cold_start

    design, center, scale = _standardised_design(data, True)
    _, args = mixed_model_nll(data, jnp.asarray(design))
    return args, jnp.asarray(_cold_start(data, center, scale, 0))


def test_cgd_and_path_vmap_equal_loops():
    """The CGD vmaps over λ and the whole BIC path over data sets, with the loop's answers.
    (Regression: a backtracking loop whose predicate was recomputed inside the batched loop
    could disagree with itself near convergence and never end.)"""
    from jaxlmm.lmmlasso import profile_start

    datasets = [_small_design(seed) for seed in range(3)]
    prepared = [_prepared(d) for d in datasets]
    args, cold = prepared[0]
    p1 = args.X.shape[1]
    weights, mask = jnp.ones(p1), jnp.zeros(p1, bool).at[:2].set(True)
    solver = jaxlmm.MixedModelCGD()
    theta0, log_sigma0 = profile_start(args, cold, "identity")
    start = MixedModelParams(cold, theta0, log_sigma0)

    def fit(lam):
        return solver.run("identity", args, jaxlmm.L1(lam, weights, mask), start)

    lams = jnp.array([2.0, 5.0, 12.0])
    batched = jax.jit(jax.vmap(fit))(lams)
    for i, lam in enumerate(lams):
        single = jax.jit(fit)(lam)
        assert bool(single.converged) and bool(batched.converged[i])
        # Equal to the solver's tolerance (the two programs round differently).
        np.testing.assert_allclose(batched.params.beta[i], single.params.beta, atol=1e-6)
        np.testing.assert_allclose(batched.nll[i], single.nll, rtol=1e-7)

    grid = jnp.asarray(np.geomspace(1.0, 0.05, 8))

    def path(a, c):
        return jaxlmm.lmmlasso_path(a, "identity", grid, weights, mask, c, solver, jnp.asarray(30.0))

    stacked_args = jax.tree.map(lambda *x: jnp.stack(x), *[a for a, _ in prepared])
    stacked_cold = jnp.stack([c for _, c in prepared])
    paths = jax.jit(jax.vmap(path))(stacked_args, stacked_cold)
    for i, (a, c) in enumerate(prepared):
        one = path(a, c)
        assert int(paths.best[i]) == int(one.best)
        np.testing.assert_allclose(paths.bic_cold[i], one.bic_cold, rtol=1e-7)
        np.testing.assert_allclose(paths.bic_warm[i], one.bic_warm, rtol=1e-7)
