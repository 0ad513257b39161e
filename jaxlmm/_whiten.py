"""Σ_a whitening: Σ_a = blockdiag(a Z_i Z_iᵀ + I), the `ClusterCovariance` with σ² = 1 and Ψ = aI,
whose eigenpairs come from each cluster's thin SVD of Z_i."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ._covariance import proxy_covariance
from ._data import LMMData


def inverse_sqrt_apply(data: LMMData, a, M: Array) -> Array:
    """Σ_a^{-1/2} M (the whitening), rows sorted by cluster: O(N q k), no m_i × m_i matrix."""
    return proxy_covariance(data, a).inverse_sqrt_apply(data, M)


def inverse_apply(data: LMMData, a, M: Array) -> Array:
    """Σ_a^{-1} M (the weights of the variance-component moment fit), rows sorted by cluster."""
    return proxy_covariance(data, a).inverse_apply(data, M)


def cluster_effective_sizes(data: LMMData, a) -> Array:
    """tr(Σ_a^{i,-1}) per cluster: m_i − Σ_k a s_ik² / (1 + a s_ik²)."""
    return proxy_covariance(data, a).trace_inverse()


def effective_sample_size(data: LMMData, a, cluster_weights: Array | None = None) -> Array:
    """tr(Σ_a^{-1}) = Σ_i [m_i − r_i + Σ_k 1/(1 + a s_ik²)], optionally weighted per cluster.

    It equals N at a = 0 and decreases to Σ_i (m_i − r_i) as a → ∞ (Li, Cai & Li's effective
    sample size). `cluster_weights` (length n, 0/1 for cross-validation folds) restricts the
    sum to the clusters in use.
    """
    sizes = cluster_effective_sizes(data, a)
    return jnp.sum(sizes if cluster_weights is None else cluster_weights * sizes)


class Whitened(eqx.Module):
    """Σ_a-whitened data in the caller's row order."""

    X: Array
    y: Array
    effective_sample_size: Array


def whiten(data: LMMData, a) -> Whitened:
    """Whiten by the proxy covariance Σ_a = blockdiag(a Z_i Z_iᵀ + I_{m_i}).

    Returns `Whitened(X, y, effective_sample_size)` with X_a = Σ_a^{-1/2} X and
    y_a = Σ_a^{-1/2} y (the symmetric inverse square root) in the caller's row order, and
    tr(Σ_a^{-1}). Computed per cluster from the thin SVD of Z_i, O(N q p) time and O(N p)
    memory; never an N×N matrix. Differentiable in `a`, and `jit`/`vmap`-able over `a`.

    **Arguments:**

    - `data`: an `LMMData`.
    - `a`: the proxy variance ratio, a ≥ 0 (a = 0 ignores the clustering; a → ∞ projects out
      the random-effect directions of each cluster).
    """
    if not isinstance(a, jax.core.Tracer):
        a_value = np.asarray(a)
        if a_value.ndim != 0 or not np.isfinite(a_value) or a_value < 0:
            raise ValueError(f"`a` must be a finite scalar ≥ 0; got {a!r}.")
    # An array (not a Python float) so that a new a reuses the compiled program.
    return _whiten(data, jnp.asarray(a, data.X.dtype))


@eqx.filter_jit
def _whiten(data: LMMData, a) -> Whitened:
    X_a = inverse_sqrt_apply(data, a, data.X)
    y_a = inverse_sqrt_apply(data, a, data.y)
    return Whitened(
        X=data.to_caller_order(X_a),
        y=data.to_caller_order(y_a),
        effective_sample_size=effective_sample_size(data, a),
    )
