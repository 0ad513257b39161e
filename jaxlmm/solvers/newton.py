"""Damped Newton for smooth objectives in a handful of parameters (variance parameters,
log-Cholesky factors): exact autodiff Hessian, so a few iterations reach machine precision."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def value_grad_hessian(f, x):
    """(f(x), ∇f(x), ∇²f(x)) from one forward-over-reverse pass (one trace of f, not three)."""

    def grad_with_aux(x):
        value, grad = jax.value_and_grad(f)(x)
        return grad, (value, grad)

    hess, (value, grad) = jax.jacfwd(grad_with_aux, has_aux=True)(x)
    return value, grad, hess


def damped_newton(f, x, max_steps: int):
    """Minimise f from x by Newton steps with the Hessian's eigenvalues replaced by their
    absolute values (so saddles are left downhill) and Armijo backtracking.

    Stops when a step moves x by ≤ 1e-10 (relative), when no decrease can be found, or after
    `max_steps`. Meant for d ≲ 20 parameters: each step forms the d×d Hessian by autodiff.
    """

    def cond(s):
        _, it, done = s
        return (~done) & (it < max_steps)

    def body(s):
        x, it, _ = s
        value, grad, hess = value_grad_hessian(f, x)
        w, V = jnp.linalg.eigh(hess)
        floor = 1e-10 * jnp.maximum(1.0, jnp.max(jnp.abs(w)))
        step = -V @ ((V.T @ grad) / jnp.maximum(jnp.abs(w), floor))
        slope = grad @ step

        def shrink(t):
            return (f(x + t * step) > value + 1e-4 * t * slope) & (t > 1e-10)

        t = lax.while_loop(shrink, lambda t: 0.5 * t, jnp.asarray(1.0, x.dtype))
        accepted = f(x + t * step) <= value
        new = jnp.where(accepted, x + t * step, x)
        small = jnp.max(jnp.abs(new - x)) <= 1e-10 * (1.0 + jnp.max(jnp.abs(x)))
        return new, it + 1, small | ~accepted

    x, _, _ = lax.while_loop(cond, body, (x, 0, jnp.asarray(False)))
    return x
