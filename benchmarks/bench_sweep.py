"""`jaxlmm.sweep` against a Python loop of single jitted fits of the same core, on identical data,
in one process (issue 16, benchmarks (ii) and (iii)).

Rows:
* the quasi-likelihood Lasso on the Li–Cai–Li design (40 clusters of 4–12, p = 300):
  replicates × (a, λ) grid, each λ fitted cold, then as warm-started paths (`warm_start="lam"`);
* with `--lmmlasso`: lmmLasso on Schelldorfer's H1 (25 clusters of 6, p = 299): replicates × a
  50-λ grid from λ_max down, each replicate started from its own cross-validated Lasso
  (`per_batch`), as cold fits and as warm-started paths; the loop fits each (replicate, λ) cold
  from the same start. R lmmlasso's single-fit time is the one recorded with
  `tests/data/lmmlasso_H1_101`. Slow: 20 replicates did not finish in 18 minutes, most likely
  because `lmmlasso_core` has no cap on the number of nonzeros and the small λ, where p > N
  saturates the fit, run to `max_steps`; `lmmlasso_path` (`fit_lmmlasso`,
  `bench_lmmlasso.py`) stops there;
* many responses on one design (quasi Lasso and SHEL): R responses, one λ;
* the plain LMM by ML for R responses on one design, also against statsmodels and lme4's refit().
Columns: fits, sweep first call (compilation included) and repeated, the loop's first call and
repeated per fit extrapolated to all fits (measured on `--loop` fits), the ratio of repeated
times, and the largest |Δβ| between the two (for a convex core they must agree before a time
means anything; a warm lmmLasso path may end in another local minimum, so there the mean BIC
of the two is printed too).

    python benchmarks/bench_sweep.py            # 20 replicates × 5 a × 10 λ; H1 20 × 50 λ; 500 and 1,000 responses
    python benchmarks/bench_sweep.py --full     # 100 replicates × 5 a × 50 λ; H1 100 × 50 λ; 2,000 and 10,000 responses
"""

import argparse
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import pandas as pd

jax.config.update("jax_enable_x64", True)

from _timing import best_of, first_call  # noqa: E402

import jaxlmm  # noqa: E402

R_H1 = Path(__file__).parents[1] / "tests" / "data" / "lmmlasso_H1_101" / "lmmlasso_fits.csv"


def quasi_problem(n_rep):
    sizes = np.random.default_rng(123).integers(4, 13, size=40)
    sims = [jaxlmm.simulate.li_cai_li_design(seed=r, cluster_size=sizes) for r in range(n_rep)]
    return [jaxlmm.LMMData.from_arrays(s.X, s.y, s.groups, s.Z) for s in sims], sims[0].beta


def compare(name, core, datasets, grid, loop_fits, responses=None, warm_start=None, per_batch=None, truth=None,
            **options):
    stacked = jaxlmm.LMMData.stack(datasets) if responses is None else datasets[0]
    run = lambda: jaxlmm.sweep(core, stacked, grid, responses=responses, warm_start=warm_start,  # noqa: E731
                               per_batch=per_batch, truth=truth, progress=False, **options)
    grid = grid or {}
    t_first, result = first_call(run)
    t_again, result = best_of(run, 2)
    n_batch, n_grid = result.result.shape
    points = [(b, g) for b in range(n_batch) for g in range(n_grid)][:loop_fits]
    names = list(result.grid)
    single = jax.jit(lambda d, extra, *h: core(d, **dict(zip(names, h)), **extra, **options))

    def data_of(b):
        if responses is None:
            return datasets[b]
        order = np.argsort(np.asarray(stacked.order))  # caller's row of each sorted row
        X, groups, Z = (np.asarray(a)[order] for a in (stacked.X, stacked.cluster, stacked.Z))
        return jaxlmm.LMMData.from_arrays(X, responses[b], groups, Z)

    loop_data = {b: data_of(b) for b, _ in points}
    extra_of = lambda b: {k: v[b] for k, v in (per_batch or {}).items()}  # noqa: E731
    hyper = lambda g: [result.grid[n][g] for n in names]  # noqa: E731
    b0, g0 = points[0]
    t_loop_first, _ = first_call(lambda: single(loop_data[b0], extra_of(b0), *hyper(g0)).coef)

    def loop():
        return [single(loop_data[b], extra_of(b), *hyper(g)) for b, g in points]

    t_loop, fits = best_of(loop, 2)
    diff = max(np.abs(np.asarray(f.coef) - result.fits.coef[b, g]).max() for (b, g), f in zip(points, fits))
    per_fit = t_loop / len(points)
    total = n_batch * n_grid
    print(f"{name:<46} {total:>6} {t_first:>8.2f} {t_again:>8.2f} {t_loop_first:>8.2f} {per_fit * total:>9.2f} "
          f"{per_fit * total / t_again:>7.1f}× {diff:>9.1e}  ({int(result.converged.sum())}/{total} converged)")
    return result, [(b, g, f) for (b, g), f in zip(points, fits)]


def lmmlasso_replicates(n_rep, loop_fits):
    """lmmLasso on H1: a 50-λ grid from λ_max (of replicate 0's path) down to 0.01 λ_max, every
    replicate started from its own CV Lasso, as cold fits and as warm paths, against a loop of
    single jitted cold fits, and R lmmlasso's recorded single-fit time multiplied out."""
    from jaxlmm.estimators.lmmlasso.estimator import _cold_start

    sims = [jaxlmm.simulate.schelldorfer_design(seed=r, design="H1") for r in range(n_rep)]
    data = [jaxlmm.LMMData.from_arrays(s.X, s.y, s.groups, s.Z) for s in sims]
    p = sims[0].X.shape[1]
    start = time.perf_counter()
    starts = np.stack([_cold_start(d, np.zeros(p), np.ones(p), r) for r, d in enumerate(data)])
    t_starts = time.perf_counter() - start
    lams = np.asarray(jaxlmm.fit_lmmlasso(data[0], standardize=False).path.lambdas)
    print(f"  (H1: {n_rep} CV-Lasso starts computed beforehand in {t_starts:.1f} s; λ from {lams[0]:.1f} to "
          f"{lams[-1]:.2f})")
    rows = {}
    for label, warm in (("cold", None), ("warm path", "lam")):
        rows[label] = compare(f"lmmLasso H1: {n_rep} replicates × 50 λ, {label}", jaxlmm.lmmlasso_core, data,
                              {"lam": lams}, loop_fits, warm_start=warm, per_batch={"start": starts},
                              truth=sims[0].beta)
    for label, (result, _) in rows.items():
        err = result.summary["l2_error"]
        best = np.argmin(err, axis=1)  # the oracle λ of each replicate
        pick = lambda name: result.summary[name][np.arange(n_rep), best].mean()  # noqa: E731
        print(f"  {label}: at each replicate's best λ, mean ‖β̂ − β‖ {err.min(1).mean():.3f}, TP {pick('tp'):.2f}, "
              f"FP {pick('fp'):.2f}; converged {int(result.converged.sum())}/{result.result.size}")
    r_single = float(np.median(pd.read_csv(R_H1)["seconds"]))
    total = n_rep * len(lams)
    print(f"{'  R lmmlasso 0.1-2 (recorded single fit × fits)':<46} {total:>6} {'':>8} {'':>8} {'':>8} "
          f"{r_single * total:>9.1f}")


R_REFIT = """
suppressPackageStartupMessages(library(lme4))
d <- read.csv(commandArgs(TRUE)[1]); Y <- as.matrix(read.csv(commandArgs(TRUE)[2]))
d$g <- factor(d$g); d$y <- Y[, 1]
fit <- lmer(y ~ t + x1 + x2 + (t | g), data = d, REML = FALSE)
k <- as.integer(commandArgs(TRUE)[3])
elapsed <- system.time(for (j in 1:k) fit_j <- refit(fit, Y[, j]))[["elapsed"]]
cat(sprintf("%.6f %.10f\\n", elapsed / k, -2 * as.numeric(logLik(refit(fit, Y[, 1])))))
"""


def lmm_many_responses(n_resp, loop_fits):
    """Plain LMM by ML (random intercept + slope), one design, many responses: the sweep against
    a loop of jitted single fits, statsmodels MixedLM per response and lme4's refit() per
    response (both measured on a few responses and multiplied out)."""
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(50), 10)
    t = rng.uniform(-1, 1, len(groups))
    X = np.column_stack([t, rng.normal(size=(len(groups), 2))])
    Z = np.column_stack([np.ones(len(groups)), t])
    b = rng.normal(size=(n_resp, 50, 2)) * [1.0, 0.5]
    Y = X @ [1.0, 0.5, 0.0] + np.einsum("tk,rtk->rt", Z, b[:, groups]) + rng.normal(size=(n_resp, len(groups)))
    data = jaxlmm.LMMData.from_arrays(X, Y[0], groups, Z)
    ours = -2 * jaxlmm.fit_lmm(data, reml=False).loglik
    compare(f"plain LMM (ML): {n_resp} responses, N = 500, 50 groups", jaxlmm.lmm_core, [data], None, loop_fits,
            responses=Y)
    from statsmodels.regression.mixed_linear_model import MixedLM

    k = 10
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j in range(k):
            MixedLM(Y[j], np.column_stack([np.ones(len(groups)), X]), groups=groups, exog_re=Z).fit(reml=False)
    per = (time.perf_counter() - start) / k
    print(f"{'  statsmodels MixedLM, per response × ' + str(n_resp):<46} {n_resp:>6} {'':>8} {'':>8} {'':>8} "
          f"{per * n_resp:>9.2f}")
    if shutil.which("Rscript"):
        with tempfile.TemporaryDirectory() as tmp:
            pd.DataFrame({"g": groups, "t": t, "x1": X[:, 1], "x2": X[:, 2]}).to_csv(Path(tmp, "d.csv"), index=False)
            pd.DataFrame(Y[:k].T).to_csv(Path(tmp, "y.csv"), index=False)
            out = subprocess.run(["Rscript", "-e", R_REFIT, str(Path(tmp, "d.csv")), str(Path(tmp, "y.csv")), str(k)],
                                 capture_output=True, text=True, check=True).stdout.split()
        print(f"{'  lme4 refit(), per response × ' + str(n_resp):<46} {n_resp:>6} {'':>8} {'':>8} {'':>8} "
              f"{float(out[0]) * n_resp:>9.2f}   (−2 log L of response 0: lme4 {float(out[1]):.6f}, ours {ours:.6f})")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--lmmlasso", action="store_true", help="add the lmmLasso rows (slow, see below)")
    args = parser.parse_args()
    n_rep, n_lam, loop_fits = (100, 50, 200) if args.full else (20, 10, 40)
    print(f"{'problem':<46} {'fits':>6} {'first s':>8} {'again s':>8} {'loop 1st':>8} {'loop s*':>9} {'ratio':>8} "
          f"{'max|Δβ|':>9}")
    data, beta = quasi_problem(n_rep)
    grid = {"a": [0.25, 0.5, 1.0, 2.0, 4.0], "lam": np.geomspace(0.3, 0.03, n_lam)}
    compare(f"quasi Lasso: {n_rep} replicates × 5 a × {n_lam} λ", jaxlmm.quasi_lasso_core, data, grid, loop_fits)
    compare("  the same, warm-started λ paths", jaxlmm.quasi_lasso_core, data, grid, loop_fits, warm_start="lam")
    if args.lmmlasso:  # slow (see the docstring)
        lmmlasso_replicates(100 if args.full else 20, loop_fits)
    rng = np.random.default_rng(0)
    n_resp = 2000 if args.full else 500
    responses = np.stack([d.y for d in data] * (n_resp // len(data)))[:n_resp]
    responses = responses[:, np.argsort(np.asarray(data[0].order))] + 0.1 * rng.normal(size=responses.shape)
    compare(f"quasi Lasso: {n_resp} responses, one design", jaxlmm.quasi_lasso_core, data,
            {"a": [1.0], "lam": [0.1]}, loop_fits, responses=responses)
    compare(f"SHEL: {n_resp} responses, one design", jaxlmm.shel_core, data, {"lam": [0.1]}, loop_fits,
            responses=responses)
    lmm_many_responses(10_000 if args.full else 1000, loop_fits)
    print("* the loop's repeated time per fit (measured on", loop_fits, "fits) times all fits")


if __name__ == "__main__":
    main()
