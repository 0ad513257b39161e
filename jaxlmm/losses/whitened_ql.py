"""The Σ_a-whitened quasi-likelihood of Li, Cai & Li (2022)."""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

from .._data import LMMData
from .._whiten import effective_sample_size, inverse_sqrt_apply
from .least_squares import LeastSquares, LeastSquaresData


def quasi_likelihood(
    data: LMMData,
    a,
    cluster_weights: Array | None = None,
    intercept: bool = False,
) -> tuple[LeastSquares, LeastSquaresData]:
    """Build L_a(β) = ‖y_a − X_a β‖² / (2 tr(Σ_a^{-1})).

    Returns `(fn, args)` for `jaxlmm.solve`. Rows stay sorted by cluster (the loss does not
    care about row order). `a` is traced, so building the loss for another `a` inside `jit`
    or `vmap` does not recompile.

    **Arguments:**

    - `data`: an `LMMData`.
    - `a`: the proxy variance ratio a ≥ 0 of Σ_a = blockdiag(a Z_i Z_iᵀ + I).
    - `cluster_weights`: optional 0/1 weight per cluster (length n). Whitening is per
      cluster, so weight 0 removes a cluster exactly, from the residuals and from
      tr(Σ_a^{-1}); this is how cluster cross-validation folds keep one compiled shape.
    - `intercept`: if True, column 0 of the design is the whitened column of ones.
    """
    X = data.with_intercept() if intercept else data.X
    weights = (
        jnp.ones(data.n_obs, X.dtype) if cluster_weights is None else cluster_weights[data.cluster]
    )
    args = LeastSquaresData(
        X=inverse_sqrt_apply(data, a, X),
        y=inverse_sqrt_apply(data, a, data.y),
        weights=weights.astype(X.dtype),
        scale=effective_sample_size(data, a, cluster_weights),
    )
    return LeastSquares(), args
