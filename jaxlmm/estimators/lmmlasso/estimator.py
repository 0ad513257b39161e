"""`fit_lmmlasso`: the l1-penalised mixed-model likelihood (lmmLasso / adaptive lmmLasso) with a
λ path chosen by BIC, warm and cold starts, and BLUPs (Schelldorfer, Bühlmann & van de Geer 2011)."""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

from ..._covariance import (
    COVARIANCE_STRUCTURES,
    blup,
    cholesky_factor,
)
from ..._data import LMMData
from ..._fit import Fit, Tuning, accepts_formula, finish, savable
from ..._penalties import L1, AbstractPenalty, FreeLeading, check_user_penalty
from ..._solution import RESULTS, result_name
from ..._validate import (
    check_count,
    check_data,
    check_flag,
    check_fraction,
    check_indices,
    check_scalar,
    check_seed,
    check_solver,
    check_weights,
)
from ...losses.mixed_model import MixedModelData, MixedModelParams, mixed_model_nll, whiten_by_covariance
from ...solvers.coordinate_descent import CoordinateDescent
from .._driver import caller_fit, frame
from ..quasi import fit_quasi
from .cgd import MixedModelCGD, MixedModelFit
from .start import profile_start


@savable
class LMMLassoPath(eqx.Module):
    """A λ path of the penalised likelihood, from two kinds of start at every λ.

    `lambdas` (n_λ, on the fitting scale); `warm`/`cold`: `MixedModelFit`s stacked over λ —
    warm-started down the path from λ_max, or each started afresh from the cold start (a
    Lasso that ignores the grouping); `bic_warm`, `bic_cold`, `nnz_warm`, `nnz_cold`; `best`
    (index of the λ with the smallest BIC) and `best_is_cold`.
    """

    UNITS = {"lambdas": None, "bic_warm": None, "bic_cold": None}  # `fit_lmmlasso` maps them

    lambdas: Array
    warm: MixedModelFit
    cold: MixedModelFit
    bic_warm: Array
    bic_cold: Array
    nnz_warm: Array
    nnz_cold: Array
    best: Array
    best_is_cold: Array

    def chosen(self) -> MixedModelFit:
        """The fit BIC chose: at λ index `best`, from the start `best_is_cold` names (in-JIT too)."""
        return jax.tree.map(lambda w, c: jnp.where(self.best_is_cold, c[self.best], w[self.best]), self.warm, self.cold)


# ---- in-JIT pieces (pure; vmappable over data sets) -------------------------------------------


def information_criteria(fit: MixedModelFit, n_obs: int, nonzero_theta: bool = False) -> tuple[Array, Array, Array]:
    """(BIC, AIC, nnz) with −2 log L + c·(#{β_k ≠ 0} + dim θ + 1) (σ counted, as lmmlasso does);
    with `nonzero_theta`, only the nonzero θ_k count (variances selected by a penalty)."""
    nnz = jnp.sum(fit.params.beta != 0, axis=-1)
    n_theta = jnp.sum(fit.params.theta != 0, axis=-1) if nonzero_theta else fit.params.theta.shape[-1]
    npar = nnz + n_theta + 1
    return 2.0 * fit.nll + math.log(n_obs) * npar, 2.0 * fit.nll + 2.0 * npar, nnz


def _kkt_lambda(args, structure, params: MixedModelParams, penalty) -> Array:
    """The smallest λ of `penalty` at which `params` (penalised β at 0) meets the KKT conditions:
    for the weighted Lasso max_k |∂_k(−log L)| / w_k over penalised k."""
    X_w, y_w = whiten_by_covariance(args, params.theta, params.log_sigma, structure)
    return penalty.critical_lambda(X_w.T @ (y_w - X_w @ params.beta))


def _lambda_max(args, structure, at_inf: MixedModelFit, cold_start, penalty, unpenalized) -> Array:
    """The top of the λ grid. At the λ = ∞ fit σ² has absorbed the signal, which shrinks every
    gradient by 1/σ̂²; the near-truth basin of the same λ lives at a much smaller σ². So λ_max is
    the larger of the KKT bounds at the λ = ∞ fit and at the cold start's unpenalised part with
    its profile-likelihood variances (on the H1 design: 15.7 and ~10× more)."""
    beta_u = jnp.where(unpenalized, cold_start, 0.0)
    theta, log_sigma = profile_start(args, cold_start, structure)
    return jnp.maximum(
        _kkt_lambda(args, structure, at_inf.params, penalty),
        _kkt_lambda(args, structure, MixedModelParams(beta_u, theta, log_sigma), penalty),
    )


@eqx.filter_jit
def lmmlasso_path(args: MixedModelData, structure: str, relative_grid: Array, weights: Array,
                  unpenalized: Array, cold_start: Array, solver: MixedModelCGD,
                  max_df: Array, variance_penalty: Array | None = None, penalty=None) -> LMMLassoPath:
    """The penalised likelihood over λ = λ_max · `relative_grid`, from both starts, with BIC.
    `penalty`: any `AbstractPenalty` on the design's p + 1 coefficients in place of the weighted
    Lasso `L1(·, weights, unpenalized)` (its λ is set along the grid; `unpenalized` still marks
    the coefficients the cold start's variance profile keeps).

    Warm: each λ starts from the previous solution (`lax.scan` from the λ = ∞ fit). Cold:
    each λ starts afresh from `cold_start` and its profile-likelihood variances (one after
    another, so a slow λ does not hold the others up as it would in a `vmap`; the first β-block
    of each is warm-started from the previous λ's, which changes its cost, not its result). A
    fit whose parameter count exceeds `max_df` is stopped as saturated (log L grows without
    bound as σ² → 0) and gets BIC = inf; once a sweep saturates, its smaller λ are not fitted. `variance_penalty`: as in
    `MixedModelCGD.run` (then BIC counts the nonzero variances only). Pure: `jax.vmap` or `lax.map` it over
    stacked data sets for a simulation sweep. On a CPU `lax.map` is the faster of the two,
    because a vmapped loop runs until its
    slowest lane is done at every level of the nested solver loops.
    """
    y = args.y
    template = L1(jnp.ones((), y.dtype), weights, unpenalized) if penalty is None else penalty
    n_lambda = relative_grid.shape[0]
    n_theta = profile_start(args, cold_start, structure)[0].shape[-1]
    # With penalised variances the number of nonzero ones varies along the path: the cap on β
    # leaves room for one of them (BIC then counts those that are nonzero).
    max_nonzero = max_df - (n_theta if variance_penalty is None else 1) - 1

    # One compiled copy of the solver runs every fit, in one scan over 1 + 2 n_λ steps: the
    # λ = ∞ fit (which sets λ_max), the warm sweep (each λ from the previous solution), then the
    # cold sweep (each λ afresh from `cold_start`). Both sweeps go from λ_max down and stop
    # fitting once a fit saturates: smaller λ only saturate sooner, and those fits (p > N,
    # dozens of active columns) are the costly ones. A stopped sweep still calls the solver,
    # with λ = ∞ and no nonzero allowed, so that it returns at once (result `saturated`, BIC =
    # inf) — not through a `lax.cond`, which under `vmap` runs both branches.
    #
    # Every cold fit's first β-block is the penalised least squares at the cold start's
    # variances, whose minimiser is unique and does not depend on the β it starts from. So a
    # cold fit starts from the previous λ's first β-block: the same iterates, but its first
    # block is a warm-started path step instead of a solve from the CV-Lasso β (on H1 that
    # solve took most of each cold fit's time).
    step_index = jnp.arange(1 + 2 * n_lambda)
    is_warm = (step_index >= 1) & (step_index <= n_lambda)
    grid_index = jnp.where(is_warm, step_index - 1, step_index - 1 - n_lambda)
    inf_beta = jnp.zeros(args.X.shape[1], y.dtype).at[0].set(jnp.mean(y))
    inf_variances = profile_start(args, inf_beta, structure)
    cold_variances = profile_start(args, cold_start, structure)

    def step(carry, k):
        previous, cold_beta, lam_max, stopped_warm, stopped_cold = carry
        warm, first = is_warm[k], k == 0
        stopped = jnp.where(warm, stopped_warm, stopped_cold) & ~first
        lam = jnp.where(first | stopped, jnp.inf, lam_max * relative_grid[jnp.clip(grid_index[k], 0, n_lambda - 1)])
        limit = jnp.where(first, jnp.inf, jnp.where(stopped, -1, max_nonzero))
        theta0, log_sigma0 = jax.tree.map(lambda a, b: jnp.where(first, a, b), inf_variances, cold_variances)
        fresh = MixedModelParams(jnp.where(first, inf_beta, cold_beta), theta0, log_sigma0)
        start = jax.tree.map(lambda a, b: jnp.where(warm, a, b), previous, fresh)
        fit, first_beta = solver.run_with_first_block(structure, args, template.with_lam(lam), start, limit,
                                                      variance_penalty)
        lam_max = jnp.where(first, _lambda_max(args, structure, fit, cold_start, template, unpenalized), lam_max)
        saturated = fit.result == RESULTS.saturated
        is_cold = ~warm & ~first
        cold_beta = jnp.where(is_cold & ~stopped, first_beta, cold_beta)
        stopped_warm = stopped_warm | (warm & saturated)
        stopped_cold = stopped_cold | (is_cold & saturated)
        return (fit.params, cold_beta, lam_max, stopped_warm, stopped_cold), (fit, lam)

    false = jnp.asarray(False)
    init = (MixedModelParams(inf_beta, *inf_variances), cold_start, jnp.zeros((), y.dtype), false, false)
    (_, _, lam_max, _, _), (fits, _) = lax.scan(step, init, step_index)
    lambdas = lam_max * relative_grid
    warm = jax.tree.map(lambda x: x[1 : 1 + n_lambda], fits)
    cold = jax.tree.map(lambda x: x[1 + n_lambda :], fits)
    n_obs = y.shape[0]

    def scored(fit):
        bic, _, nnz = information_criteria(fit, n_obs, nonzero_theta=variance_penalty is not None)
        n_theta = fit.params.theta.shape[-1] if variance_penalty is None else jnp.sum(fit.params.theta != 0, axis=-1)
        usable = fit.converged & (nnz + n_theta + 1 <= max_df)
        return jnp.where(usable, bic, jnp.inf), nnz

    bic_warm, nnz_warm = scored(warm)
    bic_cold, nnz_cold = scored(cold)
    per_lambda = jnp.minimum(bic_warm, bic_cold)
    best = jnp.argmin(per_lambda)
    return LMMLassoPath(lambdas, warm, cold, bic_warm, bic_cold, nnz_warm, nnz_cold, best,
                        bic_cold[best] < bic_warm[best])


@eqx.filter_jit
def _fit_single(args, structure, lam, weights, unpenalized, cold_start, solver, penalty=None):
    """One λ from both starts: warm from the λ = ∞ fit, and cold (the Lasso start). The three
    fits run as one scan over a single compiled copy of the solver (three inlined copies made
    this the largest program of a fit: 6 s of compilation)."""
    y = args.y
    template = L1(jnp.ones((), y.dtype), weights, unpenalized) if penalty is None else penalty
    inf_beta = jnp.zeros(args.X.shape[1], y.dtype).at[0].set(jnp.mean(y))
    lams = jnp.stack([jnp.asarray(jnp.inf, y.dtype), lam, lam]).astype(y.dtype)

    def step(previous, k):
        beta0 = jnp.where(k == 0, inf_beta, cold_start)
        theta0, log_sigma0 = profile_start(args, beta0, structure)
        fresh = MixedModelParams(beta0, theta0, log_sigma0)
        start = jax.tree.map(lambda a, b: jnp.where(k == 1, a, b), previous, fresh)
        fit = solver.run(structure, args, template.with_lam(lams[k]), start)
        return fit.params, fit

    theta0, log_sigma0 = profile_start(args, inf_beta, structure)
    _, fits = lax.scan(step, MixedModelParams(inf_beta, theta0, log_sigma0), jnp.arange(3))
    bic = information_criteria(fits, y.shape[0])[0]
    return jax.tree.map(lambda x: x[1], fits), jax.tree.map(lambda x: x[2], fits), bic[1], bic[2]


@eqx.filter_jit
def _model_data(data, design, structure):
    """`mixed_model_nll`'s data as one compiled program (its eager ops compiled one by one)."""
    return mixed_model_nll(data, design, structure)[1]


@eqx.filter_jit
def _summary(fit, args, structure):
    """Ψ̂, σ̂², BLUPs, BIC and AIC of a fit, as one program."""
    params = fit.params
    L = cholesky_factor(params.theta, structure, args.data.Z.shape[1])
    psi = L @ L.T
    sigma2 = jnp.exp(2.0 * params.log_sigma)
    ranef = blup(args.data, psi, sigma2, args.y - args.X @ params.beta)
    bic, aic, _ = information_criteria(fit, args.y.shape[0])
    return psi, sigma2, ranef, bic, aic


# ---- the estimator ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class LMMLassoFit(Fit):
    """A fitted l1-penalised linear mixed model: the `Fit` protocol (σ̂², Ψ̂, BLUPs by ML; `n_iter`
    counts outer iterations), plus

    - `loglik` (ML log-likelihood, no penalty), `bic`, `aic`, `objective` Q_λ (with the
      ½N log 2π constant).
    - `lam` (on the fitting scale: standardised columns when `standardize=True`), `structure`,
      `unpenalized` (column indices of X), `weights` (penalty weights, None if plain),
      `adaptive` (the second stage's recipe, "bic" or "refit"; None without one), `start`
      ("cold": from the Lasso start, "warm": from the path or λ_max).
    - `path`: the `LMMLassoPath` (BIC curves for both starts) when λ was chosen; its λ and BIC
      are on the caller's scale, its stacked fits on the internal one (y and X divided by the
      powers of two nearest their scales; standardised columns). `coef_path` (n_λ × p): β̂ at
      each λ of the path on the caller's scale, from the start with the smaller BIC there.
    - `penalty_name`: the class name of a user's `penalty=` (None for the paper's ℓ1).

    Every number is on the caller's scale: the fit runs on rescaled data (`fit_lmmlasso`).
    """

    loglik: float
    bic: float
    aic: float
    objective: float
    lam: float
    structure: str
    unpenalized: np.ndarray
    weights: np.ndarray | None
    adaptive: str | None
    start: str
    path: LMMLassoPath | None = None
    coef_path: np.ndarray | None = None
    penalty_name: str | None = None

    # λ, the weights and the criteria's shifts depend on the fit (`fit_lmmlasso`'s overrides).
    UNITS = {**Fit.UNITS, "coef_path": "coef", "loglik": None, "bic": None, "aic": None, "objective": None,
             "path": None}

    @property
    def method(self) -> str:
        kinds = {None: "lmmLasso", "bic": "adaptive lmmLasso", "refit": "lmmLasso refitted on its support"}
        if self.penalty_name is not None:
            return f"lmmLasso with a {self.penalty_name} penalty (penalised ML; Schelldorfer, Bühlmann & van de Geer)"
        return kinds[self.adaptive] + " (l1-penalised ML; Schelldorfer, Bühlmann & van de Geer)"

    @property
    def hyperparameters(self) -> dict:
        return {"lam": self.lam}

    @property
    def criteria(self) -> dict:
        return {"log-likelihood": self.loglik, "BIC": self.bic, "AIC": self.aic}

    @property
    def tuning(self) -> Tuning | None:
        if self.path is None:
            return None
        bic = np.minimum(np.asarray(self.path.bic_warm), np.asarray(self.path.bic_cold))
        return Tuning(parameters={"lam": np.asarray(self.path.lambdas)}, criterion="bic", values=bic, fold_values=None,
                      choice={"lam": self.lam})


def _default_unpenalized(data: LMMData) -> np.ndarray:
    """Columns of X that are also random-effect columns (the paper: penalising those biases β and Ψ)."""
    X, Z = np.asarray(data.X), np.asarray(data.Z)
    return np.array([k for k in range(X.shape[1]) if any(np.allclose(X[:, k], Z[:, l]) for l in range(Z.shape[1]))],
                    int)


def _standardised_design(data: LMMData, standardize: bool):
    X = np.asarray(data.X)
    center = X.mean(axis=0) if standardize else np.zeros(X.shape[1])
    scale = X.std(axis=0, ddof=1) if standardize else np.ones(X.shape[1])
    if standardize and np.any(scale == 0):
        raise ValueError(
            f"`data.X` has constant columns {np.flatnonzero(scale == 0).tolist()}: they cannot be "
            "standardised (drop them; an intercept is added for you)."
        )
    design = np.column_stack([np.ones(X.shape[0]), (X - center) / scale])
    return design, center, scale


def _cold_start(data: LMMData, center, scale, seed) -> np.ndarray:
    """β from a cross-validated Lasso that ignores the grouping (a = 0 in `fit_quasi`; 5 cluster
    folds, 40 λ), mapped to the standardised scale. The paper's `startValue = 1` is a 10-fold
    CV Lasso; 5 folds halve the cost and the start only has to land in the right basin."""
    # One solver for the CV and the fit (no refit to a tighter tolerance: one compiled program
    # fewer in a first call); the start only has to land in the right basin. a = 0 ignores Z, so
    # the Lasso sees a random intercept's: models that differ in Z alone share its program.
    sizes = np.asarray(data.cluster_sizes, float)
    data = eqx.tree_at(lambda d: (d.Z, d.z_basis, d.z_singular), data,
                       (jnp.ones((data.n_obs, 1), data.X.dtype),
                        jnp.asarray(1.0 / np.sqrt(sizes)[np.asarray(data.cluster), None], data.X.dtype),
                        jnp.asarray(np.sqrt(sizes)[:, None], data.X.dtype)))
    lasso = fit_quasi(data, a=0.0, n_lambda=40, n_folds=min(5, data.n_clusters), seed=seed, progress=False,
                      variance=False, solver=CoordinateDescent(rtol=1e-7))
    beta = np.asarray(lasso.coef)
    return np.concatenate([[lasso.intercept + center @ beta], beta * scale])


@accepts_formula
def fit_lmmlasso(
    data: LMMData,
    lam=None,
    *,
    formula: str | None = None,
    structure: str = "identity",
    unpenalized=None,
    weights=None,
    adaptive: bool | str = False,
    standardize: bool = True,
    n_lambda: int = 50,
    lambda_min_ratio: float = 0.01,
    max_df: float | None = None,
    solver: MixedModelCGD | None = None,
    seed: int = 0,
    throw: bool = False,
    penalty: AbstractPenalty | None = None,
) -> LMMLassoFit:
    """l1-penalised maximum likelihood for the linear mixed model (lmmLasso; Schelldorfer,
    Bühlmann & van de Geer 2011):

        Q_λ(β, θ, σ²) = ½ Σ_i log|V_i| + ½ Σ_i r_iᵀ V_i⁻¹ r_i + λ Σ_{k ∉ U} w_k |β_k|,
        V_i = Z_i Ψ_θ Z_iᵀ + σ² I,   r_i = y_i − β_0 − X_i β,

    minimised by block coordinate gradient descent (`MixedModelCGD`). An unpenalised intercept
    is always included. With `standardize=True` (the lmmlasso and glmnet default) the columns
    of X are centred and scaled to unit sd (n − 1) for fitting, so λ acts on that scale, and
    β̂ is reported on the caller's scale.

    Q_λ is not convex. Near λ_max the path passes through a basin where the penalised β sit at
    0 and σ² absorbs the signal, and that basin can have a LOWER Q_λ than the near-truth local
    minimum. So every λ is fitted from two starts, warm (down the path from λ_max) and cold (a
    cross-validated Lasso that ignores the grouping, with the paper's profile-likelihood
    variance start), and the fit with the smaller BIC is kept.

    **Arguments:**

    - `data`: an `LMMData` (its Z gives the random effects).
    - `lam`: λ ≥ 0 (one value), or `None` for a path of `n_lambda` values from λ_max down to
      `lambda_min_ratio`·λ_max, with λ chosen by BIC = −2 log L + log N·(#{β̂_k ≠ 0} + dim θ + 1).
      Fits with more than `max_df` parameters (default N/2) are treated as saturated and
      excluded from the choice (as lmmlasso stops when the active set fills up).
    - `structure`: Ψ = θ² I ("identity"), diagonal, "full" (Cholesky, positive definite), or
      "none" (no random effects: the plain Lasso with σ² by ML, for comparison).
    - `unpenalized`: indices of X's columns that are not penalised. Default: every column of X
      that is also a column of Z.
    - `weights`: penalty weights w_k ≥ 0 (inf drops a column).
    - `adaptive`: a second stage after the fit above (lmmadLasso). `True` or "bic": the adaptive
      Lasso of the paper's (11), w_k = 1/|β̂_k| from the first stage (on the fitting scale,
      columns with β̂_k = 0 dropped), started from the first stage's β̂; when λ is chosen by
      BIC its path runs down to `lambda_min_ratio`·(min w_k / max w_k)·λ_max so that every
      column kept by the first stage can enter (a weight of 1/|β̂_k| for a small β̂_k moves its
      entry point far down), and BIC may drop columns. "refit": the unpenalised ML refit
      (λ = 0) on the first stage's support; this is what R lmmlasso computes when handed the
      paper's w_k = 1/|β̂_k| as its `weights` argument (it soft-thresholds at λ / weights[k],
      so the penalty becomes λ Σ |β̂_k||β_k| and BIC takes the smallest λ), and it reproduces
      the paper's Table 2 lmmadLasso/adLasso rows (same |S| as the first stage, σ̂² below the
      truth); `benchmarks/study_adaptive_recipes.py` compares the recipes.
    - `solver`: a `MixedModelCGD` (its `beta_solver` may be `ProximalGradient()`).
    - `throw`: raise a `RuntimeError` with the `RESULTS` message when the fit did not succeed
      (default False: the fit's `result` says so, the choice inside sweeps).
    - `penalty`: any `jaxlmm.AbstractPenalty` on β (length p; its own λ is replaced by `lam` or
      the BIC path's) in place of λ Σ w_k |β_k|: Q_λ's last term becomes penalty(β), solved by the
      same block coordinate descent (a separable penalty for the default `CoordinateDescent`
      β-block). It covers every column of X, so `weights`, `unpenalized` and `adaptive` belong to
      the Lasso and are refused with it, and the fit runs on the caller's scale with X as given
      (no standardisation): the penalty's parameters keep the units of β.

    Returns an `LMMLassoFit`.
    """
    return _fit_lmmlasso(data, lam, structure=structure, unpenalized=unpenalized, weights=weights, adaptive=adaptive,
                         standardize=standardize, n_lambda=n_lambda, lambda_min_ratio=lambda_min_ratio, max_df=max_df,
                         solver=solver, seed=seed, throw=throw, penalty=penalty)


def _fit_lmmlasso(data, lam, *, structure, unpenalized, weights, adaptive, standardize, n_lambda, lambda_min_ratio,
                  max_df, solver, seed, throw, cold_start=None, penalty=None) -> LMMLassoFit:
    """`fit_lmmlasso`'s work. `cold_start`: the Lasso start `_cold_start` gives for these X, y,
    clusters and seed, when the caller has it already (`select_random_effects`)."""
    check_data(data)
    throw = check_flag("throw", throw)
    seed = check_seed(seed)
    check_solver(solver, (MixedModelCGD,), "jaxlmm.MixedModelCGD(tol=1e-10)")
    standardize = check_flag("standardize", standardize)
    adaptive = _check_adaptive(adaptive)
    if structure not in COVARIANCE_STRUCTURES:
        raise ValueError(f"`structure` must be one of {COVARIANCE_STRUCTURES}; got {structure!r}.")
    p, n_obs = data.n_features, data.n_obs
    q = data.Z.shape[1]
    if structure != "none":
        rank = np.sum(np.asarray(data.z_singular) > 0, axis=1)
        if not np.any(np.asarray(data.cluster_sizes) > rank):
            raise ValueError(
                f"`data`: every cluster has at most rank(Z_i) ≤ q = {q} rows, so σ² and Ψ cannot be "
                "told apart; use fewer random effects or larger clusters."
            )
    lam = check_scalar("lam", lam)
    lambda_min_ratio = check_fraction("lambda_min_ratio", lambda_min_ratio)
    n_lambda = check_count("n_lambda", n_lambda)
    check_user_penalty(penalty, p, weights=weights, unpenalized=unpenalized, adaptive=adaptive)
    if penalty is not None:  # on every column of X, as given
        unpen_idx, standardize = np.zeros(0, int), False
    elif unpenalized is None:
        unpen_idx = _default_unpenalized(data)
    else:
        unpen_idx = check_indices("unpenalized", unpenalized, p)
    w_user = check_weights(weights, p)
    w_user = np.ones(p) if w_user is None else w_user
    if lam == 0.0 and structure != "none" and np.linalg.matrix_rank(np.column_stack([np.ones(n_obs), data.X])) >= n_obs:
        raise ValueError(
            f"`lam` = 0 with rank([1, X]) = N = {n_obs}: X fits y exactly, so the likelihood is unbounded "
            "(σ² → 0). Use lam > 0 or fewer columns."
        )
    solver = MixedModelCGD() if solver is None else solver
    max_df = n_obs / 2 if max_df is None else check_scalar("max_df", max_df, allow_none=False)
    if max_df < 1:
        raise ValueError(f"`max_df` must be ≥ 1 (a fit has an intercept and σ²); got {max_df}.")

    # Fit on y / s_y and X / s_x (powers of two, `_scale`): with β = (s_y/s_x) β̃, σ² = s_y² σ̃²,
    # Ψ = s_y² Ψ̃, −log L = −log L̃ + N log s_y, so λ |β| = λ̃ |β̃| needs λ̃ = λ s_y / s_x (λ s_y on
    # standardised columns, which do not see s_x).
    caller = frame(data, rescale=penalty is None)
    data, units = caller.data, caller.scale
    template = None if penalty is None else FreeLeading(penalty, 1, p + 1)  # the intercept stays free
    lam_unit = units.y if standardize else units.y / units.x
    lam_fit = None if lam is None else lam * lam_unit
    design, center, scale = _standardised_design(data, standardize)
    dtype = data.X.dtype
    args = _model_data(data, jnp.asarray(design, dtype), structure)
    mask = np.zeros(p + 1, bool)
    mask[0] = True
    mask[unpen_idx + 1] = True
    cold = jnp.asarray(_cold_start(data, center, scale, seed) if cold_start is None else cold_start, dtype)

    def stage(w, cold_beta, lam, min_ratio=lambda_min_ratio):
        w_full = jnp.asarray(np.concatenate([[1.0], w]), dtype)
        if lam is None:
            grid = jnp.asarray(np.geomspace(1.0, min_ratio, n_lambda), dtype)
            path = lmmlasso_path(args, structure, grid, w_full, jnp.asarray(mask), cold_beta, solver,
                                 jnp.asarray(max_df, dtype), penalty=template)
            return path.chosen(), float(path.lambdas[path.best]), "cold" if bool(path.best_is_cold) else "warm", path
        warm, cold_fit, bic_w, bic_c = _fit_single(args, structure, jnp.asarray(lam, dtype), w_full, jnp.asarray(mask),
                                                   cold_beta, solver, template)
        use_cold = bool(cold_fit.converged) and (bic_c <= bic_w or not bool(warm.converged))
        return (cold_fit if use_cold else warm), float(lam), "cold" if use_cold else "warm", None

    fit, lam_used, start, path = stage(w_user, cold, lam_fit)
    stage_weights = None if weights is None else w_user
    if adaptive == "refit":
        first = np.asarray(fit.params.beta)[1:]
        w_refit = np.where(first != 0, 1.0, np.inf)
        w_refit[unpen_idx] = 1.0
        fit, lam_used, start, _ = stage(w_refit, fit.params.beta, 0.0)
        path, stage_weights = None, w_refit
    elif adaptive == "bic":
        first = np.abs(np.asarray(fit.params.beta)[1:])
        with np.errstate(divide="ignore"):
            w_adaptive = np.where(first > 0, 1.0 / first, np.inf) * w_user
        w_adaptive[unpen_idx] = 1.0
        # Column k enters at λ ≈ |∂_k(−log L)| / w_k, and the adaptive weights span orders of
        # magnitude (1/|β̂_k| of a strong and of a barely selected column), so the grid reaches
        # down by their spread as well: every first-stage column gets the chance to stay in,
        # and BIC, not the end of the grid, decides which do (with 0.01·λ_max alone, no
        # weakly selected column could ever re-enter, and |S| collapsed to the strong ones).
        finite = w_adaptive[np.isfinite(w_adaptive) & ~np.isin(np.arange(p), unpen_idx)]
        spread = finite.min() / finite.max() if finite.size else 1.0
        # Weights 1/|β̂| on the fitting scale absorb s_y: the caller's λ applies as it is.
        fit, lam_used, start, path = stage(w_adaptive, fit.params.beta, lam, lambda_min_ratio * spread)
        stage_weights = w_adaptive
    # λ w |β| = λ̃ w̃ |β̃|: plain weights are the caller's; adaptive ones are 1/|β̂| on the fitting
    # scale, so on the caller's they are w̃ / lam_unit and λ = λ̃ (the refit's λ is 0).
    if adaptive:
        lam_caller = lam_used
        if adaptive == "bic":
            stage_weights = stage_weights / lam_unit
    else:
        lam_caller = lam_used / lam_unit
    # −log L = −log L̃ + N log s_y: the criteria shift by it, the path's λ by the caller's unit.
    shift = data.n_obs * math.log(units.y)
    factors = {"loglik": lambda v: v - shift, "bic": lambda v: v + 2 * shift, "aic": lambda v: v + 2 * shift,
               "objective": lambda v: v + shift,
               "path": {"lambdas": 1.0 if adaptive else 1.0 / lam_unit, "bic_warm": lambda v: v + 2 * shift,
                        "bic_cold": lambda v: v + 2 * shift}}
    fit = caller_fit(LMMLassoFit, caller, factors, **_fitted(fit, args, structure, center, scale, path),
                     lam=lam_caller, structure=structure, unpenalized=unpen_idx, weights=stage_weights,
                     adaptive=adaptive, start=start, penalty_name=None if penalty is None else type(penalty).__name__)
    return finish(fit, throw)


def _check_adaptive(adaptive) -> str | None:
    """`adaptive` as the recipe's name ("bic" or "refit"), None for a single stage."""
    if isinstance(adaptive, bool | np.bool_):
        return "bic" if adaptive else None
    if isinstance(adaptive, str) and adaptive in ("bic", "refit"):
        return adaptive
    raise ValueError(f'`adaptive` must be True, False, "bic" or "refit"; got {adaptive!r}.')


def _fitted(fit, args, structure, center, scale, path) -> dict:
    """The `LMMLassoFit` fields of the CGD fit on the fitting scale (`center`, `scale`: the
    standardisation of the columns, undone here)."""
    beta_std = np.asarray(fit.params.beta)
    coef = beta_std[1:] / scale
    psi, sigma2, ranef, bic, aic = _summary(fit, args, structure)
    coef_path = None
    if path is not None:
        cold = np.asarray(path.bic_cold) < np.asarray(path.bic_warm)
        betas = np.where(cold[:, None], np.asarray(path.cold.params.beta), np.asarray(path.warm.params.beta))
        coef_path = betas[:, 1:] / scale
    return dict(coef=coef, intercept=float(beta_std[0] - center @ coef), support=np.flatnonzero(coef),
                sigma2=float(sigma2), psi=np.asarray(psi), ranef=np.asarray(ranef), loglik=-float(fit.nll),
                bic=float(bic), aic=float(aic), objective=float(fit.objective), n_iter=int(fit.num_steps),
                result=result_name(fit.result), path=path, coef_path=coef_path)

