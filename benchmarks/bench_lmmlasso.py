"""lmmLasso timings on the paper's H1 (N = 150, p = 300) and H3 (N = 180, p = 1000) designs.

Rows: one single-λ fit (both starts, λ = the BIC choice), the 50-λ BIC path program (warm path +
50 cold fits + BIC), and the whole `fit_lmmlasso` call (adds the cross-validated Lasso used as
the cold start). Compilation is reported separately. The reference is R lmmlasso 0.1-2: R is
not installed on this machine, so its column is the elapsed time of single fits recorded with
the H1 reference data (`tests/data/lmmlasso_H1_101`, same kind of 2-core machine).
Last row: 100 replicates of H1 × 50 λ as one jitted program (`lax.map` over stacked data sets).
"""

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

jax.config.update("jax_enable_x64", True)

from _timing import best_of, first_call  # noqa: E402

import jaxlmm  # noqa: E402
from jaxlmm.estimators.lmmlasso.estimator import _cold_start, _fit_single, _standardised_design  # noqa: E402
from jaxlmm.losses import mixed_model_nll  # noqa: E402

REFERENCE = Path(__file__).parents[1] / "tests" / "data" / "lmmlasso_H1_101" / "lmmlasso_fits.csv"


def problem(design, seed=0):
    sim = jaxlmm.simulate.schelldorfer_design(seed=seed, design=design)
    data = jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups, sim.Z)
    X1, center, scale = _standardised_design(data, True)
    _, args = mixed_model_nll(data, jnp.asarray(X1))
    mask = np.zeros(X1.shape[1], bool)
    mask[: data.Z.shape[1]] = True
    cold = jnp.asarray(_cold_start(data, center, scale, 0))
    return data, args, jnp.asarray(mask), cold


def main():
    r_times = pd.read_csv(REFERENCE)["seconds"].to_numpy()
    solver = jaxlmm.MixedModelCGD()
    grid = jnp.asarray(np.geomspace(1.0, 0.01, 50))
    print(f"R lmmlasso 0.1-2, single fits on H1 data (recorded): {', '.join(f'{t:.2f}' for t in r_times)} s")
    print(f"{'design':7} {'task':34} {'compile s':>10} {'run s':>8} {'R single fit s':>15} {'R / ours':>9}")
    for design in ("H1", "H3"):
        data, args, mask, cold = problem(design)
        w = jnp.ones(args.X.shape[1])
        max_df = jnp.asarray(data.n_obs / 2, jnp.float64)  # as fit_lmmlasso passes it: one program for both
        path = lambda: jaxlmm.lmmlasso_path(args, "identity", grid, w, mask, cold, solver, max_df)
        c_path, out = first_call(path)
        t_path, out = best_of(path, repeats=3)
        lam = out.lambdas[out.best]
        single = lambda: _fit_single(args, "identity", lam, w, mask, cold, solver)
        c_single, _ = first_call(single)
        t_single, _ = best_of(single, repeats=3)
        whole = lambda: jaxlmm.fit_lmmlasso(data)
        c_whole, fit = first_call(whole)
        t_whole, fit = best_of(whole, repeats=3)
        r_ref = float(np.median(r_times))
        rows = [("single λ (warm + cold start)", c_single - t_single, t_single),
                ("50-λ path + BIC (program)", c_path - t_path, t_path),
                ("fit_lmmlasso (+ CV-Lasso start)", c_whole - t_whole, t_whole)]
        for name, compile_s, run_s in rows:
            print(f"{design:7} {name:34} {compile_s:>10.2f} {run_s:>8.3f} {r_ref:>15.2f} {r_ref / run_s:>9.2f}")
        print(f"{'':7} chosen λ = {fit.lam:.1f}, support {fit.support.tolist()}, σ̂² = {fit.sigma2:.3f}, "
              f"θ̂² = {fit.psi[0, 0]:.3f}, start = {fit.start}")

    reps = 100
    problems = [problem("H1", seed=s) for s in range(reps)]
    stacked = jaxlmm.LMMData.stack([p[0] for p in problems])
    args_stack = jax.tree.map(lambda *xs: jnp.stack(xs), *[p[1] for p in problems])
    colds = jnp.stack([p[3] for p in problems])
    mask = problems[0][2]
    w = jnp.ones(args_stack.X.shape[-1])

    @jax.jit
    def sweep(args_stack, colds):
        return jax.lax.map(
            lambda a: jaxlmm.lmmlasso_path(a[0], "identity", grid, w, mask, a[1], solver, jnp.asarray(75.0)).best,
            (args_stack, colds),
        )

    del stacked
    c_sweep, _ = first_call(lambda: sweep(args_stack, colds))
    t_sweep, best = best_of(lambda: sweep(args_stack, colds), repeats=1)
    print(f"H1      {reps} replicates × 50 λ, one program: compile {c_sweep - t_sweep:.1f} s, run {t_sweep:.1f} s "
          f"(target < 60 s); cold starts computed beforehand")


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"total {time.time() - t0:.0f} s")
