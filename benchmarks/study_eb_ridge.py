"""The seed-002 experiments (Amestoy, van de Wiel & van Wieringen, slides 'Results') with
`jaxlmm.fit_eb_ridge`, printed beside the slides' numbers.

1. Random-effects shrinkage vs repeats: 40 individuals, y = Xβ + Z_i b_i + ε with X_i ~ N(0, I)
   (2 covariates), β ~ N(0, I_2), Z = [1, t, t², t³] (q = 4), b_i ~ N(0, Σ), Σ ~ IW with
   E(Σ) = I_4, σ² = 1; 2, 3, 5, 8 repeats, 30 replicates. EB (λ, b, A = αI learned) against
   unregularised ML (b = 0, λ = 0, same ECM). Reported: median learned b, median RMSE(β) ratio
   and median KL ratio, both ML / EB (> 1: EB is better).
2. Fixed-effects dimension: 280 observations (40 individuals × 7 repeats), q = 2 ([1, t]),
   β ~ N(0, I_p) with p = 2 or 500, Σ ~ IW with E(Σ) = I_2, 10 replicates: median b and λ.

Choices the slides leave open (stated here, not tuned to the slides' outcome): times
t ~ U(−1, 1) drawn per observation; σ² = 1; an unpenalised intercept (true value 0); Σ ~ IW(ν, Φ)
with Φ = I and ν = q + 2, the one choice with Φ = I and E(Σ) = I; KL(Σ̂, Σ) = KL(N(0, Σ) ‖ N(0, Σ̂))
= ½[tr(Σ̂⁻¹Σ) − q − log|Σ̂⁻¹Σ|] (half Stein's loss).
The b of the generating prior is (ν + q + 1) / (n + ν + q + 1): 0.22 in (1), 0.15 in (2).

Usage: python benchmarks/study_eb_ridge.py [replicates_1] [replicates_2]
"""

from __future__ import annotations

import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402
from tqdm import tqdm  # noqa: E402

import jaxlmm  # noqa: E402

SLIDES_REPEATS = {2: (0.97, 2.26, 0.38), 3: (1.07, 1.49, 0.34), 5: (1.02, 1.20, 0.29), 8: (1.01, 1.05, 0.29)}
SLIDES_P = {2: (0.17, 0.09), 500: (0.13, 1.57)}


def simulate(rng, n, repeats, p, q, nu):
    N = n * repeats
    groups = np.repeat(np.arange(n), repeats)
    t = rng.uniform(-1, 1, size=N)
    Z = np.column_stack([t**k for k in range(q)])
    Sigma = stats.invwishart(df=nu, scale=(nu - q - 1) * np.eye(q)).rvs(random_state=rng).reshape(q, q)
    b = rng.multivariate_normal(np.zeros(q), Sigma, size=n)
    X = rng.normal(size=(N, p))
    beta = rng.normal(size=p)
    y = X @ beta + np.einsum("tk,tk->t", Z, b[groups]) + rng.normal(size=N)
    return jaxlmm.LMMData.from_arrays(X, y, groups, Z), beta, Sigma


def kl(Sigma_hat, Sigma):
    q = Sigma.shape[0]
    M = np.linalg.solve(Sigma_hat, Sigma)
    sign, logdet = np.linalg.slogdet(M)
    return 0.5 * (np.trace(M) - q - logdet) if sign > 0 else np.inf


def experiment_repeats(replicates):
    rows = []
    for repeats in (2, 3, 5, 8):
        rng = np.random.default_rng(100 + repeats)
        bs, rmse_ratio, kl_ratio, kl_ml, kl_eb, singular, seconds, ok = [], [], [], [], [], 0, [], 0
        for _ in tqdm(range(replicates), desc=f"{repeats} repeats", leave=False):
            data, beta, Sigma = simulate(rng, 40, repeats, 2, 4, nu=6)
            start = time.perf_counter()
            eb = jaxlmm.fit_eb_ridge(data)
            seconds.append(time.perf_counter() - start)
            ml = jaxlmm.fit_eb_ridge(data, lam=0.0, b=0.0, A=1.0)
            ok += eb.converged
            bs.append(eb.b)
            rmse_ratio.append(np.sqrt(np.mean((ml.coef - beta) ** 2)) / np.sqrt(np.mean((eb.coef - beta) ** 2)))
            kl_ml.append(kl(ml.psi, Sigma))
            kl_eb.append(kl(eb.psi, Sigma))
            kl_ratio.append(kl_ml[-1] / kl_eb[-1])
            w = np.linalg.eigvalsh(ml.psi)
            singular += w[0] < 1e-4 * w[-1]
        rows.append((repeats, np.median(rmse_ratio), np.median(kl_ratio), np.median(bs), ok, seconds,
                     np.median(kl_ml), np.median(kl_eb), singular))
    print("\n1. Random-effects shrinkage vs repeats (40 individuals, q = 4; medians over "
          f"{replicates} replicates; ratios ML / EB)")
    print(f"{'repeats':>8} | {'RMSE β ratio':>12} {'slides':>7} | {'KL ratio':>9} {'slides':>7} | "
          f"{'b':>6} {'slides':>7} | {'KL ML':>8} {'KL EB':>6} {'ML Ψ̂ singular':>14} | converged | "
          "s/fit (1st incl. compile)")
    for repeats, rmse, klr, b, ok, seconds, klm, kle, singular in rows:
        s_rmse, s_kl, s_b = SLIDES_REPEATS[repeats]
        print(f"{repeats:>8} | {rmse:>12.2f} {s_rmse:>7.2f} | {klr:>9.2f} {s_kl:>7.2f} | {b:>6.2f} {s_b:>7.2f} | "
              f"{klm:>8.2f} {kle:>6.2f} {singular:>10}/{replicates:<3} | {ok:>5}/{replicates:<3} | "
              f"{np.median(seconds[1:]) if len(seconds) > 1 else seconds[0]:.2f} ({seconds[0]:.1f})")


def experiment_dimension(replicates):
    rows = []
    for p in (2, 500):
        rng = np.random.default_rng(200 + p)
        bs, lams, ok, seconds = [], [], 0, []
        for _ in tqdm(range(replicates), desc=f"p = {p}", leave=False):
            data, _, _ = simulate(rng, 40, 7, p, 2, nu=4)
            start = time.perf_counter()
            fit = jaxlmm.fit_eb_ridge(data)
            seconds.append(time.perf_counter() - start)
            bs.append(fit.b)
            lams.append(fit.lam)
            ok += fit.converged
        rows.append((p, np.median(bs), np.median(lams), ok, seconds))
    print(f"\n2. Fixed-effects dimension (280 obs, 40 individuals × 7, q = 2; medians over {replicates} replicates)")
    print(f"{'p':>5} | {'b':>6} {'slides':>7} | {'λ':>6} {'slides':>7} | converged | s/fit (1st incl. compile)")
    for p, b, lam, ok, seconds in rows:
        s_b, s_lam = SLIDES_P[p]
        print(f"{p:>5} | {b:>6.2f} {s_b:>7.2f} | {lam:>6.2f} {s_lam:>7.2f} | {ok:>5}/{replicates:<3} | "
              f"{np.median(seconds[1:]) if len(seconds) > 1 else seconds[0]:.2f} ({seconds[0]:.1f})")


if __name__ == "__main__":
    r1 = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    r2 = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    if r1:
        experiment_repeats(r1)
    if r2:
        experiment_dimension(r2)
