"""Pure cores: (data arrays, hyperparameters) -> result pytree, jit-, vmap- and grad-able; and the
influence diagnostic built on them."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ._data import LMMData
from ._fit import single_fit
from ._solution import RESULTS
from ._solve import _solve_jit
from .losses import quasi_likelihood
from .penalties import L1
from .solvers import CoordinateDescent


class CoreFit(eqx.Module):
    """What a pure core returns (arrays only, so it stacks under `vmap`): `coef` (p), `intercept`,
    `result` (a `RESULTS` code), `num_steps`."""

    coef: Array
    intercept: Array
    result: RESULTS
    num_steps: Array

    @property
    def converged(self) -> Array:
        return self.result == RESULTS.successful


def quasi_lasso_core(data: LMMData, a, lam, solver=None, differentiate: str = "implicit") -> CoreFit:
    """The quasi-likelihood Lasso with an unpenalised intercept at given a and λ, as a pure
    function of arrays: β̂(a, λ, y, X) = argmin ‖y_a − X_a β − β_0 1_a‖² / (2 tr Σ_a⁻¹) + λ‖β‖₁.

    `jax.jit`, `jax.vmap` (over a, λ or stacked `LMMData`) and `jax.grad`/`jax.jvp` (with respect
    to a, λ and the data's arrays, by implicit differentiation of the solution; see
    `jaxlmm.solve`) all apply. Nothing is validated (the caller's job, `fit_quasi` does it), and
    no error is raised: `result` says what happened. `solver`: default `CoordinateDescent(rtol=1e-10)`.
    """
    solver = CoordinateDescent(rtol=1e-10) if solver is None else solver
    fn, args = quasi_likelihood(data, a, intercept=True)
    p = args.X.shape[1]
    unpenalized = jnp.zeros(p, bool).at[0].set(True)
    sol = _solve_jit(fn, L1(jnp.asarray(lam, args.X.dtype), None, unpenalized), solver, jnp.zeros(p, args.X.dtype),
                     args, False, differentiate=differentiate)
    return CoreFit(sol.value[1:], sol.value[0], sol.result, sol.stats["num_steps"])


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
    cluster = np.asarray(data.cluster)
    per_cluster = -np.stack([jacobian[:, cluster == i] @ residual[cluster == i] for i in range(data.n_clusters)])
    observation = np.empty((data.n_obs, jacobian.shape[0]))
    observation[np.asarray(data.order)] = jacobian.T
    return Influence(observation, per_cluster, np.linalg.norm(per_cluster, axis=1), data.labels)


@eqx.filter_jit
def _influence_jacobian(data: LMMData, a, lam) -> Array:
    def coef_of(y):
        return quasi_lasso_core(eqx.tree_at(lambda d: d.y, data, y), a, lam).coef

    return jax.jacrev(coef_of)(data.y)
