"""lmmLasso's variance start: the paper's profile-likelihood values of (θ, σ) at a given β, which
both the estimator's starts and the pure core use."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from ..._covariance import cluster_sum, covariance_start, proxy_covariance
from ...losses.mixed_model import MixedModelData


def profile_start(args: MixedModelData, beta: Array, structure: str) -> tuple[Array, Array]:
    """The paper's variance starting values: with r = y − Xβ and H_i(γ) = I + e^{2γ} Z_i Z_iᵀ,

        γ̂ = argmin_{γ ∈ [−10, 10]} N log(Σ_i r_iᵀ H_i⁻¹ r_i) + Σ_i log|H_i|   (σ² profiled out),

    σ̂² = Σ_i r_iᵀ H_i⁻¹ r_i / N, τ̂ = e^γ̂ σ̂, and Ψ = τ̂² I in the requested structure. The
    one-dimensional search is a grid of 401 values of γ, each H_i a `proxy_covariance`.
    """
    data = args.data
    r = args.y - args.X @ beta
    n_obs = r.shape[0]
    if structure == "none":  # no random effects: σ² is the ML residual variance
        return jnp.zeros(0, r.dtype), 0.5 * jnp.log(r @ r / n_obs)
    Utr, rr = cluster_sum(data, data.z_basis * r[:, None]), cluster_sum(data, r * r)
    a = jnp.exp(2.0 * jnp.linspace(-10.0, 10.0, 401, dtype=r.dtype))

    def profile(a):
        H = proxy_covariance(data, a)
        return H.projected_quadratic(Utr, rr), H.log_det()

    quad, logdet = jax.vmap(profile)(a)
    best = jnp.argmin(n_obs * jnp.log(quad) + logdet)
    sigma2 = quad[best] / n_obs
    tau = jnp.sqrt(a[best] * sigma2)
    return covariance_start(tau, structure, data.Z.shape[1]), 0.5 * jnp.log(sigma2)
