"""L-BFGS for a handful of parameters whose objective is expensive to trace (nested solves,
higher derivatives): optax's L-BFGS direction with Armijo backtracking, one trace of f."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import Array, lax

from .._solution import RESULTS, Solution


def minimise_lbfgs(value_and_grad, u0: Array, max_steps: int, gtol: float, ftol: float = 1e-9):
    """L-BFGS (optax's `scale_by_lbfgs` direction) with Armijo backtracking, written so that the
    objective is traced once: every loop iteration evaluates (value, aux), gradient at one
    trial point, which is accepted (new direction) or rejected (half the step). Stops when
    max |gradient| ≤ gtol, or when an accepted step improves the value by ≤ ftol·(1 + |value|)
    (a maximiser at the boundary of the transformed range — b → 1, λ → ∞ — has a vanishing
    but never small gradient). Returns (solution, aux at u): a `Solution` whose `result` is
    `successful` on either test, `line_search_failed` when the step fell below 1e-12,
    `max_steps_reached` or `nonfinite`, `kkt_residual` max |gradient| and `stats["num_steps"]`."""
    lbfgs = optax.scale_by_lbfgs()

    def cond(s):
        it, done = s[-2], s[-1]
        return (~done) & (it < max_steps)

    def body(s):
        u, value, aux, grad, direction, step, memory, it, _ = s
        trial = u + step * direction
        (trial_value, trial_aux), trial_grad = value_and_grad(trial)
        decrease = trial_value <= value + 1e-4 * step * (grad @ direction)
        accept = (it == 0) | (jnp.isfinite(trial_value) & decrease)
        new_direction, new_memory = lbfgs.update(trial_grad, memory, trial)
        new_direction = jnp.where(trial_grad @ new_direction > 0, -new_direction, -trial_grad)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(accept, a, b), new, old)  # noqa: E731
        u, value, aux, grad, memory = keep((trial, trial_value, trial_aux, trial_grad, new_memory),
                                           (u, value, aux, grad, memory))
        direction = jnp.where(accept, new_direction, direction)
        step = jnp.where(accept, 1.0, 0.5 * step)
        stalled = accept & (it > 0) & (s[1] - value <= ftol * (1.0 + jnp.abs(value)))
        done = (accept & (jnp.max(jnp.abs(grad)) <= gtol)) | stalled | (step < 1e-12)
        return u, value, aux, grad, direction, step, memory, it + 1, done

    # The first iteration evaluates at u0 (step 0) and is always accepted: one trace of f.
    (_, aux_shape), _ = jax.eval_shape(value_and_grad, u0)
    aux0 = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), aux_shape)
    zero = jnp.zeros_like(u0)
    init = (u0, jnp.asarray(jnp.inf, u0.dtype), aux0, zero, zero, jnp.asarray(0.0, u0.dtype), lbfgs.init(u0), 0,
            jnp.asarray(False))
    u, value, aux, grad, _, step, *_, it, done = lax.while_loop(cond, body, init)
    code = RESULTS.where(done, RESULTS.successful, RESULTS.max_steps_reached)
    code = RESULTS.where(step < 1e-12, RESULTS.line_search_failed, code)
    code = RESULTS.where(jnp.isfinite(value), code, RESULTS.nonfinite)
    return Solution(u, code, value, jnp.max(jnp.abs(grad)), {"num_steps": it}), aux
