"""Random-effects covariance algebra on cluster blocks: q×q per-cluster Gram matrices, Ψ bases,
the PSD projection, the per-cluster covariance operator V_i = σ²I + Z_iΨZ_iᵀ and BLUPs.
Everything is O(N q²); no m_i×m_i (let alone N×N) matrix."""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
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

    A q×q solve per cluster (`ClusterCovariance.posterior_mean`) that stays valid for a
    singular Ψ (a variance component at exactly 0). `residual` = y − Xβ̂ is sorted by cluster;
    returns n × q, row i for cluster index i (`data.labels[i]`).
    """
    Ztr = cluster_sum(data, data.Z * residual[:, None])
    return cluster_covariance(data, psi, sigma2).posterior_mean(Ztr)


# ---- small per-cluster factorisations ---------------------------------------------------------

# For q ≤ SMALL_Q and at least WRITTEN_OUT_FROM clusters, the per-cluster Cholesky factors and
# triangular solves are written out entry by entry as array operations over the clusters instead
# of batched LAPACK calls: fused elementwise code runs faster than a loop of tiny LAPACK calls
# there. Below the threshold LAPACK stays: its compact derivative rules compile in about half the
# time under the nested derivatives of the EB evidence (q = 4: 8 s against 15 s), and
# compilation is what a first fit on a small data set waits for.
SMALL_Q = 4
WRITTEN_OUT_FROM = 4096


def _written_out(M: Array, written_out: bool | None) -> bool:
    if written_out is not None:
        return written_out
    return M.shape[-1] <= SMALL_Q and math.prod(M.shape[:-2]) >= WRITTEN_OUT_FROM


def small_cholesky(M: Array, written_out: bool | None = None) -> Array:
    """Lower Cholesky factors of a batch (..., q, q) of SPD matrices; NaN where one is not PD,
    as `jnp.linalg.cholesky`. Written out for q ≤ `SMALL_Q` over ≥ `WRITTEN_OUT_FROM` matrices
    (or as `written_out` says), LAPACK otherwise."""
    if not _written_out(M, written_out):
        return jnp.linalg.cholesky(M)
    q = M.shape[-1]
    L = {}
    for j in range(q):
        L[j, j] = jnp.sqrt(M[..., j, j] - sum(L[j, k] ** 2 for k in range(j)))
        for i in range(j + 1, q):
            L[i, j] = (M[..., i, j] - sum(L[i, k] * L[j, k] for k in range(j))) / L[j, j]
    zero = jnp.zeros_like(M[..., 0, 0])
    return jnp.stack([jnp.stack([L.get((i, j), zero) for j in range(q)], -1) for i in range(q)], -2)


def small_triangular_solve(C: Array, B: Array, transpose: bool = False, written_out: bool | None = None) -> Array:
    """C⁻¹B (or C⁻ᵀB) for a batch of lower-triangular C (..., q, q) and B (..., q, k): by
    substitution written out as `small_cholesky` decides, LAPACK otherwise."""
    if not _written_out(C, written_out):
        return jax.scipy.linalg.solve_triangular(C, B, lower=True, trans=1 if transpose else 0)
    q = C.shape[-1]
    X = {}
    rows = range(q - 1, -1, -1) if transpose else range(q)
    for i in rows:
        others = range(i + 1, q) if transpose else range(i)
        acc = B[..., i, :]
        for k in others:
            coef = C[..., k, i] if transpose else C[..., i, k]
            acc = acc - coef[..., None] * X[k]
        X[i] = acc / C[..., i, i][..., None]
    return jnp.stack([X[i] for i in range(q)], -2)


# ---- the per-cluster covariance V_i = σ² I + Z_i Ψ Z_iᵀ ----------------------------------------


class ClusterCovariance(eqx.Module):
    """V_i = σ² I_{m_i} + Z_i Ψ Z_iᵀ for every cluster i, applied through q×q algebra only: the
    one place where whitening, the ML likelihood, BLUPs and the EB posterior and evidence get
    their per-cluster algebra.

    With T_i = I_q + Z_iᵀZ_i Ψ / σ² (nonsingular for every PSD Ψ, even a singular one) and the
    push-through identity Z_iᵀ V_i⁻¹ = T_i⁻¹ Z_iᵀ / σ²:

        log|V_i| = m_i log σ² + log|T_i|,
        V_i⁻¹ M_i = (M_i − Z_i Ψ T_i⁻¹ Z_iᵀ M_i / σ²) / σ²,
        E[b_i | r_i] = Ψ T_i⁻¹ Z_iᵀ r_i / σ²   (the BLUP),
        Cov[b_i | r_i] = Ψ − Ψ T_i⁻¹ Z_iᵀZ_i Ψ / σ².

    Everything above is differentiable in Ψ and σ²: LU solves of T_i when only Ψ is known (valid
    for a singular Ψ), Cholesky solves of M_i = I + Lᵀ Z_iᵀZ_i L / σ² when a factor Ψ = L Lᵀ is
    given. The symmetric inverse square root (whitening) needs the eigenpairs of A_i =
    Lᵀ Z_iᵀZ_i L: `eigen` when the caller knows them (Σ_a = I + a Z_i Z_iᵀ from each cluster's
    SVD of Z_i), else from `factor` by a q×q `eigh` per cluster.

    When Ψ = τ² I the eigenpairs are known for every τ (`isotropic_covariance`: basis U_i of
    Z_i's thin SVD, eigenvalues τ² s_ik²), and log|V_i| and the quadratic forms are elementwise
    in them: no per-cluster factorisation, and small, fast derivatives.

    **Fields:** `ZtZ` (n × q × q; None when only the eigen routes are used), `sizes` (n: m_i),
    `psi` (q × q), `sigma2`, optionally `factor` (L) and `eigen` (basis N × q stored row by row,
    eigenvalues n × q; the basis may be None where nothing is whitened), `written_out`: how the
    per-cluster Cholesky factors and solves are computed (`small_cholesky`; None: by size).
    """

    ZtZ: Array | None
    sizes: Array
    psi: Array
    sigma2: Array
    factor: Array | None = None
    eigen: tuple | None = None
    written_out: bool | None = eqx.field(static=True, default=None)

    def _t(self) -> Array:
        q = self.psi.shape[-1]
        return jnp.eye(q, dtype=self.psi.dtype) + self.ZtZ @ self.psi / self.sigma2

    def _cholesky(self) -> Array:
        """Cholesky factors of the symmetric M_i = I + Lᵀ Z_iᵀZ_i L / σ² (|M_i| = |T_i|, M_i ⪰ I)."""
        q = self.psi.shape[-1]
        L = self.factor
        A = jnp.einsum("ab,iac,cd->ibd", L, self.ZtZ, L)
        return small_cholesky(jnp.eye(q, dtype=L.dtype) + A / self.sigma2, self.written_out)

    def _push(self, ZtM: Array) -> Array:
        """Ψ T_i⁻¹ Z_iᵀ M_i / σ² for Z_iᵀ M_i given per cluster (n × q or n × q × k). With a factor
        this is L M_i⁻¹ Lᵀ Z_iᵀ M_i / σ² by two triangular solves (cheaper to differentiate twice
        than an LU, which is what the Laplace and Newton Hessians do)."""
        vector = ZtM.ndim == 2
        ZtM = ZtM[..., None] if vector else ZtM
        if self.factor is not None:
            L, chol = self.factor, self._cholesky()
            half = small_triangular_solve(chol, jnp.einsum("ab,iak->ibk", L, ZtM), written_out=self.written_out)
            solved = small_triangular_solve(chol, half, transpose=True, written_out=self.written_out)
            out = jnp.einsum("ab,ibk->iak", L, solved) / self.sigma2
        else:
            out = jnp.einsum("ab,ibk->iak", self.psi, jnp.linalg.solve(self._t(), ZtM)) / self.sigma2
        return out[..., 0] if vector else out

    def log_det(self) -> Array:
        """Σ_i log|V_i|; NaN when Ψ is not PSD (then |T_i| ≤ 0 can happen and V is no covariance)."""
        fixed = jnp.sum(self.sizes) * jnp.log(self.sigma2)
        if self.factor is None and self.eigen is not None:
            return fixed + jnp.sum(jnp.log1p(self.eigen[1] / self.sigma2))
        if self.factor is not None:
            return fixed + 2.0 * jnp.sum(jnp.log(jnp.diagonal(self._cholesky(), axis1=1, axis2=2)))
        sign, logdet = jnp.linalg.slogdet(self._t())
        return jnp.where(jnp.all(sign > 0), fixed + jnp.sum(logdet), jnp.nan)

    def quadratic(self, Ztr: Array, rr: Array) -> Array:
        """Σ_i r_iᵀ V_i⁻¹ r_i from the cluster statistics Z_iᵀ r_i (n × q) and ‖r_i‖² (n)."""
        return jnp.sum(rr - jnp.sum(Ztr * self._push(Ztr), axis=1)) / self.sigma2

    def projected_quadratic(self, Btr: Array, rr: Array) -> Array:
        """Σ_i r_iᵀ V_i⁻¹ r_i = Σ_i (‖r_i‖² − Σ_k λ_ik/(σ² + λ_ik) (b_ikᵀ r_i)²)/σ² from the
        projections of each residual on the eigenbasis (n × q) and ‖r_i‖² (n)."""
        lam = self.eigen[1]
        return jnp.sum(rr - jnp.sum(lam / (self.sigma2 + lam) * Btr**2, axis=1)) / self.sigma2

    def posterior_mean(self, Ztr: Array) -> Array:
        """E[b_i | r_i] = Ψ Z_iᵀ V_i⁻¹ r_i (the BLUPs, n × q) from Z_iᵀ r_i."""
        return self._push(Ztr)

    def posterior_covariance(self) -> Array:
        """Cov[b_i | r_i] = Ψ − Ψ Z_iᵀ V_i⁻¹ Z_i Ψ (n × q × q)."""
        C = self.psi - self._push(self.ZtZ @ self.psi)
        return 0.5 * (C + jnp.swapaxes(C, -1, -2))

    def trace_inverse(self) -> Array:
        """tr V_i⁻¹ per cluster (n): (m_i − Σ_k λ_ik/(σ² + λ_ik))/σ² from known eigenpairs, else
        (m_i − tr(Z_iᵀZ_i Ψ T_i⁻¹)/σ²)/σ²."""
        if self.eigen is not None:
            lam = self.eigen[1]
            return (self.sizes - jnp.sum(lam / (self.sigma2 + lam), axis=1)) / self.sigma2
        pushed = self._push(self.ZtZ)  # Ψ T⁻¹ ZᵀZ / σ²: the same trace as Z Ψ T⁻¹ Zᵀ / σ²
        return (self.sizes - jnp.trace(pushed, axis1=1, axis2=2)) / self.sigma2

    def inverse_apply(self, data: LMMData, M: Array) -> Array:
        """V⁻¹ M for rows sorted by cluster (M is N × k or N). From known eigenpairs when there are
        some (exact as a → ∞ in Σ_a), else (M − Z_i Ψ T_i⁻¹ Z_iᵀ M / σ²) / σ²."""
        if self.eigen is not None:
            return self._power_apply(data, M, 1.0)
        ZtM = cluster_sum(data, data.Z * M[:, None]) if M.ndim == 1 else cluster_cross(data, data.Z, M)
        coef = self._push(ZtM)[data.cluster]
        correction = jnp.sum(data.Z * coef, axis=1) if M.ndim == 1 else jnp.einsum("ta,tak->tk", data.Z, coef)
        return (M - correction) / self.sigma2

    def inverse_sqrt_apply(self, data: LMMData, M: Array) -> Array:
        """V^{-1/2} M (the symmetric inverse square root), rows sorted by cluster.

        With A_i = Lᵀ Z_iᵀZ_i L = W_i Λ_i W_iᵀ and U_i = Z_i L W_i Λ_i^{-1/2} (orthonormal
        columns), V_i^{-1/2} = σ⁻¹ (I + U_i [(1 + Λ_i/σ²)^{-1/2} − I] U_iᵀ); directions with
        Λ = 0 get 1.
        """
        return self._power_apply(data, M, 0.5)

    def _power_apply(self, data: LMMData, M: Array, power: float) -> Array:
        basis, eigenvalues = self.eigen if self.eigen is not None else self._eigen(data)
        coefficients = (1.0 + eigenvalues / self.sigma2) ** -power - 1.0
        return low_rank_update_apply(data, basis, coefficients, M) / self.sigma2**power

    def with_eigen(self, data: LMMData) -> ClusterCovariance:
        """The same operator with its eigenpairs computed once (for several inverse square roots)."""
        return dataclasses.replace(self, eigen=self._eigen(data))

    def _eigen(self, data: LMMData) -> tuple[Array, Array]:
        L = self.factor
        if L is None:
            raise ValueError("the inverse square root needs a factor Ψ = L Lᵀ or the eigenpairs of Lᵀ Z_iᵀ Z_i L.")
        A = jnp.einsum("ab,iac,cd->ibd", L, self.ZtZ, L)
        lam, W = jnp.linalg.eigh(A)
        positive = lam > 1e3 * jnp.finfo(lam.dtype).eps * jnp.maximum(1.0, jnp.max(lam, axis=1, keepdims=True))
        scale = jnp.where(positive, 1.0 / jnp.sqrt(jnp.where(positive, lam, 1.0)), 0.0)
        basis = jnp.einsum("ta,ab,tbc->tc", data.Z, L, W[data.cluster]) * scale[data.cluster]
        return basis, jnp.where(positive, lam, 0.0)


def cluster_covariance(data: LMMData, psi: Array, sigma2, ZtZ: Array | None = None,
                       factor: Array | None = None) -> ClusterCovariance:
    """The `ClusterCovariance` V_i = σ² I + Z_i Ψ Z_iᵀ of `data`'s clusters (`ZtZ` = Z_iᵀZ_i when
    the caller already has it; `factor` L with Ψ = L Lᵀ when it will whiten)."""
    ZtZ = cluster_cross(data, data.Z, data.Z) if ZtZ is None else ZtZ
    sigma2 = jnp.asarray(sigma2, psi.dtype)
    return ClusterCovariance(ZtZ, data.cluster_sizes.astype(psi.dtype), psi, sigma2, factor)


def isotropic_covariance(data: LMMData, tau2, sigma2=1.0, ZtZ: Array | None = None) -> ClusterCovariance:
    """V_i = σ² I + τ² Z_i Z_iᵀ (Ψ = τ² I), with its eigenpairs taken from each cluster's thin SVD
    Z_i = U_i S_i W_iᵀ (eigenvalues τ² s_ik², basis U_i): no eigh or Cholesky, and exact
    derivatives in τ² and σ². Whitening, V⁻¹, tr V⁻¹, log|V| and `projected_quadratic` use those
    alone; `ZtZ` (Z_iᵀZ_i) is needed only for `quadratic` and posterior moments, and is not
    computed unless given (the whitening also runs eagerly, op by op, where every extra
    operation costs a dispatch)."""
    dtype = data.X.dtype
    q = data.Z.shape[1]
    tau2 = jnp.asarray(tau2, dtype)
    return ClusterCovariance(ZtZ, data.cluster_sizes.astype(dtype), tau2 * jnp.eye(q, dtype=dtype),
                             jnp.asarray(sigma2, dtype), eigen=(data.z_basis, tau2 * data.z_singular**2))


def proxy_covariance(data: LMMData, a, ZtZ: Array | None = None) -> ClusterCovariance:
    """Σ_a = blockdiag(I + a Z_i Z_iᵀ): the `isotropic_covariance` with σ² = 1 and τ² = a."""
    return isotropic_covariance(data, a, 1.0, ZtZ)


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


def canonical_theta(theta: Array, structure: str, q: int) -> Array:
    """θ with each column of L(θ) signed so that its diagonal entry is ≥ 0, as lme4 reports it
    (L·diag(±1) gives the same Ψ = L Lᵀ)."""
    if structure == "none":
        return theta
    if structure == "full":
        rows, cols = np.tril_indices(q)
        sign = jnp.where(theta[diagonal_parameters(structure, q)] < 0, -1.0, 1.0).astype(theta.dtype)
        return theta * sign[cols]
    return jnp.abs(theta)


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
