"""The seed-002 experiments (Amestoy, van de Wiel & van Wieringen, slides 'Results') with
`jaxlmm.fit_eb_ridge`, printed beside the slides' numbers.

1. Random-effects shrinkage vs repeats: 40 individuals, y = Xβ + Z_i b_i + ε with X_i ~ N(0, I)
   (2 covariates), β ~ N(0, I_2), Z = [1, t, t², t³] (q = 4), b_i ~ N(0, Σ), Σ ~ IW with
   E(Σ) = I_4, σ² = 1; 2, 3, 5, 8 repeats, 30 replicates. EB (λ, b, A = αI learned) against
   unregularised ML (b = 0, λ = 0, same ECM). Reported: median learned b, median RMSE(β) ratio
   and median KL ratio, both ML / EB (> 1: EB is better).
2. Fixed-effects dimension: 280 observations (40 individuals × 7 repeats), q = 2 ([1, t]),
   β ~ N(0, I_p) with p = 2 or 500, Σ ~ IW with E(Σ) = I_2, 10 replicates: median b and λ.

Choices the slides leave open (stated here, not tuned to the slides' outcome): σ² = 1; an
unpenalised intercept (true value 0); Σ ~ IW(ν, Φ) with Φ = I and ν = q + 2, the one choice with
Φ = I and E(Σ) = I; KL(Σ̂, Σ) = KL(N(0, Σ) ‖ N(0, Σ̂)) = ½[tr(Σ̂⁻¹Σ) − q − log|Σ̂⁻¹Σ|] (half
Stein's loss). The time points are not stated, and they decide how much the data say about Σ
(with t ~ U(−1, 1) the columns t, t³ and 1, t² are nearly collinear and t³ barely varies), so
experiment 1 is run twice: t ~ U(−1, 1) and t ~ N(0, 1), drawn per observation.
The b of the generating prior is (ν + q + 1) / (n + ν + q + 1): 0.22 in (1), 0.15 in (2).
ML Ψ̂ is singular in most replicates with few repeats (lme4 1.1-31 agrees: same Ψ̂ eigenvalues
to 4 digits and `isSingular` on the four 8-repeat N(0, 1) replicates checked), which makes
KL(ML) infinite; the KL ratio is therefore also given over the replicates with a regular ML Ψ̂.

`evidence` chooses the approximation of the marginal likelihood that learns (λ, b, A):
"laplace" (ours: β integrated out, Laplace over log-Cholesky Ψ and log σ²) or "slides" (seed
002's: Laplace over (β, σ, vech Σ) at the mode of its posterior); see `fit_eb_ridge`.

Usage: python benchmarks/study_eb_ridge.py [replicates_1] [replicates_2] [evidence=laplace]
"""

from __future__ import annotations

import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import jaxlmm  # noqa: E402

SLIDES_REPEATS = {2: (0.97, 2.26, 0.38), 3: (1.07, 1.49, 0.34), 5: (1.02, 1.20, 0.29), 8: (1.01, 1.05, 0.29)}
SLIDES_P = {2: (0.17, 0.09), 500: (0.13, 1.57)}


TIMES = {"U(-1, 1)": "uniform", "N(0, 1)": "normal"}


def simulate(rng, n, repeats, p, q, times="U(-1, 1)"):
    sim = jaxlmm.simulate.eb_ridge_design(rng, n, repeats, p, q, times=TIMES[times])
    return jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups, sim.Z), sim.beta, sim.Psi


def kl(Sigma_hat, Sigma):
    q = Sigma.shape[0]
    M = np.linalg.solve(Sigma_hat, Sigma)
    sign, logdet = np.linalg.slogdet(M)
    return 0.5 * (np.trace(M) - q - logdet) if sign > 0 else np.inf


def experiment_repeats(replicates, times, evidence="laplace"):
    rows = []
    for repeats in (2, 3, 5, 8):
        rng = np.random.default_rng(100 + repeats)
        bs, rmse_ratio, kl_ratio, singular, seconds, ok = [], [], [], [], [], 0
        for _ in tqdm(range(replicates), desc=f"t ~ {times}, {repeats} repeats", leave=False):
            data, beta, Sigma = simulate(rng, 40, repeats, 2, 4, times=times)
            start = time.perf_counter()
            eb = jaxlmm.fit_eb_ridge(data, evidence=evidence)
            seconds.append(time.perf_counter() - start)
            ml = jaxlmm.fit_eb_ridge(data, lam=0.0, b=0.0, A=1.0)
            ok += eb.converged
            bs.append(eb.b)
            rmse_ratio.append(np.sqrt(np.mean((ml.coef - beta) ** 2)) / np.sqrt(np.mean((eb.coef - beta) ** 2)))
            kl_ratio.append(kl(ml.psi, Sigma) / kl(eb.psi, Sigma))
            w = np.linalg.eigvalsh(ml.psi)
            singular.append(w[0] < 1e-4 * w[-1])
        singular, kl_ratio, bs = np.array(singular), np.array(kl_ratio), np.array(bs)
        regular = np.median(kl_ratio[~singular]) if (~singular).any() else np.nan
        rows.append((repeats, np.median(rmse_ratio), np.median(kl_ratio), regular, np.median(bs),
                     np.mean(bs > 0.99), ok, seconds, singular.sum()))
    print(f"\n1. Random-effects shrinkage vs repeats, t ~ {times} (40 individuals, q = 4; medians over "
          f"{replicates} replicates; ratios ML / EB; evidence {evidence!r})")
    print(f"{'repeats':>8} | {'RMSE β ratio':>12} {'slides':>7} | {'KL ratio':>9} {'regular ML':>10} {'slides':>7} | "
          f"{'b':>6} {'slides':>7} {'b > 0.99':>8} | {'ML Ψ̂ singular':>14} | converged | s/fit (1st incl. compile)")
    for repeats, rmse, klr, klr_regular, b, at_one, ok, seconds, singular in rows:
        s_rmse, s_kl, s_b = SLIDES_REPEATS[repeats]
        print(f"{repeats:>8} | {rmse:>12.2f} {s_rmse:>7.2f} | {klr:>9.3g} {klr_regular:>10.2f} {s_kl:>7.2f} | "
              f"{b:>6.2f} {s_b:>7.2f} {at_one:>8.2f} | {singular:>10}/{replicates:<3} | {ok:>5}/{replicates:<3} | "
              f"{np.median(seconds[1:]) if len(seconds) > 1 else seconds[0]:.2f} ({seconds[0]:.1f})")


def experiment_dimension(replicates, evidence="laplace"):
    rows = []
    for p in (2, 500):
        rng = np.random.default_rng(200 + p)
        bs, lams, ok, seconds = [], [], 0, []
        for _ in tqdm(range(replicates), desc=f"p = {p}", leave=False):
            data, _, _ = simulate(rng, 40, 7, p, 2)
            start = time.perf_counter()
            fit = jaxlmm.fit_eb_ridge(data, evidence=evidence)
            seconds.append(time.perf_counter() - start)
            bs.append(fit.b)
            lams.append(fit.lam)
            ok += fit.converged
        rows.append((p, np.percentile(bs, [25, 50, 75]), np.percentile(lams, [25, 50, 75]), ok, seconds))
    print(f"\n2. Fixed-effects dimension (280 obs, 40 individuals × 7, q = 2; medians [quartiles] over {replicates} "
          f"replicates; the generating λ = σ²/var(β_j) is 1 for both p; evidence {evidence!r})")
    print(f"{'p':>5} | {'b':>6} {'[quartiles]':>13} {'slides':>7} | {'λ':>6} {'[quartiles]':>13} {'slides':>7} | "
          "converged | s/fit (1st incl. compile)")
    for p, b, lam, ok, seconds in rows:
        s_b, s_lam = SLIDES_P[p]
        print(f"{p:>5} | {b[1]:>6.2f} [{b[0]:.2f}, {b[2]:.2f}] {s_b:>7.2f} | "
              f"{lam[1]:>6.2f} [{lam[0]:.2f}, {lam[2]:.2f}] {s_lam:>7.2f} | {ok:>5}/{replicates:<3} | "
              f"{np.median(seconds[1:]) if len(seconds) > 1 else seconds[0]:.2f} ({seconds[0]:.1f})")


if __name__ == "__main__":
    r1 = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    r2 = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    evidence = sys.argv[3] if len(sys.argv) > 3 else "laplace"
    if r1:
        for times in TIMES:
            experiment_repeats(r1, times, evidence)
    if r2:
        experiment_dimension(r2, evidence)
