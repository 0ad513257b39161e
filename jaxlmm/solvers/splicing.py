"""Best subset of a weighted least-squares fit by splicing, inside `jit` (so it `vmap`s over
replicates, a and responses, which skscope's host-side solver cannot)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._solution import RESULTS


def splice(X, y, c, k: int, always: tuple = (), max_steps: int = 100, rtol: float = 1e-10):
    """A local solution of min ½ Σ_t c_t (y_t − x_tᵀβ)² subject to β having at most `k` nonzero
    coefficients outside the columns `always` (which are always in the model), by the splicing
    iteration of ABESS (Zhu, Wen, Zhu, Zhang & Wang 2020, the algorithm behind skscope's
    `ScopeSolver`) with the subset size fixed:

    1. start from the k columns with the largest forward sacrifice after fitting `always` alone
       (for a centred design, the largest correlations with the response);
    2. refit least squares on the support A; the backward sacrifice of an active column is
       ξ_j = ½ H_j β_j² and the forward sacrifice of an inactive one ζ_j = ½ H_j (g_j / H_j)²,
       with g = Xᵀ(c ⊙ r) and H_j = Σ_t c_t x_tj² (what dropping j, or adding j alone, changes
       the loss by, to first order);
    3. for s = 1, …, k, swap the s active columns of smallest ξ for the s inactive ones of
       largest ζ and refit; keep the best swap if it lowers the loss by more than
       rtol·(1 + loss), else stop.

    The loss falls strictly at every accepted swap, so the loop ends: at a support no swap of
    this kind improves (`successful`), or after `max_steps` swaps (`max_steps_reached`).
    Every refit is a (|always| + k)-square solve, never p × p. `k`, `always` and `max_steps`
    are static. Returns `(columns, coef, loss, result, num_steps)`: the |always| + k column
    indices (`always` first), their least-squares coefficients, the loss there.
    """
    p = X.shape[1]
    always = np.asarray(always, int).reshape(-1)
    free = np.setdiff1d(np.arange(p), always)
    k = int(k)
    if not 0 <= k <= len(free):
        raise ValueError(f"`k` must be between 0 and the number of free columns ({len(free)}); got {k}.")
    curvature = (X * X).T @ c
    safe = jnp.where(curvature > 0, curvature, 1.0)

    def refit(columns):
        Xs = X[:, columns]
        weighted = c[:, None] * Xs
        coef = jnp.linalg.solve(weighted.T @ Xs, weighted.T @ y)
        r = y - Xs @ coef
        loss = 0.5 * jnp.sum(c * r * r)
        return coef, jnp.where(jnp.isfinite(loss), loss, jnp.inf)

    def forward(columns, coef):
        """½ H_j (g_j/H_j)² for every column; −inf for the columns in the model."""
        g = X.T @ (c * (y - X[:, columns] @ coef))
        zeta = 0.5 * g * g / safe
        return zeta.at[columns].set(-jnp.inf)

    n_fixed = len(always)
    base = jnp.asarray(always, jnp.int32)
    if n_fixed:
        coef0, _ = refit(base)
        zeta0 = forward(base, coef0)
    else:
        zeta0 = 0.5 * (X.T @ (c * y)) ** 2 / safe
    _, active = lax.top_k(zeta0, k)
    columns = jnp.concatenate([base, active.astype(jnp.int32)])
    coef, loss = refit(columns)
    if k == 0:
        ok = jnp.isfinite(loss)
        return columns, coef, loss, RESULTS.where(ok, RESULTS.successful, RESULTS.nonfinite), jnp.zeros((), jnp.int32)

    swaps = np.arange(1, k + 1)

    def candidate(s, columns, rank, incoming):
        # The r-th weakest active column (r < s) is replaced by the r-th strongest inactive one.
        new_active = jnp.where(rank < s, incoming[jnp.minimum(rank, k - 1)], columns[n_fixed:])
        new_columns = columns.at[n_fixed:].set(new_active)
        return (new_columns, *refit(new_columns))

    def body(state):
        columns, coef, loss, _, steps = state
        xi = 0.5 * curvature[columns[n_fixed:]] * coef[n_fixed:] ** 2
        rank = jnp.argsort(jnp.argsort(xi))  # each active column's rank by ξ, weakest 0
        _, incoming = lax.top_k(forward(columns, coef), k)
        new_columns, new_coef, new_loss = jax.vmap(candidate, (0, None, None, None))(
            swaps, columns, rank, incoming.astype(jnp.int32))
        best = jnp.argmin(new_loss)
        better = new_loss[best] < loss - rtol * (1.0 + jnp.abs(loss))
        columns = jnp.where(better, new_columns[best], columns)
        coef = jnp.where(better, new_coef[best], coef)
        return columns, coef, jnp.where(better, new_loss[best], loss), ~better, steps + better.astype(jnp.int32)

    def cond(state):
        *_, done, steps = state
        return ~done & (steps < max_steps)

    columns, coef, loss, done, steps = lax.while_loop(
        cond, body, (columns, coef, loss, jnp.asarray(False), jnp.zeros((), jnp.int32)))
    result = RESULTS.where(done, RESULTS.successful, RESULTS.max_steps_reached)
    result = RESULTS.where(jnp.isfinite(loss) & jnp.all(jnp.isfinite(coef)), result, RESULTS.nonfinite)
    return columns, coef, loss, result, steps
