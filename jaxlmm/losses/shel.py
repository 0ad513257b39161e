"""The SHEL objective with the synthetic-variable coefficients γ profiled out (a reconstruction from the
abstract of the SHEL paper).

    (β̂, γ̂) = argmin (1/2N) ‖y − Xβ − Sγ‖² + λ Σ_k w_k |β_k|,   γ unpenalised,

with S = D S̄ constant within clusters (D the N × n cluster indicator, S̄ n × K). For fixed β
the γ-minimiser is γ̂(β) = (SᵀS)⁺Sᵀ(y − Xβ), so the objective in β alone is the Lasso on
(P X, P y), P = I − S(SᵀS)⁺Sᵀ. Because S is constant within clusters, SᵀS = S̄ᵀ diag(m) S̄
(K × K) and SᵀX = S̄ᵀ (cluster sums of X): O(N p + n K p), no N×N matrix.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

from .._covariance import cluster_sum
from .._data import LMMData
from .least_squares import LeastSquares, LeastSquaresData


def _pinv_psd(G: Array) -> Array:
    """Moore–Penrose inverse of a symmetric PSD matrix; eigenvalues below rank tolerance → 0,
    so duplicated or all-zero synthetic columns are harmless."""
    w, V = jnp.linalg.eigh(G)
    tol = jnp.max(w) * G.shape[0] * jnp.finfo(G.dtype).eps * 100.0
    return (V * jnp.where(w > tol, 1.0 / jnp.where(w > tol, w, 1.0), 0.0)) @ V.T


def profile_synthetic(data: LMMData, S_bar: Array | None, M: Array, cluster_weights: Array | None = None) -> Array:
    """P_w M: M (N × k or N, rows sorted by cluster) minus its projection on span(S), the
    projection fitted on the clusters with weight 1 (γ̂ = (SᵀWS)⁺SᵀWM) and applied to every row —
    so a held-out cluster's rows are y − Xβ − S_i γ̂ with γ̂ from the training clusters.

    `S_bar=None` means cluster dummies: P is within-cluster centring (segment means), applied
    to every cluster whatever its weight (each cluster's γ_i is its own mean; nothing is shared).
    """
    vector = M.ndim == 1
    M2 = M[:, None] if vector else M
    sums = cluster_sum(data, M2)
    sizes = data.cluster_sizes.astype(M2.dtype)
    if S_bar is None:
        out = M2 - (sums / sizes[:, None])[data.cluster]
    else:
        w = jnp.ones(data.n_clusters, M2.dtype) if cluster_weights is None else cluster_weights.astype(M2.dtype)
        gram = S_bar.T @ ((w * sizes)[:, None] * S_bar)
        gamma = _pinv_psd(gram) @ (S_bar.T @ (w[:, None] * sums))
        out = M2 - (S_bar @ gamma)[data.cluster]
    return out[:, 0] if vector else out


def shel_loss(data: LMMData, S_bar: Array | None, cluster_weights: Array | None = None
              ) -> tuple[LeastSquares, LeastSquaresData]:
    """Build the profiled SHEL datafit (1/2N_w) Σ_t w_t ((P_w y)_t − (P_w X)_t β)².

    Returns `(fn, args)` for `jaxlmm.solve` and the path/CV machinery (a `LeastSquares`, so
    `CoordinateDescent` applies). `S_bar`: the n × K cluster-level synthetic matrix (row i for
    cluster index i; include a column of ones for an intercept), or None for cluster dummies
    (the within estimator). `cluster_weights`: 0/1 per cluster; 0 removes a cluster from the
    fit (and from γ̂), keeping shapes fixed for cross-validation.
    """
    w = jnp.ones(data.n_clusters, data.X.dtype) if cluster_weights is None else cluster_weights.astype(data.X.dtype)
    rows = w[data.cluster]
    args = LeastSquaresData(
        X=profile_synthetic(data, S_bar, data.X, w),
        y=profile_synthetic(data, S_bar, data.y, w),
        weights=rows,
        scale=jnp.sum(rows),
    )
    return LeastSquares(), args
