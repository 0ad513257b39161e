"""Working-set coordinate descent for the least-squares datafit (Tseng & Yun CGD, exact Hessians)."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from .._solution import RESULTS
from ._base import AbstractSolver, nonzero_limits


class CoordinateDescent(AbstractSolver):
    """Coordinate descent with working sets, for a weighted least-squares loss + a separable penalty.

    It asks the loss for its least-squares form: `fn.least_squares_form(args)` returns
    (X, y, c) with f(β) = ½ Σ_t c_t (y_t − x_tᵀβ)² (`jaxlmm.losses.LeastSquares` has it; so
    can a user's loss). Then the coordinate curvature H_k = Σ_t c_t x_tk² is exact, so each
    Tseng–Yun coordinate step is the closed-form minimiser
    β_k ← prox_{P_k/H_k}(β_k − ∂_k f / H_k) (`penalty.coordinate_prox`: a soft threshold for
    the Lasso, firm thresholding for MCP, …) and no line search is needed.

    Like glmnet, it sweeps only a working set: the nonzero coefficients plus those whose
    gradient is within `working_set_margin`·λ w_k of entering. After the working set
    converges, one full gradient (a single matrix–vector product) checks the KKT conditions
    everywhere; violators join the working set and it repeats. So the solution satisfies the
    KKT conditions on all p coordinates to atol + rtol·scale, but a sweep over all p
    coordinates is never needed. Every `anderson_memory` epochs the iterates are
    extrapolated (Anderson acceleration, kept only if it lowers the objective), which
    rescues the slow linear rate of cyclic CD on correlated designs; 0 turns it off.
    `max_steps` counts coordinate epochs. `run(..., max_nonzero=k)` stops as soon as an
    iterate has more than k nonzero coefficients and more than the start had (result
    `saturated`; glmnet's `dfmax`): with p > N and a small λ the exact solution is not wanted,
    only the news that the fit has filled up. A fit that ends with more than k nonzeros is
    `saturated` too. (An iterate can carry a few more nonzeros than its limit point.) A
    negative k returns the start unchanged, as `saturated`.

    Raises `ValueError` naming what is missing for a loss without `least_squares_form` or a
    penalty that is not separable (`GroupLasso`); use `ProximalGradient` for those.
    """

    rtol: float = 1e-8
    atol: float = 0.0
    max_steps: int = 100_000
    working_set_margin: float = 0.1
    max_rounds: int = 1_000
    anderson_memory: int = 5

    def check(self, fn, penalty=None):
        if getattr(fn, "least_squares_form", None) is None:
            raise ValueError(
                f"CoordinateDescent needs the loss's least-squares form, and `{type(fn).__name__}` has no "
                "`least_squares_form(args)` returning (X, y, c) with f(β) = ½ Σ_t c_t (y_t − x_tᵀβ)². Add it, "
                "or use ProximalGradient for a general loss."
            )
        if penalty is not None and not penalty.separable:
            raise ValueError(
                f"CoordinateDescent needs a separable penalty; {type(penalty).__name__} is not. Use ProximalGradient."
            )

    def prepare(self, fn, args):
        self.check(fn)
        X, _, row_scale = fn.least_squares_form(args)
        XT = X.T  # contiguous columns: each coordinate step reads one row of XT
        return XT, row_scale, (XT * XT) @ row_scale

    def run(self, fn, penalty, y0, args, prepared=None, max_nonzero=None):
        self.check(fn, penalty)
        XT, row_scale, hess = self.prepare(fn, args) if prepared is None else prepared
        X, y, _ = fn.least_squares_form(args)  # the response may differ from the prepared one's
        limit, cap = nonzero_limits(max_nonzero, y0)

        def full(beta):
            return jnp.sum(beta != 0) > cap

        movable = hess > 0
        safe_hess = jnp.where(movable, hess, 1.0)
        p = XT.shape[0]
        thresholds = jnp.broadcast_to(penalty.thresholds(), (p,))
        step = 1.0 / safe_hess

        def gradient(wr):
            return -(XT @ wr)

        wr0 = row_scale * (y - X @ y0)
        g0 = gradient(wr0)
        # Scale the tolerance by the gradient at 0 too: a warm start near the optimum has a
        # tiny ∇f(y0), and a tolerance relative to it alone could never be met.
        tol = self.tolerance(jnp.maximum(jnp.abs(g0), jnp.abs(gradient(row_scale * y))), penalty)
        inner_tol = 0.1 * tol

        def epoch(beta, wr, order, count):
            def update(i, c):
                beta, wr, change = c
                k = order[i]
                x = XT[k]
                b = beta[k]
                z = b * hess[k] + jnp.dot(x, wr)
                new = jnp.where(movable[k], penalty.coordinate_prox(z * step[k], step[k], k), b)
                delta = new - b
                wr = wr - delta * (x * row_scale)
                return beta.at[k].set(new), wr, jnp.maximum(change, jnp.abs(delta) * hess[k])

            return lax.fori_loop(0, count, update, (beta, wr, jnp.zeros((), beta.dtype)))

        positive_rows = row_scale > 0
        safe_row_scale = jnp.where(positive_rows, row_scale, 1.0)

        def objective(beta, wr):
            # ½ Σ w r² / s from the weighted residual wr = (w/s)·r (rows of weight 0 add 0).
            return 0.5 * jnp.sum(jnp.where(positive_rows, wr * wr / safe_row_scale, 0.0)) + penalty(beta)

        def extrapolate(beta, wr, betas, wrs):
            # Anderson extrapolation of the last K+1 epochs (Bertrand & Massias 2021): the
            # weights c solve min ‖Σ c_i Δβ_i‖ with Σ c_i = 1. Residuals are affine in β, so the
            # extrapolated residual is the same combination of stored ones (no matvec).
            diffs = jnp.diff(betas, axis=0)
            gram = diffs @ diffs.T
            gram = gram + 1e-10 * jnp.trace(gram) * jnp.eye(gram.shape[0], dtype=gram.dtype)
            z = jnp.linalg.solve(gram, jnp.ones(gram.shape[0], gram.dtype))
            c = z / jnp.sum(z)
            beta_x = c @ betas[1:]
            wr_x = c @ wrs[1:]
            better = jnp.all(jnp.isfinite(c)) & (objective(beta_x, wr_x) < objective(beta, wr))
            return jnp.where(better, beta_x, beta), jnp.where(better, wr_x, wr)

        K = self.anderson_memory

        def converge_working_set(beta, wr, working, epochs):
            order = jnp.argsort(~working, stable=True)
            count = jnp.sum(working)

            def cond(c):
                beta, _, change, n, *_ = c
                return (change > inner_tol) & (n < self.max_steps) & ~full(beta)

            def body(c):
                beta, wr, _, n, betas, wrs, i = c
                beta, wr, change = epoch(beta, wr, order, count)
                betas = betas.at[i].set(beta)
                wrs = wrs.at[i].set(wr)
                full = i == K
                beta, wr = lax.cond(
                    full & (K > 0),
                    lambda: extrapolate(beta, wr, betas, wrs),
                    lambda: (beta, wr),
                )
                return beta, wr, change, n + 1, betas, wrs, jnp.where(full, 0, i + 1)

            betas = jnp.zeros((K + 1, p), beta.dtype)
            wrs = jnp.zeros((K + 1, wr.shape[0]), wr.dtype)
            init = (beta, wr, jnp.asarray(jnp.inf, beta.dtype), epochs, betas, wrs, 0)
            beta, wr, _, epochs, *_ = lax.while_loop(cond, body, init)
            return beta, wr, epochs

        def round_cond(s):
            beta, _, _, done, epochs, rounds, _ = s
            return (~done) & (epochs < self.max_steps) & (rounds < self.max_rounds) & ~full(beta) & (limit >= 0)

        def round_body(s):
            beta, wr, working, _, epochs, rounds, _ = s
            beta, _, epochs = converge_working_set(beta, wr, working, epochs)
            # The KKT check uses a residual recomputed from β: the one the epochs update in place
            # drifts by rounding (in float32 enough that a check on it passed a fit that the
            # exact gradient showed was not converged).
            wr = row_scale * (y - X @ beta)
            grad = gradient(wr)
            violators = (penalty.kkt_residual(beta, grad) > tol) & movable
            return beta, wr, working | violators, ~jnp.any(violators), epochs, rounds + 1, grad

        near = jnp.abs(g0) >= (1.0 - self.working_set_margin) * thresholds
        working = ((y0 != 0) | near) & movable
        done0 = ~jnp.any((penalty.kkt_residual(y0, g0) > tol) & movable)
        beta, wr, _, done, epochs, _, grad = lax.while_loop(
            round_cond, round_body, (y0, wr0, working, done0, 0, 0, g0)
        )
        result = RESULTS.where(done, RESULTS.successful, RESULTS.max_steps_reached)
        result = RESULTS.where(jnp.sum(beta != 0) > limit, RESULTS.saturated, result)
        result = RESULTS.where(jnp.all(jnp.isfinite(beta)), result, RESULTS.nonfinite)
        return beta, result, epochs, objective(beta, wr) - penalty(beta), grad
