"""Separable penalties: value, proximal operator and KKT residual (distance to the subdifferential)."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import Array


def soft_threshold(z: Array, threshold: Array) -> Array:
    """sign(z) · max(|z| − threshold, 0); threshold = inf gives 0."""
    return jnp.sign(z) * jnp.maximum(jnp.abs(z) - threshold, 0.0)


class L1(eqx.Module):
    """Weighted Lasso penalty λ Σ_{k ∉ U} w_k |β_k|.

    **Arguments:**

    - `lam`: λ ≥ 0 (an array, so it can be traced, vmapped and differentiated).
    - `weights`: per-coefficient w_k ≥ 0 (length p), default 1. w_k = inf keeps β_k at 0.
    - `unpenalized`: boolean mask (length p) of the set U of unpenalised coefficients.
    """

    lam: Array
    weights: Array | None = None
    unpenalized: Array | None = None

    def thresholds(self) -> Array:
        """λ w_k per coefficient (0 on U); a scalar when neither weights nor U are given."""
        t = self.lam if self.weights is None else self.lam * self.weights
        return t if self.unpenalized is None else jnp.where(self.unpenalized, 0.0, t)

    def __call__(self, beta: Array) -> Array:
        t = jnp.broadcast_to(self.thresholds(), beta.shape)
        # where() keeps 0·inf (a dropped coefficient sitting at 0) from becoming NaN.
        return jnp.sum(jnp.where(beta == 0, 0.0, t * jnp.abs(beta)))

    def prox(self, beta: Array, step) -> Array:
        return soft_threshold(beta, step * self.thresholds())

    def kkt_residual(self, beta: Array, grad: Array) -> Array:
        """Per coordinate: dist(−grad_k, λ w_k ∂|β_k|)."""
        t = jnp.broadcast_to(self.thresholds(), beta.shape)
        at_zero = jnp.maximum(jnp.abs(grad) - t, 0.0)
        off_zero = jnp.abs(grad + t * jnp.sign(beta))
        return jnp.where(beta == 0, at_zero, off_zero)


class L0(eqx.Module):
    """Sparsity constraint ‖β_{∉U}‖₀ ≤ k (best subset), solved by `BestSubset`.

    **Arguments:**

    - `k`: the number of penalised coefficients allowed to be nonzero (a Python int).
    - `unpenalized`: boolean mask (length p) of coefficients always in the model.
    """

    k: int = eqx.field(static=True)
    unpenalized: Array | None = None
