"""λ_max, λ grids and warm-started λ paths (one `lax.scan`, vmappable)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array, lax

from ._penalties import L1
from ._solution import RESULTS, ReportsResult
from ._solve import _solve_jit

# glmnet's path-stopping constants (`glmnet.control`): a path stops once the fit explains
# `DEVIANCE_RATIO_MAX` of the null loss, or once a step explains less than `DEVIANCE_CHANGE_MIN`
# of what is explained so far; never before `MIN_LAMBDAS` values are fitted.
DEVIANCE_RATIO_MAX = 0.999
DEVIANCE_CHANGE_MIN = 1e-5
MIN_LAMBDAS = 5
# A cross-validation fold's path stops once its held-out error has stayed more than
# `HELD_OUT_RISE` above its minimum for `HELD_OUT_PATIENCE` consecutive λ (it has turned up), or
# once the last `HELD_OUT_WINDOW` λ lowered that minimum by less than `HELD_OUT_GAIN` (it has
# flattened): the tail of small λ held 86-99 % of the coordinate-descent epochs of a default
# `fit_quasi` (ChickWeight with 500 noise columns; 60 × 3,000; benchmarks/study_quasi_defaults.py).
HELD_OUT_RISE = 0.2
HELD_OUT_PATIENCE = 10
HELD_OUT_GAIN = 1e-3
HELD_OUT_WINDOW = 20


def kkt_lambda(grad: Array, weights=None, unpenalized=None) -> Array:
    """max_{k ∉ U} |∂_k f| / w_k: the smallest λ at which a point whose penalised coefficients are
    0 satisfies the KKT conditions (w_k = inf and U contribute nothing)."""
    return L1(jnp.ones((), grad.dtype), weights, unpenalized).critical_lambda(grad)


def lambda_max(fn, args, solver, y0, weights=None, unpenalized=None, prepared=None) -> tuple[Array, Array]:
    """The smallest λ at which every penalised coefficient is 0, and the solution there.

    Solves the problem with λ = ∞ (penalised coefficients pinned at 0, unpenalised ones
    fitted), then λ_max = max_{k ∉ U} |∂_k f| / w_k by the KKT conditions. Works for any
    smooth loss the solver accepts. `prepared`: `solver.prepare(fn, args)`, when the caller
    already has it. (`solve_path(..., relative=True)` does the same as the first step of its
    scan, without a second compiled copy of the solver.)
    """
    pinned = L1(jnp.asarray(jnp.inf, y0.dtype), weights, unpenalized)
    start = _solve_jit(fn, pinned, solver, y0, args, False, prepared).value
    return kkt_lambda(jax.grad(fn)(start, args), weights, unpenalized), start


def lambda_grid(lam_max, n_lambda: int = 100, min_ratio: float = 1e-2) -> Array:
    """Geometric grid from λ_max down to min_ratio·λ_max (glmnet's default ratio is 0.01
    when p > N and 1e-4 otherwise)."""
    return lam_max * jnp.geomspace(1.0, min_ratio, n_lambda)


def default_min_ratio(n_obs: int, p: int) -> float:
    """glmnet's default λ_min / λ_max: 0.01 when p > N (the path would saturate), else 1e-4."""
    return 1e-2 if p > n_obs else 1e-4


class LassoPath(ReportsResult):
    """Solutions along a λ path: `lambdas` (n_λ), `coef` (n_λ × p), `result` codes,
    `objective`, `kkt_residual` and `num_steps` per λ; `fitted` (n_λ): False for the λ after an
    early stop, whose rows repeat the last fitted solution; `lambda_max` and `start` (the
    solution at λ_max, i.e. with the penalised coefficients at 0) when the grid was relative,
    else NaN and `y0`; `held_out` (n_λ): the held-out error per λ when a `score` was given
    (else 0)."""

    # On a least-squares objective fitted on y / s_y, X / s_x (`jaxlmm._fit.on_caller_scale`).
    UNITS = {"lambdas": "l1", "coef": "coef", "objective": "y2", "kkt_residual": "l1", "lambda_max": "l1",
             "start": "coef", "held_out": "y2"}

    lambdas: Array
    coef: Array
    result: RESULTS
    objective: Array
    kkt_residual: Array
    num_steps: Array
    fitted: Array
    lambda_max: Array
    start: Array
    held_out: Array


@eqx.filter_jit
def solve_path(fn, args, lambdas, solver, y0, weights=None, unpenalized=None, *, relative=False,
               early_stop: bool = False, penalty=None, score=None, stop_after=None, stop_on_score=True) -> LassoPath:
    """Solve the weighted Lasso (or `penalty`) at each λ of a decreasing grid, warm-starting each
    from the last.

    - `penalty`: any `AbstractPenalty` (its own λ is ignored: `penalty.with_lam(λ_k)` is
      solved at each step, and λ_max is `penalty.critical_lambda`); default
      `L1(·, weights, unpenalized)`.

    - `relative=False`: λ_k = `lambdas[k]`; the first solve starts from `y0` (for warm starts,
      the solution at λ_max).
    - `relative=True`: λ_k = λ_max · `lambdas[k]`. The scan's first step solves the λ = ∞
      problem from `y0` (penalised coefficients pinned at 0, the unpenalised ones fitted) and
      reads λ_max off its KKT conditions. It may be a traced boolean, so one compiled program
      serves a full-data path (relative) and cross-validation folds that follow its λ values.
    - `early_stop=True` (static): glmnet's rule for automatic grids — after at least 5 λ,
      stop once the fit explains 99.9% of the loss at λ_max, or once a step explains less than
      1e-5 of what is explained so far. The remaining λ are not solved (`fitted` False) and
      repeat the last solution: the tail of a grid where nothing changes any more is where
      coordinate descent is slowest (p > N near interpolation, or nearly collinear columns).
    - `score(coef) -> error` (a cross-validation fold's held-out error; static): recorded per λ
      in `held_out`, and with `early_stop` the path also stops once that error has turned up or
      flattened (`HELD_OUT_RISE`, `HELD_OUT_PATIENCE`, `HELD_OUT_GAIN`, `HELD_OUT_WINDOW`), where
      `stop_on_score` (traced bool) is True.
    - `stop_after` (traced int): the λ after this index are not solved (`fitted` False).

    One `lax.scan` with one copy of the solver (a skipped step calls it with `max_nonzero=-1`,
    which returns at once, rather than through a `lax.cond` that `vmap` would turn into both
    branches). Never raises (inspect `result`); `vmap`s over data, folds or starting points.
    """
    prepared = solver.prepare(fn, args)
    dtype = y0.dtype
    relative = jnp.asarray(relative)
    unbounded = jnp.asarray(jnp.inf, dtype)
    template = L1(jnp.ones((), dtype), weights, unpenalized) if penalty is None else penalty

    def fit(beta, lam, skip):
        at_lam = template.with_lam(jnp.asarray(lam, dtype))
        sol = _solve_jit(fn, at_lam, solver, beta, args, False, prepared, jnp.where(skip, -1, unbounded))
        return sol, sol.objective - at_lam(sol.value)

    # Step 0: λ = ∞ (only for a relative grid). It gives λ_max, the start and the null loss.
    pinned, null_loss = fit(y0, unbounded, ~relative)
    start = jnp.where(relative, pinned.value, y0)
    lam_max = jnp.where(relative, template.critical_lambda(jax.grad(fn)(start, args)), jnp.nan)
    null_loss = jnp.where(relative, null_loss, fn(y0, args))
    lams = jnp.where(relative, lam_max * lambdas, lambdas)

    last = jnp.asarray(lambdas.shape[0] if stop_after is None else stop_after)

    def step(carry, inputs):
        beta, explained, stopped, previous, best, rises, history = carry
        lam, index = inputs
        stopped = stopped | (index > last)
        sol, loss = fit(beta, lam, stopped)
        gain = null_loss - loss
        saturated = (loss <= (1.0 - DEVIANCE_RATIO_MAX) * null_loss) | (gain - explained < DEVIANCE_CHANGE_MIN * gain)
        fitted = ~stopped
        error = jnp.zeros((), dtype) if score is None else jnp.where(fitted, score(sol.value), jnp.nan)
        best = jnp.where(fitted, jnp.minimum(best, error), best)
        rises = jnp.where(fitted & (error > (1.0 + HELD_OUT_RISE) * best), rises + 1, jnp.where(fitted, 0, rises))
        # history[0]: the minimum `HELD_OUT_WINDOW` fitted λ ago (inf until then).
        history = jnp.where(fitted, jnp.concatenate([history[1:], best[None]]), history)
        if score is not None:
            flat = best >= (1.0 - HELD_OUT_GAIN) * history[0]
            saturated = saturated | (stop_on_score & ((rises >= HELD_OUT_PATIENCE) | flat))
        stop_now = early_stop & fitted & (index + 1 >= MIN_LAMBDAS) & saturated
        # A skipped λ repeats the last fitted solution and its status (the solver did not run).
        new = (sol.result, sol.objective, sol.kkt_residual)
        result, objective, kkt = (RESULTS.where(fitted, new[0], previous[0]),
                                  *(jnp.where(fitted, a, b) for a, b in zip(new[1:], previous[1:])))
        out = (sol.value, result, objective, kkt, jnp.where(fitted, sol.stats["num_steps"], 0), fitted, error)
        carry = (sol.value, jnp.where(fitted, gain, explained), stopped | stop_now, (result, objective, kkt), best,
                 rises, history)
        return carry, out

    nothing = (pinned.result, pinned.objective, pinned.kkt_residual)
    inf = jnp.asarray(jnp.inf, dtype)
    init = (start, jnp.zeros((), dtype), jnp.asarray(False), nothing, inf, 0, jnp.full(HELD_OUT_WINDOW, inf))
    _, (coef, result, objective, kkt, steps, fitted, held_out) = lax.scan(step, init,
                                                                          (lams, jnp.arange(lams.shape[0])))
    return LassoPath(lams, coef, result, objective, kkt, steps, fitted, lam_max, start, held_out)
