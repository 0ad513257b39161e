"""Coordinate gradient descent for the l1-penalised mixed-model likelihood (Schelldorfer, Bühlmann
& van de Geer 2011, Algorithm 1): alternate an exact β-block and a variance-parameter block."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import Array, lax

from ..._covariance import diagonal_parameters
from ..._fit import savable
from ..._penalties import L1
from ..._solution import RESULTS, ReportsResult
from ...losses.least_squares import LeastSquares, LeastSquaresData
from ...losses.mixed_model import (
    MixedModelData,
    MixedModelParams,
    cluster_statistics,
    variance_nll,
    whiten_by_covariance,
)
from ...solvers._base import attainable, nonzero_limits
from ...solvers.coordinate_descent import CoordinateDescent
from ...solvers.newton import damped_newton


@savable
class MixedModelFit(ReportsResult):
    """In-JIT result of `MixedModelCGD.run`: `params`, `objective` Q_λ, `nll` (−log L),
    `result` code and `num_steps` (outer iterations)."""

    params: MixedModelParams
    objective: Array
    nll: Array
    result: RESULTS
    num_steps: Array


class MixedModelCGD(eqx.Module):
    """Block coordinate gradient descent for Q_λ(β, θ, σ) = −log L + λ Σ_k w_k |β_k|.

    Each outer iteration (the paper's Algorithm 1, with each block minimised exactly):

    1. β-block. With (θ, σ) fixed, −log L is the quadratic ½‖V^{-1/2}(y − Xβ)‖² + const, so the
       β-step is a weighted Lasso on V^{-1/2}-whitened data. `beta_solver` solves it:
       `CoordinateDescent` makes the paper's coordinate steps with the exact coordinate
       Hessians H_j = Σ_i x_ijᵀ V_i⁻¹ x_ij and soft-thresholding, cycling the active set with
       full KKT sweeps, so no Armijo fallback is needed (the block is exactly quadratic; H_j = 0
       leaves β_j where it is); `ProximalGradient` solves the same block for comparison.
    2. variance block. With β fixed, (θ, log σ) minimise −log L from q×q cluster statistics
       by damped Newton (exact autodiff Hessian, backtracking), then a diagonal entry of L
       below `threshold` is set to 0 (a variance component at exactly 0, as in the paper).

    Stops when the relative changes of β, of Q and of (σ, θ) are all ≤ `tol` (the paper's
    rule; the default 1e-6 is tighter than lmmlasso's 1e-4), or after `max_steps` outer
    iterations. Every block decreases Q, so Q is monotone.
    With `max_nonzero` given, it stops as soon as an iterate has more nonzero coefficients
    than that and than the start had (result `saturated`, as is a fit that ends with more than
    `max_nonzero`; lmmlasso's `stopSat`): with p > N such fits head to σ² → 0. A negative
    `max_nonzero` returns the start at once as `saturated` (how a λ path marks the λ it no
    longer fits).
    """

    tol: float = 1e-6
    max_steps: int = 500
    beta_solver: eqx.Module = CoordinateDescent(rtol=1e-8)
    newton_steps: int = 50
    threshold: float = 1e-4

    def run(self, structure: str, args: MixedModelData, penalty: L1, params0: MixedModelParams,
            max_nonzero=None, variance_penalty=None) -> MixedModelFit:
        """Minimise Q_λ from `params0`. `variance_penalty` (n_θ weights ≥ 0, diagonal Ψ) adds
        Σ_l v_l θ_l² = Σ_l v_l Ψ_ll, an l1 penalty on the variances Ψ_ll ≥ 0 (pysr3's): a
        variance whose likelihood slope ∂(−log L)/∂Ψ_ll at 0 is above −v_l goes to exactly 0."""
        return self.run_with_first_block(structure, args, penalty, params0, max_nonzero, variance_penalty)[0]

    def run_with_first_block(self, structure: str, args: MixedModelData, penalty: L1, params0: MixedModelParams,
                             max_nonzero=None, variance_penalty=None) -> tuple[MixedModelFit, Array]:
        """`run`, and β after the first β-block: the penalised least squares at `params0`'s
        variances (`params0.beta` when no step ran). A path of fits that all start from the
        same variances carries it to the next λ as a warm start of that block."""
        q = args.data.Z.shape[1]
        diagonal = diagonal_parameters(structure, q)
        n_theta = params0.theta.shape[0]

        def theta_penalty(theta):
            return 0.0 if variance_penalty is None else jnp.sum(variance_penalty * theta**2)

        def nll(params):
            return variance_nll(params.theta, params.log_sigma, cluster_statistics(args, params.beta), structure)

        def objective(params):
            return nll(params) + penalty(params.beta) + theta_penalty(params.theta)

        limit, cap = nonzero_limits(max_nonzero, params0.beta)
        tol = attainable(self.tol, args.y.dtype)  # 1e-6 is 8 eps in float32: floor at 1000 eps

        def beta_block(params):
            X_w, y_w = whiten_by_covariance(args, params.theta, params.log_sigma, structure)
            ls_args = LeastSquaresData(X_w, y_w, jnp.ones_like(y_w), jnp.asarray(1.0, y_w.dtype))
            # A β-block that grows past the cap stops there (so does the whole fit, saturated):
            # solving a p > N Lasso at a λ this small to convergence is the costliest part of a
            # path. Same cap as the outer loop, so a β-block is never cut short on its own.
            beta, result, *_ = self.beta_solver.run(LeastSquares(), penalty, params.beta, ls_args, None,
                                                    max_nonzero=cap)
            return beta, result

        def variance_block(params):
            stats = cluster_statistics(args, params.beta)

            def f(phi):
                return variance_nll(phi[:n_theta], phi[n_theta], stats, structure) + theta_penalty(phi[:n_theta])

            phi = damped_newton(f, jnp.append(params.theta, params.log_sigma), self.newton_steps).value
            theta = phi[:n_theta]
            theta = theta.at[diagonal].set(jnp.where(jnp.abs(theta[diagonal]) < self.threshold, 0.0, theta[diagonal]))
            return theta, phi[n_theta]

        def relative(new, old):
            return jnp.linalg.norm(new - old) / (1.0 + jnp.linalg.norm(new))

        def saturated(params):
            return jnp.sum(params.beta != 0) > limit

        def cond(s):
            params, _, it, done, finite, _, _ = s
            growing = jnp.sum(params.beta != 0) > cap
            return (~done) & finite & (it < self.max_steps) & ~growing & (limit >= 0)

        def body(s):
            params, q_old, it, _, _, beta_ok, first_beta = s
            beta, beta_result = beta_block(params)
            first_beta = jnp.where(it == 0, beta, first_beta)
            theta, log_sigma = variance_block(MixedModelParams(beta, params.theta, params.log_sigma))
            new = MixedModelParams(beta, theta, log_sigma)
            q_new = objective(new)
            old_cov = jnp.append(params.theta, jnp.exp(params.log_sigma))
            new_cov = jnp.append(theta, jnp.exp(log_sigma))
            done = (
                (relative(beta, params.beta) <= tol)
                & (jnp.abs(q_new - q_old) / (1.0 + jnp.abs(q_new)) <= tol)
                & (relative(new_cov, old_cov) <= tol)
            )
            beta_ok = beta_ok & (beta_result == RESULTS.successful)
            return new, q_new, it + 1, done, jnp.isfinite(q_new), beta_ok, first_beta

        true = jnp.asarray(True)
        init = (params0, objective(params0), jnp.zeros((), jnp.int32), ~true, true, true, params0.beta)
        params, q_final, steps, done, finite, beta_ok, first_beta = lax.while_loop(cond, body, init)
        result = RESULTS.where(done & beta_ok, RESULTS.successful, RESULTS.max_steps_reached)
        result = RESULTS.where(saturated(params), RESULTS.saturated, result)
        result = RESULTS.where(finite, result, RESULTS.nonfinite)
        return MixedModelFit(params, q_final, nll(params), result, steps), first_beta
