"""Weighted least squares ½ Σ_t w_t (y_t − x_tᵀβ)² / scale: the datafit of every Gaussian objective."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import Array


class LeastSquaresData(eqx.Module):
    """Arguments of `LeastSquares`: design X (N × p), response y (N), row weights w (N) and
    the normalising scale (e.g. tr(Σ_a^{-1}) for the quasi-likelihood)."""

    X: Array
    y: Array
    weights: Array
    scale: Array


class LeastSquares(eqx.Module):
    """f(β) = ½ Σ_t w_t (y_t − x_tᵀβ)² / scale.

    A callable `fn(params, args)` like any user loss, so it works with every solver; its
    coordinate structure (exact coordinate Hessians Σ_t w_t x_tk² / scale) is what lets
    `CoordinateDescent` solve it.
    """

    def least_squares_form(self, args: LeastSquaresData) -> tuple[Array, Array, Array]:
        """(X, y, c) with f(β) = ½ Σ_t c_t (y_t − x_tᵀβ)², what `CoordinateDescent` needs."""
        return args.X, args.y, args.weights / args.scale

    def __call__(self, beta: Array, args: LeastSquaresData) -> Array:
        r = args.y - args.X @ beta
        return 0.5 * jnp.sum(args.weights * r * r) / args.scale
