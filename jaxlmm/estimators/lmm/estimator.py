"""`fit_lmm`: the unpenalised linear mixed model by ML or REML, with β and σ² profiled out as
in lme4 (Bates, Mächler, Bolker & Walker 2015), so that only the relative Cholesky factor θ of
Ψ/σ² is optimised (L-BFGS)."""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from scipy import stats as scipy_stats

from ..._covariance import (
    ClusterCovariance,
    canonical_theta,
    cholesky_factor,
    cluster_cross,
    cluster_sum,
    diagonal_parameters,
    n_covariance_parameters,
)
from ..._data import LMMData
from ..._fit import Fit, accepts_formula, finish
from ..._inference import InferenceTable, row_results
from ..._scale import power_of_two, rms
from ..._solution import RESULTS, result_name
from ..._validate import check_count, check_data, check_flag, check_fraction
from ...solvers.lbfgs import minimise_lbfgs
from .._driver import caller_fit, frame

STRUCTURES = ("full", "diagonal", "identity")
SINGULAR_TOLERANCE = 1e-4  # lme4's isSingular(): a diagonal entry of θ below this is on the boundary


class ProfileStatistics(eqx.Module):
    """What the profiled likelihood needs of the data, computed once: per cluster Z_iᵀZ_i,
    Z_iᵀD_i, Z_iᵀy_i, ‖y_i‖² and m_i, and DᵀD, Dᵀy for the fixed-effects design D (N × p').
    Every evaluation is then O(n q² p' + p'³), independent of N."""

    ZtZ: Array
    ZtD: Array
    Zty: Array
    yy: Array
    sizes: Array
    DtD: Array
    Dty: Array


def profile_statistics(data: LMMData, D: Array, y: Array) -> ProfileStatistics:
    return ProfileStatistics(cluster_cross(data, data.Z, data.Z), cluster_cross(data, data.Z, D),
                             cluster_sum(data, data.Z * y[:, None]), cluster_sum(data, y * y),
                             data.cluster_sizes.astype(y.dtype), D.T @ D, D.T @ y)


class ProfiledFit(eqx.Module):
    """The profiled quantities at θ: `criterion` (−2 log L or −2 log L_R), `beta` (p'), `r2`
    (the penalised residual sum of squares), `DtWD` (Dᵀ V⁻¹ D σ², p' × p'), `covariance` (the
    operator with σ² = 1 and Ψ = ΛΛᵀ, for the BLUPs)."""

    criterion: Array
    beta: Array
    r2: Array
    DtWD: Array
    covariance: ClusterCovariance


def profiled(theta: Array, s: ProfileStatistics, structure: str, reml: bool) -> ProfiledFit:
    """With V_i = σ²(I + Z_iΛΛᵀZ_iᵀ) and W = the bracket's inverse, β̂(θ) = (DᵀWD)⁻¹DᵀWy,
    r²(θ) = yᵀWy − (DᵀWy)ᵀβ̂ and σ̂² = r²/ν. Then (lme4's profiled deviance and REML criterion)

        −2 log L(θ)   = log|I + ΛᵀZᵀZΛ| + N (1 + log(2π r²/N)),
        −2 log L_R(θ) = log|I + ΛᵀZᵀZΛ| + log|DᵀWD| + (N − p')(1 + log(2π r²/(N − p'))).

    Every V⁻¹ product goes through `ClusterCovariance` (Cholesky route, q×q per cluster)."""
    q = s.ZtZ.shape[-1]
    L = cholesky_factor(theta, structure, q)
    cov = ClusterCovariance(s.ZtZ, s.sizes, L @ L.T, jnp.ones((), theta.dtype), L)
    pushed_D = cov._push(s.ZtD)
    DtWD = s.DtD - jnp.einsum("iqa,iqb->ab", s.ZtD, pushed_D)
    DtWD = 0.5 * (DtWD + DtWD.T)
    DtWy = s.Dty - jnp.einsum("iqa,iq->a", pushed_D, s.Zty)
    ytWy = cov.quadratic(s.Zty, s.yy)
    chol = jnp.linalg.cholesky(DtWD)
    beta = jax.scipy.linalg.cho_solve((chol, True), DtWy)
    r2 = ytWy - DtWy @ beta
    n_obs, p = jnp.sum(s.sizes), s.DtD.shape[0]
    nu = n_obs - p if reml else n_obs
    criterion = cov.log_det() + nu * (1.0 + jnp.log(2.0 * math.pi * r2 / nu))
    if reml:
        criterion = criterion + 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    return ProfiledFit(criterion, beta, r2, DtWD, cov)


class LMMSolution(eqx.Module):
    """What the compiled fit returns (fitting scale): θ̂, the profiled quantities there, the
    factor Λ(θ̂), the BLUPs ΛM_i⁻¹ΛᵀZ_iᵀ(y_i − D_iβ̂) (the same in σ's units), the L-BFGS result."""

    theta: Array
    factor: Array
    fit: ProfiledFit
    ranef: Array
    result: RESULTS
    num_steps: Array


# Where a variance sits at 0 (θ_jj = 0), the criterion, even in each column of Λ, is stationary
# whatever the interior holds: these values of θ_jj are tried before a boundary fit is accepted.
BOUNDARY_PROBES = (1.0, 0.1, 0.01)


def boundary_escape(structure: str, q: int):
    """`escape` for `minimise_lbfgs`: at θ with diagonal entries of Λ below `SINGULAR_TOLERANCE`,
    the points with all of them set to each of `BOUNDARY_PROBES`, then with each alone set to 0.1
    (a gradient method stops at θ_jj = 0, where lme4's derivative-free search does not)."""
    diagonal = diagonal_parameters(structure, q)

    def escape(theta):
        on_boundary = jnp.abs(theta[diagonal]) < SINGULAR_TOLERANCE
        together = [jnp.where(on_boundary, c, theta[diagonal]) for c in BOUNDARY_PROBES]
        alone = [jnp.where(on_boundary & (jnp.arange(diagonal.size) == j), 0.1, theta[diagonal])
                 for j in range(diagonal.size)] if diagonal.size > 1 else []
        candidates = jnp.stack([theta.at[diagonal].set(d) for d in together + alone])
        return candidates, jnp.any(on_boundary)

    return escape


@eqx.filter_jit
def _solve(data: LMMData, D: Array, y: Array, structure: str, reml: bool, max_steps: int) -> LMMSolution:
    s = profile_statistics(data, D, y)
    q = data.Z.shape[1]
    # lme4's start: Λ = I (Ψ = σ² I).
    theta0 = jnp.zeros(n_covariance_parameters(structure, q), y.dtype).at[diagonal_parameters(structure, q)].set(1.0)

    def criterion(theta):
        fit = profiled(theta, s, structure, reml)
        return fit.criterion, fit

    # L-BFGS on the gradient alone: the criterion's exact Hessian (batched Cholesky factors,
    # differentiated twice) took 2-3× longer to compile than the whole fit takes to run. Stopping
    # is relative (a predicted gain ≤ 1e-12·|criterion|): the criterion's own rounding is ~1e-13.
    solution, fit = minimise_lbfgs(jax.value_and_grad(criterion, has_aux=True), theta0, max_steps, gtol=1e-9,
                                   ftol=1e-12, decrease_tol=1e-12, first_step=0.5, escape=boundary_escape(structure, q))
    # A boundary optimum is approached, never reached, from inside: set the vanishing diagonal
    # entries to 0 (lme4's bound) where that costs nothing beyond the criterion's rounding.
    diagonal = diagonal_parameters(structure, q)
    vanishing = jnp.abs(solution.value[diagonal]) < SINGULAR_TOLERANCE
    snapped = solution.value.at[diagonal].set(jnp.where(vanishing, 0.0, solution.value[diagonal]))
    snapped_fit = profiled(snapped, s, structure, reml)
    keep_snap = jnp.any(vanishing) & (snapped_fit.criterion <= fit.criterion + 1e-12 * (1.0 + jnp.abs(fit.criterion)))
    theta, fit = jax.tree.map(lambda a, b: jnp.where(keep_snap, a, b), (snapped, snapped_fit), (solution.value, fit))
    ranef = fit.covariance.posterior_mean(s.Zty - jnp.einsum("iqa,a->iq", s.ZtD, fit.beta))
    theta = canonical_theta(theta, structure, q)
    return LMMSolution(theta, cholesky_factor(theta, structure, q), fit, ranef, solution.result,
                       solution.stats["num_steps"])


@dataclasses.dataclass(frozen=True, kw_only=True)
class LMMFit(Fit):
    """An unpenalised linear mixed model fitted by REML or ML: the `Fit` protocol (every column
    selected; `inference` holds Wald z-tests and intervals, the intercept as coordinate −1;
    `ranef` the conditional modes), plus

    - `reml` (bool), `structure` ("full": unstructured Ψ, "diagonal", "identity"), `theta` (the
      relative Cholesky factor Λ = L/σ, lme4's θ, in its lower-triangle column order).
    - `loglik` (the REML or ML log-likelihood, as lme4's `logLik`), `criterion` (−2 `loglik`:
      lme4's "REML criterion at convergence" or deviance), `aic`, `bic` (with `n_params` =
      p' + dim θ + 1 parameters, as lme4 counts them).
    - `cov_params`: the covariance of (β̂_0, β̂) (intercept first), σ̂² (DᵀV̂⁻¹D)⁻¹ as lme4's `vcov`.
    - `singular`: a diagonal entry of θ̂ below 1e-4 (lme4's `isSingular`): a variance
      component on the boundary of the parameter space, where Ψ̂ is singular.
    """

    reml: bool
    structure: str
    theta: np.ndarray
    loglik: float
    criterion: float
    aic: float
    bic: float
    n_params: int
    cov_params: np.ndarray
    singular: bool

    penalized = False

    @property
    def method(self) -> str:
        return "linear mixed model, " + ("REML" if self.reml else "ML")

    @property
    def hyperparameters(self) -> dict:
        return {"structure": self.structure}

    @property
    def criteria(self) -> dict:
        name = "REML criterion" if self.reml else "deviance"
        return {"log-likelihood": self.loglik, name: self.criterion, "AIC": self.aic, "BIC": self.bic,
                "singular fit": "yes" if self.singular else "no"}


def _fixed_design(data: LMMData, intercept: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """D = [1, (X − x̄)/c] (or X/c without intercept) with c the powers of two nearest each column's
    root mean square: centring is a unit-triangular change of basis (|DᵀWD| unchanged) and powers
    of two are exact, so the criterion is that of [1, X] up to Σ log c_k."""
    X = np.asarray(data.X)
    center = X.mean(axis=0) if intercept else np.zeros(X.shape[1])
    Xc = X - center
    scale = np.array([power_of_two(rms(column, center=False)) for column in Xc.T])
    D = Xc / scale
    if intercept:
        D = np.column_stack([np.ones(X.shape[0], X.dtype), D])
        scale = np.concatenate([[1.0], scale])
    return D.astype(X.dtype), center, scale


@accepts_formula
def fit_lmm(data: LMMData, *, formula: str | None = None, reml: bool = True, structure: str = "full",
            intercept: bool = True, level: float = 0.95, max_steps: int = 200, throw: bool = False) -> LMMFit:
    """The Gaussian linear mixed model y_i = β_0 + X_i β + Z_i b_i + ε_i, b_i ~ N(0, Ψ),
    ε_i ~ N(0, σ² I), without a penalty: lme4's `lmer` (REML by default, as there).

    Ψ = σ² ΛΛᵀ with Λ lower triangular from θ; β̂(θ) and σ̂²(θ) are profiled out in closed form
    (generalised least squares with V_i = σ²(I + Z_iΛΛᵀZ_iᵀ)), and the profiled criterion

        ML:   −2 log L(θ)   = log|I + ΛᵀZᵀZΛ| + N (1 + log(2π r²(θ)/N)),
        REML: −2 log L_R(θ) = log|I + ΛᵀZᵀZΛ| + log|DᵀWD| + (N − p')(1 + log(2π r²(θ)/(N − p')))

    is minimised over θ (dim θ ≤ q(q+1)/2) by L-BFGS. D = [1, X] has p'
    columns, r²(θ) is the generalised residual sum of squares, σ̂² = r²/N (ML) or r²/(N − p')
    (REML). Each evaluation costs O(n q² p' + p'³) after one O(N (q + p')²) pass over the data:
    no m_i × m_i matrix. A singular Ψ̂ (a variance on the boundary, lme4's "boundary (singular)
    fit") is reached exactly, θ̂ → 0, and flagged by `singular`.

    **Arguments:**

    - `data`: an `LMMData` (its Z gives the random effects; X should have fewer columns than
      rows — for p ≫ N use a penalised method).
    - `reml`: REML (default, as lme4) or ML.
    - `structure`: "full" (unstructured Ψ, lme4's `(x | g)`), "diagonal" (`(x || g)`) or
      "identity" (Ψ = ψ I).
    - `intercept`: add an intercept β_0 (default True).
    - `level`: the confidence level of the Wald intervals β̂_k ± z σ̂_k in `inference`.
    - `max_steps`: L-BFGS iterations (a rejected trial step counts as one).
    - `throw`: raise a `RuntimeError` when the fit did not succeed (default False: `result`).

    Returns an `LMMFit`. Raises `ValueError` for a fixed-effects design that is rank deficient
    or has as many columns as rows, and for clusters too small to tell σ² from Ψ.
    """
    check_data(data, fixed_effects=False)
    reml, intercept, throw = check_flag("reml", reml), check_flag("intercept", intercept), check_flag("throw", throw)
    if structure == "unstructured":
        structure = "full"
    if structure not in STRUCTURES:
        raise ValueError(f"`structure` must be one of {STRUCTURES} ('unstructured' = 'full'); got {structure!r}.")
    level = check_fraction("level", level)
    max_steps = check_count("max_steps", max_steps)
    D, center, scale = _fixed_design(data, intercept)
    n_obs, p_full = D.shape
    rank = np.linalg.matrix_rank(D)
    if p_full >= n_obs or rank < p_full:
        names = (("(intercept)",) if intercept else ()) + data.column_names()
        raise ValueError(
            f"`data`: the fixed-effects design has {p_full} columns ({', '.join(names[:6])}"
            f"{', …' if p_full > 6 else ''}) but rank {rank} with N = {n_obs} rows; fit_lmm needs a "
            "full-rank design with fewer columns than rows (drop collinear columns, or use a penalised method)."
        )
    if not np.any(np.bincount(np.asarray(data.cluster)) > np.sum(np.asarray(data.z_singular) > 0, axis=1)):
        raise ValueError("`data`: every cluster has at most rank(Z_i) rows, so σ² and Ψ cannot be told apart.")

    y = np.asarray(data.y)
    y_scale = power_of_two(rms(y, center=True))  # exact: results are equivariant to y's units
    # With an intercept, y − ȳ is fitted (β̂_0 takes ȳ back): yᵀWy − (DᵀWy)ᵀβ̂ then cancels no
    # ȳ²N term, whose rounding was larger than the steps the optimiser takes near θ̂.
    y_center = float(np.mean(y)) if intercept else 0.0
    # Its own scaling (below: s_y, and per column a power of two and centring, a linear map J
    # rather than one factor), so the frame keeps the caller's scale and gives the identity.
    caller = frame(data, rescale=False)
    fitting = caller.data
    sol = _solve(fitting, jnp.asarray(D), jnp.asarray((y - y_center) / y_scale, y.dtype), structure, reml, max_steps)
    # NumPy floats on the caller's scale: a variance in y's units may overflow float64 (y·1e200);
    # `finish` then reports the fit as nonfinite instead of an OverflowError.
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        theta = np.asarray(sol.theta)
        p = sol.fit
        nu = n_obs - p_full if reml else n_obs
        sigma2_fit = float(p.r2) / nu
        sigma2 = float(sigma2_fit * y_scale**2)
        L = np.asarray(sol.factor)
        psi = sigma2 * (L @ L.T)
        # Criterion on the caller's units: y / s_y shifts log r² by −2 log s_y; the columns D / c
        # shift log|DᵀWD| by −2 Σ log c_k (REML only).
        criterion = float(p.criterion) + 2.0 * nu * math.log(y_scale)
        if reml:
            criterion += 2.0 * float(np.sum(np.log(scale)))
        # Back to [1, X]: β_k = s_y β̃_k / c_k, β_0 = s_y β̃_0 − x̄ᵀβ; the same linear map J for the covariance.
        J = np.diag(y_scale / scale)
        if intercept:
            J[0, 1:] = -center * y_scale / scale[1:]
        beta = J @ np.asarray(p.beta)
        if intercept:
            beta[0] += y_center
        cov_params = sigma2_fit * J @ np.linalg.inv(np.asarray(p.DtWD)) @ J.T
        coef, intercept_value = (beta[1:], float(beta[0])) if intercept else (beta, 0.0)
        n_params = p_full + theta.size + 1
        singular = bool(np.any(np.abs(theta[diagonal_parameters(structure, data.Z.shape[1])]) < SINGULAR_TOLERANCE))
        std_error = np.sqrt(np.diag(cov_params))
        # On the host (scipy): `_inference.normal_intervals` is the same formula in jnp, whose eager
        # ops would add ~1 s of compilation to a first fit for a handful of numbers.
        z = scipy_stats.norm.ppf(0.5 + level / 2)
        coords = np.arange(-1 if intercept else 0, data.n_features)
        table = InferenceTable(coords=coords, estimate=beta, std_error=std_error, ci_low=beta - z * std_error,
                               ci_high=beta + z * std_error, p_value=2 * scipy_stats.norm.sf(np.abs(beta / std_error)),
                               level=level, method="Wald (normal), " + ("REML" if reml else "ML"),
                               result=row_results(np.isfinite(std_error)))
    fit = caller_fit(
        LMMFit, caller, coef=coef, intercept=intercept_value, support=np.arange(data.n_features), sigma2=sigma2,
        psi=psi, ranef=np.asarray(sol.ranef) * y_scale, result=result_name(sol.result), n_iter=int(sol.num_steps),
        inference=table, reml=reml, structure=structure, theta=theta, loglik=-criterion / 2, criterion=criterion,
        aic=criterion + 2 * n_params, bic=criterion + math.log(n_obs) * n_params, n_params=n_params,
        cov_params=cov_params, singular=singular)
    return finish(fit, throw)
