"""`solve`: the one entry point for min_β f(β, args) + penalty(β)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ._implicit import DIFFERENTIATE, differentiable_solution, frozen
from ._penalties import L0, AbstractPenalty
from ._solution import RESULTS, Solution
from .solvers import AbstractSolver, BestSubset


def check_penalty(penalty, p: int) -> None:
    """Validate a penalty against p coefficients before anything is traced."""
    if not isinstance(penalty, AbstractPenalty | L0):
        raise ValueError(
            f"`penalty` must be a jaxlmm penalty (a subclass of jaxlmm.AbstractPenalty, or jaxlmm.L0); "
            f"got {type(penalty).__name__}."
        )
    penalty.check(p)


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
def _solve_jit(fn, penalty, solver, y0, args, throw, prepared=None, max_nonzero=None, differentiate="implicit"):
    """The in-JIT solve; `prepared` is `solver.prepare(fn, args)` when the caller reuses it;
    `max_nonzero` as in `AbstractSolver.run`. The solver's loop runs on values cut off from
    differentiation; the derivatives of the solution come from `differentiable_solution`."""
    value, result, steps, _, g = solver.run(frozen(fn), frozen(penalty), frozen(y0), frozen(args),
                                            frozen(prepared), max_nonzero)
    value = differentiable_solution(fn, penalty, args, value, differentiate)
    f = fn(value, args)
    objective = f + penalty(value)
    kkt = jnp.max(penalty.kkt_residual(value, g))
    result = RESULTS.where(jnp.isfinite(objective), result, RESULTS.nonfinite)
    solution = Solution(value, result, objective, kkt, {"num_steps": steps})
    if throw:
        solution = result.error_if(solution, result != RESULTS.successful)
    return solution


def solve(fn, penalty, solver, y0, args=None, *, throw: bool = True, differentiate: str = "implicit") -> Solution:
    """Minimise f(β, args) + penalty(β).

    **Arguments:**

    - `fn`: a smooth loss `fn(params, args) -> scalar`. Any JAX-traceable function works with
      `ProximalGradient` and `BestSubset`; `CoordinateDescent` needs the loss's least-squares
      form (`fn.least_squares_form(args)`, which `jaxlmm.losses.LeastSquares` and the loss
      builders have).
    - `penalty`: any `jaxlmm.AbstractPenalty` (`L1`, `ElasticNet`, `MCP`, `SCAD`, `GroupLasso`,
      or a user's subclass) or the constraint `jaxlmm.L0(k, unpenalized)`.
    - `solver`: `ProximalGradient()`, `CoordinateDescent()` (both run inside `jit`, and can be
      `vmap`ped over λ, weights, data or starting points) or `BestSubset()` (host side,
      skscope, for `L0`).
    - `y0`: starting point (length p); a warm start along a path.
    - `args`: data for `fn`, traced (so new data of the same shapes does not recompile).
    - `throw`: raise if the solve did not succeed; with `throw=False` the `Solution.result`
      code says what happened (the right choice inside sweeps).
    - `differentiate`: how `jax.grad`/`jax.jvp` of the solution (with respect to λ, the
      penalty's weights, `args` and the arrays `fn` closes over) are computed: "implicit"
      (default; the implicit function theorem at the prox-gradient fixed point, solved by GMRES
      on Jacobian–vector products, costing nothing unless a derivative is taken) or
      "iterations" (through 50 prox-gradient steps from the solution). The derivative is that
      of the current support: it does not see a coefficient about to enter or leave.
      `BestSubset` runs on the host and is not differentiable.

    Returns a `Solution(value, result, objective, kkt_residual, stats)`.
    """
    y0 = jnp.asarray(y0)
    if y0.ndim != 1:
        raise ValueError(f"`y0` must be a 1-D array of coefficients; got shape {y0.shape}.")
    if differentiate not in DIFFERENTIATE:
        raise ValueError(f"`differentiate` must be one of {DIFFERENTIATE}; got {differentiate!r}.")
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
    solver.check(fn, penalty)
    # Python floats would be baked into the compiled program; arrays keep λ traced.
    penalty = jax.tree.map(jnp.asarray, penalty)
    return _solve_jit(fn, penalty, solver, y0, args, throw, differentiate=differentiate)
