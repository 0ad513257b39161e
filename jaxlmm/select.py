"""Tuning: cluster-level cross-validation folds, information criteria, the scaled-Lasso λ."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

from ._data import LMMData
from ._solve import _solve_jit
from .path import lambda_max
from .penalties import L1


def cluster_folds(n_clusters: int, n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold id (0..n_folds-1) per cluster: clusters shuffled, then dealt round-robin, so a
    cluster is never split between training and test data."""
    if not 2 <= n_folds <= n_clusters:
        raise ValueError(
            f"`n_folds` must be between 2 and the number of clusters ({n_clusters}); got {n_folds}."
        )
    folds = np.empty(n_clusters, np.int64)
    folds[np.random.default_rng(seed).permutation(n_clusters)] = np.arange(n_clusters) % n_folds
    return folds


def training_weights(folds: np.ndarray, n_folds: int, dtype) -> Array:
    """(n_folds × n) 0/1 cluster weights: row f keeps every cluster outside fold f."""
    return jnp.asarray(folds[None, :] != np.arange(n_folds)[:, None], dtype)


def map_over_folds(fold, *fold_arrays):
    """`fold` applied to each fold's slice of `fold_arrays` (leading axis = folds), stacked.

    On an accelerator the folds run at once (`vmap`). On a CPU they run one after another
    (`lax.map`): a vmapped solver loop keeps going until its slowest fold is done, at every level
    of its nested loops, and SHEL's 3-fold CV measured 1.0 s vmapped against 0.35 s in turn.
    """
    if jax.default_backend() == "cpu":
        return lax.map(lambda arrays: fold(*arrays), fold_arrays)
    return jax.vmap(fold)(*fold_arrays)


def marginal_sse(data: LMMData, design: Array, coef: Array, cluster_weights: Array) -> Array:
    """Σ over clusters with weight 1 of ‖y_i − X_i β‖²: marginal (no BLUP) prediction error.
    `coef` may be a stack (… × p) of coefficient vectors."""
    residual = data.y[:, None] - design @ coef.reshape(-1, coef.shape[-1]).T
    row_weights = cluster_weights[data.cluster]
    sse = jnp.sum(row_weights[:, None] * residual**2, axis=0)
    return sse.reshape(coef.shape[:-1])


def gic(rss, n_eff, k, p):
    """Generalised information criterion n log(RSS/n) + k log(p) log(log n), with the
    effective sample size n = tr(Σ_a^{-1}) (the criterion abess uses for best subset)."""
    return n_eff * np.log(rss / n_eff) + k * np.log(p) * np.log(np.log(n_eff))


def ebic(rss, n_eff, k, p, gamma: float = 0.5):
    """Extended BIC n log(RSS/n) + k log n + 2γ k log p (Chen & Chen), n = tr(Σ_a^{-1})."""
    return n_eff * np.log(rss / n_eff) + k * np.log(n_eff) + 2 * gamma * k * np.log(p)


INFORMATION_CRITERIA = {"gic": gic, "ebic": ebic}


class ScaledLasso(eqx.Module):
    """The scaled-Lasso fixed point: `lam` = σ̂ sqrt(2 log p / n_eff), `coef` the Lasso at
    that λ, `sigma` = σ̂, `converged`."""

    lam: Array
    coef: Array
    sigma: Array
    converged: Array


@eqx.filter_jit
def scaled_lasso(
    fn, args, solver, y0, n_eff, n_penalized: int, weights=None, unpenalized=None,
    max_iter: int = 100, rtol: float = 1e-6, prepared=None,
) -> ScaledLasso:
    """Universal λ = σ̂ sqrt(2 log p / n_eff) with σ̂ from the scaled-Lasso fixed point
    (Sun & Zhang 2012): σ̂² = 2 f(β̂(λ)), i.e. RSS / tr(Σ_a^{-1}) for the quasi-likelihood,
    iterated with warm starts until σ̂ changes by less than `rtol`. `prepared`:
    `solver.prepare(fn, args)` when the caller shares it across many responses (it depends on
    the design only, as in the node-wise Lassos of `debiased_lasso`)."""
    lam0 = jnp.sqrt(2.0 * jnp.log(n_penalized) / n_eff)
    if prepared is None:
        prepared = solver.prepare(fn, args)
    _, start = lambda_max(fn, args, solver, y0, weights, unpenalized, prepared)
    sigma0 = jnp.sqrt(2.0 * fn(start, args))

    def cond(s):
        _, _, change, it = s
        return (change > rtol) & (it < max_iter)

    def body(s):
        beta, sigma, _, it = s
        sol = _solve_jit(fn, L1(sigma * lam0, weights, unpenalized), solver, beta, args, False, prepared)
        new_sigma = jnp.sqrt(2.0 * fn(sol.value, args))
        return sol.value, new_sigma, jnp.abs(new_sigma - sigma) / sigma, it + 1

    beta, sigma, change, _ = lax.while_loop(cond, body, (start, sigma0, jnp.inf, 0))
    sol = _solve_jit(fn, L1(sigma * lam0, weights, unpenalized), solver, beta, args, False, prepared)
    converged = (change <= rtol) & sol.converged
    return ScaledLasso(sigma * lam0, sol.value, sigma, converged)


