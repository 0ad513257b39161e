"""λ_max, λ grids and warm-started λ paths (one `lax.scan`, vmappable)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array, lax

from ._solution import RESULTS
from ._solve import _solve_jit
from .penalties import L1


def lambda_max(fn, args, solver, y0, weights=None, unpenalized=None, prepared=None) -> tuple[Array, Array]:
    """The smallest λ at which every penalised coefficient is 0, and the solution there.

    Solves the problem with λ = ∞ (penalised coefficients pinned at 0, unpenalised ones
    fitted), then λ_max = max_{k ∉ U} |∂_k f| / w_k by the KKT conditions. Works for any
    smooth loss the solver accepts. `prepared`: `solver.prepare(fn, args)`, when the caller
    already has it.
    """
    pinned = L1(jnp.asarray(jnp.inf, y0.dtype), weights, unpenalized)
    start = _solve_jit(fn, pinned, solver, y0, args, False, prepared).value
    grad = jax.grad(fn)(start, args)
    ratio = jnp.abs(grad) / (1.0 if weights is None else weights)
    if unpenalized is not None:
        ratio = jnp.where(unpenalized, 0.0, ratio)
    ratio = jnp.where(jnp.isfinite(ratio), ratio, 0.0)
    return jnp.max(ratio), start


def lambda_grid(lam_max, n_lambda: int = 100, min_ratio: float = 1e-2) -> Array:
    """Geometric grid from λ_max down to min_ratio·λ_max (glmnet's default ratio is 0.01
    when p > N and 1e-4 otherwise)."""
    return lam_max * jnp.geomspace(1.0, min_ratio, n_lambda)


class LassoPath(eqx.Module):
    """Solutions along a λ path: `lambdas` (n_λ), `coef` (n_λ × p), `result` codes,
    `objective`, `kkt_residual` and `num_steps` per λ."""

    lambdas: Array
    coef: Array
    result: RESULTS
    objective: Array
    kkt_residual: Array
    num_steps: Array

    @property
    def converged(self) -> Array:
        return self.result == RESULTS.successful


@eqx.filter_jit
def solve_path(fn, args, lambdas, solver, y0, weights=None, unpenalized=None) -> LassoPath:
    """Solve the weighted Lasso at each λ in `lambdas`, warm-starting each from the last.

    Runs as one `lax.scan`, never raises (inspect `result`), and can be `vmap`ped over data,
    folds or starting points. Order `lambdas` from large to small (start at λ_max, with `y0`
    the solution there) for warm starts to pay off.
    """

    prepared = solver.prepare(fn, args)

    def step(beta, lam):
        sol = _solve_jit(fn, L1(lam, weights, unpenalized), solver, beta, args, False, prepared)
        out = (sol.value, sol.result, sol.objective, sol.kkt_residual, sol.stats["num_steps"])
        return sol.value, out

    _, (coef, result, objective, kkt, steps) = lax.scan(step, y0, lambdas)
    return LassoPath(lambdas, coef, result, objective, kkt, steps)
