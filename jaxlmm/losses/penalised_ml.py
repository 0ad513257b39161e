"""Negative log-likelihood of the Gaussian linear mixed model, evaluated through q×q identities
(Schelldorfer, Bühlmann & van de Geer 2011; METHODS §2)."""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
from jax import Array

from .._covariance import cholesky_factor, cluster_cross, cluster_sum, low_rank_update_apply
from .._data import LMMData


class MixedModelParams(eqx.Module):
    """Parameters of the mixed model: fixed effects `beta`, covariance parameters `theta`
    (Ψ = L(θ) L(θ)ᵀ) and `log_sigma` = log σ."""

    beta: Array
    theta: Array
    log_sigma: Array


class MixedModelData(eqx.Module):
    """Arguments of `MixedModelNLL`: the fixed-effects design `X` (N × p, rows sorted by
    cluster like `data`), `y`, the grouped `data` (for Z and the clusters) and ZᵢᵀZᵢ (n × q × q)."""

    X: Array
    y: Array
    data: LMMData
    ZtZ: Array


class ClusterStatistics(eqx.Module):
    """What the likelihood needs of a residual r = y − Xβ: ZᵢᵀZᵢ, Zᵢᵀrᵢ, ‖rᵢ‖², mᵢ. With β
    fixed the variance parameters are fitted from these alone, at O(n q³) per evaluation."""

    ZtZ: Array
    Ztr: Array
    rr: Array
    sizes: Array


def cluster_statistics(args: MixedModelData, beta: Array) -> ClusterStatistics:
    r = args.y - args.X @ beta
    data = args.data
    return ClusterStatistics(args.ZtZ, cluster_sum(data, data.Z * r[:, None]), cluster_sum(data, r * r),
                             data.cluster_sizes.astype(r.dtype))


def variance_nll(theta: Array, log_sigma: Array, stats: ClusterStatistics, structure: str) -> Array:
    """−log-likelihood from cluster statistics. With Ψ = L Lᵀ and M_i = I + Lᵀ Z_iᵀ Z_i L / σ²:

        log|V_i| = m_i log σ² + log|M_i|,
        r_iᵀ V_i⁻¹ r_i = (‖r_i‖² − u_iᵀ M_i⁻¹ u_i / σ²) / σ²,   u_i = Lᵀ Z_iᵀ r_i.

    M_i ⪰ I, so this holds (and its Cholesky exists) for a singular Ψ as well.
    """
    q = stats.ZtZ.shape[-1]
    L = cholesky_factor(theta, structure, q)
    sigma2 = jnp.exp(2.0 * log_sigma)
    M = jnp.eye(q, dtype=stats.ZtZ.dtype) + jnp.einsum("ab,iac,cd->ibd", L, stats.ZtZ, L) / sigma2
    chol = jnp.linalg.cholesky(M)
    u = stats.Ztr @ L
    v = jnp.linalg.solve(chol, u[..., None])[..., 0]  # ‖chol⁻¹ u‖² = uᵀ M⁻¹ u
    logdet = stats.sizes * jnp.log(sigma2) + 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)
    quad = (stats.rr - jnp.sum(v * v, axis=1) / sigma2) / sigma2
    n_obs = jnp.sum(stats.sizes)
    return 0.5 * n_obs * math.log(2.0 * math.pi) + 0.5 * jnp.sum(logdet + quad)


class MixedModelNLL(eqx.Module):
    """−log L(β, θ, σ) = ½ N log 2π + ½ Σ_i log|V_i| + ½ Σ_i r_iᵀ V_i⁻¹ r_i,  V_i = Z_i Ψ Z_iᵀ + σ² I.

    A callable `fn(params, args)` (params a `MixedModelParams`), differentiable in all
    parameters; O(N p + n q³) per evaluation, no m_i × m_i matrix.
    """

    structure: str = eqx.field(static=True)

    def __call__(self, params: MixedModelParams, args: MixedModelData) -> Array:
        return variance_nll(params.theta, params.log_sigma, cluster_statistics(args, params.beta), self.structure)


def mixed_model_nll(data: LMMData, X: Array | None = None, structure: str = "identity"):
    """Build the mixed-model negative log-likelihood.

    Returns `(fn, args)`: `fn(MixedModelParams, args)`. `X` defaults to `data.X` (rows sorted
    by cluster, as in `data`); pass a design with an intercept column to fit one.
    `structure`: Ψ = θ²I ("identity"), diag(θ²) ("diagonal"), L Lᵀ with L lower-triangular
    ("full"), or no random effects ("none").
    """
    X = data.X if X is None else X
    return MixedModelNLL(structure), MixedModelData(X, data.y, data, cluster_cross(data, data.Z, data.Z))


def whiten_by_covariance(args: MixedModelData, theta: Array, log_sigma: Array, structure: str):
    """(V^{-1/2} X, V^{-1/2} y): then ½‖V^{-1/2}(y − Xβ)‖² = ½ Σ r_iᵀ V_i⁻¹ r_i, so the β-step of
    the penalised likelihood is a Lasso on these data.

    With A_i = Lᵀ Z_iᵀ Z_i L = W_i Λ_i W_iᵀ and U_i = Z_i L W_i Λ_i^{-1/2} (orthonormal columns),
    V_i^{-1/2} = σ⁻¹ (I + U_i [(I + Λ_i/σ²)^{-1/2} − I] U_iᵀ); directions with Λ = 0 get 1.
    """
    data = args.data
    q = data.Z.shape[1]
    L = cholesky_factor(theta, structure, q)
    sigma2 = jnp.exp(2.0 * log_sigma)
    A = jnp.einsum("ab,iac,cd->ibd", L, args.ZtZ, L)
    lam, W = jnp.linalg.eigh(A)
    positive = lam > 1e3 * jnp.finfo(lam.dtype).eps * jnp.maximum(1.0, jnp.max(lam, axis=1, keepdims=True))
    scale = jnp.where(positive, 1.0 / jnp.sqrt(jnp.where(positive, lam, 1.0)), 0.0)
    basis = jnp.einsum("ta,ab,tbc->tc", data.Z, L, W[data.cluster]) * scale[data.cluster]
    coefficients = jnp.where(positive, (1.0 + lam / sigma2) ** -0.5 - 1.0, 0.0)
    sigma = jnp.sqrt(sigma2)
    X_w = low_rank_update_apply(data, basis, coefficients, args.X) / sigma
    y_w = low_rank_update_apply(data, basis, coefficients, args.y) / sigma
    return X_w, y_w
