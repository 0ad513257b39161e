"""lmmLasso's pure core: (data arrays, λ) -> `CoreFit`, one start, differentiable."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ..._covariance import blup, cholesky_factor
from ..._data import LMMData
from ..._implicit import curvature_step, frozen, implicit_root
from ..._penalties import L1, FreeLeading, intercept_mask
from ...losses.mixed_model import MixedModelParams, mixed_model_nll
from .._core import CoreFit, all_nonnegative, check_structure, checked, hyperparameter, solver_start
from .cgd import MixedModelCGD
from .start import profile_start


def lmmlasso_core(data: LMMData, lam, structure: str = "identity", start=None, solver=None, penalty=None) -> CoreFit:
    """lmmLasso at a given λ as a pure function of arrays: a local minimiser of
    −log L(β_0, β, θ, σ²) + λ‖β‖₁ (intercept unpenalised, X as given: no standardisation) by
    `MixedModelCGD` from `start` (length p + 1, intercept first, or a previous `CoreFit`: a warm
    start; default β = (ȳ, 0, …, 0)) with the
    paper's profile-likelihood variance start. One start only (`fit_lmmlasso` tries two and
    keeps the better BIC). `penalty`: any `AbstractPenalty` on β in place of λ‖β‖₁ (its λ set
    to `lam`), as `fit_lmmlasso(..., penalty=)`.

    Differentiable in λ and the data by the implicit function theorem applied to the joint
    stationarity of (β, θ, log σ): the fixed point of a prox-gradient step in β and a gradient step
    in (θ, log σ). A variance component at exactly 0 (the paper's thresholding) is held there
    (derivative 0), like a coefficient off the support.
    """
    solver = MixedModelCGD() if solver is None else solver
    check_structure(structure, ("identity", "diagonal", "full"))
    dtype = data.X.dtype
    lam = hyperparameter("lam", lam, dtype)
    design = data.with_intercept()
    fn, args = mixed_model_nll(data, design, structure)
    p1 = design.shape[1]
    if penalty is None:
        penalty = L1(lam, None, intercept_mask(p1))
    else:  # the user's penalty on β; the intercept stays free
        penalty = FreeLeading(penalty.with_lam(lam), 1, p1)
    beta0 = jnp.zeros(p1, dtype).at[0].set(jnp.mean(data.y)) if start is None else solver_start(start, p1, dtype, True)
    frozen_args = frozen(args)
    theta0, log_sigma0 = profile_start(frozen_args, lax.stop_gradient(beta0), structure)
    start = MixedModelParams(lax.stop_gradient(beta0), theta0, log_sigma0)
    fit = solver.run(structure, frozen_args, frozen(penalty), start)

    def residual(params, fn, penalty, args, anchor):
        step = curvature_step(fn, anchor, args)
        g = jax.grad(fn)(params, args)
        beta = penalty.prox(params.beta - step * g.beta, step)
        theta = jnp.where(anchor.theta == 0, 0.0, params.theta - step * g.theta)
        return MixedModelParams(params.beta - beta, params.theta - theta, step * g.log_sigma)

    params = implicit_root(residual, fit.params, fn, penalty, args, lax.stop_gradient(fit.params))
    L = cholesky_factor(params.theta, structure, data.Z.shape[1])
    psi = L @ L.T
    sigma2 = jnp.exp(2.0 * params.log_sigma)
    ranef = blup(data, psi, sigma2, data.y - design @ params.beta)
    return checked(CoreFit(params.beta[1:], params.beta[0], sigma2, psi, ranef, fit.result, fit.num_steps),
                    all_nonnegative(lam), lam)
