"""How good is the Laplace evidence where Ψ is weakly identified? On one replicate of the seed-002
study (40 individuals × 2 repeats, q = 4, t ~ U(−1, 1); `study_eb_ridge.simulate`), at fixed
λ and A = αI, prints for a grid of b the Laplace log p(y | Θ) beside an importance-sampling
estimate of the exact log ∫ exp ℓ(φ) dφ (multivariate-t proposals centred at the Laplace mode
with its covariance, two tail weights, with their effective sample sizes).

Usage: python benchmarks/check_eb_evidence.py [draws] [replicate] [lam] [alpha]
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402
from scipy.special import logsumexp  # noqa: E402

from jaxlmm.estimators.eb_ridge import estimator as eb  # noqa: E402
from jaxlmm.estimators.eb_ridge.model import log_integrand  # noqa: E402
from jaxlmm.solvers.newton import value_grad_hessian  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from study_eb_ridge import simulate  # noqa: E402


def main(draws=20_000, replicate=1, lam=0.244, alpha=0.261):
    rng = np.random.default_rng(102)  # the 2-repeat stream of study_eb_ridge
    for _ in range(replicate + 1):
        data, _, _ = simulate(rng, 40, 2, 2, 4)
    design = eb.eb_design(data, (), True)
    start = eb.start_params(design, 1.0)
    phi0 = eb.phi_from_variance(start.psi, start.sigma2)
    A = alpha * jnp.eye(4)
    laplace = jax.jit(lambda b: eb.laplace_log_marginal(design, lam, b, A, phi0, 200))
    ell = jax.jit(jax.vmap(lambda phi, b: log_integrand(phi, design, lam, b, A), in_axes=(0, None)))
    hessian = jax.jit(lambda phi, b: value_grad_hessian(lambda x: -log_integrand(x, design, lam, b, A), phi)[2])
    print(f"replicate {replicate}, λ = {lam}, A = {alpha}·I; {draws} draws per proposal")
    print(f"{'b':>5} | {'Laplace':>9} | {'IS (t, df 4)':>12} {'ESS':>6} | {'IS (t, df 10)':>13} {'ESS':>6}")
    for b in (0.2, 0.3, 0.4, 0.5, 0.7, 0.9, 0.99):
        mode = laplace(b)
        cov = np.linalg.inv(np.asarray(hessian(mode.phi, b)))
        row = [f"{b:>5} | {float(mode.value):>9.3f} |"]
        for df, scale in ((4, 1.5), (10, 1.2)):
            proposal = stats.multivariate_t(loc=np.asarray(mode.phi), shape=scale * cov, df=df, seed=1)
            x = proposal.rvs(size=draws)
            values = np.concatenate([np.asarray(ell(jnp.asarray(x[i:i + 2000]), b)) for i in range(0, draws, 2000)])
            log_w = np.where(np.isfinite(values), values - proposal.logpdf(x), -np.inf)
            estimate = logsumexp(log_w) - np.log(draws)
            ess = np.exp(2 * logsumexp(log_w) - logsumexp(2 * log_w))
            row.append(f"{estimate:>12.3f} {ess:>6.0f} |" if df == 4 else f"{estimate:>13.3f} {ess:>6.0f}")
        print(" ".join(row), flush=True)


if __name__ == "__main__":
    args = [float(a) for a in sys.argv[1:]]
    main(int(args[0]) if args else 20_000, int(args[1]) if len(args) > 1 else 1, *args[2:4])
