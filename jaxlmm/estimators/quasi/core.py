"""The quasi-likelihood method's pure cores (Lasso, best subset on a support, splicing):
(data arrays, hyperparameters) -> `CoreFit`, jit-, vmap- and grad-able."""

from __future__ import annotations

import numbers

import jax.numpy as jnp
import numpy as np
from jax import lax

from ..._data import LMMData
from ..._penalties import L1, AbstractPenalty, FreeLeading
from ..._solution import RESULTS
from ..._solve import _solve_jit
from ...losses import quasi_likelihood
from ...solvers import CoordinateDescent, splice
from .._core import CoreFit, all_nonnegative, checked, hyperparameter, solver_start


def quasi_lasso_core(data: LMMData, a, lam, solver=None, differentiate: str = "implicit",
                     cluster_weights=None, start=None, penalty: AbstractPenalty | None = None) -> CoreFit:
    """The quasi-likelihood Lasso with an unpenalised intercept at given a and λ, as a pure
    function of arrays: β̂(a, λ, y, X) = argmin ‖y_a − X_a β − β_0 1_a‖² / (2 tr Σ_a⁻¹) + λ‖β‖₁.

    `jax.jit`, `jax.vmap` (over a, λ or stacked `LMMData`) and `jax.grad`/`jax.jvp` (with respect
    to a, λ and the data's arrays, by implicit differentiation of the solution; see
    `jaxlmm.solve`) all apply. Nothing is validated (the caller's job, `fit_quasi` does it), and
    no error is raised: `result` says what happened. `solver`: default `CoordinateDescent(rtol=1e-10)`.
    `cluster_weights` (n, 0/1): fit on the clusters with weight 1 only (cross-validation folds).
    `start`: the solver's start, (intercept, β) of length p + 1 or a previous `CoreFit` (a warm
    start; `jaxlmm.sweep(..., warm_start="lam")`); default 0. `penalty`: any `AbstractPenalty` on
    β in place of the Lasso, at λ = `lam` (its own λ replaced; the intercept stays free), as
    `fit_quasi(penalty=...)`. The variance components are not estimated here (`sigma2`, `psi`,
    `ranef` are None).
    """
    solver = CoordinateDescent(rtol=1e-10) if solver is None else solver
    a, lam = hyperparameter("a", a, data.X.dtype), hyperparameter("lam", lam, data.X.dtype)
    fn, args = quasi_likelihood(data, a, cluster_weights, intercept=True)
    p = args.X.shape[1]
    on_beta = FreeLeading(L1(lam) if penalty is None else penalty.with_lam(lam), 1, p)  # the intercept free
    sol = _solve_jit(fn, on_beta, solver, solver_start(start, p, args.X.dtype, True), args, False,
                     differentiate=differentiate)
    fit = CoreFit(sol.value[1:], sol.value[0], None, None, None, sol.result, sol.stats["num_steps"])
    return checked(fit, all_nonnegative(a) & all_nonnegative(lam), a, lam)


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
    a = hyperparameter("a", a, data.X.dtype)
    _, args = quasi_likelihood(data, a, cluster_weights, intercept=True)
    columns = np.array([0, *(j + 1 for j in support)])
    # Row weights: 0 outside the training clusters.
    fit = _refit_on(args.X, args.y, args.weights, columns, RESULTS.successful, jnp.zeros((), jnp.int32))
    return checked(fit, all_nonnegative(a), a)


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
    a = hyperparameter("a", a, data.X.dtype)
    fn, args = quasi_likelihood(data, a, cluster_weights, intercept=True)
    X, y, c = fn.least_squares_form(args)
    columns, _, _, result, steps = splice(*(lax.stop_gradient(v) for v in (X, y, c)), int(k), always=(0,),
                                          max_steps=max_steps)
    fit = _refit_on(X, y, c, columns, result, steps)  # again outside the loop, so it carries derivatives
    return checked(fit, all_nonnegative(a), a)
