"""FISTA with backtracking and adaptive restart, for any smooth loss fn(params, args)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .._solution import RESULTS
from ._base import AbstractSolver, nonzero_limits


class ProximalGradient(AbstractSolver):
    """Accelerated proximal gradient (FISTA) with backtracking and restart.

    Works for any differentiable `fn(params, args) -> scalar` plus a penalty with a `prox`.
    Each iteration: extrapolate, backtrack on the Lipschitz estimate L until the quadratic
    upper bound holds, take the prox step, restart the momentum when it points uphill
    (O'Donoghue & Candès' gradient scheme). It stops when the KKT residual
    max_k dist(−∇f_k, ∂penalty_k) ≤ atol + rtol·scale (see `AbstractSolver.tolerance`).

    **Arguments:**

    - `rtol`, `atol`: the KKT tolerance.
    - `max_steps`: iteration limit (then `RESULTS.max_steps_reached`).
    - `restart`: use adaptive restart (default True).
    - `max_backtracks`: doublings of L allowed per iteration.

    `run(..., max_nonzero=k)` stops once an iterate has more than k nonzero coefficients and
    more than the start had (`saturated`, as is a fit that ends with more than k); a negative k
    returns the start unchanged, as `saturated`.
    """

    rtol: float = 1e-8
    atol: float = 0.0
    max_steps: int = 20_000
    restart: bool = True
    max_backtracks: int = 60

    def run(self, fn, penalty, y0, args, prepared=None, max_nonzero=None):
        value_and_grad = jax.value_and_grad(fn)
        limit, cap = nonzero_limits(max_nonzero, y0)
        f0, g0 = value_and_grad(y0, args)
        tol = self.tolerance(g0, penalty)
        dtype = g0.dtype
        eps = 10 * jnp.finfo(dtype).eps

        # A secant estimate of the curvature along −∇f: a lower bound on L that backtracking
        # then raises if it must.
        gnorm = jnp.linalg.norm(g0)
        probe = jnp.where(gnorm > 0, 1e-4 / jnp.maximum(gnorm, jnp.finfo(dtype).tiny), 1.0)
        g_probe = jax.grad(fn)(y0 - probe * g0, args)
        L0 = jnp.where(
            gnorm > 0, jnp.linalg.norm(g_probe - g0) / jnp.maximum(probe * gnorm, 1e-300), 1.0
        )
        L0 = jnp.clip(L0, 1e-12, 1e12).astype(dtype)
        kkt0 = jnp.max(penalty.kkt_residual(y0, g0))

        def backtrack(z, fz, gz, L):
            def step(L):
                x = penalty.prox(z - gz / L, 1.0 / L)
                d = x - z
                bound = fz + jnp.vdot(gz, d) + 0.5 * L * jnp.vdot(d, d)
                fx = fn(x, args)
                return x, fx, fx <= bound + eps * jnp.abs(fz)

            def cond(c):
                _, _, ok, L, tries = c
                return (~ok) & (tries < self.max_backtracks)

            def body(c):
                *_, L, tries = c
                L = 2.0 * L
                x, fx, ok = step(L)
                return x, fx, ok, L, tries + 1

            x, fx, ok = step(L)
            return lax.while_loop(cond, body, (x, fx, ok, L, 0))

        def cond(s):
            x, _, _, _, k, kkt, result, _, _ = s
            full = jnp.sum(x != 0) > cap
            return (kkt > tol) & (k < self.max_steps) & (result == RESULTS.successful) & ~full & (limit >= 0)

        def body(s):
            x, z, t, L, k, *_ = s
            fz, gz = value_and_grad(z, args)
            x_new, f_new, ok, L, _ = backtrack(z, fz, gz, L)
            g_new = jax.grad(fn)(x_new, args)
            kkt = jnp.max(penalty.kkt_residual(x_new, g_new))
            t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
            momentum = x_new + ((t - 1.0) / t_new) * (x_new - x)
            uphill = jnp.vdot(z - x_new, x_new - x) > 0
            restart = uphill & self.restart
            z_new = jnp.where(restart, x_new, momentum)
            t_new = jnp.where(restart, jnp.ones_like(t_new), t_new)
            finite = jnp.all(jnp.isfinite(x_new))
            result = RESULTS.where(ok, RESULTS.successful, RESULTS.line_search_failed)
            result = RESULTS.where(finite, result, RESULTS.nonfinite)
            # Let L shrink a little each step so one steep region does not slow every later step.
            return x_new, z_new, t_new, L / 1.2, k + 1, kkt, result, f_new, g_new

        init = (y0, y0, jnp.ones((), dtype), L0, 0, kkt0, RESULTS.successful, f0, g0)
        x, _, _, _, k, kkt, result, f, g = lax.while_loop(cond, body, init)
        result = RESULTS.where(
            (result == RESULTS.successful) & (kkt > tol), RESULTS.max_steps_reached, result
        )
        result = RESULTS.where(jnp.sum(x != 0) > limit, RESULTS.saturated, result)
        return x, result, k, f, g
