"""`debias`: debiased inference after any fit, on the quasi-likelihood scale (the initial
estimator refitted by the method's scaled Lasso unless the fit is one)."""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..._data import LMMData
from ..._fit import single_fit
from ..._inference import InferenceTable, debiased_lasso
from ..._precision import in_float64
from ..._scale import data_scale, rescaled
from ..._solution import result_names
from .estimator import fit_quasi


@in_float64
def debias(
    fit, data: LMMData, coords=None, level: float = 0.95, solver=None, batch_size: int | None = None,
    initial: str = "scaled_lasso",
) -> InferenceTable:
    """Debiased estimates, cluster-robust standard errors, intervals and p-values for a
    quasi-likelihood fit (Li, Cai & Li 2022; the formulas are in `debiased_lasso`).

    The one-step correction and the cluster-robust sandwich (sum within cluster, then square)
    are valid for unbalanced clusters in any row order, and robust to a Σ_a that is not the true
    covariance — given an initial estimator at a λ of order σ sqrt(2 log p / n), which the theory
    assumes. The scaled Lasso (`lam="universal"`) is one; a cross-validated λ is smaller and
    overfits (noise columns in the support, residuals too small): with it, intervals for a true
    0.3 covered 78 % instead of 95 % (`benchmarks/study_coverage.py`). So by default
    (`initial="scaled_lasso"`) the initial estimator is the scaled-Lasso fit at the fit's a (its
    unpenalised columns kept), which is the fit itself when it was made with `lam="universal"`;
    `initial="fit"` uses the fit's own β̂ (a Lasso at another λ, best subset, lmmLasso, the EB
    ridge), with a warning when that is not a scaled-Lasso fit.

    **Arguments:**

    - `fit`: a fit from `fit_quasi` (its a is used for the whitening), `fit_lmmlasso` or
      `fit_eb_ridge` (a = tr Ψ̂ / (q σ̂²), so Σ_a ∝ V̂ for Ψ̂ ∝ I); one β̂, not a λ path. A SHEL
      fit is refused with a pointer to `fit_shel(inference="debiased")`.
    - `data`: the `LMMData` it was fitted on.
    - `coords`: column indices of X to infer on (default: all p).
    - `level`: confidence level of the intervals, in (0, 1).
    - `initial`: "scaled_lasso" (default) or "fit", as above; `extra["initial_fit"]` says which
      was used.
    - `solver`: solver of the node-wise Lassos; `batch_size`: node-wise Lassos vmapped at once
      (memory grows as batch_size × N). Default: 1 on CPU, where a sequential loop is
      fastest (a vmapped batch waits for its slowest Lasso), 128 on a GPU.

    Computed on y / s_y and X / s_x (powers of two) and reported on the caller's scale; the
    node-wise λ_j keep the scaled-Lasso rule on the caller's columns, so the table is equivariant
    to the units of y, not to those of X (standardise X's columns first if their units are
    arbitrary).

    Returns an `InferenceTable` (`extra["node_lam"]`: the λ_j used; `extra["initial"]`: β̂_j).
    """
    coef, intercept, a = single_fit(fit, data)
    if initial not in ("scaled_lasso", "fit"):
        raise ValueError(f"`initial` must be 'scaled_lasso' or 'fit'; got {initial!r}.")
    p = data.n_features
    if coords is None:
        coords_arr = np.arange(p)
    else:
        coords_arr = np.atleast_1d(np.asarray(coords))
        if coords_arr.ndim != 1 or coords_arr.size == 0 or not np.issubdtype(coords_arr.dtype, np.integer):
            raise ValueError(f"`coords` must be a non-empty 1-D sequence of column indices; got {coords!r}.")
        if np.any((coords_arr < 0) | (coords_arr >= p)):
            raise ValueError(f"`coords` must lie in [0, {p}); got {coords!r}.")
        if len(np.unique(coords_arr)) != len(coords_arr):
            raise ValueError(f"`coords` contains repeated indices: {coords!r}.")
    if not (isinstance(level, float | int) and 0 < level < 1):
        raise ValueError(f"`level` must be a number in (0, 1); got {level!r}.")
    if batch_size is None:
        batch_size = 1 if jax.default_backend() == "cpu" else 128
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; got {batch_size!r}.")
    # Every argument is checked before the (compiled) scaled-Lasso refit.
    scaled_already = getattr(fit, "lam_rule", None) == "universal"
    if initial == "scaled_lasso" and not scaled_already:
        coef, intercept, used = _scaled_lasso_initial(fit, data, a)
    else:
        used = "the fit's own estimate" + ("" if scaled_already else " (not at the scaled-Lasso λ: the intervals may "
                                                                      "undercover)")
        if not scaled_already:
            warnings.warn("debias: the initial estimator is not a scaled-Lasso fit; intervals can undercover "
                          "(initial='scaled_lasso' refits at the λ the theory needs).", RuntimeWarning, stacklevel=3)
    dtype = data.X.dtype
    # On y / s_y and X / s_x (exact powers of two): estimates scale by s_y/s_x; the node-wise
    # Lassos keep the caller's column scale (`column_scale`), their λ_j are in units of s_x².
    scale = data_scale(data)
    ratio = scale.y / scale.x
    out = debiased_lasso(
        rescaled(data, scale), jnp.asarray(a, dtype), jnp.asarray(coef / ratio, dtype),
        jnp.asarray(intercept / scale.y, dtype), jnp.asarray(coords_arr, jnp.int32), jnp.asarray(level, dtype),
        solver, min(batch_size, len(coords_arr)), jnp.asarray(scale.x, dtype),
    )
    out = eqx.tree_at(lambda o: (o.estimate, o.std_error, o.ci_low, o.ci_high, o.node_lam), out,
                      (out.estimate * ratio, out.std_error * ratio, out.ci_low * ratio, out.ci_high * ratio,
                       out.node_lam * scale.x**2))
    valid = np.asarray(out.converged)
    if not valid.all():
        reasons = ", ".join(result_names(out.result)[~valid])
        warnings.warn(
            f"debias: no inference for columns {coords_arr[~valid].tolist()} ({reasons}: a node-wise Lasso "
            "did not converge, the column "
            "has no variation left after whitening and removing the intercept, or another column is "
            "collinear with it: 'unidentifiable'); their rows are NaN and their `result` says why.",
            RuntimeWarning,
            stacklevel=2,
        )
    return InferenceTable(
        coords=coords_arr,
        estimate=np.asarray(out.estimate),
        std_error=np.asarray(out.std_error),
        ci_low=np.asarray(out.ci_low),
        ci_high=np.asarray(out.ci_high),
        p_value=np.asarray(out.p_value),
        level=float(level),
        method="debiased quasi-likelihood Lasso, cluster-robust",
        result=out.result,
        extra={"node_lam": np.asarray(out.node_lam), "initial": coef[coords_arr], "initial_fit": used},
    )


def _scaled_lasso_initial(fit, data: LMMData, a: float):
    """(β̂, β̂_0, description) of the scaled-Lasso quasi-likelihood fit at `a`, keeping the fit's
    unpenalised columns (`fit_quasi(lam="universal")`)."""
    unpenalized = getattr(fit, "unpenalized", None)
    if unpenalized is not None and np.asarray(unpenalized).dtype == bool:
        unpenalized = np.flatnonzero(unpenalized)
    refit = fit_quasi(data, a=a, lam="universal", unpenalized=None if unpenalized is None or not len(unpenalized)
                      else unpenalized, progress=False, variance=False)
    return refit.coef, refit.intercept, f"scaled-Lasso refit at a = {a:.4g} (λ = {refit.lam:.4g})"
