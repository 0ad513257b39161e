"""SHEL's pure core: (data arrays, λ, synthetic variables) -> `CoreFit`."""

from __future__ import annotations

import jax.numpy as jnp

from ..._covariance import cluster_sum
from ..._data import LMMData
from ..._penalties import L1, AbstractPenalty
from ..._solve import _solve_jit
from ...losses.shel import profile_synthetic, shel_loss
from ...solvers import CoordinateDescent
from .._core import CoreFit, all_nonnegative, checked, hyperparameter, solver_start


def shel_core(data: LMMData, lam, synthetic=None, solver=None, differentiate: str = "implicit", start=None,
              penalty: AbstractPenalty | None = None) -> CoreFit:
    """SHEL at a given λ as a pure function of arrays: the Lasso of P y on P X, P = I − S(SᵀS)⁺Sᵀ
    with `synthetic` the n × (K + 1) cluster-level matrix [1, S] (row i for cluster index i), or
    None for cluster dummies (P = within-cluster centring). `intercept` is the mean cluster
    effect S_i γ̂ over clusters (γ̂_0 for centred synthetic columns, as `fit_shel`'s PCA ones),
    `ranef` (n × 1) each cluster's effect minus it, `sigma2` = RSS / (N − |Ŝ| − rank S), `psi`
    None. `penalty`: the penalty on β at λ = `lam` (any `AbstractPenalty`, its own λ replaced by
    `lam`; default `L1`, the Lasso); `fit_shel` passes `L1(λ, weights, unpenalized)`.
    `start`: β's start (length p) or a previous `CoreFit` (a warm start); default 0.
    jit/vmap/grad as `quasi_lasso_core`. `fit_shel` finishes with this core at its chosen λ (on
    its fitting scale), so its coefficients, intercept, σ̂² and cluster effects are this core's."""
    solver = CoordinateDescent(rtol=1e-10) if solver is None else solver
    lam = hyperparameter("lam", lam, data.X.dtype)
    fn, args = shel_loss(data, synthetic)
    p = args.X.shape[1]
    penalty = L1(lam) if penalty is None else penalty.with_lam(lam)
    sol = _solve_jit(fn, penalty, solver, solver_start(start, p, args.X.dtype, False), args, False,
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
    valid = all_nonnegative(lam) & (True if synthetic is None else jnp.all(jnp.isfinite(synthetic)))
    return checked(fit, valid, lam)
