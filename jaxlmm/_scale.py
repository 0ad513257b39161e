"""Internal rescaling of y and X, so that every fit is equivariant to the units of the data up to
the dtype's range (y·1e200 must not overflow a sum of squares).

Estimators fit on y / s_y and X / s_x and report on the caller's scale. Both scales are powers
of two: dividing by them is exact, so data already of unit scale gives bit-identical results and
a rescaling by a power of two maps every result exactly.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ._data import LMMData


class DataScale(NamedTuple):
    """y = s_y·ỹ, X = s_x·X̃ (scalars, powers of two)."""

    y: float
    x: float

    @property
    def identity(self) -> bool:
        return self.y == 1.0 and self.x == 1.0

    def factor(self, unit: str) -> tuple:
        """The factors that take a quantity in `unit` from the fitting scale to the caller's, to
        apply one after the other (a variance times s_y twice: 0 · s_y² would be NaN where s_y²
        overflows): "y" (intercept, BLUPs, residuals), "y2" (variances, squared errors), "coef"
        (β = (s_y/s_x) β̃), "l1" (the λ of λ‖β‖₁ in a least-squares objective: λ = s_y s_x λ̃),
        "x", "x2", "1"."""
        y, x = self.y, self.x
        return {"y": (y,), "y2": (y, y), "coef": (y / x,), "l1": (y * x,), "x": (x,), "x2": (x, x), "1": ()}[unit]


def power_of_two(value: float) -> np.float64:
    """As a NumPy float: a variance in y's units may overflow the dtype (y·1e200), and NumPy
    then says so with a warning and inf where a Python float would raise."""
    if not np.isfinite(value) or value <= 0:
        return np.float64(1.0)
    return np.float64(math.ldexp(1.0, round(math.log2(value))))


def rms(values: np.ndarray, center: bool) -> float:
    """Root mean square (about the mean when `center`), without squaring huge or tiny numbers."""
    values = np.asarray(values, np.float64)
    peak = np.max(np.abs(values))
    if peak == 0 or not np.isfinite(peak):
        return 1.0
    unit = values / peak
    if center:
        unit = unit - unit.mean()
    return float(np.sqrt(np.mean(unit * unit)) * peak)


def data_scale(data: LMMData) -> DataScale:
    """Powers of two nearest the sd of y and the root mean square of X's entries."""
    return DataScale(power_of_two(rms(data.y, center=True)), power_of_two(rms(data.X, center=False)))


def rescaled(data: LMMData, scale: DataScale) -> LMMData:
    """`data` with y / s_y and X / s_x (Z is left as it is: Ψ carries y's units), and labels
    0..n−1 (`LMMData.with_index_labels`: the labels never reach a compiled program)."""
    data = data.with_index_labels()
    if scale.identity:
        return data
    # On the host (no small eager programs to compile); Python floats keep float32 data float32.
    X, y = (jnp.asarray(np.asarray(a) / float(s)) for a, s in ((data.X, scale.x), (data.y, scale.y)))
    return eqx.tree_at(lambda d: (d.X, d.y), data, (X, y))
