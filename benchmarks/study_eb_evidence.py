"""How far are the two Laplace approximations of the EB ridge evidence from the integral they
approximate? Seed 002's first experiment (`study_eb_ridge.simulate`: 40 individuals, q = 4,
t ~ N(0, 1), Σ ~ IW with E(Σ) = I) at 2 and 8 repeats. Per replicate, each recipe learns its
Θ = (λ, b, A = αI) (`fit_eb_ridge(evidence=...)`); at both Θ̂, both approximations are set
against `importance_log_marginal` of their own integral (ours: flat prior on log σ²; the
slides': flat on σ), 8,000 multivariate-t draws. Prints per repeats and recipe the median and
90th percentile of |approximation − reference| at the recipe's own Θ̂, the median error of the
difference approximation(Θ̂_ours) − approximation(Θ̂_slides) (what decides which Θ wins), how
often the reference agrees with the approximation on which Θ̂ is better, the median ESS, and
the median learned b of each recipe.

Usage: python study_eb_evidence.py [replicates=20]
"""

import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import jaxlmm  # noqa: E402
from jaxlmm.estimators.eb_ridge import estimator as eb  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from study_eb_ridge import simulate  # noqa: E402

RECIPES = ("laplace", "slides")


def approximations(design, lam, b, A):
    """Both Laplace values at Θ: ours at the mode of its integrand, the slides' at its MAP."""
    start = eb.start_params(design, lam)
    ours = eb.laplace_log_marginal(design, lam, b, A, eb.phi_from_variance(start.psi, start.sigma2), 100,
                                   differentiable=False)
    mode = eb.eb_ridge_map(design, lam, b, A, normalised_ridge=True)
    slides = eb.slides_log_marginal(design, lam, b, A, mode.params)
    return {"laplace": ours.value, "slides": slides.value}


def main(replicates=20):
    approx = jax.jit(approximations)
    reference = jax.jit(eb.importance_log_marginal, static_argnames=("target", "draws"))
    for repeats in (2, 8):
        rng = np.random.default_rng(100 + repeats)  # the streams of study_eb_ridge
        rows = []
        for r in tqdm(range(replicates), desc=f"{repeats} repeats"):
            data, _, _ = simulate(rng, 40, repeats, 2, 4, times="N(0, 1)")
            design = eb.eb_design(data, (), True)
            row = {}
            for recipe in RECIPES:
                fit = jaxlmm.fit_eb_ridge(data, evidence=recipe)
                row[("b", recipe)] = fit.b
                # Θ on the internal scale of `design` (data.y and X as given: `simulate` needs no rescaling).
                theta = (jnp.asarray(fit.lam), jnp.asarray(fit.b), jnp.asarray(fit.A))
                values = approx(design, *theta)
                for target in RECIPES:
                    ref = reference(design, *theta, jax.random.key(r), target=target, draws=8_000)
                    row[("approx", recipe, target)] = float(values[target])
                    row[("ref", recipe, target)] = float(ref.value)
                    row[("ess", recipe, target)] = float(ref.ess)
            rows.append(row)
        print(f"\n{repeats} repeats, {replicates} replicates (t ~ N(0, 1)); errors = approximation − "
              "importance-sampling reference of the same integral")
        print(f"{'recipe':>9} | {'median |err|':>12} {'90% |err|':>10} | {'median err of Δ':>15} "
              f"{'same winner':>11} | {'median ESS':>10} | {'median b̂':>8} | non-finite")
        for target in RECIPES:
            err = np.array([row[("approx", target, target)] - row[("ref", target, target)] for row in rows])
            delta_approx = np.array([row[("approx", "laplace", target)] - row[("approx", "slides", target)]
                                     for row in rows])
            delta_ref = np.array([row[("ref", "laplace", target)] - row[("ref", "slides", target)] for row in rows])
            # A replicate where an approximation has no mode (NaN) or the sampler no finite weight is
            # counted, not averaged in.
            ok = np.isfinite(err) & np.isfinite(delta_approx) & np.isfinite(delta_ref)
            same = np.mean(np.sign(delta_approx[ok]) == np.sign(delta_ref[ok]))
            ess = np.nanmedian([row[("ess", target, target)] for row in rows])
            b = np.median([row[("b", target)] for row in rows])
            print(f"{target:>9} | {np.median(np.abs(err[ok])):>12.3f} {np.percentile(np.abs(err[ok]), 90):>10.3f} | "
                  f"{np.median(delta_approx[ok] - delta_ref[ok]):>15.3f} {same:>11.2f} | {ess:>10.0f} | {b:>8.2f} | "
                  f"{np.sum(~ok):>3}/{len(rows)}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
