"""Which adaptive recipe gives the paper's lmmadLasso and adLasso (Schelldorfer, Bühlmann & van
de Geer 2011, Table 2)? Candidates for the second stage, all after the same first stage (the
lmmLasso, or the Lasso with `structure="none"`, λ₁ by BIC), with b_k = |β̂_k| of the first stage
on standardised columns and every column with b_k = 0 dropped (R lmmlasso's weight 0):

- "ours (BIC path)": `fit_lmmlasso(adaptive=True)`: penalty λ Σ |β_k| / b_k, λ by BIC on a path
  that reaches down by the spread of the weights;
- "w=1/b, λ₁": the paper's formula (11) at the first stage's λ₁;
- "R weights=1/b, BIC": what R lmmlasso computes when handed the paper's w_k = 1/b_k as its
  `weights` argument: lmmlasso soft-thresholds at λ / weights[k], so the penalty becomes
  λ Σ b_k |β_k| (large first-stage coefficients are penalised MORE); λ by BIC on a path down
  to 1e-6·λ_max (λ_max is set by the smallest b_k);
- "R weights=1/b, λ₁": the same at λ₁;
- "refit": `fit_lmmlasso(adaptive="refit")`, λ = 0 on the first stage's support (the limit of
  the R recipe as λ → 0).

Prints, per design, mean (sd) of |S|, TP, σ̂², θ̂², β̂_1..β̂_5 for each recipe beside the paper's
lmmadLasso / adLasso rows. Replicates use the seeds of `sim_lmmlasso_table2.py`.
Usage: python study_adaptive_recipes.py [replicates=100] [designs=H1,H2,H3]
"""

import sys

import jax
import numpy as np
from tqdm.auto import tqdm

jax.config.update("jax_enable_x64", True)

from sim_lmmlasso_table2 import COLUMNS, PAPER, summary  # noqa: E402

import jaxlmm  # noqa: E402


def recipes(data, structure):
    first = jaxlmm.fit_lmmlasso(data, structure=structure)
    sd = np.asarray(data.X).std(axis=0, ddof=1)
    b = np.abs(first.coef) * sd  # first-stage |β̂| on standardised columns
    keep = b > 0
    unpen = list(first.unpenalized)
    with np.errstate(divide="ignore"):
        w_paper = np.where(keep, 1.0 / b, np.inf)
    w_r = np.where(keep, b, np.inf)
    w_paper[unpen] = w_r[unpen] = 1.0
    common = dict(structure=structure, unpenalized=unpen)
    return {
        "first stage": first,
        "ours (BIC path)": jaxlmm.fit_lmmlasso(data, structure=structure, adaptive=True),
        "w=1/b, λ₁": jaxlmm.fit_lmmlasso(data, first.lam, weights=w_paper, **common),
        # λ_max of this penalty is set by the smallest b_k, so the path reaches far down.
        "R weights=1/b, BIC": jaxlmm.fit_lmmlasso(data, weights=w_r, lambda_min_ratio=1e-6, **common),
        "R weights=1/b, λ₁": jaxlmm.fit_lmmlasso(data, first.lam, weights=w_r, **common),
        'refit (adaptive="refit")': jaxlmm.fit_lmmlasso(data, structure=structure, adaptive="refit"),
    }


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    designs = sys.argv[2].split(",") if len(sys.argv) > 2 else ["H1", "H2", "H3"]
    for design in designs:
        rows = {}
        for r in tqdm(range(reps), desc=design):
            sim = jaxlmm.simulate.schelldorfer_design(seed=1000 + r, design=design)
            data = jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups, sim.Z)
            for structure, label in (("identity", "lmm"), ("none", "Lasso")):
                for name, fit in recipes(data, structure).items():
                    rows.setdefault((label, name), []).append(summary(fit))
        print(f"\n{design}: {reps} replicates; mean (sd)")
        print(f"{'':30} " + " ".join(f"{c:>11}" for c in COLUMNS))
        for label, paper_name in (("lmm", "lmmadLasso"), ("Lasso", "adLasso")):
            print(f"{'paper ' + paper_name:30} " + " ".join(f"{v:>11.2f}" for v in PAPER[(design, paper_name)]))
            for (lab, name), values in rows.items():
                if lab != label:
                    continue
                values = np.array(values, float)
                cells = [f"{np.nanmean(c):.2f}({np.nanstd(c):.2f})" if np.any(~np.isnan(c)) else "–" for c in values.T]
                print(f"{label + ': ' + name:30} " + " ".join(f"{c:>11}" for c in cells))


if __name__ == "__main__":
    main()
