"""Inference for fixed effects: the debiased quasi-likelihood Lasso with cluster-robust standard
errors, normal-theory intervals and p-values, and the table every inference method returns."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.scipy.special import ndtr, ndtri

from ._covariance import cluster_sum
from ._data import LMMData
from ._penalties import intercept_mask
from ._select import scaled_lasso
from ._solution import RESULTS, ReportsResult, result_index, result_names, results_from_index
from .losses import LeastSquaresData, quasi_likelihood
from .solvers import CoordinateDescent


@dataclasses.dataclass(frozen=True)
class InferenceTable:
    """One row per coefficient: `estimate, std_error, ci_low, ci_high, p_value`.

    - `coords`: the column indices of X the rows refer to.
    - `level`: the confidence level of [ci_low, ci_high]; `p_value` is two-sided for H0: β_j = 0.
    - `method`: how the table was made (e.g. "debiased lasso, cluster-robust").
    - `result`: per row a `RESULTS` code (`successful`; a node-wise Lasso's own failure;
      `unidentifiable` for a column collinear with others or with no variation left;
      `nonfinite`); rows that did not succeed hold NaN. `valid` is `result == successful`.
    - `extra`: method-specific per-row arrays (e.g. the node-wise λ_j).
    """

    coords: np.ndarray
    estimate: np.ndarray
    std_error: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    p_value: np.ndarray
    level: float
    method: str
    result: RESULTS
    extra: dict = dataclasses.field(default_factory=dict)

    COLUMNS = ("estimate", "std_error", "ci_low", "ci_high", "p_value")

    def to_pandas(self):
        """The table as a pandas DataFrame indexed by `coords`."""
        import pandas as pd

        frame = pd.DataFrame({c: getattr(self, c) for c in self.COLUMNS}, index=pd.Index(self.coords, name="coef"))
        frame["result"] = result_names(self.result)
        return frame

    @property
    def valid(self) -> np.ndarray:
        """Per row, `result == successful`."""
        return np.asarray(result_index(self.result)) == int(result_index(RESULTS.successful))

    def __len__(self) -> int:
        return len(self.coords)

    def rescaled(self, factor: float, **extra_factors: float) -> InferenceTable:
        """The table for coefficients multiplied by `factor` (p-values unchanged); `extra`
        entries named in `extra_factors` are multiplied by theirs."""
        extra = {k: v * extra_factors.get(k, 1.0) for k, v in self.extra.items()}
        return dataclasses.replace(self, estimate=self.estimate * factor, std_error=self.std_error * factor,
                                   ci_low=self.ci_low * factor, ci_high=self.ci_high * factor, extra=extra)

    def __str__(self) -> str:
        head = f"{'coef':>6} " + " ".join(f"{c:>10}" for c in self.COLUMNS)
        lines = [f"{self.method}, {100 * self.level:g}% intervals", head]
        valid, names = self.valid, result_names(self.result)
        for i, j in enumerate(self.coords):
            cells = " ".join(f"{getattr(self, c)[i]:>10.4g}" for c in self.COLUMNS)
            lines.append(f"{j:>6} {cells}" + ("" if valid[i] else f"  ({names[i]})"))
        return "\n".join(lines)


def normal_intervals(estimate: Array, std_error: Array, level) -> tuple[Array, Array, Array]:
    """Normal-theory interval estimate ± z_{(1+level)/2}·se and the two-sided p-value
    2Φ(−|estimate/se|) for H0: β = 0."""
    half_width = ndtri(0.5 + 0.5 * level) * std_error
    p_value = 2.0 * ndtr(-jnp.abs(estimate / std_error))
    return estimate - half_width, estimate + half_width, p_value


def cluster_robust_std_error(data: LMMData, scores: Array, denominator: Array) -> Array:
    """sqrt(Σ_i (Σ_{t ∈ cluster i} s_t)²) / |denominator|: the sandwich that sums the scores
    within each cluster before squaring, so within-cluster correlation of any form is allowed
    (rows sorted by cluster)."""
    per_cluster = cluster_sum(data, scores)
    return jnp.sqrt(jnp.sum(per_cluster**2, axis=0)) / jnp.abs(denominator)


def row_results(ok, failure: str = "unidentifiable") -> RESULTS:
    """Per row `successful` where `ok`, else the code named `failure` (host-side tables)."""
    ok = np.asarray(ok, bool)
    codes = np.where(ok, int(result_index(RESULTS.successful)), int(result_index(getattr(RESULTS, failure))))
    return results_from_index(codes)


class DebiasedLasso(ReportsResult):
    """In-JIT result of `debiased_lasso`: per requested coordinate the debiased `estimate`,
    `std_error`, `ci_low`, `ci_high`, `p_value`, the node-wise `node_lam` λ_j and `result`."""

    estimate: Array
    std_error: Array
    ci_low: Array
    ci_high: Array
    p_value: Array
    node_lam: Array
    result: RESULTS


@eqx.filter_jit
def debiased_lasso(
    data: LMMData, a, coef: Array, intercept, coords: Array, level=0.95, solver=None, batch_size: int = 64,
    column_scale=1.0,
) -> DebiasedLasso:
    """Debiased quasi-likelihood Lasso (Li, Cai & Li 2022) for the columns `coords` of X.

    On the whitened design X_a (with its whitened intercept column, unpenalised) and residual
    r̂_a = y_a − X_a β̂, for each j:

        κ̂_j = node-wise Lasso of X_{a,j} on X_{a,−j}, λ_j by the scaled-Lasso rule
               λ_j = σ̂_j sqrt(2 log p / tr(Σ_a^{-1}));
        ŵ_j = X_{a,j} − X_{a,−j} κ̂_j;
        β̂_j^db = β̂_j + ŵ_jᵀ r̂_a / ŵ_jᵀ X_{a,j};
        se_j = sqrt(Σ_i (Σ_{t ∈ i} ŵ_{j,t} r̂_{a,t})²) / ŵ_jᵀ X_{a,j}   (cluster-robust).

    A row is NaN with a `result` other than `successful` when its node-wise Lasso did not converge
    (the solver's code), ŵ_jᵀX_{a,j} vanishes or another column has squared correlation
    ≥ 1 − 1e-8 with X_{a,j} (intercept projected out; `unidentifiable`: a finite se would be
    meaningless), or the estimate is not finite (`nonfinite`).

    The node-wise Lassos share the design, so they run `vmap`ped in chunks of `batch_size`
    (`lax.map`). Pure and jit/vmap-able (a sweep over stacked data sets can call it); `debias`
    is the validated entry point for a `QuasiFit`.

    **Arguments:** `data`; `a` ≥ 0; `coef` β̂ (length p) and `intercept` β̂_0 of the fit;
    `coords` the column indices (int array); `level` of the intervals; `solver` for the
    node-wise Lassos (default `CoordinateDescent(rtol=1e-7)`); `batch_size` Lassos per chunk;
    `column_scale` c: the node-wise λ_j are those of the design c·X (penalty weights 1/c), so a
    caller that rescaled X by 1/c internally gets the λ_j of its own X (the scaled-Lasso rule
    depends on the columns' scale).
    """
    solver = CoordinateDescent(rtol=1e-7) if solver is None else solver
    fn, args = quasi_likelihood(data, a, intercept=True)
    X_a = args.X
    p = data.n_features
    dtype = X_a.dtype
    residual = args.y - X_a[:, 0] * intercept - X_a[:, 1:] @ coef
    unpenalized = intercept_mask(p + 1)
    # The solver's data-only work (for CD: Xᵀ and the coordinate Hessians) is shared by all j.
    prepared = solver.prepare(fn, args)
    # Columns with the intercept projected out: a near-twin of column j (squared correlation
    # within `collinear` of 1) makes β_j unidentifiable, and the node-wise Lasso would hide it.
    x0 = X_a[:, 0]
    centred = X_a[:, 1:] - jnp.outer(x0, (x0 @ X_a[:, 1:]) / (x0 @ x0))
    norms = jnp.linalg.norm(centred, axis=0)
    collinear = jnp.maximum(1e-8, 1e3 * jnp.finfo(dtype).eps)

    def node(j):
        column = j + 1  # column 0 is the intercept
        x_j = X_a[:, column]
        drop_j = jnp.full(p + 1, 1.0 / column_scale, dtype).at[column].set(jnp.inf)  # w = inf keeps κ_j at 0
        node_args = LeastSquaresData(X_a, x_j, args.weights, args.scale)
        fit = scaled_lasso(
            fn, node_args, solver, jnp.zeros(p + 1, dtype), args.scale, p, drop_j, unpenalized, prepared=prepared
        )
        w = x_j - X_a @ fit.coef
        denominator = w @ x_j
        estimate = coef[j] + w @ residual / denominator
        std_error = cluster_robust_std_error(data, w * residual, denominator)
        corr = (centred[:, j] @ centred) / jnp.maximum(norms[j] * norms, jnp.finfo(dtype).tiny)
        twin = jnp.max(jnp.where(jnp.arange(p) == j, 0.0, corr**2)) >= 1.0 - collinear
        identifiable = (denominator > 1e3 * jnp.finfo(dtype).eps * (x_j @ x_j)) & ~twin
        finite = jnp.isfinite(estimate) & jnp.isfinite(std_error)
        result = RESULTS.where(finite, RESULTS.successful, RESULTS.nonfinite)
        result = RESULTS.where(identifiable, result, RESULTS.unidentifiable)
        return estimate, std_error, fit.lam, RESULTS.where(fit.converged, result, fit.result)

    estimate, std_error, node_lam, result = jax.lax.map(node, coords, batch_size=batch_size)
    valid = result == RESULTS.successful
    estimate = jnp.where(valid, estimate, jnp.nan)
    std_error = jnp.where(valid, std_error, jnp.nan)
    ci_low, ci_high, p_value = normal_intervals(estimate, std_error, level)
    return DebiasedLasso(estimate, std_error, ci_low, ci_high, p_value, node_lam, result)
