"""The influence of each observation and cluster on a quasi-likelihood Lasso fit, by
differentiating its core."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ..._covariance import cluster_sum
from ..._data import LMMData
from ..._fit import single_fit
from ..._precision import in_float64
from .core import quasi_lasso_core


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
