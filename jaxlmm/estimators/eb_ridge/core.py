"""The empirical-Bayes ridge LMM's pure core: (data arrays, λ, b, A) -> `CoreFit` at the MAP."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ..._data import LMMData
from ..._implicit import frozen, implicit_root
from .._core import CoreFit, all_nonnegative, checked, hyperparameter
from .estimator import eb_ridge_map, ecm_step
from .model import eb_design, posterior_moments


def eb_ridge_core(data: LMMData, lam, b, A, intercept: bool = True, tol: float = 1e-12) -> CoreFit:
    """The empirical-Bayes ridge LMM's MAP at given (λ, b, A) as a pure function of arrays (ECM,
    `eb_ridge_map`; every column of X ridge-penalised, an unpenalised intercept). Differentiable
    in λ, b, A and the data by the implicit function theorem at the ECM fixed point
    x = ECM(x; λ, b, A) (whose fixed points are the stationary points of the log posterior);
    `ranef` are the posterior means E[b_i | y] at the MAP. `tol`: ECM's stopping rule (a rise of
    the log posterior J of at most tol·(1 + |J|)); the MAP is accurate to about sqrt(tol)."""
    design = eb_design(data, (), intercept)
    dtype = data.X.dtype
    lam, b, A = given = tuple(hyperparameter(name, v, dtype) for name, v in (("lam", lam), ("b", b), ("A", A)))
    q = data.Z.shape[1]
    if A.shape != (q, q):
        raise ValueError(f"`A` must be a q × q = {q} × {q} matrix; got shape {A.shape}.")
    valid = (all_nonnegative(lam) & all_nonnegative(b) & (b < 1) & jnp.all(jnp.isfinite(A)) & jnp.allclose(A, A.T)
             & jnp.all(jnp.linalg.eigvalsh(0.5 * (A + A.T)) > 0))
    # Invalid values would stall ECM: it runs on harmless ones and the result says invalid_argument.
    lam, b, A = (jnp.where(valid, v, default) for v, default in ((lam, 1.0), (b, 0.5), (A, jnp.eye(q, dtype=dtype))))
    fit = eb_ridge_map(frozen(design), lax.stop_gradient(lam), lax.stop_gradient(b), lax.stop_gradient(A),
                       tol=tol)

    def residual(x, design, lam, b, A):
        return jax.tree.map(jnp.subtract, x, ecm_step(design, x, lam, b, A))

    params = implicit_root(residual, fit.params, design, lam, b, A)
    mu, _ = posterior_moments(design, params.psi, params.sigma2,
                              data.y - design.F @ params.beta_F - design.G @ params.beta_G)
    intercept_value = params.beta_F[0] if intercept else jnp.zeros((), dtype)
    return checked(CoreFit(params.beta_G, intercept_value, params.sigma2, params.psi, mu, fit.result, fit.num_steps),
                    valid, *given)
