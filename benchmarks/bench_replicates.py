"""Issue 16, benchmark (i): seed 001's workflow over many replicates × its grid of a
(a = 0, 1, …, 9, k = 3), as the seed runs it (a Python loop of skscope `ScopeSolver` solves on
a dense N × N Σ_a^{-1/2}) against our two one-program alternatives on identical data:
`sweep(quasi_lasso_core)` (the Lasso at one λ) and `sweep(quasi_splicing_core)` (best subset
by splicing inside jit).

Columns: fits, the first call (compilation included), a repeated call, fits per second of the
repeated call, and the throughput ratio against the skscope loop (its time per fit measured on
`--loop` replicates and multiplied out). Quality beside the time, on the looped replicates:
how often the support equals skscope's, the mean number of true and false positives (of 3),
and how often our whitened loss is above skscope's on the support it found (the intercept, which
the seed's objective lacks, is in both refits of that comparison).

    python benchmarks/bench_replicates.py                 # 200 replicates (ours) × 10 a; skscope on 10
    python benchmarks/bench_replicates.py 1000 --loop 50  # the issue's size
"""

import argparse
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from _timing import best_of, first_call  # noqa: E402

import jaxlmm  # noqa: E402
from jaxlmm.losses import quasi_likelihood  # noqa: E402

A_GRID = np.arange(0, 10, dtype=float)  # the seed's a_list
M, N_CLUSTERS, K, LAM = 8, 15, 3, 0.15


def seed_scope(X, Z_stack, y, a, k):
    """Seed 001's `lmm_scope`: the dense Σ_a = blockdiag(a Z_i Z_iᵀ + I), its inverse square
    root by an eigendecomposition, and skscope on ‖y_a − X_a β‖² / tr Σ_a⁻¹ (no intercept)."""
    from skscope import ScopeSolver

    n_obs, p = X.shape
    sigma = np.zeros((n_obs, n_obs))
    for i in range(n_obs // M):
        rows = slice(i * M, (i + 1) * M)
        sigma[rows, rows] = a * Z_stack[rows] @ Z_stack[rows].T + np.eye(M)
    w, v = np.linalg.eigh(sigma)
    root = (v / np.sqrt(w)) @ v.T
    X_a, y_a, trace = root @ X, root @ y, np.sum(1 / w)

    def objective(params):
        return jnp.sum((y_a - X_a @ params) ** 2) / trace

    return ScopeSolver(p, k).solve(objective)


@jax.jit
def _whitened(data, a):
    fn, args = quasi_likelihood(data, a, intercept=True)
    return fn.least_squares_form(args)


def whitened_loss(data, a, support):
    X, y, c = (np.asarray(v) for v in _whitened(data, a))
    Xs = X[:, [0, *(1 + np.asarray(support))]]
    coef = np.linalg.solve((c[:, None] * Xs).T @ Xs, (c[:, None] * Xs).T @ y)
    r = y - Xs @ coef
    return 0.5 * np.sum(c * r * r)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("replicates", type=int, nargs="?", default=200)
    parser.add_argument("--loop", type=int, default=10, help="replicates the skscope loop runs (× 10 a)")
    args = parser.parse_args()
    keys = jax.random.split(jax.random.key(2026), args.replicates)
    t_draw, batch = first_call(lambda: jaxlmm.simulate.draw("scope_example", keys, M, n_clusters=N_CLUSTERS))
    n_fits = args.replicates * len(A_GRID)
    truth = np.asarray(batch.beta[0]) != 0
    print(f"seed 001 design (N = {M * N_CLUSTERS}, p = 50, q = 4), {args.replicates} replicates drawn in one "
          f"program in {t_draw:.2f} s; a = 0..9, k = {K}, Lasso λ = {LAM}")

    rows = {}
    for name, core, grid, options in [
        ("sweep(quasi_lasso_core)", jaxlmm.quasi_lasso_core, {"a": A_GRID, "lam": [LAM]}, {}),
        ("sweep(quasi_splicing_core)", jaxlmm.quasi_splicing_core, {"a": A_GRID}, {"k": K}),
    ]:
        def run(core=core, grid=grid, options=options):
            return jaxlmm.sweep(core, batch.data, grid, truth=batch.beta, progress=False, **options)

        t_first, out = first_call(run)
        t_again, out = best_of(run, 2)
        rows[name] = (t_first, t_again, out)

    # The seed's loop on the first `--loop` replicates.
    n_loop = min(args.loop, args.replicates)
    supports, seconds = {}, []
    for b in range(n_loop):
        X, y, Z = (np.asarray(v[b]) for v in (batch.data.X, batch.data.y, batch.data.Z))
        for g, a in enumerate(A_GRID):
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                params = seed_scope(X, Z, y, a, K)
            seconds.append(time.perf_counter() - start)
            supports[b, g] = np.flatnonzero(params)
    per_fit = np.mean(seconds[1:])  # the first solve includes skscope's start-up
    print(f"\n{'method':<30} {'fits':>7} {'first s':>8} {'again s':>8} {'fits/s':>9} {'vs skscope':>10} | "
          f"{'same S':>6} {'TP':>5} {'FP':>5} {'loss > skscope':>14}")
    tp = np.mean([truth[s].sum() for s in supports.values()])
    fp = np.mean([(~truth[s]).sum() for s in supports.values()])
    print(f"{'skscope loop (seed 001)':<30} {n_loop * len(A_GRID):>7} {seconds[0]:>8.2f} {per_fit * n_fits:>8.1f}* "
          f"{1 / per_fit:>9.1f} {1.0:>9.1f}× | {'':>6} {tp:>5.2f} {fp:>5.2f}")
    for name, (t_first, t_again, out) in rows.items():
        coef = out.fits.coef.reshape(args.replicates, len(A_GRID), -1)
        same = np.mean([set(np.flatnonzero(coef[b, g])) == set(s) for (b, g), s in supports.items()])
        worse = np.mean([whitened_loss(jax.tree.map(lambda v: v[b], batch.data), A_GRID[g], np.flatnonzero(coef[b, g]))
                         > whitened_loss(jax.tree.map(lambda v: v[b], batch.data), A_GRID[g], s) * (1 + 1e-9)
                         for (b, g), s in supports.items()]) if "splicing" in name else np.nan
        print(f"{name:<30} {n_fits:>7} {t_first:>8.2f} {t_again:>8.2f} {n_fits / t_again:>9.1f} "
              f"{per_fit * n_fits / t_again:>9.1f}× | {same:>6.2f} {out.summary['tp'].mean():>5.2f} "
              f"{out.summary['fp'].mean():>5.2f} {worse:>14.2f}")
    print(f"* skscope: {per_fit:.3f} s per fit measured on {n_loop} replicates × 10 a, multiplied out to "
          f"{n_fits} fits; 'first s' is its first solve. Ours: 'result' codes: "
          + ", ".join(f"{n}: {int(np.sum(r[2].converged))}/{n_fits} successful" for n, r in rows.items()))


if __name__ == "__main__":
    main()
