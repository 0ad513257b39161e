"""Empirical-Bayes ridge LMM: every piece against a dense NumPy/SciPy reference — the restricted
marginal likelihood, the inverse-Wishart density, the Jacobian, the log posterior; ECM ascent
and stationarity; b = λ = 0 against statsmodels ML; the Laplace value against a brute-force
integral; the seed-003 BLUP identity; bad inputs."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import dense_v
from hypothesis import given, settings, strategies as st
from scipy import linalg as sla, stats

import jaxlmm
from jaxlmm.estimators.eb_ridge import estimator as eb, model as ebl


def _data(seed=0, n=12, size_range=(2, 7), p=5, q=2, psi=((1.0, 0.3), (0.3, 0.5)), sigma=0.8, intercept=1.0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(size_range[0], size_range[1] + 1, size=n)
    groups = np.repeat(np.arange(n), sizes)
    N = len(groups)
    X = rng.normal(size=(N, p))
    Z = np.column_stack([np.ones(N), rng.uniform(-1, 1, size=(N, q - 1))]) if q > 1 else np.ones((N, 1))
    b = rng.multivariate_normal(np.zeros(q), np.asarray(psi)[:q, :q], size=n)
    beta = rng.normal(size=p) / np.sqrt(p)
    y = intercept + X @ beta + np.einsum("tk,tk->t", Z, b[groups]) + rng.normal(scale=sigma, size=N)
    perm = rng.permutation(N)
    return X[perm], y[perm], groups[perm], Z[perm]


def _dense_restricted(X, y, groups, Z, F, pen, psi, sigma2, lam):
    """log N(Aᵀy; 0, AᵀKA), K = V + (σ²/λ) X_pen X_penᵀ, A an orthonormal basis of F's complement."""
    K = dense_v(groups, Z, psi, sigma2) + (sigma2 / lam) * X[:, pen] @ X[:, pen].T
    A = sla.null_space(F.T) if F.shape[1] else np.eye(len(y))
    return stats.multivariate_normal(np.zeros(A.shape[1]), A.T @ K @ A).logpdf(A.T @ y)


@pytest.mark.parametrize("case", ["intercept+unpenalized", "no F, p > N", "intercept, p > N"])
def test_restricted_marginal_matches_dense(case):
    p = {"intercept+unpenalized": 5, "no F, p > N": 70, "intercept, p > N": 70}[case]
    X, y, groups, Z = _data(seed=1, p=p)
    data = jaxlmm.LMMData.from_arrays(X, y, groups, Z)
    unpen = (1,) if case == "intercept+unpenalized" else ()
    intercept = case != "no F, p > N"
    design = eb.eb_design(data, unpen, intercept)
    psi = np.array([[0.9, -0.2], [-0.2, 0.4]])
    for lam, sigma2 in [(0.7, 0.6), (5.0, 1.3)]:
        ours = ebl.restricted_log_marginal(design, jnp.linalg.cholesky(psi), sigma2, lam)
        cols = ([np.ones(len(y))] if intercept else []) + [X[:, j] for j in unpen]
        F = np.column_stack(cols) if cols else np.zeros((len(y), 0))
        pen = [j for j in range(p) if j not in unpen]
        ref = _dense_restricted(X, y, groups, Z, F, pen, psi, sigma2, lam)
        np.testing.assert_allclose(ours, ref, rtol=1e-10)


def test_inverse_wishart_density_and_jacobian():
    rng = np.random.default_rng(3)
    q, n = 3, 25
    M = rng.normal(size=(q, q))
    psi = M @ M.T + 0.5 * np.eye(q)
    A = np.diag([0.5, 1.0, 2.0]) + 0.1
    b = 0.4
    c = b * n / (1 - b)
    ours = ebl.inverse_wishart_logpdf(jnp.linalg.cholesky(psi), b, jnp.asarray(A), n)
    ref = stats.invwishart(df=c - q - 1, scale=c * A).logpdf(psi)
    np.testing.assert_allclose(ours, ref, rtol=1e-10)
    # The prior mode of IW(ν, Φ) is Φ/(ν + q + 1) = A.
    np.testing.assert_allclose(c * A / (c - q - 1 + q + 1), A)
    # log|∂ vech Ψ / ∂ φ| against a numerical Jacobian.
    phi = jnp.asarray(rng.normal(size=q * (q + 1) // 2 + 1))
    rows, cols = np.tril_indices(q)

    def vech(phi):
        L, _ = ebl.variance_from_phi(phi, q)
        return (L @ L.T)[rows, cols]

    J = jax.jacfwd(vech)(phi)[:, :-1]
    np.testing.assert_allclose(ebl.log_jacobian(phi, q), np.linalg.slogdet(np.asarray(J))[1], rtol=1e-12)
    L, s2 = ebl.variance_from_phi(phi, q)
    np.testing.assert_allclose(eb.phi_from_variance(L @ L.T, s2), phi, rtol=1e-10)


def _dense_log_posterior(X, y, groups, Z, F, pen, beta_F, beta_G, psi, sigma2, lam, b, A, n):
    V = dense_v(groups, Z, psi, sigma2)
    mean = F @ beta_F + X[:, pen] @ beta_G
    loglik = stats.multivariate_normal(mean, V).logpdf(y)
    c = b * n / (1 - b)
    prior = -0.5 * c * (np.linalg.slogdet(psi)[1] + np.trace(np.linalg.solve(psi, A))) if b > 0 else 0.0
    return loglik - 0.5 * lam * beta_G @ beta_G / sigma2 + prior


@pytest.mark.parametrize("lam,b,p", [(2.0, 0.3, 5), (0.5, 0.6, 60), (0.0, 0.0, 5)])
def test_ecm_increases_the_log_posterior_and_stops_at_a_stationary_point(lam, b, p):
    X, y, groups, Z = _data(seed=2, p=p)
    data = jaxlmm.LMMData.from_arrays(X, y, groups, Z)
    design = eb.eb_design(data, (), True)
    A = jnp.asarray([[0.6, 0.1], [0.1, 0.3]])
    params = eb.start_params(design, lam)
    values = [float(eb.log_posterior(design, params, lam, b, A))]
    step = jax.jit(eb.ecm_step)
    for _ in range(300):
        params = step(design, params, lam, b, A)
        values.append(float(eb.log_posterior(design, params, lam, b, A)))
    diffs = np.diff(values)
    assert np.all(diffs >= -1e-10 * np.abs(values[1:])), diffs.min()
    assert values[-1] > values[0] + 1.0
    # J is the function we claim: dense multivariate-normal log-density plus the priors.
    F = np.ones((len(y), 1))
    Xs, ys, gs, Zs = (np.asarray(a) for a in (data.X, data.y, data.cluster, data.Z))
    ref = _dense_log_posterior(Xs, ys, gs, Zs, F, list(range(p)), np.asarray(params.beta_F), np.asarray(params.beta_G),
                               np.asarray(params.psi), float(params.sigma2), lam, b, np.asarray(A), data.n_clusters)
    np.testing.assert_allclose(values[-1], ref, rtol=1e-10)
    # The converged MAP is a stationary point of J in (β, Ψ, σ²).
    fit = eb.eb_ridge_map(design, lam, b, A, tol=1e-14, max_steps=50_000)
    assert fit.result == jaxlmm.RESULTS.successful
    grad = jax.grad(lambda prm: eb.log_posterior(design, prm, lam, b, A))(fit.params)
    scale = 1.0 + abs(float(fit.log_posterior))
    for leaf in jax.tree.leaves(grad):
        assert np.max(np.abs(np.asarray(leaf))) < 1e-5 * scale


def test_b0_lambda0_is_maximum_likelihood():
    """b = 0 and λ = 0 with p < N: the MAP is the ML fit — fixed effects, σ², Ψ and log L equal
    statsmodels MixedLM(reml=False) and our lmmLasso at λ = 0."""
    from statsmodels.regression.mixed_linear_model import MixedLM

    X, y, groups, Z = _data(seed=4, n=40, size_range=(3, 9), p=3)
    data = jaxlmm.LMMData.from_arrays(X, y, groups, Z)
    fit = jaxlmm.fit_eb_ridge(data, lam=0.0, b=0.0, A=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = MixedLM(y, np.column_stack([np.ones(len(y)), X]), groups=groups, exog_re=Z).fit(reml=False)
    assert fit.converged and fit.log_marginal_likelihood is None
    np.testing.assert_allclose(np.concatenate([[fit.intercept], fit.coef]), ref.fe_params, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fit.sigma2, ref.scale, rtol=1e-4)
    np.testing.assert_allclose(fit.psi, np.asarray(ref.cov_re), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fit.log_posterior, ref.llf, rtol=1e-7)
    ml = jaxlmm.fit_lmmlasso(data, lam=0.0, structure="full", solver=jaxlmm.MixedModelCGD(tol=1e-12, max_steps=2000))
    np.testing.assert_allclose(fit.psi, ml.psi, rtol=1e-4, atol=1e-6)


def test_map_coefficients_solve_the_dense_ridge_gls_equations():
    """At the MAP, β̂ = argmax J given (Ψ̂, σ̂²): (X̃ᵀV⁻¹X̃ + P) β = X̃ᵀV⁻¹y with X̃ = [1, X] and
    P = diag(0, λ/σ², …) — checked densely with p > N."""
    X, y, groups, Z = _data(seed=5, n=10, p=60)
    data = jaxlmm.LMMData.from_arrays(X, y, groups, Z)
    fit = jaxlmm.fit_eb_ridge(data, lam=3.0, b=0.4, A=0.5)
    assert fit.converged
    V = dense_v(groups, Z, fit.psi, fit.sigma2)
    Xt = np.column_stack([np.ones(len(y)), X])
    P = np.diag(np.r_[0.0, np.full(X.shape[1], fit.lam / fit.sigma2)])
    beta = np.linalg.solve(Xt.T @ np.linalg.solve(V, Xt) + P, Xt.T @ np.linalg.solve(V, y))
    # ECM stops when J rises by < 1e-12 (1 + |J|), which leaves ~1e-8 in β (1e-6 relative to |β|).
    np.testing.assert_allclose(np.r_[fit.intercept, fit.coef], beta, rtol=1e-6, atol=1e-6 * np.abs(beta).max())


def test_laplace_matches_brute_force_integral():
    """q = 1: the Laplace approximation of log ∫∫ p(y | τ², σ², λ) IW(τ²) dτ² d log σ² equals a
    brute-force quadrature of the dense integrand (in another parameterisation, u = log τ²)."""
    X, y, groups, Z = _data(seed=6, n=60, size_range=(3, 8), p=3, q=1, psi=((0.8,),), sigma=1.0)
    data = jaxlmm.LMMData.from_arrays(X, y, groups, Z)
    design = eb.eb_design(data, (), True)
    lam, b, A = 2.0, 0.3, jnp.asarray([[0.6]])
    start = eb.start_params(design, lam)
    laplace = jax.jit(eb.laplace_log_marginal, static_argnames="differentiable")(
        design, lam, b, A, eb.phi_from_variance(start.psi, start.sigma2), differentiable=False)
    assert laplace.converged
    n = data.n_clusters
    c = b * n / (1 - b)
    prior = stats.invgamma(a=(c - 2) / 2, scale=c * 0.6 / 2)  # IW with q = 1
    # Dense integrand, diagonalised once: cov(Aᵀy) = σ² C + τ² B with C = I + AᵀXXᵀA/λ, B = Aᵀ blockdiag(Z_iZ_iᵀ) A;
    # the generalised eigenvectors (B v = w C v, VᵀCV = I) make each grid point O(N).
    A_null = sla.null_space(np.ones((1, len(y))))
    yc = A_null.T @ y
    C = np.eye(len(yc)) + A_null.T @ X @ X.T @ A_null / lam
    B = A_null.T @ dense_v(groups, Z, np.eye(1), 0.0) @ A_null
    w, Vg = sla.eigh(B, C)
    proj = Vg.T @ yc
    log_det_V = np.linalg.slogdet(Vg)[1]

    def integrand(u, s):
        tau2, sigma2 = np.exp(u), np.exp(s)
        scale = sigma2 + tau2 * w
        loglik = -0.5 * (len(yc) * np.log(2 * np.pi) - 2 * log_det_V + np.sum(np.log(scale)) + np.sum(proj**2 / scale))
        return loglik + prior.logpdf(tau2) + u

    # The diagonalised density is the dense multivariate normal.
    cov = 0.7 * C + 1.3 * B
    np.testing.assert_allclose(integrand(np.log(1.3), np.log(0.7)) - prior.logpdf(1.3) - np.log(1.3),
                               stats.multivariate_normal(np.zeros(len(yc)), cov).logpdf(yc), rtol=1e-10)

    phi = np.asarray(laplace.phi)
    u0, s0 = 2 * phi[0], phi[1]
    # Step sizes from the Laplace curvature; ±7 sd, 81 × 81 nodes.
    H = -np.asarray(jax.jit(jax.hessian(lambda f: ebl.log_integrand(f, design, lam, b, A)))(laplace.phi))
    sd = np.sqrt(np.diag(np.linalg.inv(H))) * np.array([2.0, 1.0])
    us = u0 + sd[0] * np.linspace(-7, 7, 81)
    ss = s0 + sd[1] * np.linspace(-7, 7, 81)
    grid = np.array([[integrand(u, s) for s in ss] for u in us])
    top = grid.max()
    brute = top + np.log(np.trapezoid(np.trapezoid(np.exp(grid - top), ss, axis=1), us))
    # Same integrand: a density in φ = (u/2, s) is the one in (u, s) times |du/dφ| = 2.
    np.testing.assert_allclose(float(ebl.log_integrand(jnp.asarray([u0 / 2, s0]), design, lam, b, A)),
                               integrand(u0, s0) + np.log(2.0), rtol=1e-10)
    print(f"Laplace {float(laplace.value):.4f}, quadrature {brute:.4f}")
    assert abs(float(laplace.value) - brute) < 0.02, (float(laplace.value), brute)


def test_random_intercept_blup_is_partial_pooling():
    """Seed 003: with X carrying no information (a zero column) the EB fit's random intercepts
    satisfy μ̂ + b̂_i = ρ_i ȳ_i + (1 − ρ_i) μ̂, ρ_i = τ̂² / (τ̂² + σ̂²/n_i)."""
    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 12, size=15)
    groups = np.repeat(np.arange(15), sizes)
    y = 2.0 + rng.normal(size=15)[groups] + rng.normal(scale=0.7, size=len(groups))
    data = jaxlmm.LMMData.from_arrays(np.zeros((len(y), 1)), y, groups)
    fit = jaxlmm.fit_eb_ridge(data, lam=1.0, b=0.3, A=0.5)
    tau2, sigma2, mu = fit.psi[0, 0], fit.sigma2, fit.intercept
    ybar = np.array([y[groups == g].mean() for g in fit.groups])
    rho = tau2 / (tau2 + sigma2 / sizes)
    np.testing.assert_allclose(mu + fit.ranef[:, 0], rho * ybar + (1 - rho) * mu, rtol=1e-10)
    # And the EM's Ψ is the prior-weighted average of its posterior second moments.
    assert 0.3 * 0.5 < tau2


def _assert_reported_local_maximum(evidence, fit, alpha):
    """`fit` reports evidence(λ̂, b̂, α̂) and 10 % moves of each hyperparameter lower it."""
    best = evidence(fit.lam, fit.b, alpha)
    np.testing.assert_allclose(best, fit.log_marginal_likelihood, atol=1e-6)
    for factor in (0.9, 1.1):
        assert evidence(fit.lam * factor, fit.b, alpha) < best
        assert evidence(fit.lam, fit.b * factor, alpha) < best
        assert evidence(fit.lam, fit.b, alpha * factor) < best


def test_learned_hyperparameters_maximise_the_laplace_evidence():
    X, y, groups, Z = _data(seed=8, n=30, size_range=(3, 8), p=40)
    data = jaxlmm.LMMData.from_arrays(X, y, groups, Z)
    fit = jaxlmm.fit_eb_ridge(data)
    assert fit.converged and fit.learned == ("lam", "b", "A")
    design = eb.eb_design(data, (), True)
    start = eb.start_params(design, 1.0)
    phi0 = eb.phi_from_variance(start.psi, start.sigma2)
    alpha = fit.A[0, 0]

    @jax.jit
    def evidence(lam, b, alpha):
        return eb.laplace_log_marginal(design, lam, b, alpha * jnp.eye(2), phi0, differentiable=False).value

    _assert_reported_local_maximum(evidence, fit, alpha)


def _dense_slides_laplace(X, y, groups, Z, params, lam, b, A):
    """Seed 002's Laplace approximation written out densely: ℓ(θ) over θ = (β_0, β, σ, vech Σ)
    with an N × N V, the normalised ridge prior and SciPy's inverse-Wishart density for the value,
    and the full (1 + p + 1 + q(q+1)/2)-dimensional autodiff Hessian of a dense ℓ."""
    n, q = len(np.unique(groups)), Z.shape[1]
    c = b * n / (1 - b)
    nu, Phi = c - q - 1, c * A
    rows, cols = np.tril_indices(q)
    D = np.column_stack([np.ones(len(y)), X])
    member = (np.asarray(groups)[:, None] == np.unique(groups)[None, :]).astype(float)

    def ell(theta):  # up to constants free of θ (the Hessian is all it is used for)
        beta, sigma, vech = theta[: D.shape[1]], theta[D.shape[1]], theta[D.shape[1] + 1 :]
        lower = jnp.zeros((q, q)).at[rows, cols].set(vech)
        Sigma = lower + jnp.tril(lower, -1).T
        V = sigma**2 * jnp.eye(len(y)) + (Z @ Sigma @ Z.T) * (member @ member.T)
        r = y - D @ beta
        loglik = -0.5 * (jnp.linalg.slogdet(V)[1] + r @ jnp.linalg.solve(V, r))
        ridge = -0.5 * X.shape[1] * jnp.log(sigma**2 / lam) - 0.5 * lam * beta[1:] @ beta[1:] / sigma**2
        iw = -0.5 * (nu + q + 1) * jnp.linalg.slogdet(Sigma)[1] - 0.5 * jnp.trace(Phi @ jnp.linalg.inv(Sigma))
        return loglik + ridge + iw

    beta = np.concatenate([np.asarray(params.beta_F), np.asarray(params.beta_G)])
    Sigma, sigma2 = np.asarray(params.psi), float(params.sigma2)
    theta = np.concatenate([beta, [np.sqrt(sigma2)], Sigma[rows, cols]])
    H = np.asarray(jax.jit(jax.hessian(ell))(jnp.asarray(theta)))
    gradient = np.asarray(jax.jit(jax.grad(ell))(jnp.asarray(theta)))
    V = dense_v(groups, Z, Sigma, sigma2)
    value = (stats.multivariate_normal(D @ beta, V).logpdf(y)
             + stats.norm(0, np.sqrt(sigma2 / lam)).logpdf(beta[1:]).sum()
             + stats.invwishart(df=nu, scale=Phi).logpdf(Sigma))
    return value + 0.5 * len(theta) * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(-H)[1], gradient


@pytest.mark.parametrize("p", [3, 30])
def test_slides_laplace_matches_the_dense_joint_hessian(p):
    """`slides_log_marginal` (Gaussian β integrated exactly, Schur complement by the profile's
    Hessian in (σ, vech Σ)) equals the joint Laplace formula over (β, σ, vech Σ) computed with a
    dense N × N covariance and a full Hessian, for p < N and p > N (N = 24), at the mode of ℓ
    that `eb_ridge_map(normalised_ridge=True)` finds (its dense gradient is 0)."""
    X, y, groups, Z = _data(seed=3, n=6, size_range=(3, 6), p=p)
    data = jaxlmm.LMMData.from_arrays(X, y, groups, Z)
    design = eb.eb_design(data, (), True)
    lam, b, A = 0.8, 0.6, np.array([[0.7, 0.1], [0.1, 0.4]])  # b > 2q/(n + 2q) = 0.4: a proper prior
    fit = eqx.filter_jit(eb.eb_ridge_map)(design, lam, b, jnp.asarray(A), normalised_ridge=True)
    assert fit.result == eb.RESULTS.successful
    ours = eqx.filter_jit(eb.slides_log_marginal)(design, lam, b, jnp.asarray(A), fit.params)
    # The design's rows are sorted by cluster: the dense reference takes them as they are.
    ref, gradient = _dense_slides_laplace(np.asarray(data.X), np.asarray(data.y), np.asarray(data.cluster),
                                          np.asarray(data.Z), fit.params, lam, b, A)
    assert np.max(np.abs(gradient)) < 1e-4  # the ECM with the normaliser finds a mode of ℓ
    assert bool(ours.converged)
    np.testing.assert_allclose(float(ours.value), ref, rtol=1e-8)


def test_learned_hyperparameters_maximise_the_slides_evidence():
    """fit_eb_ridge(evidence="slides") reports the slides' evidence at the MAP and stops at a local
    maximum of it over (λ, b, α); its Θ differs from the default recipe's."""
    X, y, groups, Z = _data(seed=8, n=30, size_range=(3, 8), p=40)
    data = jaxlmm.LMMData.from_arrays(X, y, groups, Z)
    fit = jaxlmm.fit_eb_ridge(data, evidence="slides")
    assert fit.converged and fit.learned == ("lam", "b", "A")
    design = eb.eb_design(data, (), True)
    alpha = fit.A[0, 0]

    @jax.jit
    def evidence(lam, b, alpha):
        A = alpha * jnp.eye(2)
        mode = eb.eb_ridge_map(design, lam, b, A, normalised_ridge=True).params
        return eb.slides_log_marginal(design, lam, b, A, mode).value

    _assert_reported_local_maximum(evidence, fit, alpha)
    fixed = jaxlmm.fit_eb_ridge(data, lam=fit.lam, b=fit.b, A=alpha, evidence="slides")
    np.testing.assert_allclose(fixed.log_marginal_likelihood, fit.log_marginal_likelihood, atol=1e-6)
    with pytest.raises(ValueError, match="`evidence`"):
        jaxlmm.fit_eb_ridge(data, evidence="exact")


@pytest.mark.slow  # a Monte Carlo check of the reference sampler itself, not of the estimator
@pytest.mark.parametrize("target", ["laplace", "slides"])
def test_importance_reference_matches_quadrature_for_q1(target):
    """The importance-sampling evidence against a 2-D trapezoid quadrature over
    φ = (log √ψ, log σ²) on a random-intercept model (q = 1), for both integrals (ours, flat on
    log σ²; the slides', flat on σ): agreement within 4 Monte Carlo standard errors + 0.005."""
    X, y, groups, Z = _data(seed=4, n=10, size_range=(2, 5), p=3, q=1, psi=((0.8,),))
    data = jaxlmm.LMMData.from_arrays(X, y, groups, Z)
    design = eb.eb_design(data, (), True)
    lam, b, A = 0.9, 0.35, jnp.eye(1) * 0.6
    importance = jax.jit(eb.importance_log_marginal, static_argnames=("target", "draws"))
    estimate = importance(design, lam, b, A, jax.random.key(0), target=target, draws=4_000)
    start = eb.start_params(design, lam)
    mode = eqx.filter_jit(eb.laplace_log_marginal)(design, lam, b, A, eb.phi_from_variance(start.psi, start.sigma2),
                                                    100, differentiable=False)
    curvature = -np.asarray(jax.jit(jax.hessian(lambda f: ebl.log_integrand(f, design, lam, b, A)))(mode.phi))
    width = 8.0 * np.sqrt(np.diag(np.linalg.inv(curvature)))  # 8 marginal sds of the Laplace Gaussian
    grids = [np.linspace(c - w, c + w, 201) for c, w in zip(np.asarray(mode.phi), width)]
    mesh = jnp.asarray(np.stack(np.meshgrid(*grids, indexing="ij"), -1).reshape(-1, 2))
    ell = np.asarray(jax.jit(jax.vmap(lambda f: ebl.log_integrand(f, design, lam, b, A)))(mesh)).reshape(201, 201)
    if target == "slides":
        ell = ell + 0.5 * grids[1][None, :] - np.log(2.0) - 0.5 * float(design.logdet_FtF)
    top = ell.max()
    quadrature = top + np.log(np.trapezoid(np.trapezoid(np.exp(ell - top), grids[1], axis=1), grids[0]))
    assert float(estimate.ess) > 1_000
    assert abs(float(estimate.value) - quadrature) < 4 * float(estimate.se) + 0.005



    # As b → 1 the prior becomes a point mass at A and the evidence tends to a finite limit. The
    # IW log-density's c log c terms cancel to O(log c); past `maximum_b` they did so below
    # float64 precision (b = 1 − 1e−14 read −114.6 against the limit −143.25), and L-BFGS,
    # drifting up the flat tail, stopped on such values.
    X, y, groups, Z = _data(seed=5, n=40, size_range=(2, 2), p=2, q=4, psi=np.eye(4))
    design = eb.eb_design(jaxlmm.LMMData.from_arrays(X, y, groups, Z), (), True)
    start = eb.start_params(design, 1.0)
    phi0 = eb.phi_from_variance(start.psi, start.sigma2)
    evidence = jax.jit(lambda b: eb.laplace_log_marginal(design, 1.0, b, 0.5 * jnp.eye(4), phi0,
                                                          differentiable=False).value)
    limit = evidence(1.0 - 1e-6)
    for gap in (1e-9, 1e-11, 1e-12, 1e-13, 1e-14):
        np.testing.assert_allclose(evidence(1.0 - gap), limit, atol=1e-5)
    b_max = ebl.maximum_b(40, np.float64)
    assert 1.0 - 1e-6 < b_max < 1.0 - 1e-7


def test_laplace_is_valid_only_at_a_mode():
    # A point that is not a mode (Newton stopped early, or on a ridge with a near-singular
    # Hessian) gives a log-determinant that can make the "evidence" arbitrarily large; such
    # values must be flagged, and the hyperparameter search must not climb on them.
    X, y, groups, Z = _data(seed=9, n=20, size_range=(3, 6), p=4, q=2)
    design = eb.eb_design(jaxlmm.LMMData.from_arrays(X, y, groups, Z), (), True)
    start = eb.start_params(design, 1.0)
    phi0 = eb.phi_from_variance(start.psi, start.sigma2)
    A = 0.5 * jnp.eye(2)
    # Jitted (two programs instead of op-by-op dispatch), and without the derivative machinery:
    # the mode check is the same code either way.
    laplace = eqx.filter_jit(eb.laplace_log_marginal)
    one_step = laplace(design, 1.0, 0.4, A, phi0 + 1.0, newton_steps=1, differentiable=False)
    converged = laplace(design, 1.0, 0.4, A, phi0 + 1.0, differentiable=False)
    assert converged.converged and not one_step.converged
    # A saddle has det(−H) > 0 when two eigenvalues are negative; only a mode passes.
    f = lambda phi: -ebl.log_integrand(phi, design, 1.0, 0.4, A)  # noqa: E731
    assert np.all(np.linalg.eigvalsh(np.asarray(jax.jit(jax.hessian(f))(converged.phi))) > 0)


def test_eb_ridge_map_vmaps_over_lambda_and_data_sets():
    sets = []
    for seed in range(3):
        X, y, groups, Z = _data(seed=10 + seed, n=12, p=8)
        rng = np.random.default_rng(0)
        sizes = np.repeat(np.arange(12), 5)
        X = rng.normal(size=(60, 8)) + seed
        y = X[:, 0] + rng.normal(size=60) + seed * rng.normal(size=12)[sizes]
        sets.append(jaxlmm.LMMData.from_arrays(X, y, sizes, np.column_stack([np.ones(60), rng.uniform(size=60)])))
    A = 0.5 * jnp.eye(2)
    lams = jnp.asarray([0.1, 1.0, 10.0])
    stacked = jaxlmm.LMMData.stack(sets)
    design_of = jax.vmap(lambda d: eb.eb_design(d, (), True))
    fits = jax.jit(jax.vmap(lambda d, lam: eb.eb_ridge_map(d, lam, 0.3, A)))(design_of(stacked), lams)
    for i, d in enumerate(sets):
        one = eb.eb_ridge_map(eb.eb_design(d, (), True), lams[i], 0.3, A)
        np.testing.assert_allclose(fits.params.beta_G[i], one.params.beta_G, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(fits.params.psi[i], one.params.psi, rtol=1e-6)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(3, 9), q=st.integers(1, 3))
def test_log_likelihood_matches_dense_for_a_singular_psi(seed, n, q):
    """log L by q×q cluster algebra equals the dense one for unbalanced clusters, clusters smaller
    than q (rank-deficient Z_i) and a singular Ψ (the operator itself: tests/test_covariance.py)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 6, size=n)
    groups = np.repeat(np.arange(n), sizes)
    N = len(groups)
    Z = rng.normal(size=(N, q))
    if np.linalg.matrix_rank(Z) < q:
        return
    data = jaxlmm.LMMData.from_arrays(rng.normal(size=(N, 2)), rng.normal(size=N), groups, Z)
    design = eqx.filter_jit(eb.eb_design)(data, (), True)
    M = rng.normal(size=(q, q))
    psi = M @ M.T + 0.1 * np.eye(q)
    sigma2 = float(rng.uniform(0.2, 2.0))
    # The Ψ-based log-likelihood (used by the ECM) stays exact for a singular Ψ.
    singular = psi.copy()
    singular[:, 0] = singular[0, :] = 0.0
    V0 = dense_v(np.asarray(data.cluster), np.asarray(data.Z), singular, sigma2)
    beta_F, beta_G = jnp.asarray([0.3]), jnp.asarray([0.5, -1.0])
    mean = 0.3 + np.asarray(data.X) @ np.asarray(beta_G)
    np.testing.assert_allclose(jax.jit(ebl.log_likelihood)(design, beta_F, beta_G, jnp.asarray(singular), sigma2),
                               stats.multivariate_normal(mean, V0).logpdf(np.asarray(data.y)), rtol=1e-9)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"lam": -1.0}, "lam"),
        ({"lam": float("nan")}, "lam"),
        ({"b": 1.0}, "`b`"),
        ({"b": -0.1}, "`b`"),
        ({"A": "diag"}, "`A`"),
        ({"A": -2.0}, "`A`"),
        ({"A": np.eye(3)}, "q×q"),
        ({"A": np.array([[1.0, 2.0], [2.0, 1.0]])}, "positive definite"),
        ({"unpenalized": [7]}, "unpenalized"),
        ({"unpenalized": [0, 1, 2, 3, 4]}, "every column"),
        ({"lam": 0.0}, "undefined"),
        ({"b": 0.05}, "improper"),
    ],
)
def test_bad_inputs_raise(kwargs, match):
    X, y, groups, Z = _data(seed=9, p=5)
    data = jaxlmm.LMMData.from_arrays(X, y, groups, Z)
    with pytest.raises(ValueError, match=match):
        jaxlmm.fit_eb_ridge(data, **kwargs)


def test_collinear_unpenalized_columns_raise():
    X, y, groups, Z = _data(seed=9, p=5)
    X[:, 2] = 3.0
    data = jaxlmm.LMMData.from_arrays(X, y, groups, Z)
    with pytest.raises(ValueError, match="collinear"):
        jaxlmm.fit_eb_ridge(data, lam=1.0, b=0.3, A=1.0, unpenalized=[2])
