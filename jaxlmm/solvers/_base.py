"""The interface every in-JIT solver implements."""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp
from jax import Array


def attainable(rtol, dtype) -> Array:
    """`rtol`, raised to 1000·eps of `dtype` where it is smaller: a relative tolerance below the
    rounding error of the residuals and gradients it is checked on can never be met (float32's
    eps is 1.2e-7, so a 1e-7 tolerance made every solve run to `max_steps`). In float64 the
    floor is 2.2e-13 and changes no usual setting."""
    return jnp.maximum(rtol, 1e3 * jnp.finfo(dtype).eps)


def nonzero_limits(max_nonzero, start: Array) -> tuple:
    """(limit, cap) for a `max_nonzero` run: a result with more than `limit` nonzeros is
    `saturated`, and the loop stops once an iterate has more than `cap` = max(limit, nonzeros
    of the start). Growth past the limit counts, not a start that is already past it: a
    crowded start (a CV-Lasso β at a large λ) empties on the way to its solution."""
    limit = jnp.inf if max_nonzero is None else max_nonzero
    return limit, jnp.maximum(limit, jnp.sum(start != 0))


class AbstractSolver(eqx.Module):
    """A solver for min_β f(β, args) + penalty(β), run entirely inside `jit`.

    `prepare(fn, args)` computes what depends on the data only (for example a transposed
    design); paths and fixed-point loops call it once and reuse it for every λ, since XLA
    does not hoist such work out of a loop. `run` returns `(value, result, num_steps, f, grad)`
    with f and ∇f at `value`; `jaxlmm.solve` adds the objective, the KKT residual and error
    handling. `run(..., max_nonzero=k)` (a traced count, default no limit) stops early with
    `RESULTS.saturated` once an iterate has more than k nonzero coefficients; a negative k
    returns the start at once (how a λ path skips the λ it no longer fits, without a
    `lax.cond`, which under `vmap` would run the solve anyway). Configuration (tolerances,
    step limits) lives in fields, so it is static under `jit`; data go through `args` and are
    traced.
    """

    rtol: eqx.AbstractVar[float]
    atol: eqx.AbstractVar[float]
    max_steps: eqx.AbstractVar[int]

    def check(self, fn, penalty=None) -> None:
        """Raise `ValueError` when this solver cannot handle `fn` or `penalty` (before tracing)."""

    def prepare(self, fn, args):
        return None

    @abc.abstractmethod
    def run(self, fn, penalty, y0: Array, args, prepared, max_nonzero=None) -> tuple: ...

    def tolerance(self, grad0: Array, penalty) -> Array:
        """atol + rtol · (scale of the problem): the larger of |∇f(y0)|∞ and the largest finite
        penalty threshold, so the stopping rule does not depend on how y is scaled."""
        t = jnp.broadcast_to(penalty.thresholds(), grad0.shape)
        t_max = jnp.max(jnp.where(jnp.isfinite(t), t, 0.0), initial=0.0)
        scale = jnp.maximum(jnp.max(jnp.abs(grad0)), t_max)
        rtol = attainable(self.rtol, grad0.dtype)
        return self.atol + rtol * jnp.maximum(scale, jnp.finfo(grad0.dtype).tiny)
