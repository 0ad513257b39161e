"""Result codes and the `Solution` returned by every solver."""

from __future__ import annotations

import equinox as eqx
import numpy as np
from jax import Array


class RESULTS(eqx.Enumeration):
    """Why a solve stopped. Messages say which knob to turn."""

    successful = "Successful: the tolerance was met."
    max_steps_reached = (
        "The solver reached `max_steps` before the KKT residual met the tolerance. Increase "
        "`max_steps`, loosen `rtol`/`atol`, or warm-start from a nearby solution (a λ path)."
    )
    nonfinite = (
        "Non-finite values (NaN or inf) appeared during the solve. Check the data and the "
        "loss for overflow; a badly scaled design can cause this."
    )
    saturated = (
        "The active set grew past the allowed number of nonzero coefficients (with p > N the "
        "penalised likelihood is unbounded as σ² → 0). Use a larger λ."
    )
    no_mode = (
        "No mode of the variance posterior was found (the Laplace Hessian is not negative definite, "
        "or Newton did not converge), so the Laplace evidence is not valid there. Fix the "
        "hyperparameters, or give more clusters."
    )
    line_search_failed = (
        "Backtracking could not find a step that decreases the objective. The loss may not be "
        "smooth or its gradient may be wrong."
    )
    boundary = (
        "A learned hyperparameter went to the edge of its range (the ridge λ to 0 or to ∞, where every "
        "coefficient is shrunk to 0): the evidence is flat there and the fit is not an interior optimum. "
        "Fix the hyperparameter (e.g. `lam=`), or check the scale and the signal of the data."
    )
    invalid_argument = (
        "A hyperparameter given to a core is not valid (NaN or inf, a negative λ or a, b outside [0, 1), "
        "an A that is not positive definite): every estimate is NaN. Check the grid or the values passed."
    )
    unidentifiable = (
        "The quantity is not identifiable from the data: a column (nearly) collinear with others, or a "
        "variance-component moment system without a unique solution; its estimate is NaN. Drop or merge the "
        "collinear columns, or give more clusters (or more rows per cluster)."
    )


class ReportsResult(eqx.Module):
    """Base of every in-JIT outcome that carries a `result: RESULTS` field (`Solution`,
    `LassoPath`, `MixedModelFit`, `CoreFit`, `EBMap`): `converged` is `result == successful`."""

    @property
    def converged(self) -> Array:
        return self.result == RESULTS.successful


class Solution(ReportsResult):
    """Outcome of `jaxlmm.solve`.

    **Fields:**

    - `value`: the minimiser found.
    - `result`: a `RESULTS` code; `RESULTS.successful` when the tolerance was met.
    - `objective`: f(value) + penalty(value).
    - `kkt_residual`: max_k dist(−∇f(value)_k, ∂penalty_k(value)), zero at an exact solution.
    - `stats`: `{"num_steps": ...}` (iterations for proximal gradient, coordinate epochs for
      coordinate descent).
    """

    value: Array
    result: RESULTS
    objective: Array
    kkt_residual: Array
    stats: dict


# The one place that reads equinox's representation of an enumeration item.
RESULT_NAMES: tuple[str, ...] = tuple(RESULTS._name_to_item)


def result_index(code):
    """The integer index of a `RESULTS` code (an array for a batch of codes; traced inside jit),
    its position in `RESULT_NAMES`; an index passes through."""
    return code._value if isinstance(code, RESULTS) else code


def result_name(code) -> str:
    """The name of a (concrete, scalar) `RESULTS` code, e.g. "successful": how fits, inference
    rows and tuning records report it. `jaxlmm.RESULTS[code]` is its message."""
    return str(result_names(code).item())


def result_names(codes) -> np.ndarray:
    """The names of a batch of `RESULTS` codes (any shape), as an object array."""
    indices = np.asarray(result_index(codes))
    table = {int(np.asarray(result_index(getattr(RESULTS, name)))): name for name in RESULT_NAMES}
    return np.vectorize(table.__getitem__, otypes=[object])(indices)


def result_code(name: str) -> RESULTS:
    """The `RESULTS` code of a name, e.g. `result_code("successful")`; `ValueError` for another name."""
    if name not in RESULT_NAMES:
        raise ValueError(f"{name!r} is not a result name; the names are {list(RESULT_NAMES)}.")
    return getattr(RESULTS, name)


def results_from_index(indices) -> RESULTS:
    """A (batched) `RESULTS` code from integer indices (as `result_index` gives them)."""
    import equinox as eqx  # noqa: PLC0415 (the only construction from raw indices)

    return eqx.tree_at(lambda r: r._value, RESULTS.successful, np.asarray(indices, np.int32))
