"""L-BFGS for a handful of parameters whose objective is expensive to trace (nested solves,
higher derivatives): optax's L-BFGS direction with Armijo backtracking, one trace of f."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import Array, lax

from .._solution import RESULTS, Solution


def minimise_lbfgs(value_and_grad, u0: Array, max_steps: int, gtol: float, ftol: float = 1e-9,
                   decrease_tol: float | None = None, first_step: float = 1.0, escape=None):
    """L-BFGS (optax's `scale_by_lbfgs` direction) with Armijo backtracking, written so that the
    objective is traced once: every loop iteration evaluates (value, aux), gradient at one
    trial point, which is accepted (new direction) or rejected (half the step).

    A point is optimal, and the search stops there successfully, when one of these holds:

    - max |gradient| ≤ `gtol`;
    - with `decrease_tol`, the quasi-Newton step d from there predicts a decrease
      −gᵀd/2 ≤ `decrease_tol`·(1 + |value|) (scale-free: to second order f cannot improve by more);
    - the step just taken improved the value by ≤ `ftol`·(1 + |value|) (a maximiser at the
      boundary of a transformed range — b → 1, λ → ∞ — has a vanishing but never small gradient).

    `first_step` caps the length of the first step (optax's first direction has length
    min(‖g‖, 1)). `escape(u) -> (candidates, needed)`, for objectives with stationary points that
    are not minima (a function of a variance's square root is even, so a variance of 0 is
    stationary): at an optimal u where `needed`, the candidates (m × dim u) are evaluated one per
    iteration, and the search restarts (fresh L-BFGS memory) from the first that lowers f by more
    than `ftol`·(1 + |f|); it stops once none does.

    Returns (solution, aux at u): a `Solution` whose `result` is `successful` as above,
    `line_search_failed` when the step fell below 1e-12 (unless the predicted decrease is below
    `decrease_tol`: f's rounding then hides any decrease), `max_steps_reached` or `nonfinite`;
    `kkt_residual` max |gradient| and `stats["num_steps"]` (points evaluated, rejected ones included)."""
    lbfgs = optax.scale_by_lbfgs()

    def small_decrease(grad, direction, value):
        if decrease_tol is None:
            return jnp.asarray(False)
        return -0.5 * (grad @ direction) <= decrease_tol * (1.0 + jnp.abs(value))

    def cond(s):
        it, done = s[-3], s[-1]
        return (~done) & (it < max_steps)

    def body(s):
        u, value, aux, grad, direction, step, memory, it, probe, _ = s
        probing = probe >= 0
        trial = u + step * direction
        if escape is not None:
            candidates, _ = escape(u)
            trial = jnp.where(probing, candidates[jnp.maximum(probe, 0)], trial)
        (trial_value, trial_aux), trial_grad = value_and_grad(trial)
        armijo = trial_value <= value + 1e-4 * step * (grad @ direction)
        improves = trial_value < value - ftol * (1.0 + jnp.abs(value))
        fresh = (it == 0) | probing  # the memory starts again at the first point and after an escape
        accept = (it == 0) | (jnp.isfinite(trial_value) & jnp.where(probing, improves, armijo))
        start = jax.tree.map(lambda a, b: jnp.where(fresh, a, b), lbfgs.init(trial), memory)
        new_direction, new_memory = lbfgs.update(trial_grad, start, trial)
        new_direction = jnp.where(trial_grad @ new_direction > 0, -new_direction, -trial_grad)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(accept, a, b), new, old)  # noqa: E731
        u, value, aux, grad, memory = keep((trial, trial_value, trial_aux, trial_grad, new_memory),
                                           (u, value, aux, grad, memory))
        direction = jnp.where(accept, new_direction, direction)
        step = jnp.where(accept, jnp.where(fresh, first_step, 1.0), jnp.where(probing, step, 0.5 * step))
        stalled = accept & ~fresh & (s[1] - value <= ftol * (1.0 + jnp.abs(value)))
        optimal = stalled | (accept & ((jnp.max(jnp.abs(grad)) <= gtol) | small_decrease(grad, direction, value)))
        if escape is None:
            return u, value, aux, grad, direction, step, memory, it + 1, probe, optimal | (step < 1e-12)
        candidates, needed = escape(u)
        last = probe + 1 >= candidates.shape[0]
        done = jnp.where(probing, ~accept & last, (optimal & ~needed) | (step < 1e-12))
        probe = jnp.where(probing, jnp.where(accept | last, -1, probe + 1), jnp.where(optimal & needed, 0, -1))
        return u, value, aux, grad, direction, step, memory, it + 1, probe, done

    # The first iteration evaluates at u0 (step 0) and is always accepted: one trace of f.
    (_, aux_shape), _ = jax.eval_shape(value_and_grad, u0)
    aux0 = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), aux_shape)
    zero = jnp.zeros_like(u0)
    init = (u0, jnp.asarray(jnp.inf, u0.dtype), aux0, zero, zero, jnp.asarray(0.0, u0.dtype), lbfgs.init(u0), 0, -1,
            jnp.asarray(False))
    u, value, aux, grad, direction, step, _, it, _, done = lax.while_loop(cond, body, init)
    failed = (step < 1e-12) & ~small_decrease(grad, direction, value)
    code = RESULTS.where(done, RESULTS.successful, RESULTS.max_steps_reached)
    code = RESULTS.where(failed, RESULTS.line_search_failed, code)
    code = RESULTS.where(jnp.isfinite(value) & jnp.all(jnp.isfinite(u)), code, RESULTS.nonfinite)
    return Solution(u, code, value, jnp.max(jnp.abs(grad)), {"num_steps": it}), aux
