"""SHEL — synthetic heterogeneous-effects Lasso.

Only the abstract of the SHEL paper is available: everything here is this package's
reconstruction of what the abstract describes, and every choice is stated in `fit_shel`.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats
from tqdm.auto import tqdm

from ..._data import LMMData
from ..._fit import Fit, Tuning, accepts_formula, finish
from ..._inference import InferenceTable, debiased_lasso, row_results
from ..._path import default_min_ratio, solve_path
from ..._penalties import L1, AbstractPenalty, check_user_penalty
from ..._select import cluster_folds, cross_validated_path, cv_and_final_solvers, grid_results
from ..._solution import RESULTS, result_name, results_from_index
from ..._validate import (
    check_count,
    check_data,
    check_flag,
    check_fraction,
    check_scalar,
    check_seed,
    check_solver,
    check_unpenalized,
    check_weights,
)
from ...losses.shel import profile_synthetic, shel_loss
from ...solvers import AbstractSolver
from .._driver import caller_fit, frame
from .core import shel_core

DEFAULT_K_GRID = (1, 2, 3, 5, 8)


# ---- synthetic variables ------------------------------------------------------------------------


def cluster_means(data: LMMData) -> np.ndarray:
    """X̄ (n × p): row i is the mean of x_ij over cluster i."""
    sums = jax.ops.segment_sum(data.X, data.cluster, num_segments=data.n_clusters, indices_are_sorted=True)
    return np.asarray(sums / data.cluster_sizes[:, None])


def pca_synthetic(data: LMMData, K: int) -> np.ndarray:
    """[1, u_1, …, u_K] (n × (K + 1)): an intercept and the leading K left singular vectors of
    the column-centred cluster-mean matrix X̄ (clusters weighted equally). Uses X only, never y,
    so computing it once from all clusters leaks nothing into cross-validation."""
    means = cluster_means(data)
    U, _, _ = np.linalg.svd(means - means.mean(axis=0), full_matrices=False)
    return np.column_stack([np.ones(data.n_clusters), U[:, :K]])


def user_synthetic(data: LMMData, S) -> np.ndarray:
    """Validate a user-supplied N × K synthetic matrix (rows in the caller's order): it must be
    constant within each cluster. Returns [1, S̄] (n × (K + 1)); collinear columns are allowed
    (the profiling uses a pseudo-inverse)."""
    S = np.asarray(S, float)
    if S.ndim == 1:
        S = S[:, None]
    if S.ndim != 2 or S.shape[0] != data.n_obs:
        raise ValueError(f"`synthetic` must be 'pca', 'dummies' or an N × K array with N = {data.n_obs} rows; "
                         f"got shape {S.shape}.")
    if not np.all(np.isfinite(S)):
        raise ValueError("`synthetic` contains NaN or inf.")
    S_sorted = S[np.asarray(data.order)]
    cluster = np.asarray(data.cluster)
    first = np.zeros((data.n_clusters, S.shape[1]))
    first[cluster[::-1]] = S_sorted[::-1]  # any row of each cluster
    varying = np.flatnonzero(np.any(np.abs(S_sorted - first[cluster]) > 1e-10 * (1.0 + np.abs(first[cluster])), axis=1))
    if varying.size:
        label = data.labels[cluster[varying[0]]]
        raise ValueError(f"`synthetic` varies within cluster {label!r}: synthetic variables must be cluster-level "
                         "(constant within each cluster).")
    if S.shape[1] >= data.n_clusters:
        raise ValueError(f"`synthetic` has K = {S.shape[1]} columns but there are only n = {data.n_clusters} "
                         "clusters; K < n is required.")
    return np.column_stack([np.ones(data.n_clusters), first])


# ---- jitted programs ----------------------------------------------------------------------------


@eqx.filter_jit
def _cv_path(data, S_bar, base, train, test, relative, solver, penalty):
    """The SHEL Lasso path on the clusters in `base` (λ from its λ_max down `relative`, stopped
    early by glmnet's rule) and the held-out errors of every fold along it, as one program
    (`cross_validated_path`). Fold f fits on `train[f]` and scores Σ over `test[f]` rows of
    ((P_w y) − (P_w X) β̂)², i.e. y − Xβ̂ − Sγ̂ with γ̂ fitted on the training clusters
    (own-cluster means for dummies)."""
    y0 = jnp.zeros(data.n_features, data.X.dtype)

    def score(fargs, coef, test_w):
        residual = fargs.y[:, None] - fargs.X @ coef.T
        return jnp.sum(test_w[data.cluster][:, None] * residual**2, axis=0)

    return cross_validated_path(lambda w: shel_loss(data, S_bar, w), base, train, test, relative, solver, y0, score,
                                penalty=penalty)


@eqx.filter_jit
def _final_fit(data, lam, S_bar, penalty, solver, start):
    return shel_core(data, lam, S_bar, penalty=penalty, solver=solver, start=start)


@eqx.filter_jit
def _fit_at(data, S_bar, base, lam, solver, penalty):
    fn, args = shel_loss(data, S_bar, base)
    return solve_path(fn, args, lam[None], solver, jnp.zeros(args.X.shape[1], args.X.dtype), penalty=penalty)


def _select(data, S_bar, base, folds, n_folds, relative, solver, penalty, cv_solver=None, refit=True):
    """λ by cluster CV on the clusters in `base` (folds over `base`) for `penalty` on β (its λ
    replaced along the path): (coef, λ, CV error per λ, `RESULTS` index per λ: `grid_results`
    of the folds). The CV paths use `cv_solver` (default
    `solver`); with another solver and `refit`, the chosen λ is refitted with `solver`, otherwise
    coef is the CV path's at the chosen λ (the caller fits it itself)."""
    cv_solver = solver if cv_solver is None else cv_solver
    dtype = data.X.dtype
    base_w = jnp.asarray(base, dtype)
    in_fold = folds[None, :] == np.arange(n_folds)[:, None]
    train = jnp.asarray(base[None, :] * ~in_fold, dtype)
    test = jnp.asarray(base[None, :] * in_fold, dtype)
    path, sse, _, results = _cv_path(data, S_bar, base_w, train, test, jnp.asarray(relative, dtype), cv_solver, penalty)
    codes = grid_results(results)
    error = np.asarray(sse).sum(axis=0) / float(np.sum(np.asarray(data.cluster_sizes) * base))
    error = np.where(np.asarray(path.fitted), error, np.nan)  # only λ the base path reached
    best = int(np.nanargmin(error))
    lam_best = float(path.lambdas[best])
    if cv_solver is solver or not refit:
        return np.asarray(path.coef[best]), lam_best, error, codes
    refitted = _fit_at(data, S_bar, base_w, jnp.asarray(lam_best, dtype), solver, penalty)
    return np.asarray(refitted.coef[0]), lam_best, error, codes


# ---- inference ---------------------------------------------------------------------------------


def _cr1_ols(X, y, cluster, df_used):
    """OLS of y on X with CR1 cluster-robust SEs (Stata's small-sample factor
    G/(G−1)·(N−1)/(N−k), k = columns of X plus `df_used` already spent on the synthetic
    variables); t reference with G − 1 degrees of freedom. None if not estimable."""
    N, k = X.shape
    G = len(np.unique(cluster))
    dof = N - k - df_used
    if k == 0 or dof <= 0 or G < 3 or np.linalg.matrix_rank(X) < k:
        return None
    bread = np.linalg.inv(X.T @ X)
    beta = bread @ X.T @ y
    scores = X * (y - X @ beta)[:, None]
    per_cluster = np.zeros((cluster.max() + 1, k))
    np.add.at(per_cluster, cluster, scores)
    meat = per_cluster.T @ per_cluster
    factor = G / (G - 1) * (N - 1) / dof
    se = np.sqrt(np.diag(bread @ meat @ bread) * factor)
    return beta, se, G - 1


def _aggregate_splits(estimates, ses, dfs, level, gamma=0.5):
    """Multi-split aggregation (Meinshausen, Meier & Bühlmann 2009, fixed γ = 0.5) for one
    coefficient over B splits (NaN where it was not selected, whose p-value is then 1):
    Q(β₀) = min(1, quantile_γ{p_b(β₀)}/γ); p-value Q(0); interval {β₀ : Q(β₀) > 1 − level},
    found on a grid; estimate = median of the selected splits' estimates. With B = 1 the
    split's own t-interval and p-value are returned (no γ correction)."""
    selected = np.isfinite(estimates)
    B = len(estimates)
    if not selected.any():
        return np.nan, np.nan, -np.inf, np.inf, 1.0
    if B > 1 and selected.sum() < np.ceil(gamma * B):
        # Q ≡ 1 when fewer than γB splits select the coefficient: no finite interval.
        est = estimates[selected]
        return float(np.median(est)), float(np.median(ses[selected])), -np.inf, np.inf, 1.0
    est, se, df = estimates[selected], ses[selected], dfs[selected]

    def pvalues(beta0):
        p = np.ones((B, np.size(beta0)))
        p[selected] = 2 * stats.t.sf(np.abs(est[:, None] - np.atleast_1d(beta0)[None, :]) / se[:, None], df[:, None])
        return p

    if B == 1:
        half = stats.t.ppf(0.5 + level / 2, df[0]) * se[0]
        return est[0], se[0], est[0] - half, est[0] + half, float(pvalues(0.0)[0, 0])
    Q = lambda beta0: np.minimum(1.0, np.quantile(pvalues(beta0), gamma, axis=0) / gamma)  # noqa: E731
    # Q(β₀) = 1 − level needs some p_b(β₀) ≥ (1 − level)γ, i.e. β₀ within the t_{1−(1−level)γ/2}
    # interval of some split: that union bounds the grid.
    reach = stats.t.ppf(1 - (1 - level) * gamma / 2, df) * se
    grid = np.linspace(np.min(est - reach), np.max(est + reach), 4001)
    inside = grid[Q(grid) > 1 - level]
    ci = (inside.min(), inside.max()) if inside.size else (np.nan, np.nan)
    return float(np.median(est)), float(np.median(se)), ci[0], ci[1], float(Q(0.0)[0])


_profile = eqx.filter_jit(profile_synthetic)


def split_inference(data, S_bar, relative, solver, n_splits, level, n_folds, seed, progress, penalty,
                    cv_solver=None):
    """Cluster sample splitting: select (SHEL, λ by CV) on a random half of the clusters, refit
    OLS of P y on P X_Ŝ on the other half (P fitted on that half) with CR1 SEs; aggregate B
    splits. Rows: every coefficient selected in at least one split."""
    n, p = data.n_clusters, data.n_features
    rng = np.random.default_rng(check_seed(seed))
    estimates = np.full((n_splits, p), np.nan)
    ses = np.full((n_splits, p), np.nan)
    dfs = np.full((n_splits, p), np.nan)
    cluster = np.asarray(data.cluster)
    for b in tqdm(range(n_splits), desc="sample splits", disable=not progress):
        half = np.zeros(n, bool)
        half[rng.permutation(n)[: n // 2]] = True
        folds = cluster_folds(n, n_folds, seed=int(rng.integers(2**31)))
        coef, *_ = _select(data, S_bar, half.astype(float), folds, n_folds, relative, solver, penalty,
                           cv_solver=cv_solver)
        support = np.flatnonzero(coef)
        if support.size == 0:
            continue
        other = jnp.asarray(~half, data.X.dtype)
        rows = ~half[cluster]
        # All of X at one shape (then the selected columns): compiled once, whatever |Ŝ| is.
        Xp = np.asarray(_profile(data, S_bar, data.X, other))[np.ix_(rows, support)]
        yp = np.asarray(_profile(data, S_bar, data.y, other))[rows]
        used = int((~half).sum()) if S_bar is None else int(np.linalg.matrix_rank(np.asarray(S_bar)[~half]))
        fit = _cr1_ols(Xp, yp, cluster[rows], used)
        if fit is None:
            continue
        estimates[b, support], ses[b, support], dfs[b, support] = fit[0], fit[1], fit[2]
    coords = np.flatnonzero(np.isfinite(estimates).any(axis=0))
    rows = np.array([_aggregate_splits(estimates[:, j], ses[:, j], dfs[:, j], level) for j in coords]).reshape(-1, 5)
    method = f"SHEL sample splitting ({n_splits} split{'s' if n_splits > 1 else ''}), CR1"
    # A selected column whose splits all failed to give a finite estimate: not identifiable there.
    return InferenceTable(coords, *rows.T, level, method, row_results(np.isfinite(rows[:, 0])),
                          {"selection_frequency": np.isfinite(estimates[:, coords]).mean(axis=0)})


def debiased_inference(data, S_bar, coef, coords, level, solver, column_scale=1.0):
    """Debiased Lasso (as for the quasi-likelihood, with a = 0) on the profiled data (P X, P y),
    cluster-robust SEs."""
    Xp = profile_synthetic(data, S_bar, data.X)
    yp = profile_synthetic(data, S_bar, data.y)
    profiled = LMMData(Xp, yp, data.Z, data.cluster, data.order, data.z_basis, data.z_singular, data.labels)
    out = debiased_lasso(profiled, 0.0, jnp.asarray(coef), 0.0, jnp.asarray(coords), level, solver, 1, column_scale)
    return InferenceTable(np.asarray(coords), np.asarray(out.estimate), np.asarray(out.std_error),
                          np.asarray(out.ci_low), np.asarray(out.ci_high), np.asarray(out.p_value), level,
                          "SHEL debiased Lasso on the profiled data, cluster-robust", out.result,
                          {"node_lam": np.asarray(out.node_lam)})


# ---- user entry point ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class SHELFit(Fit):
    """Result of `fit_shel`: the `Fit` protocol, plus the synthetic-variable fields.

    - `intercept`: the mean cluster effect, the average of S_i γ̂ over clusters. `ranef`
      (n × 1): each cluster's synthetic effect S_i γ̂ − intercept (Z = 1), so `predict(X, groups)`
      adds it for known clusters. `sigma2`: the residual mean square
      ‖y − Xβ̂ − Sγ̂‖² / (N − |Ŝ| − rank S); `psi` None (SHEL does not model Ψ).
    - `gamma` (coefficients of the synthetic columns: intercept first, then the K synthetic
      variables; for dummies one effect per cluster in `groups` order), `synthetic` (the
      N × (K + 1) design [1, S] used, rows in the caller's order; N × n indicators for dummies),
      `K`, `lam`, `kind` ("pca" | "dummies" | "user"), `cv_error` (n_K × n_λ held-out error per
      observation; None when nothing was tuned), `lambda_ratios` (the CV grid as fractions of
      each K's λ_max), `K_grid`, `cv_result` (n_K × n_λ `RESULTS` codes: per grid point the
      first fold's code where a fold's fit did not succeed; when the chosen point's is not
      `successful`, it is the fit's `result`).
    """

    gamma: np.ndarray
    synthetic: np.ndarray | None
    K: int
    lam: float
    kind: str
    cv_error: np.ndarray | None
    lambda_ratios: np.ndarray | None
    K_grid: tuple
    cv_result: RESULTS | None = None

    method = "SHEL (Lasso with cluster-level synthetic variables)"

    UNITS = {**Fit.UNITS, "gamma": "y", "lam": "l1", "cv_error": "y2"}

    @property
    def hyperparameters(self) -> dict:
        return {"lam": self.lam, "K": self.K}

    @property
    def tuning(self) -> Tuning | None:
        if self.cv_error is None:
            return None
        return Tuning(parameters={"K": np.asarray(self.K_grid), "lam_ratio": self.lambda_ratios}, criterion="cv error",
                      values=self.cv_error, fold_values=None, choice=self.hyperparameters)

    def proxy_ratio(self) -> float:
        raise ValueError("`fit` is a SHEL fit: its β̂ is defined with the synthetic variables profiled out, which the "
                         "Σ_a whitening of debias/variance_components does not do; use fit_shel(..., "
                         "inference='debiased').")


@accepts_formula
def fit_shel(
    data: LMMData,
    lam=None,
    *,
    formula: str | None = None,
    synthetic="pca",
    K=None,
    inference=None,
    K_grid=DEFAULT_K_GRID,
    n_lambda: int = 50,
    lambda_min_ratio: float | None = None,
    n_folds: int = 5,
    n_splits: int = 10,
    level: float = 0.95,
    seed: int = 0,
    weights=None,
    unpenalized=None,
    penalty: AbstractPenalty | None = None,
    solver=None,
    progress: bool = True,
    throw: bool = False,
) -> SHELFit:
    """SHEL: the Lasso with unpenalised cluster-level synthetic variables S.

        (β̂, γ̂) = argmin (1/2N) ‖y − Xβ − Sγ‖² + λ Σ_{k ∉ U} w_k |β_k|,   γ unpenalised,

    S constant within clusters (`weights` w, default 1; `unpenalized` U, default none: the same
    vocabulary as `fit_quasi` and `fit_lmmlasso`).

    **A reconstruction.** Only the abstract of the SHEL paper is available. It says that when
    covariate distributions differ across clusters, a Lasso that ignores the clusters selects
    covariates that act as proxies for the latent cluster effects α_i, and that SHEL adds
    cluster-level synthetic variables to absorb that heterogeneity. The choices below are this
    package's:

    - γ is profiled out exactly (`losses.shel_loss`): the Lasso runs on (P X, P y),
      P = I − S(SᵀS)⁺Sᵀ, computed from cluster sums (no N×N matrix).
    - `synthetic="pca"` (default): S = [1, u_1..u_K], the leading K left singular vectors of
      the column-centred n × p matrix of cluster means of X (clusters weighted equally).
      `K=None` chooses K from `K_grid` (values < n − 1) jointly with λ by cluster CV;
      an int fixes it (1 ≤ K < n). The PCs use X only, so they are computed once from all
      clusters.
    - `synthetic="dummies"`: S = cluster indicators, P = within-cluster centring (the
      fixed-effects "within" estimator); its CV error scores each held-out cluster's residual
      about its own mean (a held-out cluster's effect cannot be learnt from the others).
    - `synthetic=` an N × K array: user cluster-level variables (validated constant within
      clusters; K < n; an intercept is added; collinear columns are handled by a pseudo-inverse).
    - λ (`lam=None`): `n_folds`-fold cluster CV of the held-out error ‖y − Xβ̂ − Sγ̂‖² with γ̂
      fitted on the training clusters, over `n_lambda` values from λ_max down to
      `lambda_min_ratio`·λ_max (0.01 when p > N, else 1e-4). X is used as given (no
      standardisation). With the default `solver`, the CV paths are solved to a KKT tolerance
      of 1e-5 (glmnet's default is looser still) and the chosen λ is refitted to 1e-7; a
      `solver` given is used for both.
    - `penalty`: any `AbstractPenalty` on β in place of the Lasso (its λ by the same CV or `lam`;
      `weights` and `unpenalized` are then refused); fitted on the caller's scale.
    - `inference="split"`: B = `n_splits` random halvings of the clusters; select on one half
      (λ by CV there, K fixed at the full-data choice), refit OLS of P y on P X_Ŝ on the other
      half (P fitted there) with CR1 cluster-robust SEs and t(G − 1) references; p-values and
      intervals are aggregated over the splits (Meinshausen, Meier & Bühlmann 2009, γ = 0.5;
      the interval inverts the aggregated test). Rows: every coefficient selected in at least
      one split (`extra["selection_frequency"]`).
    - `inference="debiased"`: the debiased Lasso of `jaxlmm.debias` (node-wise Lassos, scaled-
      Lasso λ_j, cluster-robust SEs) on the profiled data, one row per selected coefficient.
    - `throw`: raise a `RuntimeError` with the `RESULTS` message when the fit did not succeed
      (default False: the fit's `result` and `converged` say so, the choice inside sweeps).

    Raises `ValueError` for an unknown `synthetic`, a synthetic matrix that varies within a
    cluster or has K ≥ n columns, K ≥ n or K < 1, K given with non-PCA synthetic variables,
    negative or non-finite λ, an unknown `inference`, `n_splits` < 1, `level` ∉ (0, 1).
    """
    check_data(data)
    throw, progress = check_flag("throw", throw), check_flag("progress", progress)
    seed = check_seed(seed)
    check_solver(solver, (AbstractSolver,), "jaxlmm.CoordinateDescent(rtol=1e-8)")
    n, p, N = data.n_clusters, data.n_features, data.n_obs
    lam = check_scalar("lam", lam)
    user_weights, user_mask = check_weights(weights, p), check_unpenalized(unpenalized, p)
    if inference not in (None, "split", "debiased"):
        raise ValueError(f"`inference` must be None, 'split' or 'debiased'; got {inference!r}.")
    level = check_fraction("level", level)
    n_splits = check_count("n_splits", n_splits)
    n_lambda = check_count("n_lambda", n_lambda)
    if lambda_min_ratio is not None:
        lambda_min_ratio = check_fraction("lambda_min_ratio", lambda_min_ratio)
    if isinstance(synthetic, str) and synthetic not in ("pca", "dummies"):
        raise ValueError(f"`synthetic` must be 'pca', 'dummies' or an N × K array; got {synthetic!r}.")
    kind = synthetic if isinstance(synthetic, str) else "user"
    if K is not None and kind != "pca":
        raise ValueError("`K` applies to synthetic='pca' only.")
    if K is not None and not (check_count("K", K) < n):
        raise ValueError(f"`K` must satisfy 1 ≤ K < n = {n} (the number of clusters); got {K}.")
    if kind == "dummies" and not np.any(np.asarray(data.cluster_sizes) > 1):
        raise ValueError("`synthetic`='dummies' needs clusters with more than one row: with one row per cluster "
                         "the cluster indicators absorb y entirely and nothing is left for X.")
    folds = cluster_folds(n, n_folds, seed)
    cv_solver, solver = cv_and_final_solvers(solver)
    check_user_penalty(penalty, p, weights=weights, unpenalized=unpenalized)
    # Fit on y / s_y and X / s_x (`_driver`): β = (s_y/s_x) β̃ and the objective is s_y² times the
    # same one in β̃ with λ̃ = λ / (s_y s_x); the synthetic variables are unchanged. A user's
    # penalty is fitted on the caller's scale: its parameters keep the units they were given in.
    caller = frame(data, rescale=penalty is None)
    caller_data, data, units = data, caller.data, caller.scale
    coef_factor = units.y / units.x
    lam = None if lam is None else lam / (units.y * units.x)
    ratio = default_min_ratio(N, p) if lambda_min_ratio is None else lambda_min_ratio
    relative = np.geomspace(1.0, ratio, n_lambda)
    everything = np.ones(n)
    dtype = data.X.dtype
    # Weights are scale-free (X is rescaled by one factor): they pass to the fitting scale as given.
    if penalty is None:
        penalty = L1(jnp.ones((), dtype), None if user_weights is None else jnp.asarray(user_weights, dtype),
                     jnp.asarray(user_mask))

    def chosen_lambda(S):
        """(the CV path's β̂ there or None, λ, CV error and result index per λ or None) for synthetic
        matrix S."""
        if lam is not None:
            return None, lam, None, None
        return _select(data, S, everything, folds, n_folds, relative, solver, penalty, cv_solver, refit=False)

    if kind == "pca":
        Ks = (int(K),) if K is not None else tuple(k for k in K_grid if 1 <= k < n - 1)
        if not Ks:
            raise ValueError(f"`K_grid` has no value in 1..{n - 2}.")
        if lam is not None and len(Ks) > 1:
            raise ValueError("With a fixed `lam`, give `K` too (K is chosen jointly with λ by CV).")
        S_full = pca_synthetic(data, max(Ks))
        candidates = []
        for k in tqdm(Ks, desc="CV over K", disable=not progress or len(Ks) == 1):
            # Columns beyond K are zeroed (not dropped): one compiled shape for every K.
            S_k = S_full * (np.arange(S_full.shape[1]) <= k)
            coef, lam_k, error, codes = chosen_lambda(jnp.asarray(S_k, dtype))
            candidates.append((np.inf if error is None else np.nanmin(error), k, S_k, coef, lam_k, error, codes))
        best = min(range(len(candidates)), key=lambda i: candidates[i][0])
        _, K_hat, S_bar, coef, lam_hat, chosen_error, chosen_codes = candidates[best]
        S_bar = S_bar[:, : K_hat + 1]
        cv_error = None if lam is not None else np.stack([c[5] for c in candidates])
        cv_codes = None if lam is not None else np.stack([c[6] for c in candidates])
    else:
        S_bar = None if kind == "dummies" else user_synthetic(caller_data, synthetic)
        S_j = None if S_bar is None else jnp.asarray(S_bar, dtype)
        coef, lam_hat, error, codes = chosen_lambda(S_j)
        K_hat = n if S_bar is None else S_bar.shape[1] - 1
        cv_error = None if error is None else error[None]
        cv_codes = None if codes is None else codes[None]
        chosen_error, chosen_codes = error, codes
        Ks = (K_hat,)
    S_jax = None if S_bar is None else jnp.asarray(S_bar, dtype)

    # The fit at the chosen (K, λ) is the core's, on the fitting scale (warm-started from the CV
    # path's β̂ there).
    core = _final_fit(data, jnp.asarray(lam_hat, dtype), S_jax, penalty, solver,
                      None if coef is None else jnp.asarray(coef, dtype))
    unit_coef = np.asarray(core.coef)
    # γ̂ = (SᵀS)⁺Sᵀ(y − Xβ̂): the profiled-out coefficients at β̂.
    residual = np.asarray(data.y - data.X @ jnp.asarray(unit_coef, dtype))
    cluster = np.asarray(data.cluster)
    if S_bar is None:
        gamma = np.bincount(cluster, residual, n) / np.bincount(cluster, minlength=n)
        design_sorted = np.eye(n)[cluster]
    else:
        design_sorted = S_bar[cluster]
        gamma = np.linalg.pinv(design_sorted) @ residual
    synthetic_rows = np.empty_like(design_sorted)
    synthetic_rows[np.asarray(data.order)] = design_sorted

    table = None
    if inference == "split":
        table = split_inference(data, S_jax, relative, solver, int(n_splits), level, n_folds, seed + 1,
                                progress, penalty, cv_solver).rescaled(coef_factor)
    elif inference == "debiased":
        table = debiased_inference(data, S_jax, unit_coef, np.flatnonzero(unit_coef), level, solver,
                                   float(units.x)).rescaled(coef_factor, node_lam=units.x**2)
    # A choice that rests on a fold whose fit did not succeed is not reported as successful.
    result = result_name(core.result)
    if result == "successful" and chosen_codes is not None:
        result = result_name(results_from_index(chosen_codes[np.nanargmin(chosen_error)]))
    fit = caller_fit(
        SHELFit, caller, coef=unit_coef, intercept=float(core.intercept), support=np.flatnonzero(unit_coef),
        sigma2=float(core.sigma2), psi=None, ranef=np.asarray(core.ranef), result=result,
        n_iter=int(core.num_steps), inference=table, gamma=gamma, synthetic=synthetic_rows, K=int(K_hat),
        lam=float(lam_hat), kind=kind, cv_error=cv_error, K_grid=tuple(Ks),
        cv_result=None if cv_codes is None else results_from_index(cv_codes),
        lambda_ratios=None if lam is not None else np.asarray(relative))
    return finish(fit, throw)
