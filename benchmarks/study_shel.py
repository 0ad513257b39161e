"""Target-shift study for SHEL (METHODS §3): the issue's design and two variations of c.

Design (`jaxlmm.simulate.target_shift`): n = 50 clusters of 4–12 rows, p = 500, 10 proxy
covariates whose cluster means are c·α_i + noise, β = (1, .8, .6, .5, .4) on 5 non-proxies,
σ = 1; c ∈ {0.75, 1.5, 3}. Methods, each on identical data:

* marginal Lasso (λ by 5-fold cluster CV, ignores the clusters);
* quasi-likelihood Lasso (`fit_quasi`, a and λ by cluster CV), intervals by `debias`;
* lmmLasso (`fit_lmmlasso`, random intercept, λ by BIC);
* SHEL-pca (K and λ by CV), intervals by sample splitting (B splits) and by the debiased Lasso;
* SHEL-dummies (λ by CV), intervals by the debiased Lasso.

Printed per method: mean TP (of 5), FP, proxies selected, ℓ2 error ‖β̂ − β‖, coverage and
median length of the 95% intervals for the 5 true coefficients (a coefficient without a row
counts as not covered), and median run time per fit (after the first, compiling, replicate).

Usage: python benchmarks/study_shel.py [replicates] [splits]
"""

from __future__ import annotations

import sys
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import jaxlmm  # noqa: E402
from jaxlmm.simulate import target_shift  # noqa: E402


def _coverage(table, beta, truth):
    covered, lengths = [], []
    for j in truth:
        row = np.flatnonzero(table.coords == j)
        if row.size and np.isfinite(table.ci_low[row[0]]) and np.isfinite(table.ci_high[row[0]]):
            lo, hi = table.ci_low[row[0]], table.ci_high[row[0]]
            covered.append(lo <= beta[j] <= hi)
            lengths.append(hi - lo)
        else:
            covered.append(False)
    return covered, lengths


def run(c, replicates, splits, sizes):
    methods = ["marginal Lasso", "quasi-likelihood Lasso", "lmmLasso", "SHEL-pca (split)", "SHEL-pca (debiased)",
               "SHEL-dummies (debiased)"]
    stats = {m: {"tp": [], "fp": [], "proxy": [], "l2": [], "cov": [], "len": [], "time": []} for m in methods}
    for rep in tqdm(range(replicates), desc=f"c = {c}", leave=False):
        sim = target_shift(1000 + rep, c=c, cluster_size=sizes)
        data = jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups)
        truth = np.flatnonzero(sim.beta)

        def record(name, coef, seconds, table=None):
            support = np.flatnonzero(coef)
            s = stats[name]
            s["tp"].append(np.isin(truth, support).sum())
            s["fp"].append(len(support) - np.isin(truth, support).sum())
            s["proxy"].append(np.isin(support, sim.proxies).sum())
            s["l2"].append(np.linalg.norm(coef - sim.beta))
            s["time"].append(seconds)
            if table is not None:
                cov, lens = _coverage(table, sim.beta, truth)
                s["cov"].extend(cov)
                s["len"].extend(lens)

        t0 = time.perf_counter()
        fit = jaxlmm.fit_shel(data, synthetic=np.zeros((data.n_obs, 1)), seed=rep, progress=False)
        record("marginal Lasso", fit.coef, time.perf_counter() - t0)

        t0 = time.perf_counter()
        quasi = jaxlmm.fit_quasi(data, a_grid=(0.0, 0.5, 1.0, 2.0, 4.0, 8.0), n_lambda=50, seed=rep, progress=False)
        seconds = time.perf_counter() - t0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = jaxlmm.debias(quasi, data, coords=np.union1d(quasi.support, truth))
        record("quasi-likelihood Lasso", quasi.coef, seconds, table)

        t0 = time.perf_counter()
        lmm = jaxlmm.fit_lmmlasso(data)
        record("lmmLasso", lmm.coef, time.perf_counter() - t0)

        t0 = time.perf_counter()
        pca = jaxlmm.fit_shel(data, inference="split", n_splits=splits, seed=rep, progress=False)
        record("SHEL-pca (split)", pca.coef, time.perf_counter() - t0, pca.inference)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            deb = jaxlmm.fit_shel(data, inference="debiased", seed=rep, progress=False)
        record("SHEL-pca (debiased)", deb.coef, time.perf_counter() - t0, deb.inference)

        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dum = jaxlmm.fit_shel(data, synthetic="dummies", inference="debiased", seed=rep, progress=False)
        record("SHEL-dummies (debiased)", dum.coef, time.perf_counter() - t0, dum.inference)

    print(f"\nc = {c}: {replicates} replicates, n = 50, p = 500, 10 proxies, β = (1, .8, .6, .5, .4)")
    print(f"{'method':<26} {'TP':>5} {'FP':>6} {'proxies':>8} {'ℓ2 err':>7} {'CI cover':>9} {'CI len':>7} {'s/fit':>7}")
    for name, s in stats.items():
        cover = f"{np.mean(s['cov']):.2f}" if s["cov"] else "—"
        length = f"{np.median(s['len']):.3f}" if s["len"] else "—"
        seconds = np.median(s["time"][1:]) if len(s["time"]) > 1 else s["time"][0]
        print(f"{name:<26} {np.mean(s['tp']):>5.2f} {np.mean(s['fp']):>6.1f} {np.mean(s['proxy']):>8.2f} "
              f"{np.mean(s['l2']):>7.3f} {cover:>9} {length:>7} {seconds:>7.2f}")


if __name__ == "__main__":
    replicates = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    splits = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    sizes = np.random.default_rng(2026).integers(4, 13, size=50)
    for c in (1.5, 0.75, 3.0):
        run(c, replicates, splits, sizes)
