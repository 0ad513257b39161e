"""Random-effects covariance algebra on cluster blocks: q×q per-cluster Gram matrices, Ψ bases,
the PSD projection and BLUPs. Everything is O(N q²); no m_i×m_i (let alone N×N) matrix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ._data import LMMData


def cluster_sum(data: LMMData, rows: Array) -> Array:
    """Σ_{t ∈ cluster i} rows_t for every cluster (rows sorted by cluster; leading axis N)."""
    return jax.ops.segment_sum(rows, data.cluster, num_segments=data.n_clusters, indices_are_sorted=True)


def cluster_cross(data: LMMData, A: Array, B: Array) -> Array:
    """A_iᵀ B_i per cluster (n × k_A × k_B) for row-wise matrices A (N × k_A) and B (N × k_B)."""
    return cluster_sum(data, A[:, :, None] * B[:, None, :])


def low_rank_update_apply(data: LMMData, basis: Array, coefficients: Array, M: Array) -> Array:
    """(I + U_i diag(c_i) U_iᵀ) M_i for every cluster, with U stored row by row (N × q) and c
    per cluster (n × q); M is N × k or N, rows sorted by cluster. O(N q k), no m_i × m_i matrix:
    looping over the q directions keeps memory at O(N k).
    """
    vector = M.ndim == 1
    M2 = M[:, None] if vector else M
    out = M2
    for k in range(basis.shape[1]):
        u = basis[:, k]
        projected = cluster_sum(data, u[:, None] * M2)
        out = out + (u * coefficients[data.cluster, k])[:, None] * projected[data.cluster]
    return out[:, 0] if vector else out


def covariance_basis(structure, q: int) -> np.ndarray:
    """The basis G_1..G_d (d × q × q) of a linear covariance model Ψ_η = Σ_j η_j G_j.

    `"identity"`: Ψ = η I (d = 1). `"diagonal"`: Ψ = diag(η) (d = q). `"full"`: every symmetric
    Ψ (d = q(q+1)/2: E_jj and E_jk + E_kj). A sequence of q×q symmetric, linearly independent
    matrices is used as given (for example a Toeplitz band structure).
    """
    if isinstance(structure, str):
        if structure == "identity":
            return np.eye(q)[None]
        if structure == "diagonal":
            return np.stack([np.diag(np.eye(q)[j]) for j in range(q)])
        if structure == "full":
            basis = []
            for j in range(q):
                for k in range(j, q):
                    G = np.zeros((q, q))
                    G[j, k] = G[k, j] = 1.0
                    basis.append(G)
            return np.stack(basis)
        raise ValueError(
            f"`structure` must be 'identity', 'diagonal', 'full' or a list of q×q matrices; got {structure!r}."
        )
    basis = np.asarray(structure, dtype=float)
    if basis.ndim == 2:
        basis = basis[None]
    if basis.ndim != 3 or basis.shape[1:] != (q, q) or basis.shape[0] == 0:
        raise ValueError(f"`structure` matrices must each be q×q = {q}×{q}; got shape {basis.shape}.")
    if not np.all(np.isfinite(basis)):
        raise ValueError("`structure` matrices contain NaN or inf.")
    if not np.allclose(basis, np.swapaxes(basis, 1, 2)):
        raise ValueError("`structure` matrices must be symmetric (Ψ is a covariance matrix).")
    if np.linalg.matrix_rank(basis.reshape(basis.shape[0], -1)) < basis.shape[0]:
        raise ValueError("`structure` matrices are linearly dependent: η would not be identifiable.")
    return basis


def project_psd(M: Array) -> Array:
    """The nearest (Frobenius) positive semi-definite matrix: negative eigenvalues set to 0."""
    M = 0.5 * (M + M.T)
    w, V = jnp.linalg.eigh(M)
    return (V * jnp.maximum(w, 0.0)) @ V.T


def blup(data: LMMData, psi: Array, sigma2, residual: Array) -> Array:
    """Best linear unbiased predictors b̂_i = Ψ Z_iᵀ V_i^{-1} r_i, V_i = Z_i Ψ Z_iᵀ + σ² I.

    Computed as Ψ (σ² I_q + Z_iᵀ Z_i Ψ)^{-1} Z_iᵀ r_i (the push-through identity
    Z_iᵀ V_i^{-1} = (σ² I + Z_iᵀ Z_i Ψ)^{-1} Z_iᵀ): a q×q solve per cluster that stays valid
    for a singular Ψ (a variance component at exactly 0). `residual` = y − Xβ̂ is sorted by
    cluster; returns n × q, row i for cluster index i (`data.labels[i]`).
    """
    ZtZ = cluster_cross(data, data.Z, data.Z)
    Ztr = cluster_sum(data, data.Z * residual[:, None])
    q = data.Z.shape[1]
    system = sigma2 * jnp.eye(q, dtype=ZtZ.dtype) + ZtZ @ psi
    return jnp.linalg.solve(system, Ztr[..., None])[..., 0] @ psi.T


# ---- parameterisations of Ψ for likelihood-based fits: Ψ = L Lᵀ with L built from θ ----------

COVARIANCE_STRUCTURES = ("none", "identity", "diagonal", "full")


def n_covariance_parameters(structure: str, q: int) -> int:
    """dim θ: 0 ("none": no random effects), 1 (Ψ = θ² I), q (diag(θ²)), q(q+1)/2 (Cholesky)."""
    return {"none": 0, "identity": 1, "diagonal": q, "full": q * (q + 1) // 2}[structure]


def cholesky_factor(theta: Array, structure: str, q: int) -> Array:
    """L(θ) with Ψ = L Lᵀ. Every θ gives a PSD Ψ, and θ_k = 0 is a variance component at 0."""
    if structure == "none":
        return jnp.zeros((q, q), theta.dtype)
    if structure == "identity":
        return theta[0] * jnp.eye(q, dtype=theta.dtype)
    if structure == "diagonal":
        return jnp.diag(theta)
    rows, cols = np.tril_indices(q)
    return jnp.zeros((q, q), theta.dtype).at[rows, cols].set(theta)


def diagonal_parameters(structure: str, q: int) -> np.ndarray:
    """Positions in θ of the diagonal entries of L (those are thresholded to 0 when tiny)."""
    if structure == "none":
        return np.zeros(0, int)
    if structure == "identity":
        return np.zeros(1, int)
    if structure == "diagonal":
        return np.arange(q)
    rows, cols = np.tril_indices(q)
    return np.flatnonzero(rows == cols)


def covariance_start(tau: Array, structure: str, q: int) -> Array:
    """θ for Ψ = τ² I in each structure (the paper's starting value)."""
    theta = jnp.zeros(n_covariance_parameters(structure, q), jnp.result_type(tau))
    return theta.at[diagonal_parameters(structure, q)].set(tau)
