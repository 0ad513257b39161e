"""Derivatives of solutions: implicit differentiation of a fixed point, or differentiation through
the last iterations of the map that defines it."""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree
from jax.scipy.sparse.linalg import gmres

DIFFERENTIATE = ("implicit", "iterations")
UNROLLED_STEPS = 50


def frozen(tree):
    """`tree` with every array cut off from differentiation (what the solver's loop sees, so that
    `jax.grad` never has to reverse a `while_loop`)."""
    return jax.tree.map(lambda x: lax.stop_gradient(x) if isinstance(x, jax.Array) else x, tree)


def _gmres(linear, rhs):
    """Solve linear(x) = rhs (I − ∂T is not symmetric) by GMRES on Jacobian–vector products."""
    dtype = jax.tree.leaves(rhs)[0].dtype
    tol = max(1e-10, 100 * float(jnp.finfo(dtype).eps))
    size = sum(x.size for x in jax.tree.leaves(rhs))
    return gmres(linear, rhs, tol=tol, atol=0.0, restart=min(size, 50), maxiter=10 * max(size, 1))[0]


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _root(residual, solution, operands):
    return solution


@_root.defjvp
def _root_jvp(residual, primals, tangents):
    solution, operands = primals
    _, d_operands = tangents
    _, rhs = jax.jvp(lambda o: residual(solution, o), (operands,), (d_operands,))
    # ∂_x R dx = −∂_θ R dθ, on flat vectors: custom_linear_solve makes the solve transposable (so
    # reverse mode works), and one flat right-hand side keeps a part of the solution that does
    # not depend on θ (a zero tangent) from breaking the transposition.
    flat, unravel = ravel_pytree(solution)

    def linear(v):
        return ravel_pytree(jax.jvp(lambda x: residual(x, operands), (solution,), (unravel(v),))[1])[0]

    rhs = -ravel_pytree(rhs)[0]
    return solution, unravel(lax.custom_linear_solve(linear, rhs, solve=_gmres, transpose_solve=_gmres))


def implicit_root(residual, solution, *operands):
    """`solution` (a pytree), with derivatives from the implicit function theorem applied to
    residual(x, *operands) = 0 (operands: pytrees, e.g. the loss, the penalty and the data).

    dx* = −(∂_x R)⁻¹ ∂_θ R dθ, with the linear system solved matrix-free (GMRES on Jacobian–vector
    products, transposable, so forward and reverse mode both work); the forward value is
    `solution` itself and `residual` is not even traced unless a derivative is asked for. What
    the solution depends on must reach `residual` through `operands` (arrays it closes over
    are constants to it).
    """
    dynamic, static = eqx.partition(operands, eqx.is_array)

    def explicit(x, dynamic):
        return residual(x, *eqx.combine(dynamic, static))

    return _root(explicit, lax.stop_gradient(solution), dynamic)


def curvature_step(fn, value, args, n_iter: int = 30):
    """1 / (largest eigenvalue of ∇²f at `value`, a pytree), by power iteration on Hessian–vector
    products: the gradient step of a fixed-point map (any step > 0 has the same fixed points;
    this one makes the implicit system well scaled)."""
    value, args = lax.stop_gradient((value, args))
    flat, unravel = ravel_pytree(value)
    grad = lambda b: ravel_pytree(jax.grad(fn)(unravel(b), args))[0]  # noqa: E731

    def hvp(v):
        return jax.jvp(grad, (flat,), (v,))[1]

    def normalised(w):
        return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(flat.dtype).tiny)

    v = lax.fori_loop(0, n_iter, lambda _, v: normalised(hvp(v)), jnp.ones_like(flat) / jnp.sqrt(flat.size))
    top = jnp.linalg.norm(hvp(v))
    return lax.stop_gradient(1.0 / jnp.maximum(top, jnp.finfo(flat.dtype).tiny))


def prox_gradient_map(fn, penalty, args, step):
    """T(β) = prox_{step·P}(β − step ∇f(β)): its fixed points are the stationary points of f + P."""
    return lambda beta: penalty.prox(beta - step * jax.grad(fn)(beta, args), step)


def differentiable_solution(fn, penalty, args, value, how: str):
    """`value` (a solution of min f + P), with derivatives with respect to `penalty`, `args` and
    whatever `fn` closes over.

    - "implicit": the implicit function theorem at the fixed point β* = T(β*) of the
      prox-gradient map. On the Lasso's support this is H_SS dβ_S = −d(∇_S f + λ w_S sign β_S),
      and dβ = 0 off it; a coefficient exactly at its entry point (|∇_k f| = λ w_k) has no
      derivative, and the one returned is the one-sided derivative of the current support.
    - "iterations": `UNROLLED_STEPS` prox-gradient steps from the (non-differentiated) solution,
      differentiated by ordinary reverse/forward mode; it converges to the implicit derivative at
      the rate of the iteration (slowly for ill-conditioned problems).
    """
    if how == "implicit":
        def residual(beta, fn, penalty, args, anchor):
            # The step is computed here, so a forward pass without derivatives never pays for it.
            return beta - prox_gradient_map(fn, penalty, args, curvature_step(fn, anchor, args))(beta)

        return implicit_root(residual, value, fn, penalty, args, lax.stop_gradient(value))
    T = prox_gradient_map(fn, penalty, args, curvature_step(fn, value, args))
    return lax.fori_loop(0, UNROLLED_STEPS, lambda _, b: T(b), lax.stop_gradient(value))
