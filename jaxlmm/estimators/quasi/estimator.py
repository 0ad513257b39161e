"""`fit_quasi`: the whitened quasi-likelihood Lasso and best subset, with tuning of a, λ and k."""

from __future__ import annotations

import dataclasses
import warnings

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ..._data import LMMData
from ..._fit import Fit, Tuning, accepts_formula, finish, savable
from ..._path import LassoPath, default_min_ratio, solve_path
from ..._penalties import L0, L1, AbstractPenalty, FreeLeading, check_user_penalty
from ..._select import (
    INFORMATION_CRITERIA,
    cluster_folds,
    cross_validated_path,
    cv_and_final_solvers,
    grid_results,
    map_over_folds,
    marginal_sse,
    scaled_lasso,
    training_weights,
)
from ..._solution import RESULTS, result_name, result_names, results_from_index
from ..._solve import solve
from ..._validate import (
    check_count,
    check_data,
    check_flag,
    check_fraction,
    check_grid,
    check_scalar,
    check_seed,
    check_solver,
    check_unpenalized,
    check_weights,
)
from ..._variance_components import variance_components, variance_identifiable
from ..._whiten import effective_sample_size
from ...losses import LeastSquares, LeastSquaresData, quasi_likelihood
from ...solvers import AbstractSolver, BestSubset
from .._driver import caller_fit, frame

# Factor-4 steps: the CV error is smooth in log a (benchmarks/study_quasi_defaults.py compares the
# earlier 11-value grid)
DEFAULT_A_GRID = (0.0, 0.25, 1.0, 4.0, 16.0, 64.0)


@savable
@dataclasses.dataclass(frozen=True)
class CVCurve:
    """Cluster-level K-fold cross-validation results.

    - `a_grid` (n_a): the values of a tried.
    - `grid` (n_a × n_g): the λ values (they scale with λ_max(a)) or k values tried at each a.
    - `error` (n_a × n_g): marginal prediction error Σ_test ‖y_i − X_i β̂‖² / N, summed over
      folds (each cluster is held out exactly once).
    - `fold_error` (n_folds × n_a × n_g): the same per fold, before dividing by N.
    - `parameter`: "lam" or "k"; `best`: the (a index, grid index) of the minimum.
    - `result` (n_a × n_g `RESULTS` codes): per grid point the first fold's code where a fold's
      fit did not succeed, else `successful` (when the chosen point's is not, it is the fit's
      `result`); None for best subset, whose solver reports none.
    """

    UNITS = {"grid": "l1", "error": "y2", "fold_error": "y2"}  # a k grid is unit-free: overridden

    a_grid: np.ndarray
    grid: np.ndarray
    error: np.ndarray
    fold_error: np.ndarray
    parameter: str
    best: tuple[int, int]
    result: RESULTS | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuasiFit(Fit):
    """A fitted quasi-likelihood model (Lasso or best subset): the `Fit` protocol, plus

    - `coef` n_λ × p and `support` a tuple of index arrays when an explicit λ path was asked for
      (then `result` is that of the first λ that did not succeed, if any, and `n_iter` sums
      over the path).
    - `sigma2`, `psi`, `ranef`: from `variance_components` with Ψ = ηI at the fit's a (None
      for a path, or when no cluster has more rows than rank Z_i).
    - `a`, `lam` (Lasso) or `k` (best subset): the values used, chosen or given.
    - `selector`: "lasso" or "best_subset"; `n_iter` is 0 for best subset (skscope does not
      report it).
    - `effective_sample_size`: tr(Σ_a^{-1}).
    - `cv`: the `CVCurve` when a, λ or k was chosen by cross-validation; `ic`: the
      information-criterion curve {k: value} when k was chosen by GIC/EBIC, and `ic_support`
      the subset behind each value {k: column indices}; `ic_name` the criterion.
    - `path`: the `LassoPath` at the chosen a when a path was computed (by cross-validation: from
      λ_max down to the chosen λ, `fitted` False below it).
    - `lam_rule`: how λ was set: "universal" (the scaled-Lasso rule), "cv", "given" (None for
      best subset); `unpenalized`: the indices of the unpenalised columns.
    """

    a: float
    lam: float | np.ndarray | None
    k: int | None
    effective_sample_size: float
    selector: str
    cv: CVCurve | None = None
    ic: dict | None = None
    path: LassoPath | None = None
    ic_support: dict | None = None
    ic_name: str | None = None
    lam_rule: str | None = None
    unpenalized: np.ndarray | None = None

    UNITS = {**Fit.UNITS, "lam": "l1", "cv": None, "path": None, "ic": None}  # λ, curves: `_caller_factors`

    @property
    def method(self) -> str:
        kind = {"lasso": "Lasso", "best_subset": "best subset"}.get(self.selector, f"{self.selector} penalty")
        return f"quasi-likelihood {kind} (Li, Cai & Li)"

    @property
    def hyperparameters(self) -> dict:
        chosen = {"a": self.a}
        if self.selector != "best_subset":
            chosen["lam"] = self.lam
        else:
            chosen["k"] = self.k
        return chosen

    @property
    def criteria(self) -> dict:
        return {"effective sample size": self.effective_sample_size}

    def proxy_ratio(self) -> float:
        return float(self.a)

    @property
    def tuning(self) -> Tuning | None:
        if self.cv is not None:
            cv = self.cv
            return Tuning(parameters={"a": cv.a_grid, cv.parameter: cv.grid}, criterion="cv error", values=cv.error,
                          fold_values=cv.fold_error, choice=self.hyperparameters)
        if self.ic is not None:
            return Tuning(parameters={"k": np.array(list(self.ic))}, criterion=self.ic_name,
                          values=np.array(list(self.ic.values())), fold_values=None, choice={"k": self.k})
        return None


def _result_fields(coef, intercept, support, a, lam, k, result, n_iter, n_eff, selector, cv=None, ic=None,
                   path=None, ic_support=None, ic_name=None) -> dict:
    """The method's `QuasiFit` fields, on the fitting scale; `result` the name of the solver's
    `RESULTS` code."""
    return dict(coef=coef, intercept=intercept, support=support, a=a, lam=lam, k=k, result=result,
                n_iter=int(n_iter), effective_sample_size=n_eff, selector=selector, cv=cv, ic=ic, path=path,
                ic_support=ic_support, ic_name=ic_name)


# ---- jitted programs: a is traced and folds share one shape, so nothing recompiles across a ---


def _fold_args(data: LMMData, args: LeastSquaresData, a, cluster_weights) -> LeastSquaresData:
    """The same whitened data restricted to the training clusters (weight 1)."""
    return LeastSquaresData(
        X=args.X,
        y=args.y,
        weights=cluster_weights[data.cluster].astype(args.X.dtype),
        scale=effective_sample_size(data, a, cluster_weights),
    )


def _design(data: LMMData, intercept: bool):
    if not intercept:
        return data.X
    return data.with_intercept()


@eqx.filter_jit
def _lasso_cv_at_a(data, a, train, grid, relative, penalty, intercept, solver):
    """The full-data λ path at one a and the held-out marginal SSE of every fold along it, as
    one program (`cross_validated_path`). With `relative`, `grid` holds fractions of the
    full-data λ_max(a) (so the grid follows a) and the path stops early by glmnet's rule."""
    fn, args = quasi_likelihood(data, a, intercept=intercept)
    design = _design(data, intercept)
    y0 = jnp.zeros(args.X.shape[1], args.X.dtype)
    everything = jnp.ones(data.n_clusters, args.X.dtype)
    path, sse, _, results = cross_validated_path(
        lambda cw: (fn, _fold_args(data, args, a, cw)), everything, train, 1.0 - train, grid, solver, y0,
        lambda fargs, coef, test_w: marginal_sse(data, design, coef, test_w), relative=relative, penalty=penalty)
    return path, sse, args.scale, results


@eqx.filter_jit
def _universal_cv_at_a(data, a, train, n_penalized, weights, unpenalized, intercept, solver):
    fn, args = quasi_likelihood(data, a, intercept=intercept)
    y0 = jnp.zeros(args.X.shape[1], args.X.dtype)
    design = _design(data, intercept)

    def fold(cluster_weights):
        fargs = _fold_args(data, args, a, cluster_weights)
        fit = scaled_lasso(fn, fargs, solver, y0, fargs.scale, n_penalized, weights, unpenalized)
        return marginal_sse(data, design, fit.coef[None], 1.0 - cluster_weights), fit.lam[None], fit.result

    return map_over_folds(fold, train)


@eqx.filter_jit
def _lasso_full(data, a, grid, relative, penalty, intercept, solver, stop_after):
    """The path at `a`, its λ after index `stop_after` (an array: a Python int would be a static
    argument, one compilation per chosen index) left unfitted."""
    fn, args = quasi_likelihood(data, a, intercept=intercept)
    y0 = jnp.zeros(args.X.shape[1], args.X.dtype)
    return solve_path(fn, args, grid, solver, y0, relative=relative, early_stop=relative, stop_after=stop_after,
                      penalty=penalty), args.scale


@eqx.filter_jit
def _universal_full(data, a, n_penalized, weights, unpenalized, intercept, solver):
    fn, args = quasi_likelihood(data, a, intercept=intercept)
    y0 = jnp.zeros(args.X.shape[1], args.X.dtype)
    return scaled_lasso(fn, args, solver, y0, args.scale, n_penalized, weights, unpenalized), args.scale


@eqx.filter_jit
def _whitened(data, a, intercept, cluster_weights):
    return quasi_likelihood(data, a, cluster_weights, intercept)[1]


# ---- best subset (host side: skscope) ---------------------------------------------------------


def _best_subset_path(args, ks, unpenalized, solver) -> np.ndarray:
    """β̂ for each k in `ks` (increasing), each warm-started from the previous support."""
    p = args.X.shape[1]
    beta = jnp.zeros(p, args.X.dtype)
    mask = jnp.asarray(unpenalized)
    coefs = []
    for k in ks:
        sol = solve(LeastSquares(), L0(int(k), mask), solver, beta, args)
        beta = sol.value
        coefs.append(np.asarray(beta))
    return np.stack(coefs)


def _rss(args: LeastSquaresData, coefs: np.ndarray) -> np.ndarray:
    X, y, w = (np.asarray(v) for v in (args.X, args.y, args.weights))
    r = y[:, None] - X @ coefs.T
    return np.sum(w[:, None] * r * r, axis=0)


def _choose_k_by_ic(args, coefs, ks, criterion, n_penalized) -> tuple[int, np.ndarray]:
    ic = INFORMATION_CRITERIA[criterion](_rss(args, coefs), float(args.scale), ks, n_penalized)
    return int(np.argmin(ic)), ic


# ---- the estimator ----------------------------------------------------------------------------


@accepts_formula
def fit_quasi(
    data: LMMData,
    lam=None,
    *,
    formula: str | None = None,
    a=None,
    k=None,
    a_grid=DEFAULT_A_GRID,
    n_lambda: int = 100,
    lambda_min_ratio: float | None = None,
    k_grid=None,
    k_criterion: str = "cv",
    n_folds: int = 5,
    weights=None,
    unpenalized=None,
    penalty: AbstractPenalty | None = None,
    intercept: bool = True,
    cv_rule: str = "min",
    seed: int = 0,
    progress: bool = True,
    solver=None,
    best_subset: BestSubset | None = None,
    variance: bool = True,
    throw: bool = False,
) -> QuasiFit:
    """Fit the Σ_a-whitened quasi-likelihood of Li, Cai & Li (2022) with a Lasso or an l0 penalty.

    Lasso:        β̂ = argmin ‖y_a − X_a β‖² / (2 tr(Σ_a^{-1})) + λ Σ_{k ∉ U} w_k |β_k|
    Best subset:  β̂ = argmin ‖y_a − X_a β‖² / (2 tr(Σ_a^{-1}))  s.t. ‖β_{∉U}‖₀ ≤ k

    with X_a = Σ_a^{-1/2} X, y_a = Σ_a^{-1/2} y and Σ_a = blockdiag(a Z_i Z_iᵀ + I). An
    intercept (unpenalised, whitened with the data) is included unless `intercept=False`.

    What is `None` is tuned:

    - `a=None`: cluster-level `n_folds`-fold CV of the marginal prediction error
      Σ_test ‖y_i − X_i β̂‖² over `a_grid`, jointly with λ (on a path of `n_lambda` values
      from λ_max(a) down to `lambda_min_ratio`·λ_max(a)) or with k when those are tuned too.
    - `lam=None` (and `k=None`): λ by the same CV. `lam="universal"`: the scaled-Lasso choice
      λ = σ̂ sqrt(2 log p / tr(Σ_a^{-1})) (the rule takes the caller's columns as they are: it
      is equivariant to the units of y, not to those of X). `lam` a 1-D array: the whole path (warm-started
      from λ_max), returned as an n_λ × p `coef`.
    - `k` given: best subset by splicing (skscope `ScopeSolver`). `k=None` with
      `k_criterion="gic"`/`"ebic"`: k over `k_grid` by that criterion with
      n = tr(Σ_a^{-1}); `k_criterion="cv"` with `k_grid` given: k by CV.

    **Arguments:**

    - `data`: an `LMMData`.
    - `a`, `lam`, `k`: see above; give `lam` or `k`, not both (neither means a CV-tuned Lasso).
    - `a_grid`: values of a ≥ 0 for CV. `n_lambda`, `lambda_min_ratio`: the relative λ grid
      (ratio default 0.01 when p > N, else 1e-4, as glmnet). `k_grid`: sparsity levels.
    - `n_folds`, `seed`: the cluster folds. `progress`: tqdm bar over the a grid.
    - `cv_rule`: "min" (the CV minimiser) or "1se" (the sparsest λ or k within one standard
      error of the minimum, at the minimising a; glmnet's `lambda.1se`).
    - `weights` (length p, ≥ 0; inf drops a column), `unpenalized` (indices or a mask of
      columns of X that are never penalised and always in the model).
    - `penalty`: any `AbstractPenalty` (`MCP`, `SCAD`, `ElasticNet`, `GroupLasso` with
      `solver=ProximalGradient()`, or your own subclass) in place of the Lasso, its λ chosen by
      the same cluster CV (λ_max from its `critical_lambda`) or given by `lam`; its own λ is
      replaced. The intercept stays unpenalised; `weights`, `unpenalized`, `k` and
      `lam="universal"` belong to the Lasso and are refused with it. The fit runs on the
      caller's scale, so the penalty's parameters keep the units they were given in.
    - `variance`: estimate σ̂², Ψ̂ = ηI and the BLUPs (`variance_components` at the fit's a; a
      second compiled program, most of its cost on a first call); False leaves them None.
    - `solver`: the in-JIT solver for the Lasso (default `CoordinateDescent(rtol=1e-7)`, with
      the CV paths solved to rtol 1e-5 and the path at the chosen a refitted to 1e-7; a solver
      given is used for both);
      `best_subset`: a `BestSubset` with skscope options.
    - `throw`: raise a `RuntimeError` with the `RESULTS` message when the fit did not succeed
      (default False: the fit's `result` and `converged` say so, the choice inside sweeps).

    Every fit runs on y / s_y and X / s_x (powers of two nearest the sd of y and the root mean
    square of X) and is reported on the caller's scale, so it is equivariant to the units of
    the data up to the dtype's range (the universal λ, whose rule assumes the caller's column
    scale, to the units of y).

    Returns a `QuasiFit`.
    """
    check_data(data)
    p = data.n_features
    seed = check_seed(seed)
    check_solver(solver, (AbstractSolver,), "jaxlmm.CoordinateDescent(rtol=1e-8)")
    a = check_scalar("a", a)
    throw, progress = check_flag("throw", throw), check_flag("progress", progress)
    intercept, variance = check_flag("intercept", intercept), check_flag("variance", variance)
    a_values = np.array([a]) if a is not None else check_grid("a_grid", a_grid)
    if k is not None and lam is not None:
        raise ValueError("Give `lam` (Lasso) or `k` (best subset), not both.")
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, int | np.integer):
            raise ValueError(f"`k` must be an integer number of nonzero coefficients; got {k!r}.")
        if not 0 <= k <= p:
            raise ValueError(f"`k` must be between 0 and p = {p}; got k = {k}.")
    if cv_rule not in ("min", "1se"):
        raise ValueError(f"`cv_rule` must be 'min' or '1se'; got {cv_rule!r}.")
    if k_criterion not in ("cv", *INFORMATION_CRITERIA):
        raise ValueError(f"`k_criterion` must be 'cv', 'gic' or 'ebic'; got {k_criterion!r}.")
    user_mask = check_unpenalized(unpenalized, p)
    user_weights = check_weights(weights, p)
    check_user_penalty(penalty, p, weights=weights, unpenalized=unpenalized, k=k, lam=lam)
    if lambda_min_ratio is None:
        lambda_min_ratio = default_min_ratio(data.n_obs, p)
    lambda_min_ratio = check_fraction("lambda_min_ratio", lambda_min_ratio)
    n_lambda = check_count("n_lambda", n_lambda)
    if isinstance(lam, bool | np.bool_) or (isinstance(lam, str) and lam != "universal"):
        raise ValueError(f"`lam` must be a number, an array, None or 'universal'; got {lam!r}.")
    needs_cv = a is None or (lam is None and k is None and k_criterion == "cv")
    folds = cluster_folds(data.n_clusters, n_folds, seed) if needs_cv else None
    # On y / s_y and X / s_x (`_driver`): with β = (s_y/s_x) β̃ the objective is s_y² times the same
    # objective in β̃ with λ̃ = λ / (s_y s_x), so λ (and the CV and IC curves) map back exactly. The
    # universal λ's rule depends on the columns' scale: it keeps the caller's through weights
    # w̃ = w / s_x (then λ = s_y λ̃). A user's penalty is fitted on the caller's scale: its
    # parameters are in the units of β and y.
    caller = frame(data, rescale=penalty is None)
    universal = isinstance(lam, str)
    lam_unit = caller.scale.y if universal else caller.scale.y * caller.scale.x
    if universal and caller.scale.x != 1.0:
        user_weights = (np.ones(p) if user_weights is None else user_weights) / caller.scale.x
    options = _Options(a=a, a_values=a_values, lam=lam, k=k, folds=folds, mask=user_mask, weights=user_weights,
                       n_lambda=n_lambda, lambda_min_ratio=lambda_min_ratio, k_grid=k_grid, k_criterion=k_criterion,
                       n_folds=n_folds, intercept=intercept, cv_rule=cv_rule, progress=progress, solver=solver,
                       best_subset=best_subset, penalty=penalty)
    fields = _fit_on_fitting_scale(caller.data, options, lam_unit)
    if fields["selector"] == "best_subset":
        lam_rule = None
    else:
        lam_rule = "universal" if universal else "cv" if lam is None else "given"
    fit = caller_fit(QuasiFit, caller, _caller_factors(caller.scale, fields, intercept, lam_unit), **fields,
                     lam_rule=lam_rule, unpenalized=np.flatnonzero(user_mask), sigma2=None, psi=None, ranef=None)
    if variance and np.ndim(fit.coef) == 1 and variance_identifiable(data):
        vc = variance_components(fit, data)
        if vc.identifiable:
            fit = dataclasses.replace(fit, sigma2=vc.sigma2, psi=vc.psi, ranef=vc.ranef)
        else:  # β̂ stands; the variance components are left out rather than reported untrustworthy
            warnings.warn(f"fit_quasi: σ̂², Ψ̂ and the BLUPs are {vc.result} from these residuals (a moment "
                          "system without a unique solution, or σ̂² = 0) and are left None; "
                          "`variance_components(fit, data, structure=...)` with a smaller structure may "
                          "identify them.", RuntimeWarning, stacklevel=3)
    return finish(fit, throw)


@dataclasses.dataclass(frozen=True)
class _Options:
    """`fit_quasi`'s checked arguments, as its fitting steps read them (`mask`, `weights`: the
    user's unpenalised columns and penalty weights, without the intercept)."""

    a: float | None
    a_values: np.ndarray
    lam: object
    k: int | None
    folds: np.ndarray | None
    mask: np.ndarray
    weights: np.ndarray | None
    n_lambda: int
    lambda_min_ratio: float
    k_grid: object
    k_criterion: str
    n_folds: int
    intercept: bool
    cv_rule: str
    progress: bool
    solver: object
    best_subset: object
    penalty: object


def _caller_factors(scale, fields: dict, intercept: bool, lam_unit) -> dict:
    """`on_caller_scale`'s overrides for a `QuasiFit`: λ in `lam_unit` (the path's too), a path's
    coefficient rows with their intercept column, a k grid without units, and GIC/EBIC, whose
    N_eff log(RSS) gains 2 N_eff log s_y."""
    coef_factor = np.concatenate([[scale.y], np.full(fields["coef"].shape[-1], scale.y / scale.x)]) if intercept \
        else scale.y / scale.x
    factors = {"lam": lam_unit, "path": {"lambdas": lam_unit, "kkt_residual": lam_unit, "lambda_max": lam_unit,
                                         "coef": coef_factor, "start": coef_factor}}
    if fields["cv"] is not None and fields["cv"].parameter == "k":
        factors["cv"] = {"grid": 1.0}
    else:
        factors["cv"] = {"grid": lam_unit}
    shift = fields["effective_sample_size"] * 2 * np.log(scale.y)
    factors["ic"] = lambda ic: {k_: value + shift for k_, value in ic.items()}
    return factors


def _fit_on_fitting_scale(data, o: _Options, lam_scale) -> dict:
    """The `QuasiFit` fields of the method's result on `data` (on the fitting scale)."""
    mask = np.concatenate([[True], o.mask]) if o.intercept else o.mask
    w = None if o.weights is None else jnp.asarray(np.concatenate([[1.0], o.weights]) if o.intercept else o.weights,
                                                   data.X.dtype)
    n_penalized = int(np.sum(~mask))
    if n_penalized == 0:
        raise ValueError("Every column is unpenalised: there is nothing to select.")
    common = dict(data=data, a_values=o.a_values, folds=o.folds, n_folds=o.n_folds, intercept=o.intercept,
                  mask=mask, progress=o.progress, cv_rule=o.cv_rule)
    if o.k is not None or (o.lam is None and (o.k_grid is not None or o.k_criterion != "cv")):
        k_grid = o.k_grid
        if o.k is None:
            k_grid = check_grid("k_grid", k_grid if k_grid is not None else range(1, min(n_penalized, 20) + 1),
                                integer=True, upper=n_penalized)
        return _fit_best_subset(k=o.k, k_grid=k_grid, k_criterion=o.k_criterion, n_penalized=n_penalized,
                                solver=o.best_subset or BestSubset(), **common)
    cv_solver, solver = cv_and_final_solvers(o.solver)  # the path at the chosen a refitted with `solver`
    if isinstance(o.lam, str):
        return _fit_universal(solver=solver, weights=w, mask_j=jnp.asarray(mask), n_penalized=n_penalized, **common)
    relative = o.lam is None
    grid = np.geomspace(1.0, o.lambda_min_ratio, o.n_lambda) if relative else check_grid("lam", o.lam) / lam_scale
    # An array of λ with a given is a path; with a=None it is the λ grid of the CV over a × λ.
    path_requested = o.lam is not None and np.ndim(o.lam) > 0 and o.a is not None
    if o.penalty is None:
        penalty, selector = L1(jnp.ones((), data.X.dtype), w, jnp.asarray(mask)), "lasso"
    else:  # the user's penalty on β; the intercept (column 0 of the design) stays free
        penalty = FreeLeading(o.penalty, 1, data.n_features + 1) if o.intercept else o.penalty
        selector = type(o.penalty).__name__
    return _fit_lasso(grid=grid, relative=relative, path_requested=path_requested,
                      solver=solver, cv_solver=cv_solver, penalty=penalty, selector=selector, **common)


def _first_failure(fit_result: str, tuned: str) -> str:
    """The fit's own result, or where it succeeded the CV's at the chosen point: a choice that
    rests on a fold whose fit did not succeed is not reported as successful."""
    return fit_result if fit_result != "successful" else tuned


def _split_intercept(beta: np.ndarray, intercept: bool):
    if intercept:
        return beta[..., 1:], beta[..., 0]
    return beta, np.zeros(beta.shape[:-1])


def _cv_best(error, fold_sse, folds, data, rule) -> tuple[int, int]:
    """The CV minimiser, or with rule "1se" the sparsest candidate (largest λ / smallest k:
    the lowest grid index) at the minimising a whose error is within one standard error of
    the minimum (the standard error over folds of the per-observation fold error)."""
    i, j = np.unravel_index(np.nanargmin(error), error.shape)
    if rule == "min":
        return int(i), int(j)
    sizes = np.asarray(data.cluster_sizes)
    fold_rows = np.array([sizes[folds == f].sum() for f in range(fold_sse.shape[0])])
    fold_mse = fold_sse[:, i, :] / fold_rows[:, None]
    se = fold_mse.std(axis=0, ddof=1) / np.sqrt(fold_sse.shape[0])
    within = np.flatnonzero(error[i] <= error[i, j] + se[j])
    return int(i), int(within.min())


def _fit_lasso(*, data, a_values, folds, n_folds, intercept, mask, progress, cv_rule, grid, relative,
               path_requested, solver, cv_solver, penalty, selector) -> dict:
    dtype = data.X.dtype
    grid_j = jnp.asarray(grid, dtype)
    cv = None
    if folds is not None and not path_requested:
        # One program per a computes the full-data path and every fold along it; only the path of
        # the best a so far is kept (n_λ × p on the host, not n_a × n_λ × p).
        train = training_weights(folds, n_folds, dtype)
        fold_sse, lam_table, codes, path, a_best, best_error = [], [], [], None, None, np.inf
        for a in tqdm(a_values, desc="CV over a", disable=not progress or len(a_values) == 1):
            a_path, sse, n_eff, results = _lasso_cv_at_a(data, jnp.asarray(a, dtype), train, grid_j, relative,
                                                         penalty, intercept, cv_solver)
            codes.append(grid_results(results))
            # Only the λ the full-data path reached are candidates (glmnet's cv truncates likewise).
            sse = np.where(np.asarray(a_path.fitted)[None, :], np.asarray(sse), np.nan)
            fold_sse.append(sse)
            lam_table.append(np.asarray(a_path.lambdas))
            if np.nanmin(sse.sum(axis=0)) < best_error:
                best_error, path, a_best, best_eff = np.nanmin(sse.sum(axis=0)), a_path, float(a), n_eff
        fold_sse = np.stack(fold_sse, axis=1)
        error = fold_sse.sum(axis=0) / data.n_obs
        best = _cv_best(error, fold_sse, folds, data, cv_rule)
        cv = CVCurve(a_values, np.stack(lam_table), error, fold_sse, "lam", best, results_from_index(np.stack(codes)))
        tuned = result_names(cv.result)[best]
        index, n_eff = best[1], best_eff
        if cv_solver is not solver:  # the reported path to the final solver's tolerance, down to the chosen λ
            path, n_eff = _lasso_full(data, jnp.asarray(a_best, dtype), grid_j, relative, penalty, intercept,
                                      solver, jnp.asarray(index))
            index = min(index, int(np.flatnonzero(np.asarray(path.fitted))[-1]))
    else:
        a_best, tuned = float(a_values[0]), "successful"
        path, n_eff = _lasso_full(data, jnp.asarray(a_best, dtype), grid_j, relative, penalty, intercept,
                                  solver, jnp.asarray(len(grid)))
        index = int(np.flatnonzero(np.asarray(path.fitted))[-1])
    coef_all = np.asarray(path.coef)
    beta, b0 = _split_intercept(coef_all, intercept)
    results = result_names(path.result)
    steps = np.asarray(path.num_steps)
    if path_requested:  # the first λ that did not succeed, if any, says why
        support = tuple(np.flatnonzero(row) for row in beta)
        failed = [name for name in results if name != "successful"]
        return _result_fields(beta, b0, support, a_best, np.asarray(path.lambdas), None,
                            failed[0] if failed else "successful", np.sum(steps), float(n_eff), selector, cv, None,
                            path)
    return _result_fields(beta[index], float(b0[index]), np.flatnonzero(beta[index]), a_best,
                        float(path.lambdas[index]), None, _first_failure(results[index], tuned), int(steps[index]),
                        float(n_eff), selector, cv, None, path if relative else None)


def _fit_universal(*, data, a_values, folds, n_folds, intercept, mask, progress, cv_rule, solver, weights,
                   mask_j, n_penalized) -> QuasiFit:
    dtype = data.X.dtype
    cv = None
    a_best, tuned = float(a_values[0]), "successful"
    if folds is not None and len(a_values) > 1:
        train = training_weights(folds, n_folds, dtype)
        fold_sse, lam_table, codes = [], [], []
        for a in tqdm(a_values, desc="CV over a", disable=not progress):
            sse, lams, results = _universal_cv_at_a(data, jnp.asarray(a, dtype), train, n_penalized,
                                                    weights, mask_j, intercept, solver)
            codes.append(grid_results(results)[None])
            fold_sse.append(np.asarray(sse))
            lam_table.append(np.asarray(lams).mean(axis=0))
        fold_sse = np.stack(fold_sse, axis=1)
        error = fold_sse.sum(axis=0) / data.n_obs
        best = _cv_best(error, fold_sse, folds, data, cv_rule)
        cv = CVCurve(a_values, np.stack(lam_table), error, fold_sse, "lam", best, results_from_index(np.stack(codes)))
        a_best, tuned = float(a_values[best[0]]), result_names(cv.result)[best]
    fit, n_eff = _universal_full(data, jnp.asarray(a_best, dtype), n_penalized, weights, mask_j, intercept, solver)
    beta, b0 = _split_intercept(np.asarray(fit.coef), intercept)
    return _result_fields(beta, float(b0), np.flatnonzero(beta), a_best, float(fit.lam), None,
                        _first_failure(result_name(fit.result), tuned), int(fit.num_steps), float(n_eff), "lasso", cv)


def _fit_best_subset(*, data, a_values, folds, n_folds, intercept, mask, progress, cv_rule, k, k_grid,
                     k_criterion, n_penalized, solver) -> QuasiFit:
    dtype = data.X.dtype
    ks = np.array([k]) if k is not None else np.asarray(k_grid)
    design = _design(data, intercept)
    cv = None
    a_best = float(a_values[0])
    by_ic = k is None and k_criterion != "cv"
    if folds is not None and (len(a_values) > 1 or (k is None and not by_ic)):
        fold_sse = np.zeros((n_folds, len(a_values), 1 if by_ic else len(ks)))
        ic_ks = np.zeros((n_folds, len(a_values)), int)
        total = len(a_values) * n_folds
        with tqdm(total=total, desc="CV over a (best subset)", disable=not progress) as bar:
            for i, a in enumerate(a_values):
                a_j = jnp.asarray(a, dtype)
                whitened = _whitened(data, a_j, intercept, jnp.ones(data.n_clusters, dtype))
                for f in range(n_folds):
                    cw = jnp.asarray(folds != f, dtype)
                    args = _fold_args(data, whitened, a_j, cw)  # whitening depends on a only
                    coefs = _best_subset_path(args, ks, mask, solver)
                    if by_ic:
                        j, _ = _choose_k_by_ic(args, coefs, ks, k_criterion, n_penalized)
                        coefs, ic_ks[f, i] = coefs[j : j + 1], ks[j]
                    fold_sse[f, i] = np.asarray(
                        marginal_sse(data, design, jnp.asarray(coefs), 1.0 - cw)
                    )
                    bar.update()
        error = fold_sse.sum(axis=0) / data.n_obs
        best = _cv_best(error, fold_sse, folds, data, cv_rule)
        # With k chosen by the criterion inside each fold, record the median k per a.
        grid = np.median(ic_ks, axis=0)[:, None] if by_ic else np.broadcast_to(ks, error.shape)
        cv = CVCurve(a_values, np.array(grid), error, fold_sse, "k", best)
        a_best = float(a_values[best[0]])
    args = _whitened(data, jnp.asarray(a_best, dtype), intercept, jnp.ones(data.n_clusters, dtype))
    coefs = _best_subset_path(args, ks, mask, solver)
    ic = ic_support = None
    if k is not None:
        j = 0
    elif by_ic:
        j, values = _choose_k_by_ic(args, coefs, ks, k_criterion, n_penalized)
        ic = dict(zip(ks.tolist(), values.tolist()))
        ic_support = {int(k_): np.flatnonzero(_split_intercept(c, intercept)[0]) for k_, c in zip(ks, coefs)}
    else:
        j = cv.best[1]
    beta, b0 = _split_intercept(coefs[j], intercept)
    return _result_fields(beta, float(b0), np.flatnonzero(beta), a_best, None, int(ks[j]), "successful", 0,
                          float(args.scale), "best_subset", cv, ic, ic_support=ic_support,
                          ic_name=k_criterion if ic is not None else None)
