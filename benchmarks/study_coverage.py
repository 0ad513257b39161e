"""Coverage of `debias` intervals and bias of `variance_components` when chained as a user would
— `fit_quasi(data, a=1.0)` with its default cross-validated λ, then `debias(fit, data)` and
`variance_components(fit, data)` — on three designs, against the nominal 95 %.

Designs (Li, Cai & Li-style, `simulate.li_cai_li_design`; σ² = 0.25 unless said):
  slope   50 clusters of 3–9 rows, p = 200, q = 2: a random slope on the signal column x_0,
          β = (1, 0.3, 0.3, 0, …), Ψ = diag(1, 0.5)
  intercept  as `slope` with a random intercept only (q = 1)
  larger  40 clusters of 4–12 rows, p = 300, q = 2, σ² = 1, β = (1, 0.5, 0.2, 0.1, 0.05, 0, …)

Columns: coverage of the 95 % intervals for the nonzero coefficients and for 10 zero ones (their
mean), the rejection rate of H0: β_j = 0 at the zeros, σ̂²/σ² from `variance_components` (with
the degrees-of-freedom correction) and without it ("no df", the earlier estimator), and from the
scaled-Lasso fit ("univ."), and the mean support size of the CV fit. `--initial fit` debiases
the CV fit's own β̂ (the earlier behaviour), for the before/after table.

Usage: python benchmarks/study_coverage.py [replicates] [--initial fit] [--design NAME]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from tqdm import tqdm

import jaxlmm

DESIGNS = {
    "slope": dict(n_clusters=50, size_range=(3, 9), p=200, q=2, psi_diag=(1.0, 0.5), sigma=0.5,
                  support=(0, 1, 2), values=(1.0, 0.3, 0.3)),
    "intercept": dict(n_clusters=50, size_range=(3, 9), p=200, q=1, psi_diag=(1.0,), sigma=0.5,
                      support=(0, 1, 2), values=(1.0, 0.3, 0.3)),
    "larger": dict(n_clusters=40, size_range=(4, 12), p=300, q=2, psi_diag=(1.0, 0.5), sigma=1.0,
                   support=(0, 1, 2, 3, 4), values=(1.0, 0.5, 0.2, 0.1, 0.05)),
}
N_ZEROS = 10


def cluster_sizes(design: str) -> np.ndarray:
    """One unbalanced layout per design, kept across replicates (one compiled program each)."""
    options = DESIGNS[design]
    low, high = options["size_range"]
    return np.random.default_rng(2026).integers(low, high + 1, size=options["n_clusters"])


def within_cluster_rss(residual, groups, Z, fixed_df) -> float:
    """σ̂_e² = Σ_i ‖(I − P_{Z_i}) r_i‖² / (Σ_i (m_i − rank Z_i) − fixed_df), in NumPy: the
    estimator before the degrees-of-freedom correction when fixed_df = 0."""
    rss = dof = 0.0
    for g in np.unique(groups):
        rows = groups == g
        coef, *_ = np.linalg.lstsq(Z[rows], residual[rows], rcond=None)
        rss += np.sum((residual[rows] - Z[rows] @ coef) ** 2)
        dof += rows.sum() - np.linalg.matrix_rank(Z[rows])
    return rss / (dof - fixed_df)


def replicate(design: str, seed: int, initial: str) -> dict:
    sim = jaxlmm.simulate.li_cai_li_design(seed=seed, cluster_size=cluster_sizes(design), **DESIGNS[design])
    data = jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups, sim.Z)
    fit = jaxlmm.fit_quasi(data, a=1.0, progress=False)
    signals = np.flatnonzero(sim.beta)
    zeros = np.setdiff1d(np.arange(len(sim.beta)), signals)[:N_ZEROS]
    coords = np.concatenate([signals, zeros])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = jaxlmm.debias(fit, data, coords=coords, initial=initial)
    truth = sim.beta[coords]
    covered = (table.ci_low <= truth) & (truth <= table.ci_high)
    components = jaxlmm.variance_components(fit, data)
    residual = sim.y - sim.X @ fit.coef - fit.intercept
    universal = jaxlmm.fit_quasi(data, a=1.0, lam="universal", progress=False)
    return {"covered": covered, "rejected_zero": table.p_value[len(signals):] < 0.05,
            "sigma2_ratio": components.sigma2 / sim.sigma**2, "support": len(fit.support),
            "sigma2_no_df": within_cluster_rss(residual, sim.groups, sim.Z, 0) / sim.sigma**2,
            "sigma2_universal": jaxlmm.variance_components(universal, data).sigma2 / sim.sigma**2,
            "n_signals": len(signals), "valid": bool(np.all(table.valid))}


def run(design: str, replicates: int, initial: str, progress: bool = True) -> dict:
    rows = [replicate(design, seed, initial) for seed in tqdm(range(replicates), desc=design, disable=not progress)]
    k = rows[0]["n_signals"]
    covered = np.stack([r["covered"] for r in rows])
    return {"design": design, "replicates": replicates, "signal_coverage": covered[:, :k].mean(axis=0),
            "zero_coverage": covered[:, k:].mean(), "zero_rejection": np.mean([r["rejected_zero"] for r in rows]),
            "sigma2_ratio": np.mean([r["sigma2_ratio"] for r in rows]),
            "sigma2_no_df": np.mean([r["sigma2_no_df"] for r in rows]),
            "sigma2_universal": np.mean([r["sigma2_universal"] for r in rows]),
            "support": np.mean([r["support"] for r in rows]), "valid": np.mean([r["valid"] for r in rows])}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("replicates", type=int, nargs="?", default=200)
    parser.add_argument("--initial", default="scaled_lasso", choices=["scaled_lasso", "fit"])
    parser.add_argument("--design", action="append", choices=sorted(DESIGNS))
    args = parser.parse_args()
    print(f"{'design':10} {'reps':>5} {'coverage of nonzero β_j':>28} {'zeros':>6} {'reject':>7} "
          f"{'σ̂²/σ²':>7} {'no df':>7} {'univ.':>7} {'|Ŝ| CV':>7}  initial = {args.initial}")
    for design in args.design or list(DESIGNS):
        start = time.perf_counter()
        out = run(design, args.replicates, args.initial)
        signal = " ".join(f"{c:.3f}" for c in out["signal_coverage"])
        print(f"{design:10} {out['replicates']:>5} {signal:>28} {out['zero_coverage']:>6.3f} "
              f"{out['zero_rejection']:>7.3f} {out['sigma2_ratio']:>7.3f} {out['sigma2_no_df']:>7.3f} "
              f"{out['sigma2_universal']:>7.3f} {out['support']:>7.1f}"
              f"   ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
