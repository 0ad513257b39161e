"""Float64 for the statistical answers, whatever JAX's global flag.

JAX computes in float32 unless `jax_enable_x64` is set, and float32 is not enough for what a user
compares with R: a profiled REML criterion over N = 234 rows loses its third digit, a variance
search stops at another optimum. The host-level estimators (`fit_*`, `debias`,
`variance_components`, …) therefore run inside `jax.enable_x64(True)` — a thread-local context,
the global flag is never changed — on float64 copies of their data, and return NumPy results.
The pure cores, `solve` and `sweep` keep the dtype of the data they are given (float32 for
speed on accelerators)."""

from __future__ import annotations

import dataclasses
import functools

import equinox as eqx
import jax
import numpy as np

from ._data import LMMData


def _as_float64(value):
    if isinstance(value, LMMData):
        return value.astype(np.float64)
    return value


def _to_host(value):
    """JAX arrays made under the context are float64: as NumPy arrays they stay so outside it."""
    if isinstance(value, jax.Array):
        return np.asarray(value)
    if isinstance(value, eqx.Module):
        return jax.tree.map(lambda x: np.asarray(x) if isinstance(x, jax.Array) else x, value)
    if dataclasses.is_dataclass(value) and type(value).__module__.startswith("jaxlmm."):
        changes = {f.name: _to_host(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **{k: v for k, v in changes.items() if v is not getattr(value, k)})
    if type(value) in (tuple, list):
        return type(value)(_to_host(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_host(v) for k, v in value.items()}
    return value


def in_float64(function):
    """Run `function` with 64-bit JAX types enabled, its `LMMData` arguments in float64 and its
    JAX-array results returned as NumPy arrays."""

    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        with jax.enable_x64(True):
            args = tuple(_as_float64(a) for a in args)
            kwargs = {k: _as_float64(v) for k, v in kwargs.items()}
            return _to_host(function(*args, **kwargs))

    return wrapped
