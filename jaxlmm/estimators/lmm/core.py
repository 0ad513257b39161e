"""The unpenalised LMM's pure core: (data arrays, reml, structure) -> `CoreFit`."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..._data import LMMData
from .._core import CoreFit, check_structure, checked
from .estimator import _solve as _lmm_solve


def lmm_core(data: LMMData, reml=False, structure: str = "full", max_steps: int = 500) -> CoreFit:
    """The unpenalised LMM y = β_0 + Xβ + Z_i b_i + ε as a pure function of arrays: maximum
    likelihood (`reml=False`, the default here) or REML, β and σ² profiled out and L-BFGS over
    the relative Cholesky factor θ of Ψ/σ², as `fit_lmm` (lme4's criterion; every evaluation
    O(n q² p + p³) after one pass over the data). `sigma2` = r²/ν, `psi` = σ² ΛΛᵀ, `ranef` the BLUPs.

    Unlike `fit_lmm` it neither validates nor rescales the data (give columns of moderate
    scale). Under `jaxlmm.sweep(..., responses=Y)` only y is batched, so ZᵢᵀZᵢ, ZᵢᵀXᵢ and XᵀX
    do not depend on the response (computed once under vmap, loop-invariant under lax.map).
    `reml` (a Python bool) and `structure` ("full", "diagonal", "identity") are static."""
    check_structure(structure, ("full", "diagonal", "identity"))
    if not isinstance(reml, bool | np.bool_):
        raise ValueError(f"`reml` must be True or False (static); got {reml!r}.")
    dtype = data.X.dtype
    # Centred columns and response (a unit-triangular change of basis: the criterion is the same)
    # keep the profiled sums of squares from cancelling the means' squares, as in `fit_lmm`.
    x_mean, y_mean = jnp.mean(data.X, axis=0), jnp.mean(data.y)
    D = jnp.concatenate([jnp.ones((data.n_obs, 1), dtype), data.X - x_mean], axis=1)
    sol = _lmm_solve(data, D, data.y - y_mean, structure, bool(reml), max_steps)
    nu = data.n_obs - D.shape[1] if reml else data.n_obs
    sigma2 = sol.fit.r2 / nu
    coef = sol.fit.beta[1:]
    return checked(CoreFit(coef, sol.fit.beta[0] + y_mean - x_mean @ coef, sigma2, sigma2 * sol.factor @ sol.factor.T,
                            sol.ranef, sol.result, sol.num_steps), jnp.asarray(True))
