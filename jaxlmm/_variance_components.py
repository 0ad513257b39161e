"""Variance components and BLUPs after a quasi-likelihood fit (Li, Cai & Li 2022)."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jax import Array

from ._covariance import blup, cluster_cross, cluster_sum, covariance_basis, project_psd
from ._data import LMMData
from ._fit import single_fit
from ._precision import in_float64
from ._scale import data_scale, rescaled
from ._solution import RESULTS, ReportsResult, result_name
from ._whiten import inverse_apply


class VarianceEstimate(ReportsResult):
    """In-JIT result of `estimate_variance_components` (arrays only, vmappable).

    `sigma2` σ̂_e²; `eta` η̂ (d); `psi_unprojected` Σ_j η̂_j G_j; `psi` its PSD projection;
    `ranef` the BLUPs (n × q, cluster index order); `result`: `successful` where the moment
    system for η was well conditioned, η̂ finite and σ̂_e² > 0, else `unidentifiable` (the
    estimates are not to be trusted).
    """

    sigma2: Array
    eta: Array
    psi_unprojected: Array
    psi: Array
    ranef: Array
    result: RESULTS


def within_cluster_variance(data: LMMData, residual: Array, fixed_df=0) -> Array:
    """σ̂_e² = Σ_i ‖(I − P_{Z_i}) r_i‖² / (Σ_i (m_i − rank Z_i) − df).

    The residual left after projecting each cluster's residual on its own random-effect
    columns carries no random effect, whatever Ψ is. Clusters with m_i ≤ rank(Z_i) add 0 to
    both sums, which is the rule "use the clusters with m_i > q" extended to rank-deficient Z_i.
    `fixed_df`: the degrees of freedom the fixed effects took from the residual (the number of
    selected columns for a Lasso fit, its unbiased df; Zou, Hastie & Tibshirani 2007). Without it
    an overfitted β̂ (a cross-validated λ selects noise columns) shrinks σ̂_e² (0.09–0.22 for 0.25).
    """
    U = data.z_basis
    coords = cluster_sum(data, U * residual[:, None])  # U_iᵀ r_i
    within = residual - jnp.sum(U * coords[data.cluster], axis=1)
    rank = jnp.sum(data.z_singular > 0, axis=1)
    dof = jnp.sum(data.cluster_sizes - rank) - fixed_df
    return jnp.sum(within**2) / jnp.maximum(dof, 1)


@eqx.filter_jit
def estimate_variance_components(data: LMMData, a, residual: Array, basis: Array, fixed_df=0) -> VarianceEstimate:
    """σ̂_e², Ψ̂ and BLUPs from marginal residuals r̂ = y − Xβ̂ (rows sorted by cluster).

    Ψ_η = Σ_j η_j G_j is fitted by Σ_a^{-1}-weighted least squares of the residual outer
    products on the covariance model (W_i = Σ_a^{i,-1}):

        η̂ = argmin Σ_i ‖W_i^{1/2} (r_i r_iᵀ − σ̂_e² I − Z_i Ψ_η Z_iᵀ) W_i^{1/2}‖_F²,

    whose normal equations B η = ω have, with M_i = Z_iᵀ W_i Z_i, M2_i = Z_iᵀ W_i² Z_i and
    u_i = Z_iᵀ W_i r_i (all q×q or q, so nothing m_i×m_i is formed),

        B_jk = Σ_i tr(G_j M_i G_k M_i),   ω_j = Σ_i [u_iᵀ G_j u_i − σ̂_e² tr(G_j M2_i)].

    Ψ̂ is the projection of Ψ_η̂ on the PSD cone; BLUPs use σ̂_e² in V̂_i (the published code
    used σ² = 1). `fixed_df`: the fixed effects' degrees of freedom (`within_cluster_variance`).
    Pure and jit/vmap-able: a sweep can call it on stacked data.
    """
    sigma2 = within_cluster_variance(data, residual, fixed_df)
    WZ = inverse_apply(data, a, data.Z)
    Wr = inverse_apply(data, a, residual)
    M = cluster_cross(data, data.Z, WZ)
    M2 = cluster_cross(data, WZ, WZ)
    u = cluster_sum(data, data.Z * Wr[:, None])
    GM = jnp.einsum("jab,ibc->ijac", basis, M)  # G_j M_i
    B = jnp.einsum("ijac,ikca->jk", GM, GM)
    omega = jnp.einsum("ia,jab,ib->j", u, basis, u) - sigma2 * jnp.einsum("jab,iba->j", basis, M2)
    # B is symmetric PSD: one eigendecomposition gives the minimum-norm solution (as lstsq would)
    # and the condition number, at a fraction of lstsq's and cond's compile time (two SVDs).
    w, V = jnp.linalg.eigh(B)
    top = jnp.max(jnp.abs(w))
    kept = jnp.abs(w) > B.shape[0] * jnp.finfo(B.dtype).eps * top
    eta = V @ jnp.where(kept, (V.T @ omega) / jnp.where(kept, w, 1.0), 0.0)
    psi_raw = jnp.einsum("j,jab->ab", eta, basis)
    psi = project_psd(psi_raw)
    condition = top / jnp.min(jnp.abs(w))
    identifiable = (condition < 1.0 / jnp.finfo(B.dtype).eps) & (sigma2 > 0) & jnp.all(jnp.isfinite(eta))
    result = RESULTS.where(identifiable, RESULTS.successful, RESULTS.unidentifiable)
    return VarianceEstimate(sigma2, eta, psi_raw, psi, blup(data, psi, sigma2, residual), result)


@eqx.filter_jit
def _estimate_at(data: LMMData, a, coef, intercept, basis) -> VarianceEstimate:
    """`estimate_variance_components` at the residuals of (β̂, β̂_0), with the selected columns'
    degrees of freedom, as one program."""
    return estimate_variance_components(data, a, data.y - data.X @ coef - intercept, basis, jnp.sum(coef != 0))


@dataclasses.dataclass(frozen=True)
class VarianceComponents:
    """Estimated variance components and random effects.

    - `sigma2`: σ̂_e²; `psi`: Ψ̂ (q × q, positive semi-definite); `eta`: the coefficients of Ψ
      in `basis` (before projection); `psi_unprojected`: Σ_j η̂_j G_j (may be indefinite);
      `projected`: whether the PSD projection changed it.
    - `ranef`: BLUPs b̂_i (n × q), one row per label of `groups` (the sorted cluster labels).
    - `structure`, `basis`: the covariance model used. `result`: the name of the `RESULTS` code
      (see `VarianceEstimate`); `identifiable` is `result == "successful"`.
    """

    sigma2: float
    psi: np.ndarray
    eta: np.ndarray
    psi_unprojected: np.ndarray
    projected: bool
    ranef: np.ndarray
    groups: tuple
    structure: object
    basis: np.ndarray
    result: str

    @property
    def identifiable(self) -> bool:
        return self.result == "successful"


def variance_identifiable(data: LMMData) -> bool:
    """Whether some cluster has more rows than rank(Z_i), so that σ_e² can be separated from Ψ."""
    rank = np.sum(np.asarray(data.z_singular) > 0, axis=1)
    sizes = np.bincount(np.asarray(data.cluster), minlength=data.n_clusters)  # on the host: no compile
    return bool(np.any(sizes > rank))


@in_float64
def variance_components(fit, data: LMMData, structure="identity") -> VarianceComponents:
    """σ̂_e², Ψ̂ and BLUPs after a fit (Li, Cai & Li 2022's moment estimator; `fit_quasi` reports
    its result with Ψ = ηI).

    From the marginal residuals r̂ = y − Xβ̂ − β̂_0 of `fit` (a `QuasiFit` with one β̂):

    - σ̂_e² = Σ_i ‖(I − P_{Z_i}) r̂_i‖² / Σ_i (m_i − rank Z_i)  (within-cluster projection);
    - Ψ̂: the Σ_a^{-1}-weighted least-squares fit of r̂_i r̂_iᵀ − σ̂_e² I on Z_i Ψ_η Z_iᵀ with the
      same a as the fit, Ψ_η = Σ_j η_j G_j, projected to the PSD cone;
    - BLUPs b̂_i = Ψ̂ Z_iᵀ V̂_i^{-1} r̂_i, V̂_i = Z_i Ψ̂ Z_iᵀ + σ̂_e² I.

    Clusters may be unbalanced and rows in any order.

    **Arguments:**

    - `fit`: a fit from `fit_quasi` (whitening by its a), `fit_lmmlasso` or `fit_eb_ridge`
      (whitening by a = tr Ψ̂ / (q σ̂²)); one β̂, not a λ path. A SHEL fit is refused (its β̂ is
      defined with the synthetic variables profiled out).
    - `data`: the `LMMData` it was fitted on.
    - `structure`: `"identity"` (Ψ = ηI), `"diagonal"`, `"full"` or a list of q×q symmetric
      basis matrices G_j.

    Returns a `VarianceComponents`.
    """
    coef, intercept, a = single_fit(fit, data)
    q = data.Z.shape[1]
    basis = covariance_basis(structure, q)
    if not variance_identifiable(data):
        raise ValueError(
            "`data`: every cluster has m_i ≤ rank(Z_i), so σ_e² cannot be separated from the "
            "random effects (the within-cluster projection leaves nothing)."
        )
    dtype = data.X.dtype
    # On y / s_y and X / s_x (exact powers of two): variances scale by s_y², BLUPs by s_y.
    scale = data_scale(data)
    unit = rescaled(data, scale)
    est = _estimate_at(unit, jnp.asarray(a, dtype), jnp.asarray(coef * scale.x / scale.y, dtype),
                       jnp.asarray(intercept / scale.y, dtype), jnp.asarray(basis, dtype))
    psi_raw = np.asarray(est.psi_unprojected)
    psi = np.asarray(est.psi)
    projected = not np.allclose(psi, psi_raw, rtol=0, atol=1e-12 * max(1.0, np.abs(psi_raw).max()))
    return VarianceComponents(
        sigma2=float(est.sigma2) * scale.y * scale.y,
        psi=psi * scale.y * scale.y,
        eta=np.asarray(est.eta) * scale.y * scale.y,
        psi_unprojected=psi_raw * scale.y * scale.y,
        projected=projected,
        ranef=np.asarray(est.ranef) * scale.y,
        groups=data.labels,
        structure=structure,
        basis=basis,
        result=result_name(est.result),
    )
