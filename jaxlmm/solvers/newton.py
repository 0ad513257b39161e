"""Damped Newton for smooth objectives in a handful of parameters (variance parameters,
log-Cholesky factors): exact autodiff Hessian, so a few iterations reach machine precision."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .._solution import RESULTS, Solution


def value_grad_hessian(f, x):
    """(f(x), ∇f(x), ∇²f(x)) from one forward-over-reverse pass (one trace of f, not three)."""

    def grad_with_aux(x):
        value, grad = jax.value_and_grad(f)(x)
        return grad, (value, grad)

    hess, (value, grad) = jax.jacfwd(grad_with_aux, has_aux=True)(x)
    return value, grad, hess


def damped_newton(f, x, max_steps: int, return_derivatives: bool = False):
    """Minimise f from x by Newton steps with the Hessian's eigenvalues replaced by their
    absolute values (so saddles are left downhill) and Armijo backtracking.

    Stops when a step would move x by ≤ max(1e-10, 100 eps) (relative; x then stays where f, ∇f and ∇²f were
    last evaluated), when no decrease can be found, or after `max_steps`. Meant for d ≲ 20
    parameters: each step forms the d×d Hessian by autodiff.

    Returns a `Solution` (`kkt_residual` = max |∇f|, `stats["num_steps"]`): `successful` after a
    small step, or when no decrease could be found but the predicted one, −∇fᵀ·step, was at
    rounding level (100 eps (1 + |f|)); `line_search_failed` when no decrease was found short of
    that; `max_steps_reached`; `nonfinite`. With `return_derivatives`, returns (solution,
    (f, ∇f, ∇²f)) with the derivatives of the last Newton step — at x itself when it stopped on a
    small step — so a caller that needs them at the optimum does not trace them again.
    """

    def cond(s):
        _, it, done, _, _ = s
        return (~done) & (it < max_steps)

    def body(s):
        x, it, _, _, _ = s
        value, grad, hess = value_grad_hessian(f, x)
        w, V = jnp.linalg.eigh(hess)
        floor = 1e-10 * jnp.maximum(1.0, jnp.max(jnp.abs(w)))
        step = -V @ ((V.T @ grad) / jnp.maximum(jnp.abs(w), floor))
        slope = grad @ step

        def too_long(t, f_t):
            return (f_t > value + 1e-4 * t * slope) & (t > 1e-10)

        def halve(s):
            t = 0.5 * s[0]
            f_t = f(x + t * step)
            return t, f_t, too_long(t, f_t)

        # The loop flag is computed in the body and carried, never recomputed in `cond`: under
        # vmap, JAX evaluates a batched predicate twice (to stop, and to select which lanes
        # move), and near a minimum two compilations of f(x + t·step) > … can round differently,
        # leaving a lane that `cond` keeps alive but the body never moves (an endless loop).
        one = jnp.asarray(1.0, x.dtype)
        f_one = f(x + step)
        t, f_t, _ = lax.while_loop(lambda s: s[2], halve, (one, f_one, too_long(one, f_one)))
        accepted = f_t <= value
        small = jnp.max(jnp.abs(t * step)) <= step_tol * (1.0 + jnp.max(jnp.abs(x)))
        new = jnp.where(accepted & ~small, x + t * step, x)
        rounding = -slope <= 100 * jnp.finfo(x.dtype).eps * (1.0 + jnp.abs(value))
        code = RESULTS.where(small | rounding, RESULTS.successful, RESULTS.line_search_failed)
        return new, it + 1, small | ~accepted, (value, grad, hess), code

    # 1e-10, or 100 eps where that is larger (float32: a step below rounding never comes).
    step_tol = max(1e-10, 100 * float(jnp.finfo(x.dtype).eps))
    d = x.shape[0]
    zero = jnp.zeros((), x.dtype)
    derivatives = (zero, jnp.zeros(d, x.dtype), jnp.zeros((d, d), x.dtype))
    init = (x, 0, jnp.asarray(False), derivatives, RESULTS.max_steps_reached)
    x, it, done, derivatives, code = lax.while_loop(cond, body, init)
    value, grad, _ = derivatives
    code = RESULTS.where(done, code, RESULTS.max_steps_reached)
    code = RESULTS.where(jnp.isfinite(value) & jnp.all(jnp.isfinite(x)), code, RESULTS.nonfinite)
    kkt = jnp.max(jnp.abs(grad)) if d else zero
    solution = Solution(x, code, value, kkt, {"num_steps": it})
    return (solution, derivatives) if return_derivatives else solution
