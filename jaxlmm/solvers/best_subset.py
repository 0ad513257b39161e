"""Best subset by splicing through skscope's `ScopeSolver` (host side), without its side effects."""

from __future__ import annotations

import contextlib
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._penalties import L0
from .._solution import RESULTS, Solution

_CONFIG_FLAGS = ("jax_platform_name", "jax_platforms", "jax_enable_x64")


@contextlib.contextmanager
def preserved_jax_config():
    """Restore the JAX flags skscope touches: 0.1.8 sets `jax_platform_name` to "cpu" inside
    `solve()`, which would silently move the caller's later work off a GPU."""
    saved = {name: jax.config.values[name] for name in _CONFIG_FLAGS}
    try:
        yield
    finally:
        for name, value in saved.items():
            if jax.config.values[name] != value:
                jax.config.update(name, value)


@functools.cache
def _compiled(fn):
    """One jitted value and gradient per loss: skscope gets plain `def f(params, data)`
    wrappers around these, so a new `data` of the same shapes (another a, another fold)
    reuses the compiled code instead of retracing."""
    return jax.jit(fn), jax.jit(jax.grad(fn))


def _least_squares_refit(X, y, c):
    """skscope `numeric_solver` that refits the active set in closed form (weighted least
    squares, for a loss ½ Σ_t c_t (y_t − x_tᵀβ)² given by its `least_squares_form`) instead of
    running L-BFGS-B through Python callbacks."""
    sqrt_c = np.sqrt(np.asarray(c, np.float64))
    X = np.asarray(X, np.float64) * sqrt_c[:, None]
    y = np.asarray(y, np.float64) * sqrt_c

    def numeric_solver(objective, value_and_grad, params, active, data):
        params = np.zeros_like(params, dtype=np.float64)
        active = np.asarray(active, dtype=np.int64)
        if active.size:
            params[active] = np.linalg.lstsq(X[:, active], y, rcond=None)[0]
        r = y - X[:, active] @ params[active]
        return 0.5 * float(r @ r), params

    return numeric_solver


class BestSubset(eqx.Module):
    """min f(β, args) subject to ‖β_{∉U}‖₀ ≤ k, by splicing (skscope's `ScopeSolver`).

    Runs on the host. The loss and its gradient are jitted once per loss and reached through
    skscope's `data=` argument, so solving again with new data of the same shapes does not
    retrace. For a loss with a `least_squares_form` (`LeastSquares`) the active-set refit is a
    closed-form least-squares solve.
    Computation runs in float64 (skscope's L-BFGS-B and its C++ core are float64); the JAX
    platform and x64 flags are restored afterwards.

    **Arguments** (passed to `ScopeSolver`): `max_iter`, `max_exchange_num`,
    `splicing_type` ("halve" or "taper"), `important_search`.
    """

    max_iter: int = 20
    max_exchange_num: int = 5
    splicing_type: str = "halve"
    important_search: int = 128

    def run_host(self, fn, penalty: L0, y0, args) -> Solution:
        from skscope import ScopeSolver

        p = int(y0.shape[0])
        preselect = (
            [] if penalty.unpenalized is None else np.flatnonzero(np.asarray(penalty.unpenalized))
        )
        sparsity = int(penalty.k) + len(preselect)
        with preserved_jax_config(), jax.enable_x64(True):
            value, grad = _compiled(fn)
            solver = ScopeSolver(
                p,
                sparsity=sparsity,
                preselect=[int(j) for j in preselect],
                max_iter=int(self.max_iter),
                max_exchange_num=int(self.max_exchange_num),
                splicing_type=self.splicing_type,
                important_search=int(self.important_search),
            )
            solver.jax_platform = jax.config.values["jax_platform_name"]
            if getattr(fn, "least_squares_form", None) is not None:
                solver.numeric_solver = _least_squares_refit(*fn.least_squares_form(args))

            def objective(params, data):
                return value(params, data)

            def gradient(params, data):
                return grad(params, data)

            support0 = np.flatnonzero(np.asarray(y0))
            params = solver.solve(
                objective,
                data=args,
                gradient=gradient,
                init_support_set=support0 if support0.size else None,
                init_params=np.asarray(y0, np.float64),
            )
            beta = jnp.asarray(params)
            f = value(beta, args)
            g = grad(beta, args)
        beta = beta.astype(y0.dtype)
        on_support = beta != 0
        kkt = jnp.max(jnp.where(on_support, jnp.abs(g), 0.0)).astype(y0.dtype)
        ok = bool(np.all(np.isfinite(params)))
        return Solution(
            value=beta,
            result=RESULTS.successful if ok else RESULTS.nonfinite,
            objective=jnp.asarray(f, y0.dtype),
            kkt_residual=kkt,
            stats={"support": np.flatnonzero(params)},
        )
