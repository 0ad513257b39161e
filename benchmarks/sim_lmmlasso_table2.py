"""Table 2 of Schelldorfer, Bühlmann & van de Geer (2011): H1, H2, H3, λ by BIC.

For each design and replicate: lmmLasso, lmmadLasso (two-stage, weights 1/|β̂|), the Lasso and
the adaptive Lasso (structure="none": no random effects, σ² by ML), all from `fit_lmmlasso` on a
50-λ path with BIC. Prints mean (sd) over replicates of |S(β̂)| (the intercept counts, so the
truth is 5), TP, σ̂², θ̂² (Ψ̂ = θ̂² I) and β̂_1..β̂_5 (β̂_1 the intercept), beside the paper.
Usage: python sim_lmmlasso_table2.py [replicates=100] [designs=H1,H2,H3]
"""

import sys
import time

import jax
import numpy as np
from tqdm.auto import tqdm

jax.config.update("jax_enable_x64", True)

import jaxlmm  # noqa: E402

PAPER = {  # |S|, TP, σ², θ², β1..β5 (means; Table 2)
    ("H1", "lmmLasso"): (6.70, 5, 0.29, 0.52, 1.01, 2.05, 3.86, 2.90, 2.88),
    ("H1", "lmmadLasso"): (6.59, 5, 0.22, 0.52, 1.01, 2.03, 3.98, 2.99, 3.00),
    ("H1", "Lasso"): (6.29, 5, 1.36, np.nan, 1.01, 2.07, 3.76, 2.84, 2.79),
    ("H1", "adLasso"): (6.29, 5, 1.16, np.nan, 1.01, 2.02, 3.98, 3.00, 2.99),
    ("H2", "lmmLasso"): (6.65, 5, 0.28, 0.56, 1.00, 1.90, 3.91, 2.92, 2.89),
    ("H2", "lmmadLasso"): (6.53, 5, 0.22, 0.55, 1.00, 2.00, 3.99, 3.00, 2.99),
    ("H2", "Lasso"): (6.84, 5, 0.87, np.nan, 1.00, 1.84, 3.88, 2.88, 2.83),
    ("H2", "adLasso"): (6.84, 5, 0.72, np.nan, 1.00, 2.00, 4.00, 3.00, 2.98),
    ("H3", "lmmLasso"): (6.17, 5, 0.29, 0.52, 1.02, 2.00, 4.04, 2.84, 2.84),
    ("H3", "lmmadLasso"): (6.12, 5, 0.23, 0.53, 1.02, 2.00, 4.00, 2.99, 2.99),
    ("H3", "Lasso"): (5.93, 5, 1.94, np.nan, 1.03, 2.02, 4.06, 2.70, 2.70),
    ("H3", "adLasso"): (5.93, 5, 1.69, np.nan, 1.03, 2.02, 3.99, 2.98, 2.97),
}
METHODS = {
    "lmmLasso": dict(structure="identity"),
    "lmmadLasso": dict(structure="identity", adaptive=True),
    "Lasso": dict(structure="none"),
    "adLasso": dict(structure="none", adaptive=True),
}
COLUMNS = ("|S|", "TP", "σ²", "θ²", "β1", "β2", "β3", "β4", "β5")


def summary(fit):
    beta = np.concatenate([[fit.intercept], fit.coef])
    size = int(np.count_nonzero(beta))
    tp = int(np.count_nonzero(beta[:5]))
    theta2 = fit.psi[0, 0] if fit.structure != "none" else np.nan
    return [size, tp, fit.sigma2, theta2, *beta[:5]]


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    designs = sys.argv[2].split(",") if len(sys.argv) > 2 else ["H1", "H2", "H3"]
    for design in designs:
        rows = {m: [] for m in METHODS}
        seconds = {m: 0.0 for m in METHODS}
        for r in tqdm(range(reps), desc=design):
            sim = jaxlmm.simulate.schelldorfer_design(seed=1000 + r, design=design)
            data = jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups, sim.Z)
            for name, options in METHODS.items():
                start = time.perf_counter()
                fit = jaxlmm.fit_lmmlasso(data, **options)
                seconds[name] += time.perf_counter() - start
                rows[name].append(summary(fit))
        print(f"\n{design}: {reps} replicates; mean (sd), paper mean in [brackets]")
        print(f"{'method':11} " + " ".join(f"{c:>17}" for c in COLUMNS) + f" {'s/fit':>6}")
        for name in METHODS:
            values = np.array(rows[name], float)
            cells = []
            for j, paper in enumerate(PAPER[(design, name)]):
                column = values[:, j][~np.isnan(values[:, j])]  # θ² is NaN without random effects
                cells.append(f"{column.mean():.2f}({column.std():.2f})[{paper:.2f}]" if column.size else "–")
            print(f"{name:11} " + " ".join(f"{c:>17}" for c in cells) + f" {seconds[name] / reps:>6.2f}")


if __name__ == "__main__":
    main()
