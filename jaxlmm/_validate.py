"""Argument checks shared by the estimators: each raises a `ValueError` naming the argument,
before anything is traced."""

from __future__ import annotations

import numbers

import numpy as np

from ._data import LMMData


def check_data(data, fixed_effects: bool = True) -> LMMData:
    """An `LMMData`; with `fixed_effects`, one with p ≥ 1 columns in X (the penalised methods)."""
    if not isinstance(data, LMMData):
        raise ValueError(f"`data` must be an LMMData (use LMMData.from_arrays); got {type(data).__name__}.")
    if fixed_effects and data.n_features == 0:
        raise ValueError("`data.X` has no columns (p = 0): there are no fixed effects to penalise (fit_lmm fits "
                         "an intercept-only model).")
    return data


def check_scalar(name: str, value, allow_none: bool = True) -> float | None:
    """A finite number ≥ 0 (or None): 0-d arrays and NumPy scalars pass, strings, lists and
    booleans do not (`float()` would accept "1" and `np.asarray` a one-element list)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool | np.bool_) or isinstance(value, str | bytes):
        raise ValueError(f"`{name}` must be one finite number ≥ 0; got {value!r}.")
    arr = np.asarray(value) if not isinstance(value, numbers.Real) else np.asarray(float(value))
    if arr.ndim != 0 or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"`{name}` must be one finite number ≥ 0; got {value!r}.")
    v = float(arr)
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"`{name}` must be a finite number ≥ 0; got {value!r}.")
    return v


def check_flag(name: str, value) -> bool:
    """A `ValueError` unless `value` is a bool (numpy's included): `intercept`, `throw`, ..."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"`{name}` must be True or False; got {value!r}.")
    return bool(value)


def check_count(name: str, value, minimum: int = 1) -> int:
    """An integer ≥ `minimum` (booleans and non-integral floats are refused)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an integer ≥ {minimum}; got {value!r}.")
    return int(value)


def check_seed(seed) -> int:
    """A random seed: an integer ≥ 0 (NumPy's own errors would name neither the argument nor what
    it takes)."""
    if isinstance(seed, bool | np.bool_) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"`seed` must be an integer ≥ 0; got {seed!r}.")
    return int(seed)


def check_solver(solver, kinds: tuple, example: str) -> None:
    """None (the method's default) or an instance of one of `kinds`."""
    if solver is not None and not isinstance(solver, kinds):
        raise ValueError(f"`solver` must be None or a solver object such as {example}; got {solver!r}.")


def check_fraction(name: str, value) -> float:
    """A number strictly inside (0, 1)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"`{name}` must be a number in (0, 1); got {value!r}.")
    return float(value)


def check_grid(name: str, values, integer: bool = False, upper: int | None = None) -> np.ndarray:
    """A non-empty 1-D grid of finite numbers ≥ 0 (integers ≤ `upper` with `integer`); booleans
    are refused."""
    if np.asarray(values).dtype == np.bool_:
        raise ValueError(f"`{name}` must hold numbers, not booleans; got {values!r}.")
    try:
        arr = np.atleast_1d(np.asarray(values, dtype=float))
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a non-empty 1-D sequence of numbers; got {values!r}.") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D sequence; got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"`{name}` must hold finite values ≥ 0; got {values!r}.")
    if integer:
        if np.any(arr != np.round(arr)):
            raise ValueError(f"`{name}` must hold integers; got {values!r}.")
        if upper is not None and np.any(arr > upper):
            raise ValueError(f"`{name}` values must be ≤ p = {upper}; got {values!r}.")
        return arr.astype(int)
    return arr


def check_indices(name: str, values, p: int) -> np.ndarray:
    """Distinct column indices in [0, p) as a sorted int array. Non-integral values (1.7) are
    refused rather than truncated."""
    arr = np.atleast_1d(np.asarray(values))
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D sequence of column indices; got shape {arr.shape}.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or np.any(arr != np.round(arr)):
            raise ValueError(f"`{name}` must hold integer column indices; got {values!r}.")
    idx = arr.astype(int)
    if np.any((idx < 0) | (idx >= p)):
        raise ValueError(f"`{name}` indices must lie in [0, {p}); got {values!r}.")
    if len(np.unique(idx)) != len(idx):
        raise ValueError(f"`{name}` contains repeated indices: {values!r}.")
    return np.sort(idx)


def check_unpenalized(unpenalized, p: int) -> np.ndarray:
    """A length-p boolean mask from indices or a mask."""
    mask = np.zeros(p, bool)
    if unpenalized is None:
        return mask
    arr = np.asarray(unpenalized)
    if arr.dtype == bool:
        if arr.shape != (p,):
            raise ValueError(f"`unpenalized` as a mask must have length p = {p}; got {arr.shape}.")
        return arr.copy()
    mask[check_indices("unpenalized", unpenalized, p)] = True
    return mask


def check_weights(weights, p: int) -> np.ndarray | None:
    if weights is None:
        return None
    try:
        arr = np.asarray(weights, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"`weights` must be p = {p} numbers ≥ 0; got {weights!r}.") from None
    if arr.shape != (p,):
        raise ValueError(f"`weights` must have length p = {p}; got shape {arr.shape}.")
    if np.any(np.isnan(arr)) or np.any(arr < 0):
        raise ValueError("`weights` must be ≥ 0 (inf drops a coefficient); got NaN or < 0.")
    return arr


def check_same_data(fit, data: LMMData) -> None:
    """Post-fit functions need the data the fit was made on: compare fingerprints."""
    recorded = getattr(fit, "data_fingerprint", None)
    if recorded is not None and recorded != data.fingerprint():
        raise ValueError(
            "`data` is not the data `fit` was fitted on (its fingerprint differs): pass the same LMMData."
        )

