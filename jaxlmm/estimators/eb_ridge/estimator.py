"""Empirical-Bayes regularised linear mixed model (Amestoy, van de Wiel & van Wieringen 2021).

Priors β_G ~ N(0, (σ²/λ) I) on the penalised fixed effects (flat on the intercept and on the
`unpenalized` columns, collected in F) and Σ = Ψ ~ IW(b, A) on the random-effects covariance.
The objectives (log posterior, restricted marginal likelihood, Laplace integrand) and the
data-only algebra (`eb_design`) are in `losses.eb_ridge`. Here, each pure and jit/vmap-able:

* `eb_ridge_map`: the MAP for fixed hyperparameters Θ = (λ, b, A) by ECM;
* `laplace_log_marginal` / `learn_hyperparameters`: log p(y | Θ) with β integrated out exactly
  and a Laplace approximation over the variance parameters, maximised over Θ with L-BFGS;
  `slides_log_marginal`: the EB ridge paper's own recipe (Laplace over all of (β, σ, Σ) at the ECM MAP),
  the alternative `evidence="slides"`.

`fit_eb_ridge` is the user entry point.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax
from jax.flatten_util import ravel_pytree

from ..._data import LMMData
from ..._fit import Fit, Tuning, accepts_formula, finish
from ..._solution import RESULTS, ReportsResult, result_name
from ..._validate import check_data, check_flag, check_indices, check_scalar
from ...solvers.lbfgs import minimise_lbfgs
from ...solvers.newton import damped_newton, value_grad_hessian
from .._driver import caller_fit, frame
from .model import (
    EBDesign,
    EBParams,
    eb_design,
    inverse_wishart_logpdf,
    log_integrand,
    log_posterior,
    maximum_b,
    minimum_proper_b,
    natural_from_variance,
    phi_from_variance,
    posterior_moments,
    profile_log_posterior,
    restricted_log_marginal,
    variance_from_phi,
)


def ridge_coefficients(design: EBDesign, lam, target: Array) -> tuple[Array, Array]:
    """argmin ‖target − Fβ_F − Gβ_G‖² + λ‖β_G‖²: β_G = W diag(d/(d² + λ)) Uᵀ target (minimum
    norm along d = 0), then β_F by least squares on what is left. O(N (p + k)), no p×p matrix."""
    shrink = jnp.where(design.d > 0, design.d / (design.d**2 + lam), 0.0)
    beta_G = design.W @ (shrink * (design.U.T @ target))
    if design.F.shape[1] == 0:
        return jnp.zeros(0, target.dtype), beta_G
    rest = design.QF.T @ (target - design.G @ beta_G)
    return jax.scipy.linalg.solve_triangular(design.RF, rest, lower=False), beta_G


def ecm_step(design: EBDesign, params: EBParams, lam, b, A, normalised_ridge: bool = False) -> EBParams:
    """One ECM iteration. E-step moments (μ_i, C_i) at the current parameters, then the
    conditional maximisations of the expected complete-data objective:

        Ψ⁺ = b A + (1 − b) (1/n) Σ_i (μ_iμ_iᵀ + C_i),
        β⁺ = ridge solution of y − Zμ on (F, G) with penalty λ on β_G,
        σ²⁺ = [Σ_i (‖y_i − X_iβ⁺ − Z_iμ_i‖² + tr(Z_iᵀZ_i C_i)) + λ‖β_G⁺‖²] / N

    (/ (N + p_G) with `normalised_ridge`, the ridge prior's normaliser kept in J). Each step
    maximises the same expected objective, so J (`log_posterior`) never decreases.
    """
    data = design.data
    residual = data.y - design.F @ params.beta_F - design.G @ params.beta_G
    mu, C = posterior_moments(design, params.psi, params.sigma2, residual)
    second = jnp.mean(mu[:, :, None] * mu[:, None, :] + C, axis=0)
    psi = b * A + (1.0 - b) * second
    target = data.y - jnp.sum(data.Z * mu[data.cluster], axis=1)
    beta_F, beta_G = ridge_coefficients(design, lam, target)
    resid = target - design.F @ beta_F - design.G @ beta_G
    trace = jnp.sum(design.ZtZ * C)
    dof = data.n_obs + (design.G.shape[1] if normalised_ridge else 0)
    sigma2 = (resid @ resid + trace + lam * (beta_G @ beta_G)) / dof
    return EBParams(beta_F, beta_G, 0.5 * (psi + psi.T), sigma2)


class EBMap(ReportsResult):
    """In-JIT result of `eb_ridge_map`: `params`, `log_posterior` J, `result`, `num_steps`
    (iterations, each two or three ECM steps)."""

    params: EBParams
    log_posterior: Array
    result: RESULTS
    num_steps: Array


def start_params(design: EBDesign, lam) -> EBParams:
    """A ridge fit ignoring the clusters; Ψ and σ² split the residual variance equally
    (Ψ diagonal, scaled by the mean square of each Z column)."""
    data = design.data
    beta_F, beta_G = ridge_coefficients(design, jnp.maximum(lam, 1e-3), data.y)
    resid = data.y - design.F @ beta_F - design.G @ beta_G
    s2 = jnp.maximum(resid @ resid / data.n_obs, 1e-8 * (data.y @ data.y) / data.n_obs)
    z2 = jnp.mean(data.Z**2, axis=0)
    return EBParams(beta_F, beta_G, jnp.diag(0.5 * s2 / z2), 0.5 * s2)


def eb_ridge_map(design: EBDesign, lam, b, A, params0: EBParams | None = None, tol: float = 1e-12,
                 max_steps: int = 5_000, accelerate: bool = True, normalised_ridge: bool = False) -> EBMap:
    """MAP of (β, Ψ, σ²) for fixed Θ = (λ, b, A) by ECM (`ecm_step`), as one `lax.while_loop`.

    With `accelerate` (default) each iteration is a SQUAREM step (Varadhan & Roland 2008): two
    ECM steps x₁, x₂ from x₀, the extrapolation x₀ − 2α r + α² v (r = x₁ − x₀,
    v = x₂ − 2x₁ + x₀, α = −max(1, ‖r‖/‖v‖)) and one ECM step from there; it is kept only if
    its J is at least that of x₂, so J still never decreases and the fixed point is the ECM's.
    Stops when J rises by ≤ `tol`·(1 + |J|) in one iteration (result `successful`), after
    `max_steps` (`max_steps_reached`), or on a non-finite J (`nonfinite`). Pure: vmap it over
    data sets (stacked designs) or over λ / b / A. b ∈ [0, 1) (b = 0: no prior on Ψ), λ ≥ 0.
    `normalised_ridge` (static): the mode of the EB ridge paper's posterior, the ridge prior's normaliser
    −(p_G/2) log σ² kept in J (see `log_posterior`).
    """
    lam = jnp.asarray(lam, design.d.dtype)
    b = jnp.asarray(b, design.d.dtype)
    params = start_params(design, lam) if params0 is None else params0
    flat0, unravel = ravel_pytree(params)

    def objective(x):
        return log_posterior(design, unravel(x), lam, b, A, normalised_ridge)

    def step(x):
        return ravel_pytree(ecm_step(design, unravel(x), lam, b, A, normalised_ridge))[0]

    def squarem(x0):
        x1 = step(x0)
        x2 = step(x1)
        if not accelerate:
            return x2, objective(x2)
        r, v = x1 - x0, x2 - 2.0 * x1 + x0
        alpha = -jnp.maximum(1.0, jnp.linalg.norm(r) / jnp.maximum(jnp.linalg.norm(v), jnp.finfo(x0.dtype).tiny))
        x3 = step(x0 - 2.0 * alpha * r + alpha**2 * v)
        j2, j3 = objective(x2), objective(x3)
        p3 = unravel(x3)
        admissible = (p3.sigma2 > 0) & (jnp.min(jnp.linalg.eigvalsh(p3.psi)) >= 0)
        better = admissible & jnp.isfinite(j3) & (j3 >= j2)
        return jnp.where(better, x3, x2), jnp.where(better, j3, j2)

    def keep_going(value, previous, it):
        rising = value - previous > tol * (1.0 + jnp.abs(value))
        return rising & jnp.isfinite(value) & (it < max_steps)

    def body(s):
        x, value, it, _ = s
        x, new_value = squarem(x)
        return x, new_value, it + 1, keep_going(new_value, value, it + 1)

    # The stopping flag is carried rather than recomputed in `cond` (see `damped_newton`: a
    # batched predicate evaluated twice must not be able to disagree with itself).
    start = objective(flat0)
    init = (flat0, start, 0, jnp.isfinite(start) & (max_steps > 0))
    flat, value, steps, _ = lax.while_loop(lambda s: s[3], body, init)
    result = RESULTS.where(
        ~jnp.isfinite(value),
        RESULTS.nonfinite,
        RESULTS.where(steps >= max_steps, RESULTS.max_steps_reached, RESULTS.successful),
    )
    return EBMap(unravel(flat), value, result, steps)


# ---- marginal likelihood ------------------------------------------------------------------------


class LaplaceMarginal(ReportsResult):
    """`value` ≈ log p(y | Θ); `phi` the mode φ̂ of ℓ; `result` `successful` where φ̂ is a mode
    (∇²ℓ negative definite and the Newton decrement ≤ max(1e−6, 100 eps (1 + |ℓ|))) and the value
    is finite, `no_mode` otherwise (the value then means nothing)."""

    value: Array
    phi: Array
    result: RESULTS


def _marginal(value, phi, is_mode) -> LaplaceMarginal:
    return LaplaceMarginal(value, phi, RESULTS.where(is_mode, RESULTS.successful, RESULTS.no_mode))


def laplace_log_marginal(design: EBDesign, lam, b, A: Array, phi0: Array, newton_steps: int = 50,
                         differentiable: bool = True) -> LaplaceMarginal:
    """Laplace approximation over the d = q(q+1)/2 + 1 variance parameters:

        log p(y | Θ) ≈ ℓ(φ̂) + (d/2) log 2π − ½ log|−∇²ℓ(φ̂)|,

    φ̂ = argmax ℓ by damped Newton from `phi0` (autodiff Hessian). Differentiable in Θ: φ̂ is
    re-expressed as one Newton step from its stopped-gradient value, which has the exact
    implicit derivative −H⁻¹ ∂²ℓ/∂φ∂Θ at a stationary point. b above `maximum_b` counts as
    `maximum_b` (see `inverse_wishart_logpdf`; the evidence is flat there to working precision).
    `differentiable=False` (static) takes the log-determinant at φ̂ itself: the same value to
    the Newton tolerance, one Hessian fewer to compile, for callers that never differentiate.
    """

    def f(phi):
        return -log_integrand(phi, design, lam, b, A)

    if differentiable:
        phi_hat = lax.stop_gradient(damped_newton(f, lax.stop_gradient(phi0), newton_steps).value)
        value, grad, hess = value_grad_hessian(f, phi_hat)
    else:  # the derivatives of Newton's last step, at φ̂ when it converged
        newton_fit, (value, grad, hess) = damped_newton(f, phi0, newton_steps, return_derivatives=True)
        phi_hat = newton_fit.value
    # Envelope theorem: at the mode, d f(φ̂(Θ), Θ)/dΘ = ∂f/∂Θ, so the value needs no φ̂-derivative;
    # the log-determinant does, through one Newton step (implicit derivative −H⁻¹ ∂²f/∂φ∂Θ).
    newton = jnp.linalg.solve(hess, grad)
    if differentiable:
        sign, log_det = jnp.linalg.slogdet(jax.hessian(f)(phi_hat - newton))
    else:
        sign, log_det = jnp.linalg.slogdet(hess)
    d = phi0.shape[0]
    value = -value + 0.5 * d * math.log(2.0 * math.pi) - 0.5 * log_det
    # A mode: the Hessian positive definite (not just det > 0) and the Newton decrement gᵀH⁻¹g,
    # the rise in ℓ one more step would bring, negligible. Newton stopped on a ridge or a saddle
    # gives a near-singular H and a log-determinant that makes the "evidence" arbitrarily large.
    # The bound follows the dtype: f carries rounding of ~eps·|f|, so float32 cannot meet 1e-6.
    negligible = jnp.maximum(1e-6, 100 * jnp.finfo(value.dtype).eps * (1.0 + jnp.abs(lax.stop_gradient(value))))
    decrement = lax.stop_gradient(grad @ newton)
    is_mode = (jnp.min(jnp.linalg.eigvalsh(lax.stop_gradient(hess))) > 0) & (decrement <= negligible)
    return _marginal(value, phi_hat, is_mode & (sign > 0) & jnp.isfinite(value))


def slides_log_marginal(design: EBDesign, lam, b, A: Array, params: EBParams) -> LaplaceMarginal:
    """The EB ridge paper's Laplace approximation: over all of θ = (β, σ, vech Σ), in that natural
    parameterisation, at the MAP θ* = `params` of ℓ that the ECM finds
    (`eb_ridge_map(..., normalised_ridge=True)`),

        log p(y | Θ) ≈ ℓ(θ*) + (d/2) log 2π − ½ log|−∇²ℓ(θ*)|,   d = k + p_G + 1 + q(q+1)/2,
        ℓ(θ) = log p(y | θ) + log N(β_G; 0, (σ²/λ) I) + log IW(Σ; b, A)   (flat on β_F and σ).

    No p×p Hessian is formed. ℓ is Gaussian in β and β* maximises ℓ(·, v*) (at any ECM fixed
    point: the ECM objectives differ from ℓ at most in terms of σ), so
    ℓ(θ*) + ((k + p_G)/2) log 2π − ½ log|−∇²_ββ ℓ| is the exact integral log ∫ exp ℓ(β, v*) dβ
    = `restricted_log_marginal` − ½ log|FᵀF| + log IW(Σ*), and the Schur complement of the
    β-block is −∇² of `profile_log_posterior` at v* = (σ*, vech Σ*).
    At the default MAP (no normaliser in the ridge prior, `normalised_ridge=False`) θ* is not
    stationary in σ, and for p_G > N the Hessian there is indefinite (the σ direction): hence
    the slides' own MAP. `phi` is v*; `successful`: −∇²ℓ_p(v*) positive definite, the value finite."""
    L = jnp.linalg.cholesky(params.psi)
    integrated = (restricted_log_marginal(design, L, params.sigma2, lam) - 0.5 * design.logdet_FtF
                  + inverse_wishart_logpdf(L, b, A, design.data.n_clusters))
    v = natural_from_variance(params.psi, params.sigma2)
    curvature = -jax.hessian(profile_log_posterior)(v, design, lam, b, A)
    sign, log_det = jnp.linalg.slogdet(curvature)
    value = integrated + 0.5 * v.shape[0] * math.log(2.0 * math.pi) - 0.5 * log_det
    valid = (jnp.min(jnp.linalg.eigvalsh(curvature)) > 0) & (sign > 0) & jnp.isfinite(value)
    return _marginal(value, v, valid)


EVIDENCE = ("laplace", "slides")


class ImportanceEstimate(eqx.Module):
    """`value` ≈ log p(y | Θ) by importance sampling, its Monte Carlo standard error `se`
    (delta method) and the effective sample size `ess` of the weights."""

    value: Array
    se: Array
    ess: Array


def importance_log_marginal(design: EBDesign, lam, b, A: Array, key: Array, target: str = "laplace",
                            draws: int = 20_000, df: float = 4.0, scale: float = 1.5,
                            batch_size: int = 1_000, newton_steps: int = 100) -> ImportanceEstimate:
    """A reference for the Laplace values that does not rely on Laplace: the integral over the
    variance parameters (β and every b_i already integrated out exactly) by importance sampling,

        log ∫ exp ℓ(φ) dφ ≈ log (1/M) Σ_m exp(ℓ(φ_m) − log g(φ_m)),   φ_m ~ g,

    g a multivariate t (`df` degrees of freedom; heavy tails, so the weights have a variance)
    centred at the mode of `log_integrand` with `scale` times the inverse of its negative
    Hessian. φ = (log-Cholesky of Ψ, log σ²). `target` "laplace": ℓ = `log_integrand` (the
    integral `laplace_log_marginal` approximates: flat prior on log σ²); "slides": the integral
    `slides_log_marginal` approximates, over (σ, vech Σ) with a flat prior on σ (ℓ gains
    log|dσ/d log σ²| = log σ − log 2 and the contrasts' −½ log|FᵀF|). Draws are evaluated
    `batch_size` at a time (`lax.map`). Trust it when `ess` is a sizeable fraction of `draws`."""
    if target not in EVIDENCE:
        raise ValueError(f"`target` must be one of {EVIDENCE}; got {target!r}.")
    start = start_params(design, lam)
    phi0 = phi_from_variance(start.psi, start.sigma2)

    def f(phi):
        return -log_integrand(phi, design, lam, b, A)

    newton, (_, _, hess) = damped_newton(f, phi0, newton_steps, return_derivatives=True)
    mode = newton.value
    d = mode.shape[0]
    shape = scale * jnp.linalg.inv(0.5 * (hess + hess.T))
    chol = jnp.linalg.cholesky(shape)
    k_normal, k_gamma = jax.random.split(key)
    z = jax.random.normal(k_normal, (draws, d), mode.dtype)
    w = 2.0 * jax.random.gamma(k_gamma, df / 2.0, (draws,), mode.dtype) / df  # χ²_df / df
    x = mode + (z @ chol.T) / jnp.sqrt(w)[:, None]
    delta = jnp.sum((z / jnp.sqrt(w)[:, None]) ** 2, axis=1)  # (x − mode)ᵀ shape⁻¹ (x − mode)
    log_g = (jax.scipy.special.gammaln((df + d) / 2.0) - jax.scipy.special.gammaln(df / 2.0)
             - 0.5 * d * jnp.log(df * math.pi) - jnp.sum(jnp.log(jnp.diagonal(chol)))
             - 0.5 * (df + d) * jnp.log1p(delta / df))

    def log_target(phi):
        value = log_integrand(phi, design, lam, b, A)
        if target == "slides":
            value = value + 0.5 * phi[-1] - math.log(2.0) - 0.5 * design.logdet_FtF
        return value

    ell = lax.map(log_target, x, batch_size=batch_size)
    log_w = jnp.where(jnp.isfinite(ell), ell - log_g, -jnp.inf)
    total = jax.scipy.special.logsumexp(log_w)
    ess = jnp.exp(2.0 * total - jax.scipy.special.logsumexp(2.0 * log_w))
    se = jnp.sqrt(jnp.maximum(draws / ess - 1.0, 0.0) / draws)
    return ImportanceEstimate(total - math.log(draws), se, ess)


# ---- hyperparameters ----------------------------------------------------------------------------


class Hyperparameters(eqx.Module):
    """Θ = (λ, b, A) and how they were obtained. `log_marginal` ≈ log p(y | Θ); `result`
    reports the L-BFGS run, then the evidence at its end (`no_mode` where the Laplace
    approximation found no mode there, `nonfinite` where its value is not finite)."""

    lam: Array
    b: Array
    A: Array
    log_marginal: Array
    phi: Array
    result: RESULTS
    num_steps: Array


def _unpack(u, fixed_lam, fixed_b, fixed_A, learn_A: str, q: int, b_min: float, b_max: float):
    """Free vector u → Θ. Free entries: log λ; t with b = b_min + (b_max − b_min) sigmoid(t); log α
    (A = α I) or the log-Cholesky of a full A."""
    i = 0
    if fixed_lam is None:
        lam, i = jnp.exp(u[0]), 1
    else:
        lam = fixed_lam
    if fixed_b is None:
        b, i = b_min + (b_max - b_min) * jax.nn.sigmoid(u[i]), i + 1
    else:
        b = fixed_b
    if learn_A == "scalar":
        A = jnp.exp(u[i]) * jnp.eye(q, dtype=u.dtype)
    elif learn_A == "full":
        L, _ = variance_from_phi(jnp.append(u[i:], 0.0), q)
        A = L @ L.T
    else:
        A = fixed_A
    return lam, b, A


def _central_differences(f, phi0):
    """(f(u), aux), ∇f(u) with the gradient by central differences, for f(u, phi_start) →
    (value, LaplaceMarginal). Θ has a handful of free members, and autodiff through the Laplace
    approximation needs third derivatives of the log-likelihood, whose program is several times
    slower to compile; this one compiles the evidence alone, once: the 2d + 1 evaluations run in one
    scan, the centre first (its inner Newton solve from `phi0`), then the perturbed points
    from the centre's mode (one or two Newton steps each). Steps h = eps^(1/3)(1 + |u|) balance
    truncation and rounding (gradient error ~ eps^(2/3)); where one side has no mode (f = +∞),
    the other side's one-sided difference is used."""

    def value_and_grad(u):
        d = u.shape[0]
        h = jnp.cbrt(jnp.finfo(u.dtype).eps) * (1.0 + jnp.abs(u))
        points = jnp.concatenate([u[None], u + jnp.diag(h), u - jnp.diag(h)])

        def step(phi_start, k):
            value, aux = f(points[k], phi_start)
            return jnp.where(k == 0, aux.phi, phi_start), (value, aux)

        _, (values, auxes) = lax.scan(step, phi0, jnp.arange(2 * d + 1))
        centre, aux = values[0], jax.tree.map(lambda x: x[0], auxes)
        plus, minus = values[1 : d + 1], values[d + 1 :]
        ok_plus, ok_minus = jnp.isfinite(plus), jnp.isfinite(minus)
        grad = jnp.where(ok_plus & ok_minus, (plus - minus) / (2.0 * h),
                         jnp.where(ok_plus, (plus - centre) / h, jnp.where(ok_minus, (centre - minus) / h, 0.0)))
        return (centre, aux), grad

    return value_and_grad


def learn_hyperparameters(design: EBDesign, lam=None, b=None, A=None, learn_A: str = "scalar",
                          start: EBParams | None = None, max_steps: int = 200, gtol: float = 1e-5,
                          newton_steps: int = 50, gradient: str = "differences",
                          evidence: str = "laplace") -> Hyperparameters:
    """Maximise the Laplace log marginal likelihood over the free members of Θ (those given as
    None; `learn_A` "scalar" learns A = α I, "full" a full A, "none" keeps `A` fixed) by
    L-BFGS (optax's direction, Armijo backtracking) on the unconstrained scale, with the
    gradient by central differences (`_central_differences`; `gradient="autodiff"` differentiates
    the Laplace approximation instead: the same optimum, a faster run once compiled, a program
    that takes several times longer to compile — the choice for long sweeps; times on the
    benchmarks page). Pure and jit-able (the
    choice of free members is static). `evidence="slides"` maximises `slides_log_marginal`
    instead, with the ECM MAP recomputed at every Θ (from the previous point's MAP within a
    gradient; central differences only); its `phi` is then the flattened MAP.
    """
    data = design.data
    q = data.Z.shape[1]
    n = data.n_clusters
    dtype = design.d.dtype
    b_min, b_max = minimum_proper_b(n, q), maximum_b(n, dtype)
    start = start_params(design, jnp.asarray(1.0 if lam is None else lam, dtype)) if start is None else start
    u0 = []
    if lam is None:
        u0.append(jnp.zeros((), dtype))  # λ = 1: prior variance of β_G equal to σ²
    if b is None:
        u0.append(jnp.asarray(-1.0, dtype))  # b about b_min + 0.27 (b_max − b_min)
    alpha0 = jnp.mean(jnp.diagonal(start.psi))
    if learn_A == "scalar":
        u0.append(jnp.log(alpha0))
    elif learn_A == "full":
        u0.append(phi_from_variance(alpha0 * jnp.eye(q, dtype=dtype), jnp.ones((), dtype))[:-1])
    u0 = jnp.concatenate([jnp.atleast_1d(x) for x in u0])

    def theta(u):
        return _unpack(u, lam, b, A, learn_A, q, b_min, b_max)

    if evidence == "laplace":
        phi0 = phi_from_variance(start.psi, start.sigma2)

        def negative(u, phi_start):
            laplace = laplace_log_marginal(design, *theta(u), phi_start, newton_steps, gradient == "autodiff")
            # Where no mode was found the value means nothing: +∞ makes the line search step back.
            return jnp.where(laplace.converged, -laplace.value, jnp.inf), laplace

    elif evidence == "slides":
        if gradient != "differences":
            raise ValueError("`gradient` must be 'differences' with evidence='slides'.")
        phi0, unravel = ravel_pytree(start)

        def negative(u, flat_start):
            lam_u, b_u, A_u = theta(u)
            fit = eb_ridge_map(design, lam_u, b_u, A_u, unravel(flat_start), normalised_ridge=True)
            laplace = slides_log_marginal(design, lam_u, b_u, A_u, fit.params)
            ok = laplace.converged & fit.converged
            aux = _marginal(laplace.value, ravel_pytree(fit.params)[0], ok)
            return jnp.where(ok, -laplace.value, jnp.inf), aux

    else:
        raise ValueError(f"`evidence` must be one of {EVIDENCE}; got {evidence!r}.")
    if gradient == "autodiff":
        objective = jax.value_and_grad(lambda u: negative(u, phi0), has_aux=True)
    elif gradient == "differences":
        objective = _central_differences(negative, phi0)
    else:
        raise ValueError(f"`gradient` must be 'differences' or 'autodiff'; got {gradient!r}.")
    search, laplace = minimise_lbfgs(objective, u0, max_steps, gtol)
    lam_hat, b_hat, A_hat = theta(search.value)
    result = RESULTS.where(search.converged, laplace.result, search.result)
    result = RESULTS.where(jnp.isfinite(laplace.value), result, RESULTS.nonfinite)
    return Hyperparameters(jnp.asarray(lam_hat, dtype), jnp.asarray(b_hat, dtype), A_hat, laplace.value,
                           laplace.phi, result, search.stats["num_steps"])


# ---- user entry point --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EBRidgeFit(Fit):
    """Result of `fit_eb_ridge`: the `Fit` protocol (β̂, Ψ̂, σ̂² at the MAP; `ranef` the posterior
    means E[b_i | y] at the MAP; `support` every column, a ridge keeps them all; `n_iter` the
    ECM iterations; `result`: the first failure of ECM, the L-BFGS search when anything was
    learned (`boundary` for a learned λ at the edge of its range), and the Laplace evidence
    (`no_mode` where it has no mode with a negative definite Hessian and Newton decrement
    ≤ 1e−6)), plus

    - `lam`, `b`, `A` (q×q), `nu`/`Phi` (the same prior as IW(ν, Φ)).
    - `log_marginal_likelihood` (Laplace, at Θ; None when the prior is improper: λ = 0 or
      b ≤ 2q/(n + 2q)), `log_posterior` (J at the MAP), `learned` (which of λ, b, A were
      learned).
    """

    lam: float
    b: float
    A: np.ndarray
    nu: float
    Phi: np.ndarray
    log_marginal_likelihood: float | None
    log_posterior: float
    learned: tuple

    # The prior variance σ²/λ of β: λ = s_x² λ̃; A and Φ in Ψ's units; log-densities shift by
    # Jacobians that depend on the fit (`fit_eb_ridge`'s overrides).
    UNITS = {**Fit.UNITS, "lam": "x2", "A": "y2", "Phi": "y2", "log_marginal_likelihood": None,
             "log_posterior": None}

    method = "empirical-Bayes ridge LMM (ridge prior on β, inverse-Wishart prior on Ψ)"

    @property
    def hyperparameters(self) -> dict:
        return {"lam": self.lam, "b": self.b, "A": self.A}

    @property
    def criteria(self) -> dict:
        return {"log marginal likelihood (Laplace)": self.log_marginal_likelihood, "log posterior": self.log_posterior}

    @property
    def tuning(self) -> Tuning | None:
        if not self.learned:
            return None
        return Tuning(parameters={name: None for name in self.learned}, criterion="laplace evidence",
                      values=None, fold_values=None, choice={name: getattr(self, name) for name in self.learned})


def _result(fit, hyper_result: str, evidence) -> str:
    """The first failure's `RESULTS` name: ECM, then the hyperparameter search, then the evidence."""
    if not bool(fit.converged):
        return result_name(fit.result)
    if hyper_result != "successful":
        return hyper_result
    return "successful" if evidence is None else result_name(evidence.result)


# A learned ridge λ (on the fitting scale, columns of unit root mean square) outside
# [1e-8, 1e8]·N: the shrinkage factor N/(N + λ) of a column is then 1 or 0 to 8 digits.
LAMBDA_EDGE = 1e8


def _lambda_at_edge(lam: float, n_obs: int) -> bool:
    return not (n_obs / LAMBDA_EDGE <= lam <= n_obs * LAMBDA_EDGE)


def _check_A(A, q):
    if A is None:
        return "scalar", None
    if isinstance(A, str):
        if A != "full":
            raise ValueError(f"`A` must be None, 'full', a positive number or a q×q matrix; got {A!r}.")
        return "full", None
    A_arr = np.asarray(A, float)
    if A_arr.ndim == 0:
        if not np.isfinite(A_arr) or A_arr <= 0:
            raise ValueError(f"`A` as a number must be positive and finite (A = α I); got {A}.")
        return "none", A_arr * np.eye(q)
    if A_arr.shape != (q, q):
        raise ValueError(f"`A` must be q×q = {q}×{q}; got shape {A_arr.shape}.")
    if not np.all(np.isfinite(A_arr)) or not np.allclose(A_arr, A_arr.T):
        raise ValueError("`A` must be finite and symmetric.")
    if np.linalg.eigvalsh(A_arr).min() <= 0:
        raise ValueError("`A` must be positive definite (it is the prior mode of Ψ).")
    return "none", A_arr


@eqx.filter_jit
def _learn(design, lam, b, A, learn_A, recipe):
    return learn_hyperparameters(design, lam, b, A, learn_A, evidence=recipe)


@eqx.filter_jit
def _map_and_evidence(design, lam, b, A, proper, recipe):
    fit = eb_ridge_map(design, lam, b, A, normalised_ridge=recipe == "slides")
    residual = design.data.y - design.F @ fit.params.beta_F - design.G @ fit.params.beta_G
    mu, _ = posterior_moments(design, fit.params.psi, fit.params.sigma2, residual)
    evidence = None
    if proper and recipe == "slides":
        evidence = slides_log_marginal(design, lam, b, A, fit.params)
    elif proper:
        evidence = laplace_log_marginal(design, lam, b, A, phi_from_variance(fit.params.psi, fit.params.sigma2),
                                        differentiable=False)  # a value: no derivative machinery to compile
    return fit, mu, evidence


@accepts_formula
def fit_eb_ridge(data: LMMData, lam=None, *, formula: str | None = None, b=None, A=None, unpenalized=None,
                 intercept: bool = True, evidence: str = "laplace", throw: bool = False) -> EBRidgeFit:
    """Empirical-Bayes regularised LMM (Amestoy, van de Wiel & van Wieringen):

        y_i = β_0 + X_i β + Z_i b_i + ε_i,  b_i ~ N(0, Ψ),  ε_i ~ N(0, σ² I),
        β_k ~ N(0, σ²/λ) for penalised k,   Ψ ~ IW(b, A),

    where IW(b, A) = IW(ν, Φ) with ν = b n/(1 − b) − q − 1 and Φ = (ν + q + 1) A: A is the prior
    mode of Ψ and b the weight it gets in the EM update Ψ⁺ = b A + (1 − b) mean E[b_i b_iᵀ].

    Hyperparameters left at `None` are learned by maximising the Laplace approximation of
    log p(y | λ, b, A) (β integrated out exactly, Laplace over the variance parameters; see
    `laplace_log_marginal`); then (β, Ψ, σ²) is the MAP at those values, by ECM
    (`eb_ridge_map`). The prior on β is stated on X's own scale (no standardisation): give
    columns comparable units.

    **Arguments:**

    - `data`: an `LMMData`.
    - `lam`: ridge λ ≥ 0 (0 = no ridge prior, only when the fixed effects are identifiable),
      or None to learn it.
    - `b`: prior weight in [0, 1) (0 = no prior on Ψ), or None to learn it in (2q/(n + 2q), b_max),
      the range where the inverse-Wishart is proper (b_max = 1 − n·eps^(1/2) approximately, see
      `losses.eb_ridge.maximum_b`; b = b_max means Ψ ≈ A to working precision).
    - `A`: None (learn A = α I), "full" (learn a full A), a positive number α (A = α I fixed)
      or a q×q positive definite matrix (fixed).
    - `unpenalized`: column indices of X with a flat prior (besides the intercept).
    - `intercept`: include an unpenalised intercept (default True).
    - `evidence`: the approximation of log p(y | Θ) that is reported and maximised. "laplace"
      (default): β integrated out exactly, Laplace over the log-Cholesky of Ψ and log σ² (flat
      prior on log σ²) at the mode of that integrand. "slides": the EB ridge paper's own recipe, Laplace
      over all of (β, σ, vech Σ) in that natural parameterisation at the mode of the slides'
      posterior (flat prior on σ, the ridge prior's normaliser (σ²)^(−p/2) kept in, so σ̂² is
      the default's times about N/(N + p)); the reported MAP is that mode
      (`slides_log_marginal`).
    - `throw`: raise a `RuntimeError` with the `RESULTS` message when the fit did not succeed
      (default False: the fit's `result` and `converged` say so, the choice inside sweeps).

    Raises `ValueError` for negative or non-finite λ, b ∉ [0, 1), a bad A, bad `unpenalized`
    indices, no penalised column left, unpenalised columns that are collinear, or a request to
    learn hyperparameters with λ = 0 or b ≤ 2q/(n + 2q) fixed (the evidence is then undefined).
    """
    check_data(data)
    throw = check_flag("throw", throw)
    intercept = check_flag("intercept", intercept)
    if evidence not in EVIDENCE:
        raise ValueError(f"`evidence` must be one of {EVIDENCE}; got {evidence!r}.")
    recipe = evidence
    q, p, n = data.Z.shape[1], data.n_features, data.n_clusters
    lam = check_scalar("lam", lam)
    b = check_scalar("b", b)
    if b is not None and not b < 1.0:
        raise ValueError(f"`b` must be in [0, 1) or None; got {b}.")
    learn_A, A_fixed = _check_A(A, q)
    unpen = () if unpenalized is None else tuple(int(j) for j in check_indices("unpenalized", unpenalized, p))
    if len(unpen) == p:
        raise ValueError("`unpenalized` lists every column of X: there is nothing for the ridge prior to act on.")
    k = len(unpen) + int(intercept)
    if k:
        F = np.column_stack(([np.ones(data.n_obs)] if intercept else []) + [np.asarray(data.X[:, j]) for j in unpen])
        if np.linalg.matrix_rank(F) < k:
            raise ValueError(
                "`unpenalized` columns (with the intercept) are collinear: their effects are not identifiable."
            )
    learned = tuple(name for name, value in (("lam", lam), ("b", b)) if value is None)
    learned += ("A",) if learn_A != "none" else ()
    if learned and lam is not None and float(lam) == 0.0:
        raise ValueError("`lam` = 0 (a flat prior on β) leaves the marginal likelihood undefined, so nothing can "
                         "be learned from it: give `b` and `A` too, or lam > 0.")
    if learned and b is not None and float(b) <= minimum_proper_b(n, q):
        raise ValueError(f"`b` = {b} ≤ 2q/(n + 2q) = {minimum_proper_b(n, q):.3g} makes the inverse-Wishart prior "
                         "improper, so the marginal likelihood is undefined: give `lam` and `A` too, or a larger b.")
    # Fit on y / s_y and X / s_x (powers of two, `_scale`): β = (s_y/s_x) β̃, Ψ = s_y² Ψ̃, σ² = s_y² σ̃²,
    # and the priors map exactly with λ̃ = λ s_x⁻² (the prior variance σ²/λ of β) and Ã = A / s_y².
    caller = frame(data)
    data, units = caller.data, caller.scale
    if lam is not None:
        lam = lam / units.x**2
    if A_fixed is not None:
        A_fixed = A_fixed / units.y / units.y
    design = eb_design(data, unpen, intercept)
    dtype = data.y.dtype
    hyper_result = "successful"
    if learned:
        hyper = _learn(design, None if lam is None else jnp.asarray(lam, dtype),
                       None if b is None else jnp.asarray(b, dtype),
                       None if A_fixed is None else jnp.asarray(A_fixed, dtype), learn_A, recipe)
        lam_v, b_v, A_v = float(hyper.lam), float(hyper.b), np.asarray(hyper.A)
        hyper_result = result_name(hyper.result)
        if hyper_result == "successful" and "lam" in learned and _lambda_at_edge(lam_v, data.n_obs):
            hyper_result = "boundary"
            warnings.warn(f"fit_eb_ridge: λ̂ = {lam_v * units.x**2:.3g}. " + RESULTS[RESULTS.boundary],
                          RuntimeWarning, stacklevel=3)
    else:
        lam_v, b_v, A_v = float(lam), float(b), A_fixed
    # The search already evaluated the evidence at its optimum; only fixed Θ needs it computed.
    proper = not learned and lam_v > 0 and b_v > minimum_proper_b(n, q)
    fit, mu, evidence = _map_and_evidence(design, jnp.asarray(lam_v, dtype), jnp.asarray(b_v, dtype),
                                          jnp.asarray(A_v, dtype), proper, recipe)
    if learned:
        evidence = LaplaceMarginal(hyper.log_marginal, hyper.phi, RESULTS.where(
            hyper.result == RESULTS.no_mode, RESULTS.no_mode, RESULTS.successful))
    coef = np.zeros(p)
    coef[list(design.penalized)] = np.asarray(fit.params.beta_G)
    beta_F = np.asarray(fit.params.beta_F)
    coef[list(unpen)] = beta_F[int(intercept):]
    c = b_v * n / (1.0 - b_v)
    # Back to the caller's scale. log p(y) gains −N log s_y and the Jacobian of the flat-prior
    # coefficients (k of them, k − intercept on columns of X): +k log s_y − (k − intercept) log s_x;
    # J gains −N log s_y − c_b q log s_y (its log|Ψ| term).
    log_s, log_x = np.log(units.y), np.log(units.x)
    # The slides' integral runs over σ itself (dσ = s_y dσ̃), ours over log σ² (scale-free).
    evidence_shift = -data.n_obs * log_s + k * log_s - (k - int(intercept)) * log_x
    evidence_shift += log_s if recipe == "slides" else 0.0
    posterior_shift = -data.n_obs * log_s - (c * q * log_s if b_v > 0 else 0.0)
    posterior_shift -= len(design.penalized) * log_s if recipe == "slides" else 0.0  # J's −(p_G/2) log σ²
    factors = {"log_marginal_likelihood": lambda v: v + evidence_shift, "log_posterior": lambda v: v + posterior_shift}
    fit = caller_fit(
        EBRidgeFit, caller, factors, coef=coef, intercept=float(beta_F[0]) if intercept else 0.0,
        psi=np.asarray(fit.params.psi), sigma2=float(fit.params.sigma2), ranef=np.asarray(mu), lam=float(lam_v),
        b=b_v, A=np.asarray(A_v), nu=c - q - 1.0, Phi=c * np.asarray(A_v), support=np.flatnonzero(coef),
        log_marginal_likelihood=None if evidence is None else float(evidence.value),
        log_posterior=float(fit.log_posterior), learned=learned, n_iter=int(fit.num_steps),
        result=_result(fit, hyper_result, evidence))
    return finish(fit, throw)
