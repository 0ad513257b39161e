"""Gradient-based tuning of (a, λ): minimise the cluster cross-validation error by its gradient."""

from __future__ import annotations

import dataclasses
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from ..._data import LMMData
from ..._path import lambda_max
from ..._penalties import intercept_mask
from ..._precision import in_float64
from ..._select import cluster_folds, marginal_sse, training_weights
from ..._validate import check_count, check_data, check_scalar, check_seed
from ...losses import quasi_likelihood
from ...solvers import CoordinateDescent
from .core import quasi_lasso_core
from .estimator import fit_quasi


@dataclasses.dataclass(frozen=True)
class GradientTuning:
    """Result of `tune_by_gradient`: the chosen `a`, `lam`, the quasi-likelihood Lasso `fit` there
    (`fit_quasi`), the `history` of (a, λ, CV error) per step, `n_solves` (Lasso solves, folds
    included) and `seconds` (the search, compilation included)."""

    a: float
    lam: float
    fit: object
    history: np.ndarray
    n_solves: int
    seconds: float


@eqx.filter_jit
def _cv_error_and_gradient(data, log_params, train, solver):
    """Σ_folds Σ_held-out ‖y_i − β̂_0 − X_i β̂‖² / N at (a, λ) = exp(log_params), and its gradient
    (implicit derivatives of every fold's Lasso)."""
    design = data.with_intercept()

    def error(log_params):
        a, lam = jnp.exp(log_params[0]), jnp.exp(log_params[1])

        def fold(train_w):
            fit = quasi_lasso_core(data, a, lam, solver, cluster_weights=train_w)
            coef = jnp.concatenate([fit.intercept[None], fit.coef])
            return marginal_sse(data, design, coef, 1.0 - train_w)

        return jnp.sum(jax.lax.map(fold, train)) / data.n_obs

    return jax.value_and_grad(error)(log_params)


@in_float64
def tune_by_gradient(data: LMMData, a0: float = 1.0, lam0=None, *, n_folds: int = 5, seed: int = 0,
                     steps: int = 40, learning_rate: float = 0.1, progress: bool = True) -> GradientTuning:
    """Choose a and λ of the quasi-likelihood Lasso by gradient descent (Adam on log a, log λ) on the
    cluster cross-validation error CV(a, λ) = Σ_f Σ_{i ∈ fold f} ‖y_i − β̂_0^{(−f)} − X_i β̂^{(−f)}‖² / N,
    whose gradient comes from the implicit derivatives of the fold Lassos. CV is piecewise smooth
    in λ (it kinks where the support changes), so the best point visited is returned.

    **Arguments:** `data`; `a0` (> 0) and `lam0` (default 0.1·λ_max(a0)) the start; `n_folds`,
    `seed` the cluster folds (as `fit_quasi`); `steps` and `learning_rate` of Adam; `progress`.

    Returns a `GradientTuning` with the `fit_quasi` fit at the chosen (a, λ).
    """
    check_data(data)
    seed = check_seed(seed)
    a0 = check_scalar("a0", a0, allow_none=False)
    if not a0 > 0:
        raise ValueError(f"`a0` must be > 0 (the search runs on log a); got {a0}.")
    steps = check_count("steps", steps)
    learning_rate = check_scalar("learning_rate", learning_rate, allow_none=False)
    dtype = data.X.dtype
    start = time.perf_counter()
    if lam0 is None:
        fn, args = quasi_likelihood(data, a0, intercept=True)
        unpenalized = intercept_mask(data.n_features + 1)
        top, _ = lambda_max(fn, args, CoordinateDescent(), jnp.zeros(data.n_features + 1, dtype), None, unpenalized)
        lam0 = 0.1 * float(top)
    lam0 = check_scalar("lam0", lam0)
    if not lam0 > 0:
        raise ValueError(f"`lam0` must be > 0 (the search runs on log λ); got {lam0}.")
    folds = cluster_folds(data.n_clusters, n_folds, seed)
    train = training_weights(folds, n_folds, dtype)
    solver = CoordinateDescent(rtol=1e-8)
    optimiser = optax.adam(learning_rate)
    params = jnp.log(jnp.asarray([a0, lam0], dtype))
    state = optimiser.init(params)
    history = []
    for _ in tqdm(range(steps), desc="gradient tuning", disable=not progress):
        value, grad = _cv_error_and_gradient(data, params, train, solver)
        history.append([*np.exp(np.asarray(params)), float(value)])
        updates, state = optimiser.update(grad, state)
        params = optax.apply_updates(params, updates)
    history = np.asarray(history)
    best = int(np.nanargmin(history[:, 2]))
    a, lam = float(history[best, 0]), float(history[best, 1])
    seconds = time.perf_counter() - start
    fit = fit_quasi(data, a=a, lam=lam, progress=False)
    return GradientTuning(a, lam, fit, history, steps * n_folds, seconds)
