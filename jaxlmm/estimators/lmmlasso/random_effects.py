"""`select_random_effects`: which covariates get a random effect when p ≫ N — the two-stage
strategy of Schelldorfer, Bühlmann & van de Geer (2011, §6.2), every candidate model through one
compiled λ path."""

from __future__ import annotations

import dataclasses
import math
import os
from concurrent.futures import ThreadPoolExecutor

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..._covariance import ClusterCovariance, cholesky_factor
from ..._data import LMMData, _cluster_svd
from ..._precision import in_float64
from ..._scale import data_scale, rescaled
from ..._solution import result_index, result_name
from ..._validate import check_count, check_data, check_flag, check_fraction, check_indices, check_scalar
from ...losses.mixed_model import cluster_statistics
from .cgd import MixedModelCGD
from .estimator import (
    LMMLassoFit,
    _cold_start,
    _default_unpenalized,
    _fit_lmmlasso,
    _model_data,
    _standardised_design,
    information_criteria,
    lmmlasso_path,
)
from .start import profile_start


@dataclasses.dataclass(frozen=True, kw_only=True)
class RandomEffectsSelection:
    """Every step of `select_random_effects`.

    - `candidates` (c,): the columns of X tried as random effects — step (i)'s cross-validated
      Lasso support, or the caller's list.
    - `theta2` (c,): θ̂²_l, the variance of candidate l's random effect when it is the only one
      added to the base model (step ii), on the scale of its random-effect column (standardised
      when `standardize=True`); `bic` (c,): that model's BIC; `lam` (c,): its λ (chosen by BIC,
      on the fitting scale); `nnz` (c,): its number of nonzero β̂_k; `candidate_results` (c,):
      the names of the fits' result codes.
    - `bic_0`: the BIC of the base model (no candidate random effect; the Lasso when `base` is
      False), fitted the same way.
    - `selected`: R_κ = {l : θ̂²_l > κ} ∩ {l : BIC_l ≤ BIC_0} (step iii), `kappa`.
    - `kept`: the columns of R_κ whose variance stays nonzero in the joint fit (step iv), the
      random-effect covariates chosen; `fit`: the `LMMLassoFit` of the model with Z = [base,
      X_kept] and diagonal Ψ (its Ψ̂ rows: the base columns first, then `kept`).
    - `base`: whether `data.Z` was part of every model.
    - `method`: "two-stage" or "penalty". For "penalty", `theta2` holds the penalised joint
      fit's variances (`selected`: the nonzero ones), `bic` is NaN and `lam`, `nnz` are the
      joint fit's; `variance_penalties` is the λ_γ grid, `penalty_bic` the BIC at each λ_γ
      (its λ chosen by BIC) and `variance_penalty` the λ_γ chosen (all on the fitting scale).
    """

    candidates: np.ndarray
    theta2: np.ndarray
    bic: np.ndarray
    lam: np.ndarray
    nnz: np.ndarray
    candidate_results: np.ndarray
    bic_0: float
    kappa: float
    selected: np.ndarray
    kept: np.ndarray
    fit: LMMLassoFit
    base: bool
    feature_names: tuple
    method: str = "two-stage"
    variance_penalties: np.ndarray | None = None
    penalty_bic: np.ndarray | None = None
    variance_penalty: float | None = None

    def to_pandas(self):
        """One row per candidate: name, θ̂², BIC − BIC_0, λ, nnz, selected, kept, result."""
        import pandas as pd

        return pd.DataFrame({
            "column": self.candidates,
            "name": [self.feature_names[k] for k in self.candidates],
            "theta2": self.theta2,
            "bic_minus_bic0": self.bic - self.bic_0,
            "lam": self.lam,
            "nnz": self.nnz,
            "selected": np.isin(self.candidates, self.selected),
            "kept": np.isin(self.candidates, self.kept),
            "result": self.candidate_results,
        })


def _candidate_fits(data, columns, bases, singulars, design, masks, w_full, cold, grid, solver, max_df, sequential):
    """The BIC-chosen lmmLasso fit (diagonal Ψ) of each candidate random-effects design.

    `columns` (c × N × q_c): the Z of each candidate model (rows sorted as `data`), with its
    per-cluster SVD (`bases`, `singulars`); `masks` (c × (p+1)): each model's unpenalised
    columns of `design`. X, y and the Lasso start `cold` are shared. Returns Ψ̂'s diagonal, BIC,
    λ, nnz and the result code of each candidate's chosen fit.

    Each candidate gets its own λ path: a λ does not carry over between models, since adding a
    random effect shrinks σ̂² and with it the scale of −log L's gradient (the base model's λ
    let 8 H4 candidate fits run into p > N and took 10× as long as their paths).

    `sequential` (a CPU): each candidate through `lmmlasso_path` itself — the program
    `fit_lmmlasso` runs, so the final fit on a model of the same size compiles nothing new —
    as many at a time as there are cores, on a thread pool: XLA runs independent programs side
    by side (8 paths of a 240 × 200 design on 2 cores: 3.6 s one after another, 1.6 s so),
    where a vmapped loop would wait for its slowest candidate at every level of its loops.
    Otherwise every candidate at once (`vmap`), in one program.
    """
    if not sequential:
        return _all_candidate_fits(data, columns, bases, singulars, design, masks, w_full, cold, grid, solver, max_df)
    x64 = bool(jax.config.jax_enable_x64)  # a thread-local setting: the workers take the caller's

    def one(inputs):
        Z, basis, singular, mask = inputs
        with jax.enable_x64(x64):
            path = lmmlasso_path(_candidate_data(data, Z, basis, singular, design), "diagonal", grid, w_full, mask,
                                 cold, solver, max_df)
            return jax.block_until_ready(_chosen_fit(path, columns.shape[-1], data.n_obs))

    candidates = list(zip(*(np.asarray(a) for a in (columns, bases, singulars, masks))))
    with ThreadPoolExecutor(max_workers=max(1, min(len(candidates), os.cpu_count() or 1))) as pool:
        fits = list(pool.map(one, candidates))
    return jax.tree.map(lambda *xs: jnp.stack(xs), *fits)


def _candidate_data(data, Z, basis, singular, design):
    """The mixed-model data (diagonal Ψ) of one candidate model: `data` with its Z (and Z's SVD)
    replaced."""
    return _model_data(eqx.tree_at(lambda d: (d.Z, d.z_basis, d.z_singular), data, (Z, basis, singular)), design,
                       "diagonal")


@eqx.filter_jit
def _chosen_fit(path, q, n_obs):
    """Ψ̂'s diagonal, BIC, λ, nnz and result code of the fit a path's BIC chose."""
    fit = path.chosen()
    L = cholesky_factor(fit.params.theta, "diagonal", q)
    bic, _, nnz = information_criteria(fit, n_obs)
    return jnp.diag(L @ L.T), bic, path.lambdas[path.best], nnz, result_index(fit.result)


@eqx.filter_jit
def _all_candidate_fits(data, columns, bases, singulars, design, masks, w_full, cold, grid, solver, max_df):
    """`_candidate_fits` for every candidate at once, vmapped in one program."""

    def one(Z, basis, singular, mask):
        path = lmmlasso_path(_candidate_data(data, Z, basis, singular, design), "diagonal", grid, w_full, mask, cold,
                             solver, max_df)
        return _chosen_fit(path, columns.shape[-1], data.n_obs)

    return jax.vmap(one)(columns, bases, singulars, masks)


@eqx.filter_jit
def _penalised_variances(data, Z, basis, singular, design, mask, w_full, cold, grid, relative_penalties, penalised,
                         solver, max_df, sequential):
    """The lmmLasso with every candidate's random effect at once, Z = [Z_base, X_c], diagonal Ψ
    and the variance penalty λ_γ Σ_{l penalised} Ψ_ll, λ chosen by BIC (nonzero variances
    counted), for each λ_γ = λ_γ,max · `relative_penalties`, in one program.

    λ_γ,max is the largest −∂(−log L)/∂Ψ_ll over the penalised l at Ψ_ll = 0, at the Lasso start
    with the base columns' profile-likelihood variances: above it no candidate would leave 0
    from there. Returns the λ_γ grid and, per λ_γ, Ψ̂'s diagonal, BIC, λ, nnz and result code.
    """
    args = _candidate_data(data, Z, basis, singular, design)
    # The Lasso start with the unpenalised columns (the candidates among them) refitted by least
    # squares: at the Lasso's shrunken β̂ the residuals keep the candidates' fixed effects, which
    # would pass for random-effect variance and put λ_γ,max orders of magnitude too high.
    unpenalized_design = design * mask
    start = cold + jnp.linalg.lstsq(unpenalized_design, args.y - design @ cold)[0]
    theta0, log_sigma0 = profile_start(args, start, "diagonal")
    stats = cluster_statistics(args, start)

    def nll(psi_diagonal):  # through T_i = I + ZᵢᵀZᵢΨ/σ², valid (and differentiable) at Ψ_ll = 0
        covariance = ClusterCovariance(stats.ZtZ, stats.sizes, jnp.diag(psi_diagonal), jnp.exp(2.0 * log_sigma0))
        return 0.5 * (covariance.log_det() + covariance.quadratic(stats.Ztr, stats.rr))

    slope = jax.grad(nll)(jnp.where(penalised, 0.0, theta0**2))
    top = jnp.maximum(jnp.max(jnp.where(penalised, -slope, 0.0)), jnp.finfo(cold.dtype).tiny)
    weights = penalised.astype(cold.dtype)

    def one(relative):
        path = lmmlasso_path(args, "diagonal", grid, w_full, mask, cold, solver, max_df, top * relative * weights)
        fit = path.chosen()
        bic, _, nnz = information_criteria(fit, data.y.shape[0], nonzero_theta=True)
        bic = jnp.where(jnp.isfinite(jnp.minimum(path.bic_warm, path.bic_cold)[path.best]), bic, jnp.inf)
        return fit.params.theta**2, bic, path.lambdas[path.best], nnz, result_index(fit.result)

    over = (lambda f, xs: lax.map(f, xs)) if sequential else (lambda f, xs: jax.vmap(f)(xs))
    return top * relative_penalties, over(one, relative_penalties)


def _random_effect_columns(data: LMMData, standardize: bool) -> np.ndarray:
    """X's columns as random-effect covariates (rows sorted as `data`): standardised (mean 0, sd
    1) when `standardize`, so that κ is on the scale the paper states it on."""
    X = np.asarray(data.X)
    if not standardize:
        return X
    return (X - X.mean(axis=0)) / X.std(axis=0, ddof=1)


@in_float64
def select_random_effects(
    data: LMMData,
    *,
    kappa: float = 0.05,
    candidates=None,
    base: bool = True,
    standardize: bool = True,
    n_lambda: int = 50,
    lambda_min_ratio: float = 0.01,
    max_df: float | None = None,
    solver: MixedModelCGD | None = None,
    seed: int = 0,
    method: str = "two-stage",
    max_joint: int = 10,
    n_penalty: int = 8,
    vectorize: str = "auto",
) -> RandomEffectsSelection:
    """Choose which covariates get a random effect, by the strategy of Schelldorfer, Bühlmann &
    van de Geer (2011, §6.2):

    (i)   a cross-validated Lasso that ignores the grouping gives the candidates S_init
          (5 cluster folds, the start `fit_lmmlasso` uses);
    (ii)  for each l ∈ S_init, the lmmLasso with Z = [Z_base, x_l], diagonal Ψ, x_l's fixed
          effect unpenalised and λ chosen by BIC gives θ̂²_l and BIC_l;
    (iii) R_κ = {l : θ̂²_l > κ} ∩ {l : BIC_l ≤ BIC_0}, with BIC_0 the BIC of the base model
          (Z = Z_base, or the Lasso with σ² by ML when `base` is False, as in the paper),
          fitted the same way;
    (iv)  the lmmLasso with Z = [Z_base, X_{R_κ}] and diagonal Ψ; the covariates whose variance
          stays nonzero are kept (refitted without the others when some drop out). When R_κ
          holds more covariates than the clusters can identify (Z needs fewer columns than the
          largest cluster has rows), those with the largest θ̂²_l go in.

    On a CPU the candidate models of step (ii) run through the compiled λ path that
    `fit_lmmlasso` runs, as many at a time as there are cores (a thread pool), so the
    candidates, the base model, the final fit of step (iv) on a model of the same size and
    every later data set of the same shapes share one program, and the Lasso start of step (i)
    is computed once. On an accelerator (or `vectorize="vmap"`) they run side
    by side in one program, padded to a multiple of 4 candidates so that data sets with
    different |S_init| share it.
    BIC = −2 log L + log N · (#{β̂_k ≠ 0} + dim θ + 1), as in `fit_lmmlasso`. The paper does not
    say how BIC_0 is computed; here it is the base model's BIC-chosen fit, so every BIC compared
    comes from the same procedure and data.

    **Arguments:**

    - `data`: an `LMMData`. Its Z (a random intercept unless another Z was given) is the base
      random-effects design when `base` is True.
    - `kappa`: the variance threshold κ ≥ 0 (default 0.05, the paper's), on the scale of the
      random-effect column: the standardised x_l when `standardize` (the paper standardises all
      covariates), the raw x_l otherwise.
    - `candidates`: column indices of X to try instead of step (i)'s Lasso support.
    - `base`: keep `data.Z` in every model (default True); False is the paper's riboflavin
      model, in which only the selected covariates have random effects.
    - `standardize`, `n_lambda`, `lambda_min_ratio`, `max_df`, `solver`, `seed`: as in
      `fit_lmmlasso`, for every model fitted.
    - `method`: "two-stage" (the paper's, above) or "penalty", the joint selection the newer
      peers use (pysr3's l1 penalty on the variances; glmmPen and rpql penalise Ψ's Cholesky
      rows or the random effects): one lmmLasso with Z = [Z_base, X_c] for the `max_joint`
      candidates with the largest |β̂| of the Lasso (fewer when the clusters are small: Z
      needs fewer columns than the largest cluster has rows, or −log L is unbounded as
      σ² → 0; 4 on H4's clusters of 6 with a random intercept), diagonal Ψ and the penalty
      λ_γ Σ_l Ψ_ll on the candidates' variances added to Q_λ, so the random effects are
      selected together, in the model that holds all of them. The candidates' fixed effects
      are unpenalised, as in the two-stage models (penalised, the random slopes absorb them at
      large λ: on H4 every λ path then stopped saturated after two λ). λ_γ runs over
      `n_penalty` values, λ_γ,max down to λ_γ,max/100 and then 0 (each with its λ path by BIC),
      and the λ_γ with the smallest BIC — counting only the nonzero variances — is taken; the
      covariates with a nonzero variance then go through step (iv).
      (A penalty on the Cholesky rows' norms ‖L_l·‖ = √Ψ_ll would not select here: −log L is
      even in each L_l·, so every zero row is a local minimum for any λ_γ > 0. On the variances
      the penalty has a slope at 0 that the likelihood's can beat.)
    - `vectorize`: "auto", "map" or "vmap" over the candidates (as in `jaxlmm.sweep`).

    Returns a `RandomEffectsSelection` (every step's numbers, the final `fit`).
    """
    check_data(data)
    kappa = check_scalar("kappa", kappa, allow_none=False)
    base, standardize = check_flag("base", base), check_flag("standardize", standardize)
    n_lambda = check_count("n_lambda", n_lambda)
    lambda_min_ratio = check_fraction("lambda_min_ratio", lambda_min_ratio)
    if method not in ("two-stage", "penalty"):
        raise ValueError(f"`method` must be 'two-stage' or 'penalty'; got {method!r}.")
    max_joint, n_penalty = check_count("max_joint", max_joint), check_count("n_penalty", n_penalty)
    if vectorize not in ("auto", "vmap", "map"):
        raise ValueError(f"`vectorize` must be 'auto', 'vmap' or 'map'; got {vectorize!r}.")
    p, n_obs = data.n_features, data.n_obs
    if candidates is not None:
        candidates = check_indices("candidates", candidates, p)
        if candidates.size == 0:
            raise ValueError("`candidates` is empty: give at least one column of X to try.")
    max_df = n_obs / 2 if max_df is None else float(max_df)
    solver = MixedModelCGD() if solver is None else solver
    names = data.column_names()

    # The fitting scale, as `fit_lmmlasso` sets it up: y and X divided by powers of two (Z is not,
    # so Ψ̂ carries y's units), standardised columns, and the Lasso start (step i).
    units = data_scale(data)
    scaled = rescaled(data, units)
    design, center, scale = _standardised_design(scaled, standardize)
    dtype = scaled.X.dtype
    design = jnp.asarray(design, dtype)
    cold = _cold_start(scaled, center, scale, seed)
    if candidates is None:
        candidates = np.flatnonzero(cold[1:])
    base_unpenalized = _default_unpenalized(data) if base else np.zeros(0, int)
    # A column that is already a base random effect cannot be added again (Z would be singular).
    candidates = np.setdiff1d(candidates, base_unpenalized)
    grid = jnp.asarray(np.geomspace(1.0, lambda_min_ratio, n_lambda), dtype)
    w_full = jnp.ones(p + 1, dtype)
    Z_base = np.asarray(data.Z) if base else np.zeros((n_obs, 0))
    re_columns = _random_effect_columns(data, standardize)
    cluster = np.asarray(data.cluster)
    shift = 2.0 * n_obs * math.log(units.y)  # BIC on the caller's scale: −2 log L = −2 log L̃ + 2N log s_y

    width = Z_base.shape[1] + 1  # random effects of a candidate model

    def models(extra_columns):
        """Stacked Z, SVDs and masks of the models Z = [Z_base, X_l] for each set l of columns
        (empty: the base model), padded with zero columns to at least `width`; the fixed effects
        of X_l are unpenalised."""
        Zs, bases, singulars, masks = [], [], [], []
        for extra in extra_columns:
            Z = np.column_stack([Z_base, re_columns[:, extra]]).astype(dtype)
            Z = np.pad(Z, ((0, 0), (0, max(width - Z.shape[1], 0))))
            basis, singular = _cluster_svd(Z, cluster, data.n_clusters)
            mask = np.zeros(p + 1, bool)
            mask[0] = True
            mask[np.concatenate([base_unpenalized, np.asarray(extra, int)]) + 1] = True
            Zs.append(Z), bases.append(basis), singulars.append(singular), masks.append(mask)
        return tuple(jnp.asarray(np.stack(a)) for a in (Zs, bases, singulars, masks))

    sequential = vectorize == "map" or (vectorize == "auto" and jax.default_backend() == "cpu")

    def fit_models(extra_columns, padding=0):
        """Every model through one compiled path (diagonal Ψ of `width`): a zero column of Z is a
        random effect without data, its variance absent from the likelihood, so a model padded
        with k of them is the smaller model, with its parameter count — and so `max_df` and BIC
        — k higher (the base model: Z_base alone, or no random effect, the Lasso with σ² by ML)."""
        Zs, bases, singulars, masks = models(extra_columns)
        psi_diag, bic, lam, nnz, codes = jax.device_get(_candidate_fits(
            scaled, Zs, bases, singulars, design, masks, w_full, jnp.asarray(cold, dtype), grid, solver,
            jnp.asarray(max_df + padding, dtype), sequential))
        return psi_diag, bic - padding * math.log(n_obs), lam, nnz, codes

    bic_0 = float(fit_models([[]], padding=1)[1][0]) + shift
    joint = {}
    c = len(candidates)
    # σ² and Ψ are told apart only through clusters with more rows than random effects (with
    # q ≥ m_i, Z_iΨZ_iᵀ can be full rank and −log L → −∞ as σ² → 0).
    room = max(int(np.max(np.asarray(data.cluster_sizes))) - 1 - Z_base.shape[1], 0)
    if method == "penalty" and c:
        joint_size = min(max_joint, room)
        candidates = np.sort(candidates[np.argsort(-np.abs(cold[1 + candidates]), kind="stable")[:joint_size]])
        c = len(candidates)
        Zs, bases, singulars, masks = models([candidates])
        penalised = jnp.asarray(np.arange(Z_base.shape[1] + c) >= Z_base.shape[1])
        relative = jnp.asarray(np.append(np.geomspace(1.0, 0.01, n_penalty - 1), 0.0)[:n_penalty], dtype)
        penalties, (psi_diag, penalty_bic, lams, nnzs, results) = jax.device_get(_penalised_variances(
            scaled, Zs[0], bases[0], singulars[0], design, masks[0], w_full, jnp.asarray(cold, dtype), grid, relative,
            penalised, solver, jnp.asarray(max_df, dtype), sequential))
        best = int(np.argmin(penalty_bic))
        theta2 = psi_diag[best, Z_base.shape[1]:] * units.y**2
        bic, lam, nnz = np.full(c, np.nan), np.full(c, lams[best]), np.full(c, nnzs[best])
        codes = np.full(c, results[best])
        joint = dict(variance_penalties=penalties, penalty_bic=penalty_bic + shift,
                     variance_penalty=float(penalties[best]))
    elif c:  # (ii); all at once in one program, padded to a multiple of 4 candidates (repeating
        # the last) so that replicates with different |S_init| share it
        padded = candidates if sequential else np.concatenate([candidates, np.repeat(candidates[-1:], -c % 4)])
        psi_diag, bic, lam, nnz, codes = fit_models([[k] for k in padded])
        theta2 = psi_diag[:c, -1] * units.y**2
        bic, lam, nnz, codes = bic[:c] + shift, lam[:c], nnz[:c], codes[:c]
    else:
        theta2, bic, lam, nnz, codes = (np.zeros(0) for _ in range(5))
    # (iii) R_κ; (iv) the joint fit, refitted without the covariates whose variance went to 0.
    selected = candidates[theta2 > 0] if method == "penalty" else candidates[(theta2 > kappa) & (bic <= bic_0)]
    # Beyond `room`, the candidates with the largest θ̂²_l go first (the paper's ordering in (iii)).
    by_variance = selected[np.argsort(-theta2[np.isin(candidates, selected)], kind="stable")]
    X, y, groups = _caller_order(data, data.X), _caller_order(data, data.y), _caller_groups(data)
    kept = np.sort(by_variance[:room])
    while True:
        Z = np.column_stack([Z_base, re_columns[:, kept]])
        final = LMMData.from_arrays(X, y, groups, Z=_caller_order(data, Z) if Z.shape[1] else None,
                                    feature_names=names)
        # The same X, y, clusters and seed: the same Lasso start, not computed again.
        fit = _fit_lmmlasso(final, None, structure="diagonal" if Z.shape[1] else "none",
                            unpenalized=np.union1d(base_unpenalized, kept).astype(int), weights=None, adaptive=False,
                            standardize=standardize, n_lambda=n_lambda, lambda_min_ratio=lambda_min_ratio,
                            max_df=max_df, solver=solver, seed=seed, throw=False, cold_start=cold)
        nonzero = np.diag(fit.psi)[Z_base.shape[1]:] > 0 if Z.shape[1] else np.zeros(0, bool)
        if nonzero.all():
            break
        kept = kept[nonzero]
    return RandomEffectsSelection(
        candidates=candidates, theta2=theta2, bic=bic, lam=lam, nnz=nnz,
        candidate_results=np.array([result_name(code) for code in codes], object), bic_0=bic_0, kappa=kappa,
        selected=selected, kept=kept, fit=fit, base=base, feature_names=names, method=method, **joint,
    )


def _caller_order(data: LMMData, rows) -> np.ndarray:
    """Rows sorted by cluster (as `data` holds them) back in the caller's order."""
    return np.asarray(data.to_caller_order(jnp.asarray(rows)))


def _caller_groups(data: LMMData) -> np.ndarray:
    return np.asarray(data.labels, object)[_caller_order(data, data.cluster)]
