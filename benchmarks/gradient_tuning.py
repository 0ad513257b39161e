"""Gradient-based tuning of (a, λ) (`tune_by_gradient`) against the default grid CV of `fit_quasi`
(11 values of a × 100 λ, 5 cluster folds) on three designs: the held-out marginal prediction
error on a fresh replicate of the design (new clusters, same β), the number of Lasso solves and the
time (first call in this process, compilation included, then a second call).

Usage: python benchmarks/gradient_tuning.py
"""

from __future__ import annotations

import time

import jax
import numpy as np

import jaxlmm

jax.config.update("jax_enable_x64", True)

DESIGNS = {
    "seed 001 (scope example)": lambda seed: jaxlmm.simulate.scope_example_design(seed=seed),
    "Schelldorfer H1": lambda seed: jaxlmm.simulate.schelldorfer_design(seed=seed, design="H1"),
    "target shift (30 × 200)": lambda seed: jaxlmm.simulate.target_shift(seed, n_clusters=30, p=200),
}


def data_of(sim):
    return jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups, sim.Z)


def heldout(fit, sim):
    return float(np.mean((sim.y - sim.X @ fit.coef - fit.intercept) ** 2))


def main():
    rows = []
    for name, make in DESIGNS.items():
        train, test = make(0), make(1)
        data = data_of(train)
        times = []
        for _ in range(2):
            t = time.perf_counter()
            grid = jaxlmm.fit_quasi(data, progress=False)
            times.append(time.perf_counter() - t)
        n_grid = int(np.sum(np.isfinite(grid.cv.error))) * 6  # λ solved per a × (full data + 5 folds)
        gtimes = []
        for _ in range(2):
            t = time.perf_counter()
            tuned = jaxlmm.tune_by_gradient(data, progress=False)
            gtimes.append(time.perf_counter() - t)
        rows.append((name, heldout(grid, test), grid.a, grid.lam, n_grid,
                     *times, heldout(tuned.fit, test), tuned.a, tuned.lam, tuned.n_solves, *gtimes))
    header = (f"{'design':26} | {'grid CV: error':>14} {'a':>6} {'λ':>8} {'solves':>7} {'first s':>8} {'again s':>8}"
              f" | {'gradient: error':>15} {'a':>6} {'λ':>8} {'solves':>7} {'first s':>8} {'again s':>8} | ratio")
    print(header)
    for r in rows:
        print(f"{r[0]:26} | {r[1]:14.4f} {r[2]:6.3g} {r[3]:8.4g} {r[4]:7d} {r[5]:8.2f} {r[6]:8.2f} | {r[7]:15.4f} "
              f"{r[8]:6.3g} {r[9]:8.4g} {r[10]:7d} {r[11]:8.2f} {r[12]:8.2f} | {r[7] / r[1]:.3f}")
    print("error: mean squared marginal prediction error on a fresh replicate; ratio = gradient / grid.")


if __name__ == "__main__":
    main()
