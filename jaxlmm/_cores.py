"""Pure cores: (data arrays, hyperparameters) -> result pytree, jit-, vmap- and grad-able; and the
influence diagnostic built on them."""

from __future__ import annotations

import dataclasses
import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

from ._covariance import blup, cholesky_factor, cluster_sum
from ._data import LMMData
from ._fit import single_fit
from ._implicit import curvature_step, frozen, implicit_root
from ._penalties import L1
from ._precision import in_float64
from ._solution import RESULTS, ReportsResult
from ._solve import _solve_jit
from .estimators._eb_ridge import eb_ridge_map, ecm_step
from .estimators._lmm import _solve as _lmm_solve
from .estimators._lmmlasso import profile_start
from .losses import quasi_likelihood
from .losses.eb_ridge import eb_design, posterior_moments
from .losses.penalised_ml import MixedModelParams, mixed_model_nll
from .losses.shel import profile_synthetic, shel_loss
from .solvers import CoordinateDescent, MixedModelCGD, splice


class CoreFit(ReportsResult):
    """What a pure core returns (arrays only, so it stacks under `vmap`; the fields of the `Fit`
    protocol that are arrays): `coef` (p), `intercept`, `sigma2`, `psi` (q × q), `ranef` (n × q,
    cluster index order), `result` (a `RESULTS` code), `num_steps`. A field the method does not
    estimate is None (the quasi core's variance components, SHEL's Ψ)."""

    coef: Array
    intercept: Array
    sigma2: Array | None
    psi: Array | None
    ranef: Array | None
    result: RESULTS
    num_steps: Array


def _hyperparameter(name: str, value, dtype) -> Array:
    """A traced hyperparameter as an array of `dtype`; a Python or NumPy boolean is refused (it
    would be read as 0 or 1) with a `ValueError` at trace time."""
    if isinstance(value, bool | np.bool_) or (hasattr(value, "dtype") and np.dtype(value.dtype) == np.bool_):
        raise ValueError(f"`{name}` must be a number, not a boolean; got {value!r}.")
    return jnp.asarray(value, dtype)


def _nonnegative(value: Array) -> Array:
    return jnp.all(jnp.isfinite(value) & (value >= 0))


def _checked(fit: CoreFit, valid, *hyperparameters) -> CoreFit:
    """`fit` as a core returns it: `invalid_argument` with every estimate NaN where the
    hyperparameters are not `valid` (and NaN derivatives in them: a solver at λ = NaN returns
    zeros, whose derivative would read 0); `nonfinite` where an estimate is not finite; the
    solver's result otherwise. `successful` thus always means finite estimates."""
    poison = jnp.where(valid, 1.0, jnp.nan)
    # Value 0, derivative 1 in every hyperparameter; kept out of the valid branch before the NaN
    # multiplies it, so that valid derivatives stay NaN-free.
    carrier = sum((jnp.sum(h - lax.stop_gradient(h)) for h in hyperparameters), jnp.zeros(()))
    nan_tangent = jnp.where(valid, 0.0, carrier) * jnp.where(valid, 0.0, jnp.nan)
    estimates = jax.tree.map(lambda x: x * poison.astype(x.dtype) + nan_tangent.astype(x.dtype),
                             (fit.coef, fit.intercept, fit.sigma2, fit.psi, fit.ranef))
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(estimates)]))
    result = RESULTS.where(finite, fit.result, RESULTS.nonfinite)
    result = RESULTS.where(valid, result, RESULTS.invalid_argument)
    return CoreFit(*estimates, result, fit.num_steps)


def _start(start, length: int, dtype, intercept: bool):
    """A solver start of `length` from None (zeros), a previous `CoreFit` (a warm start:
    (intercept, coef) or coef) or an array."""
    if start is None:
        return jnp.zeros(length, dtype)
    if isinstance(start, CoreFit):
        value = jnp.concatenate([jnp.reshape(start.intercept, (1,)), start.coef]) if intercept else start.coef
        return lax.stop_gradient(value.astype(dtype))
    return jnp.asarray(start, dtype)


def quasi_lasso_core(data: LMMData, a, lam, solver=None, differentiate: str = "implicit",
                     cluster_weights=None, start=None) -> CoreFit:
    """The quasi-likelihood Lasso with an unpenalised intercept at given a and λ, as a pure
    function of arrays: β̂(a, λ, y, X) = argmin ‖y_a − X_a β − β_0 1_a‖² / (2 tr Σ_a⁻¹) + λ‖β‖₁.

    `jax.jit`, `jax.vmap` (over a, λ or stacked `LMMData`) and `jax.grad`/`jax.jvp` (with respect
    to a, λ and the data's arrays, by implicit differentiation of the solution; see
    `jaxlmm.solve`) all apply. Nothing is validated (the caller's job, `fit_quasi` does it), and
    no error is raised: `result` says what happened. `solver`: default `CoordinateDescent(rtol=1e-10)`.
    `cluster_weights` (n, 0/1): fit on the clusters with weight 1 only (cross-validation folds).
    `start`: the solver's start, (intercept, β) of length p + 1 or a previous `CoreFit` (a warm
    start; `jaxlmm.sweep(..., warm_start="lam")`); default 0. The variance components are not
    estimated here (`sigma2`, `psi`, `ranef` are None).
    """
    solver = CoordinateDescent(rtol=1e-10) if solver is None else solver
    a, lam = _hyperparameter("a", a, data.X.dtype), _hyperparameter("lam", lam, data.X.dtype)
    fn, args = quasi_likelihood(data, a, cluster_weights, intercept=True)
    p = args.X.shape[1]
    unpenalized = jnp.zeros(p, bool).at[0].set(True)
    sol = _solve_jit(fn, L1(lam, None, unpenalized), solver, _start(start, p, args.X.dtype, True), args, False,
                     differentiate=differentiate)
    fit = CoreFit(sol.value[1:], sol.value[0], None, None, None, sol.result, sol.stats["num_steps"])
    return _checked(fit, _nonnegative(a) & _nonnegative(lam), a, lam)


def quasi_best_subset_core(data: LMMData, a, support, cluster_weights=None) -> CoreFit:
    """The refit of the quasi-likelihood best subset on a chosen support, as a pure function of
    arrays: β̂_S(a, y, X) = argmin ‖y_a − X_{a,S} β_S − β_0 1_a‖² (whitened least squares with an
    unpenalised intercept), β̂ = 0 off S.

    The support is a discrete choice (`fit_quasi(k=...)`'s `support`, a static tuple of column
    indices) and has no derivative: `jax.grad` of this core is the derivative of the refit with
    the support held, which is what differentiating a best-subset fit means here. A k × k solve
    (k = |S| + 1), never p × p. `jit`/`vmap` (over a or stacked data; the support is static).
    """
    p = data.n_features
    if isinstance(support, bool | np.bool_) or not all(isinstance(j, numbers.Integral) and not isinstance(j, bool)
                                                         for j in np.ravel(np.asarray(support, object))):
        raise ValueError(f"`support` must be column indices (integers); got {support!r}.")
    support = tuple(int(j) for j in np.ravel(np.asarray(support, object)))
    if any(not 0 <= j < p for j in support) or len(set(support)) != len(support):
        raise ValueError(f"`support` must hold distinct column indices in [0, {p}); got {support}.")
    a = _hyperparameter("a", a, data.X.dtype)
    _, args = quasi_likelihood(data, a, cluster_weights, intercept=True)
    columns = np.array([0, *(j + 1 for j in support)])
    # Row weights: 0 outside the training clusters.
    fit = _refit_on(args.X, args.y, args.weights, columns, RESULTS.successful, jnp.zeros((), jnp.int32))
    return _checked(fit, _nonnegative(a), a)


def _refit_on(X, y, weights, columns, result, num_steps) -> CoreFit:
    """The weighted least-squares refit on `columns` (column 0: the intercept), as a `CoreFit`
    (β̂ = 0 off the columns); `result` turns `nonfinite` if the refit is."""
    X_s = X[:, columns]
    weighted = weights[:, None] * X_s
    beta_s = jnp.linalg.solve(weighted.T @ X_s, weighted.T @ y)
    coef = jnp.zeros(X.shape[1] - 1, beta_s.dtype).at[columns[1:] - 1].set(beta_s[1:])
    result = RESULTS.where(jnp.all(jnp.isfinite(beta_s)), result, RESULTS.nonfinite)
    return CoreFit(coef, beta_s[0], None, None, None, result, num_steps)


def quasi_splicing_core(data: LMMData, a, k: int, max_steps: int = 100, cluster_weights=None) -> CoreFit:
    """The quasi-likelihood best subset with an unpenalised intercept, solved inside `jit`:
    a local solution of min ‖y_a − X_a β − β_0 1_a‖² subject to ‖β‖₀ ≤ k by the splicing
    iteration of ABESS with the subset size fixed (`jaxlmm.solvers.splice`; skscope's
    `ScopeSolver`, which `fit_quasi(k=...)` calls, runs the same kind of iteration on the host).

    Unlike `fit_quasi(k=...)` it `vmap`s and `jaxlmm.sweep`s (replicates × a on one device
    program) and never leaves the device. The support is a local optimum of the swap
    iteration, so it can differ from skscope's on hard problems
    (`benchmarks/bench_replicates.py` counts how often). `jax.grad` differentiates the refit
    with the support held, as `quasi_best_subset_core`. `k` and `max_steps` are static;
    `result` is `successful` when no swap improves the fit.
    """
    if isinstance(k, bool | np.bool_) or not isinstance(k, numbers.Integral) or not 0 <= k <= data.n_features:
        raise ValueError(f"`k` must be an integer in [0, p = {data.n_features}] (static); got {k!r}.")
    a = _hyperparameter("a", a, data.X.dtype)
    fn, args = quasi_likelihood(data, a, cluster_weights, intercept=True)
    X, y, c = fn.least_squares_form(args)
    columns, _, _, result, steps = splice(*(lax.stop_gradient(v) for v in (X, y, c)), int(k), always=(0,),
                                          max_steps=max_steps)
    fit = _refit_on(X, y, c, columns, result, steps)  # again outside the loop, so it carries derivatives
    return _checked(fit, _nonnegative(a), a)


def shel_core(data: LMMData, lam, synthetic=None, solver=None, differentiate: str = "implicit",
              start=None) -> CoreFit:
    """SHEL at a given λ as a pure function of arrays: the Lasso of P y on P X, P = I − S(SᵀS)⁺Sᵀ
    with `synthetic` the n × (K + 1) cluster-level matrix [1, S] (row i for cluster index i), or
    None for cluster dummies (P = within-cluster centring). `intercept` is the mean cluster
    effect S_i γ̂ over clusters (γ̂_0 for centred synthetic columns, as `fit_shel`'s PCA ones),
    `ranef` (n × 1) each cluster's effect minus it, `sigma2` = RSS / (N − |Ŝ| − rank S), `psi`
    None. `start`: β's start (length p) or a previous `CoreFit` (a warm start); default 0.
    jit/vmap/grad as `quasi_lasso_core`."""
    solver = CoordinateDescent(rtol=1e-10) if solver is None else solver
    lam = _hyperparameter("lam", lam, data.X.dtype)
    fn, args = shel_loss(data, synthetic)
    p = args.X.shape[1]
    sol = _solve_jit(fn, L1(lam), solver, _start(start, p, args.X.dtype, False), args, False,
                     differentiate=differentiate)
    residual = data.y - data.X @ sol.value
    profiled = profile_synthetic(data, synthetic, residual)  # P r: what the synthetic columns leave
    sizes = data.cluster_sizes.astype(residual.dtype)
    effects = cluster_sum(data, residual - profiled) / sizes
    intercept = jnp.mean(effects)
    rank = data.n_clusters if synthetic is None else jnp.linalg.matrix_rank(synthetic)
    dof = jnp.maximum(data.n_obs - jnp.sum(sol.value != 0) - rank, 1)
    fit = CoreFit(sol.value, intercept, profiled @ profiled / dof, None, (effects - intercept)[:, None], sol.result,
                  sol.stats["num_steps"])
    valid = _nonnegative(lam) & (True if synthetic is None else jnp.all(jnp.isfinite(synthetic)))
    return _checked(fit, valid, lam)


def lmmlasso_core(data: LMMData, lam, structure: str = "identity", start=None, solver=None) -> CoreFit:
    """lmmLasso at a given λ as a pure function of arrays: a local minimiser of
    −log L(β_0, β, θ, σ²) + λ‖β‖₁ (intercept unpenalised, X as given: no standardisation) by
    `MixedModelCGD` from `start` (length p + 1, intercept first, or a previous `CoreFit`: a warm
    start; default β = (ȳ, 0, …, 0)) with the
    paper's profile-likelihood variance start. One start only (`fit_lmmlasso` tries two and
    keeps the better BIC).

    Differentiable in λ and the data by the implicit function theorem applied to the joint
    stationarity of (β, θ, log σ): the fixed point of a prox-gradient step in β and a gradient step
    in (θ, log σ). A variance component at exactly 0 (the paper's thresholding) is held there
    (derivative 0), like a coefficient off the support.
    """
    solver = MixedModelCGD() if solver is None else solver
    _check_structure(structure, ("identity", "diagonal", "full"))
    dtype = data.X.dtype
    lam = _hyperparameter("lam", lam, dtype)
    design = jnp.concatenate([jnp.ones((data.n_obs, 1), dtype), data.X], axis=1)
    fn, args = mixed_model_nll(data, design, structure)
    p1 = design.shape[1]
    penalty = L1(lam, None, jnp.zeros(p1, bool).at[0].set(True))
    beta0 = jnp.zeros(p1, dtype).at[0].set(jnp.mean(data.y)) if start is None else _start(start, p1, dtype, True)
    frozen_args = frozen(args)
    theta0, log_sigma0 = profile_start(frozen_args, lax.stop_gradient(beta0), structure)
    start = MixedModelParams(lax.stop_gradient(beta0), theta0, log_sigma0)
    fit = solver.run(structure, frozen_args, frozen(penalty), start)

    def residual(params, fn, penalty, args, anchor):
        step = curvature_step(fn, anchor, args)
        g = jax.grad(fn)(params, args)
        beta = penalty.prox(params.beta - step * g.beta, step)
        theta = jnp.where(anchor.theta == 0, 0.0, params.theta - step * g.theta)
        return MixedModelParams(params.beta - beta, params.theta - theta, step * g.log_sigma)

    params = implicit_root(residual, fit.params, fn, penalty, args, lax.stop_gradient(fit.params))
    L = cholesky_factor(params.theta, structure, data.Z.shape[1])
    psi = L @ L.T
    sigma2 = jnp.exp(2.0 * params.log_sigma)
    ranef = blup(data, psi, sigma2, data.y - design @ params.beta)
    return _checked(CoreFit(params.beta[1:], params.beta[0], sigma2, psi, ranef, fit.result, fit.num_steps),
                    _nonnegative(lam), lam)


def _check_structure(structure, allowed: tuple) -> None:
    if not isinstance(structure, str) or structure not in allowed:
        raise ValueError(f"`structure` must be one of {allowed}; got {structure!r}.")


def lmm_core(data: LMMData, reml=False, structure: str = "full", max_steps: int = 500) -> CoreFit:
    """The unpenalised LMM y = β_0 + Xβ + Z_i b_i + ε as a pure function of arrays: maximum
    likelihood (`reml=False`, the default here) or REML, β and σ² profiled out and L-BFGS over
    the relative Cholesky factor θ of Ψ/σ², as `fit_lmm` (lme4's criterion; every evaluation
    O(n q² p + p³) after one pass over the data). `sigma2` = r²/ν, `psi` = σ² ΛΛᵀ, `ranef` the BLUPs.

    Unlike `fit_lmm` it neither validates nor rescales the data (give columns of moderate
    scale). Under `jaxlmm.sweep(..., responses=Y)` only y is batched, so ZᵢᵀZᵢ, ZᵢᵀXᵢ and XᵀX
    do not depend on the response (computed once under vmap, loop-invariant under lax.map).
    `reml` (a Python bool) and `structure` ("full", "diagonal", "identity") are static."""
    _check_structure(structure, ("full", "diagonal", "identity"))
    if not isinstance(reml, bool | np.bool_):
        raise ValueError(f"`reml` must be True or False (static); got {reml!r}.")
    dtype = data.X.dtype
    # Centred columns and response (a unit-triangular change of basis: the criterion is the same)
    # keep the profiled sums of squares from cancelling the means' squares, as in `fit_lmm`.
    x_mean, y_mean = jnp.mean(data.X, axis=0), jnp.mean(data.y)
    D = jnp.concatenate([jnp.ones((data.n_obs, 1), dtype), data.X - x_mean], axis=1)
    sol = _lmm_solve(data, D, data.y - y_mean, structure, bool(reml), max_steps)
    nu = data.n_obs - D.shape[1] if reml else data.n_obs
    sigma2 = sol.fit.r2 / nu
    coef = sol.fit.beta[1:]
    return _checked(CoreFit(coef, sol.fit.beta[0] + y_mean - x_mean @ coef, sigma2, sigma2 * sol.factor @ sol.factor.T,
                            sol.ranef, sol.result, sol.num_steps), jnp.asarray(True))


def eb_ridge_core(data: LMMData, lam, b, A, intercept: bool = True, tol: float = 1e-12) -> CoreFit:
    """The empirical-Bayes ridge LMM's MAP at given (λ, b, A) as a pure function of arrays (ECM,
    `eb_ridge_map`; every column of X ridge-penalised, an unpenalised intercept). Differentiable
    in λ, b, A and the data by the implicit function theorem at the ECM fixed point
    x = ECM(x; λ, b, A) (whose fixed points are the stationary points of the log posterior);
    `ranef` are the posterior means E[b_i | y] at the MAP. `tol`: ECM's stopping rule (a rise of
    the log posterior J of at most tol·(1 + |J|)); the MAP is accurate to about sqrt(tol)."""
    design = eb_design(data, (), intercept)
    dtype = data.X.dtype
    lam, b, A = given = tuple(_hyperparameter(name, v, dtype) for name, v in (("lam", lam), ("b", b), ("A", A)))
    q = data.Z.shape[1]
    if A.shape != (q, q):
        raise ValueError(f"`A` must be a q × q = {q} × {q} matrix; got shape {A.shape}.")
    valid = (_nonnegative(lam) & _nonnegative(b) & (b < 1) & jnp.all(jnp.isfinite(A)) & jnp.allclose(A, A.T)
             & jnp.all(jnp.linalg.eigvalsh(0.5 * (A + A.T)) > 0))
    # Invalid values would stall ECM: it runs on harmless ones and the result says invalid_argument.
    lam, b, A = (jnp.where(valid, v, default) for v, default in ((lam, 1.0), (b, 0.5), (A, jnp.eye(q, dtype=dtype))))
    fit = eb_ridge_map(frozen(design), lax.stop_gradient(lam), lax.stop_gradient(b), lax.stop_gradient(A),
                       tol=tol)

    def residual(x, design, lam, b, A):
        return jax.tree.map(jnp.subtract, x, ecm_step(design, x, lam, b, A))

    params = implicit_root(residual, fit.params, design, lam, b, A)
    mu, _ = posterior_moments(design, params.psi, params.sigma2,
                              data.y - design.F @ params.beta_F - design.G @ params.beta_G)
    intercept_value = params.beta_F[0] if intercept else jnp.zeros((), dtype)
    return _checked(CoreFit(params.beta_G, intercept_value, params.sigma2, params.psi, mu, fit.result, fit.num_steps),
                    valid, *given)


@dataclasses.dataclass(frozen=True)
class Influence:
    """Sensitivity of β̂ to the data (`influence`).

    - `observation` (N × p): ∂β̂/∂y_t for each row t, in the caller's row order.
    - `cluster` (n × p): −Σ_{t∈i} ∂β̂/∂y_t r̂_t, the first-order change of β̂ if cluster i's
      responses were replaced by their fitted values X_i β̂ + β̂_0 (its residuals r̂ set to 0);
      rows in `groups` order.
    - `cluster_norm` (n): the Euclidean norm of each row of `cluster`, the summary to sort by.
    """

    observation: np.ndarray
    cluster: np.ndarray
    cluster_norm: np.ndarray
    groups: tuple


@in_float64
def influence(fit, data: LMMData) -> Influence:
    """Influence of each observation and each cluster on the β̂ of a quasi-likelihood Lasso fit:
    the Jacobian ∂β̂/∂y (`jax.jacrev` of `quasi_lasso_core` through its implicit derivative, at the
    fit's a and λ), and per cluster the linearised effect of removing its residuals. On the
    support S, ∂β̂_S/∂y = (X_{a,S}ᵀ X_{a,S})⁻¹ X_{a,S}ᵀ Σ_a^{-1/2} (with the intercept), and 0
    off S: the derivative of the current support.

    **Arguments:** `fit` (a `QuasiFit` Lasso at one λ), `data` (the data it was fitted on).
    Returns an `Influence`.
    """
    coef, intercept, a = single_fit(fit, data)
    if getattr(fit, "selector", None) != "lasso":
        raise ValueError("`fit` must be a quasi-likelihood Lasso fit (fit_quasi with a λ, not best subset).")
    dtype = data.X.dtype
    core = _influence_jacobian(data, jnp.asarray(a, dtype), jnp.asarray(fit.lam, dtype))
    jacobian = np.asarray(core)  # p × N, rows sorted by cluster
    residual = np.asarray(data.y) - np.asarray(data.X) @ coef - intercept
    per_cluster = -np.asarray(cluster_sum(data, jnp.asarray(jacobian.T * residual[:, None])))
    observation = np.empty((data.n_obs, jacobian.shape[0]))
    observation[np.asarray(data.order)] = jacobian.T
    return Influence(observation, per_cluster, np.linalg.norm(per_cluster, axis=1), data.labels)


@eqx.filter_jit
def _influence_jacobian(data: LMMData, a, lam) -> Array:
    def coef_of(y):
        return quasi_lasso_core(eqx.tree_at(lambda d: d.y, data, y), a, lam).coef

    return jax.jacrev(coef_of)(data.y)
