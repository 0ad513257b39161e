"""`solve`: the one entry point for min_β f(β, args) + penalty(β)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._solution import RESULTS, Solution
from .penalties import L0, L1
from .solvers import AbstractSolver, BestSubset


def _concrete(x) -> np.ndarray | None:
    """The value of x if it is known before tracing (None inside jit/vmap)."""
    return None if isinstance(x, jax.core.Tracer) else np.asarray(x)


def check_penalty(penalty, p: int) -> None:
    """Validate a penalty against p coefficients before anything is traced."""
    if isinstance(penalty, L1):
        lam = _concrete(penalty.lam)
        if lam is not None and (not np.all(np.isfinite(lam) | (lam == np.inf)) or np.any(lam < 0)):
            raise ValueError(f"`lam` must be ≥ 0; got {lam}.")
        for name in ("weights", "unpenalized"):
            value = getattr(penalty, name)
            if value is not None and jnp.shape(value)[-1:] != (p,):
                raise ValueError(f"`{name}` must have length p = {p}; got shape {jnp.shape(value)}.")
        weights = None if penalty.weights is None else _concrete(penalty.weights)
        if weights is not None and (np.any(np.isnan(weights)) or np.any(weights < 0)):
            raise ValueError("`weights` must be ≥ 0 (inf drops a coefficient); got NaN or < 0.")
    elif isinstance(penalty, L0):
        if isinstance(penalty.k, bool) or not isinstance(penalty.k, int | np.integer):
            raise ValueError(f"`k` must be an integer; got {penalty.k!r}.")
        n_free = p - (0 if penalty.unpenalized is None else int(np.sum(penalty.unpenalized)))
        if not 0 <= penalty.k <= n_free:
            raise ValueError(
                f"`k` must be between 0 and the number of penalised coefficients ({n_free}); "
                f"got k = {penalty.k}."
            )
    else:
        raise ValueError(f"`penalty` must be jaxlmm.L1 or jaxlmm.L0; got {type(penalty).__name__}.")


def check_loss(fn, y0, args) -> None:
    """`fn(y0, args)` must be a real scalar: checked by tracing shapes only (`eval_shape`), so a
    `y0` of the wrong length is named here instead of failing deep inside the solver."""
    try:
        out = jax.eval_shape(fn, y0, args)
    except (TypeError, ValueError, IndexError) as error:
        raise ValueError(f"`fn(y0, args)` cannot be evaluated: check that `y0` (length {y0.shape[0]}) matches the "
                         f"columns of the data in `args`. JAX said: {str(error).splitlines()[0]}") from None
    if getattr(out, "shape", None) != () or not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"`fn` must return a real scalar; it returns {out}.")


@eqx.filter_jit
def _solve_jit(fn, penalty, solver, y0, args, throw, prepared=None, max_nonzero=None):
    """The in-JIT solve; `prepared` is `solver.prepare(fn, args)` when the caller reuses it;
    `max_nonzero` as in `AbstractSolver.run`."""
    value, result, steps, f, g = solver.run(fn, penalty, y0, args, prepared, max_nonzero)
    objective = f + penalty(value)
    kkt = jnp.max(penalty.kkt_residual(value, g))
    result = RESULTS.where(jnp.isfinite(objective), result, RESULTS.nonfinite)
    solution = Solution(value, result, objective, kkt, {"num_steps": steps})
    if throw:
        solution = result.error_if(solution, result != RESULTS.successful)
    return solution


def solve(fn, penalty, solver, y0, args=None, *, throw: bool = True) -> Solution:
    """Minimise f(β, args) + penalty(β).

    **Arguments:**

    - `fn`: a smooth loss `fn(params, args) -> scalar`. Any JAX-traceable function works with
      `ProximalGradient` and `BestSubset`; `CoordinateDescent` needs the least-squares datafit
      (`jaxlmm.losses.LeastSquares`, which the loss builders return).
    - `penalty`: `jaxlmm.L1(lam, weights, unpenalized)` or `jaxlmm.L0(k, unpenalized)`.
    - `solver`: `ProximalGradient()`, `CoordinateDescent()` (both run inside `jit`, and can be
      `vmap`ped over λ, weights, data or starting points) or `BestSubset()` (host side,
      skscope, for `L0`).
    - `y0`: starting point (length p); a warm start along a path.
    - `args`: data for `fn`, traced (so new data of the same shapes does not recompile).
    - `throw`: raise if the solve did not succeed; with `throw=False` the `Solution.result`
      code says what happened (the right choice inside sweeps).

    Returns a `Solution(value, result, objective, kkt_residual, stats)`.
    """
    y0 = jnp.asarray(y0)
    if y0.ndim != 1:
        raise ValueError(f"`y0` must be a 1-D array of coefficients; got shape {y0.shape}.")
    check_penalty(penalty, y0.shape[0])
    check_loss(fn, y0, args)
    if isinstance(solver, BestSubset):
        if not isinstance(penalty, L0):
            raise ValueError("BestSubset solves an L0 constraint; pass `penalty=jaxlmm.L0(k)`.")
        solution = solver.run_host(fn, penalty, y0, args)
        if throw and solution.result != RESULTS.successful:
            raise RuntimeError(RESULTS[solution.result])
        return solution
    if isinstance(penalty, L0):
        raise ValueError("An L0 constraint needs `solver=jaxlmm.solvers.BestSubset()`.")
    if not isinstance(solver, AbstractSolver):
        raise ValueError(f"`solver` must be a jaxlmm solver; got {type(solver).__name__}.")
    # Python floats would be baked into the compiled program; arrays keep λ traced.
    penalty = jax.tree.map(jnp.asarray, penalty)
    return _solve_jit(fn, penalty, solver, y0, args, throw)
