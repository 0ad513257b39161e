"""Table 5 of Schelldorfer, Bühlmann & van de Geer (2011, §5.2): within-group prediction.

Designs P1–P3 (`simulate.schelldorfer_prediction_design`: 25 clusters of 6, q = 3, σ² = 1,
β = (1, 1.5, 1.2, 1, 2, 0, …), p = 10, 100, 500, Ψ = θ² I with θ² ∈ {0, 0.25, 1, 2}), a test set
of 50 rows per cluster with the same random effects. Mean squared prediction error of
ŷ = β̂_0 + xᵀβ̂ + zᵀb̂_i (b̂_i the method's BLUP; none for the Lasso variants) for the paper's six
methods and three of ours, beside the paper's numbers:

- lmmLasso, lmmadLasso: `fit_lmmlasso` (Ψ = θ² I, λ by BIC; adaptive: weights 1/|β̂|);
- Lasso, adLasso: `fit_lmmlasso(structure="none")` (σ² by ML, λ by BIC);
- cv-Lasso, cv-adLasso: the Lasso ignoring the grouping with λ by 10-fold cluster CV
  (`fit_quasi(a=0)`; adaptive: weights 1/|β̂| of the cv-Lasso);
- quasi: the Li–Cai–Li quasi-likelihood Lasso (a and λ by CV; BLUPs from its variance
  components); SHEL (cluster-level synthetic variables; its cluster effects); EB ridge.

Usage: python study_prediction.py [replicates=10] [designs=10,100,500] [theta2=0,0.25,1,2]
"""

import sys
import time

import jax
import numpy as np
from tqdm.auto import tqdm

jax.config.update("jax_enable_x64", True)

import jaxlmm  # noqa: E402

THETA2 = (0.0, 0.25, 1.0, 2.0)
PAPER = {  # (p, θ²): lmmLasso, lmmadLasso, Lasso, adLasso, cv-Lasso, cv-adLasso
    (10, 0.0): (1.01, 1.02, 1.00, 1.01, 1.05, 1.01), (10, 0.25): (1.33, 1.29, 1.76, 1.84, 1.81, 1.84),
    (10, 1.0): (1.66, 1.55, 3.74, 3.74, 3.88, 3.77), (10, 2.0): (1.67, 1.80, 5.92, 6.25, 5.94, 6.25),
    (100, 0.0): (1.12, 1.02, 1.26, 1.09, 1.20, 1.14), (100, 0.25): (1.51, 1.38, 1.75, 1.75, 2.06, 1.75),
    (100, 1.0): (1.94, 1.86, 4.35, 4.53, 4.61, 4.23), (100, 2.0): (2.49, 1.95, 7.04, 7.02, 7.09, 6.98),
    (500, 0.0): (1.22, 1.07, 1.18, 1.26, 1.24, 1.58), (500, 0.25): (1.83, 1.58, 2.63, 2.67, 2.98, 3.58),
    (500, 1.0): (2.00, 1.85, 4.35, 3.78, 4.14, 4.85), (500, 2.0): (2.54, 2.04, 10.30, 8.26, 9.47, 11.28),
}
PAPER_METHODS = ("lmmLasso", "lmmadLasso", "Lasso", "adLasso", "cv-Lasso", "cv-adLasso")


def cv_adaptive(data):
    first = jaxlmm.fit_quasi(data, a=0.0, n_folds=10, progress=False, variance=False)
    with np.errstate(divide="ignore"):
        weights = np.where(first.coef != 0, 1.0 / np.abs(first.coef), np.inf)
    return jaxlmm.fit_quasi(data, a=0.0, n_folds=10, weights=weights, progress=False, variance=False)


METHODS = {
    "lmmLasso": lambda d: jaxlmm.fit_lmmlasso(d),
    "lmmadLasso": lambda d: jaxlmm.fit_lmmlasso(d, adaptive=True),
    "Lasso": lambda d: jaxlmm.fit_lmmlasso(d, structure="none"),
    "adLasso": lambda d: jaxlmm.fit_lmmlasso(d, structure="none", adaptive=True),
    "cv-Lasso": lambda d: jaxlmm.fit_quasi(d, a=0.0, n_folds=10, progress=False, variance=False),
    "cv-adLasso": cv_adaptive,
    "quasi": lambda d: jaxlmm.fit_quasi(d, progress=False),
    "SHEL": lambda d: jaxlmm.fit_shel(d),
    "EB ridge": lambda d: jaxlmm.fit_eb_ridge(d),
}


def prediction_error(fit, test, method):
    """Mean squared prediction error on the test rows, with the method's BLUPs where it has them
    (the Lasso variants have none; SHEL's are cluster intercepts)."""
    if method in ("Lasso", "adLasso", "cv-Lasso", "cv-adLasso") or fit.ranef is None:
        predicted = fit.predict(test.X)
    elif fit.ranef.shape[1] == 1:
        predicted = fit.predict(test.X, test.groups)
    else:
        predicted = fit.predict(test.X, test.groups, test.Z)
    return float(np.mean((test.y - predicted) ** 2))


def row_text(p, theta2, row):
    cells = [f"{row[m]:8.2f} [{PAPER[(p, theta2)][i]:5.2f}]" for i, m in enumerate(PAPER_METHODS)]
    cells += [f"{row[m]:17.2f}" for m in METHODS if m not in PAPER_METHODS]
    return f"{p:4d} {theta2:5.2f}" + "".join(f"{c:>17s}" for c in cells)


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    designs = [int(p) for p in sys.argv[2].split(",")] if len(sys.argv) > 2 else [10, 100, 500]
    strengths = [float(t) for t in sys.argv[3].split(",")] if len(sys.argv) > 3 else THETA2
    results, seconds = {}, {m: 0.0 for m in METHODS}
    for p in designs:
        for theta2 in strengths:
            errors = {m: [] for m in METHODS}
            for r in tqdm(range(reps), desc=f"p={p}, θ²={theta2}"):
                train, test = jaxlmm.simulate.schelldorfer_prediction_design(3000 + r, p, theta2)
                data = jaxlmm.LMMData.from_arrays(train.X, train.y, train.groups, train.Z)
                for method, fit_method in METHODS.items():
                    start = time.perf_counter()
                    fit = fit_method(data)
                    seconds[method] += time.perf_counter() - start
                    errors[method].append(prediction_error(fit, test, method))
            results[(p, theta2)] = {m: np.mean(v) for m, v in errors.items()}
            tqdm.write(row_text(p, theta2, results[(p, theta2)]))
    print(f"\nTable 5: mean squared prediction error, {reps} replicates per cell (paper in brackets)")
    print(f"{'p':>4s} {'θ²':>5s}" + "".join(f"{m:>17s}" for m in METHODS))
    for (p, theta2), row in results.items():
        print(row_text(p, theta2, row))
    total = len(results) * reps
    print("seconds per fit (compilation included): "
          + ", ".join(f"{m} {s / total:.1f}" for m, s in seconds.items()))


if __name__ == "__main__":
    main()
