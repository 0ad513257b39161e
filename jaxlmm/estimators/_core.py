"""What every method's pure core returns (`CoreFit`) and the checks every core shares: traced
hyperparameters, result codes for invalid values, warm starts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

from .._solution import RESULTS, ReportsResult


class CoreFit(ReportsResult):
    """What a pure core returns (arrays only, so it stacks under `vmap`; the fields of the `Fit`
    protocol that are arrays): `coef` (p), `intercept`, `sigma2`, `psi` (q × q), `ranef` (n × q,
    cluster index order), `result` (a `RESULTS` code), `num_steps`. A field the method does not
    estimate is None (the quasi core's variance components, SHEL's Ψ)."""

    coef: Array
    intercept: Array
    sigma2: Array | None
    psi: Array | None
    ranef: Array | None
    result: RESULTS
    num_steps: Array


def hyperparameter(name: str, value, dtype) -> Array:
    """A traced hyperparameter as an array of `dtype`; a Python or NumPy boolean is refused (it
    would be read as 0 or 1) with a `ValueError` at trace time."""
    if isinstance(value, bool | np.bool_) or (hasattr(value, "dtype") and np.dtype(value.dtype) == np.bool_):
        raise ValueError(f"`{name}` must be a number, not a boolean; got {value!r}.")
    return jnp.asarray(value, dtype)


def all_nonnegative(value: Array) -> Array:
    return jnp.all(jnp.isfinite(value) & (value >= 0))


def checked(fit: CoreFit, valid, *hyperparameters) -> CoreFit:
    """`fit` as a core returns it: `invalid_argument` with every estimate NaN where the
    hyperparameters are not `valid` (and NaN derivatives in them: a solver at λ = NaN returns
    zeros, whose derivative would read 0); `nonfinite` where an estimate is not finite; the
    solver's result otherwise. `successful` thus always means finite estimates."""
    poison = jnp.where(valid, 1.0, jnp.nan)
    # Value 0, derivative 1 in every hyperparameter; kept out of the valid branch before the NaN
    # multiplies it, so that valid derivatives stay NaN-free.
    carrier = sum((jnp.sum(h - lax.stop_gradient(h)) for h in hyperparameters), jnp.zeros(()))
    nan_tangent = jnp.where(valid, 0.0, carrier) * jnp.where(valid, 0.0, jnp.nan)
    estimates = jax.tree.map(lambda x: x * poison.astype(x.dtype) + nan_tangent.astype(x.dtype),
                             (fit.coef, fit.intercept, fit.sigma2, fit.psi, fit.ranef))
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(estimates)]))
    result = RESULTS.where(finite, fit.result, RESULTS.nonfinite)
    result = RESULTS.where(valid, result, RESULTS.invalid_argument)
    return CoreFit(*estimates, result, fit.num_steps)


def solver_start(start, length: int, dtype, intercept: bool):
    """A solver start of `length` from None (zeros), a previous `CoreFit` (a warm start:
    (intercept, coef) or coef) or an array."""
    if start is None:
        return jnp.zeros(length, dtype)
    if isinstance(start, CoreFit):
        value = jnp.concatenate([jnp.reshape(start.intercept, (1,)), start.coef]) if intercept else start.coef
        return lax.stop_gradient(value.astype(dtype))
    return jnp.asarray(start, dtype)


def check_structure(structure, allowed: tuple) -> None:
    if not isinstance(structure, str) or structure not in allowed:
        raise ValueError(f"`structure` must be one of {allowed}; got {structure!r}.")
