"""Selecting the random-effects covariates (Schelldorfer, Bühlmann & van de Geer 2011, §6.2):
how often `select_random_effects` recovers the covariates that truly have a random effect.

Design H4 of the paper (25 clusters of 6, p = 300, σ² = 0.25, β = (1, 2, 4, 3, 3, 0, …)), with
a random intercept and random slopes on x_0 and x_1 (the paper's x_2, x_3); Ψ = diag(3, θ²_0,
θ²_1) at two signal strengths: the paper's (3, 2) and a weak (0.5, 0.3). The random intercept
is the base model (`base=True`); every other column of the Lasso's support is a candidate,
with κ = 0.05 on standardised columns.

Prints, per strength, over the replicates: how often each true covariate is a candidate, in
R_κ (step iii) and kept (step iv); the mean number of false covariates in R_κ and kept; how
often the kept set is exactly {x_0, x_1}; and the time per replicate. Then, on one replicate,
the candidate models as one program against a Python loop of `fit_lmmlasso` over the same
candidates. The paper gives no such table (its §6.2 applies the strategy to the riboflavin
data only), so there is no published column to print beside ours.
With `method="penalty"` (the joint variance penalty) on the first `joint` replicates of each
strength, the same shares for both methods on those replicates.
Usage: python study_random_effects.py [replicates=50] [joint=20] [strengths=strong,weak]
"""

import sys
import time

import jax
import numpy as np
from tqdm.auto import tqdm

jax.config.update("jax_enable_x64", True)

import jaxlmm  # noqa: E402

STRENGTHS = {"strong (3, 2)": (3.0, 3.0, 2.0), "weak (0.5, 0.3)": (3.0, 0.5, 0.3)}
TRUE = np.array([0, 1])


def one(seed, theta2, method="two-stage"):
    sim = jaxlmm.simulate.schelldorfer_design(seed=seed, design="H4", theta2=theta2)
    data = jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups)  # base: a random intercept
    start = time.perf_counter()
    sel = jaxlmm.select_random_effects(data, method=method)
    seconds = time.perf_counter() - start
    row = {"seconds": seconds, "candidates": len(sel.candidates)}
    for k in TRUE:
        row[f"x{k} candidate"] = k in sel.candidates
        row[f"x{k} in R_κ"] = k in sel.selected
        row[f"x{k} kept"] = k in sel.kept
    row["false in R_κ"] = len(np.setdiff1d(sel.selected, TRUE))
    row["false kept"] = len(np.setdiff1d(sel.kept, TRUE))
    row["exact"] = np.array_equal(np.sort(sel.kept), TRUE)
    return row, data, sel


def loop_against_program(data, sel):
    """The candidate models fitted one `fit_lmmlasso` call at a time (its own Lasso start and
    BIC path, as `select_random_effects` fits them in one program)."""
    X = np.asarray(data.to_caller_order(data.X))
    x = (X - X.mean(axis=0)) / X.std(axis=0, ddof=1)
    y = np.asarray(data.to_caller_order(data.y))
    groups = np.asarray(data.labels)[np.asarray(data.to_caller_order(data.cluster))]
    start = time.perf_counter()
    theta2 = []
    for k in sel.candidates:
        Z = np.column_stack([np.ones(len(y)), x[:, k]])
        fit = jaxlmm.fit_lmmlasso(jaxlmm.LMMData.from_arrays(X, y, groups, Z), structure="diagonal",
                                  unpenalized=[k])
        theta2.append(fit.psi[1, 1])
    loop = time.perf_counter() - start
    start = time.perf_counter()
    again = jaxlmm.select_random_effects(data)
    program = time.perf_counter() - start
    return loop, program, np.max(np.abs(np.array(theta2) - again.theta2))


def table(title, rows):
    keys = [k for k in rows[next(iter(rows))][0] if k not in ("seconds", "candidates")]
    print(f"\n{title} (shares of replicates; 'false': mean count)")
    print(f"{'':22s}" + "".join(f"{name:>18s}" for name in rows))
    for key in ["candidates", *keys]:
        print(f"{key:22s}" + "".join(f"{np.mean([r[key] for r in rs]):18.2f}" for rs in rows.values()))
    medians = "".join(f"{np.median([r['seconds'] for r in rs[1:]]):18.1f}" for rs in rows.values())
    print(f"{'seconds / replicate':22s}" + medians + "   (median, first call left out)")
    print(f"{'first call (compile)':22s}" + "".join(f"{rs[0]['seconds']:18.1f}" for rs in rows.values()))


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    joint_reps = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    chosen = sys.argv[3].split(",") if len(sys.argv) > 3 else ["strong", "weak"]
    rows, joint = {}, {}
    for name, theta2 in STRENGTHS.items():
        if name.split()[0] not in chosen:
            continue
        rows[name] = [one(2000 + r, theta2)[0] for r in tqdm(range(reps), desc=name)]
        joint[name] = [one(2000 + r, theta2, "penalty")[0] for r in tqdm(range(joint_reps), desc=name + " penalty")]
    table(f"select_random_effects on H4, two-stage, κ = 0.05, {reps} replicates per strength", rows)
    if joint_reps:
        table(f"the same, first {joint_reps} replicates: two-stage",
              {name: rs[:joint_reps] for name, rs in rows.items()})
        table(f"the same {joint_reps} replicates: method='penalty' (joint, variance penalty)", joint)

    _, data, sel = one(2000, STRENGTHS["strong (3, 2)"])
    loop, program, diff = loop_against_program(data, sel)
    print(f"\n{len(sel.candidates)} candidates of replicate 0: loop of fit_lmmlasso {loop:.1f} s, "
          f"select_random_effects (whole strategy) {program:.1f} s, "
          f"ratio {loop / program:.1f}×, max |Δθ̂²| {diff:.1e}")


if __name__ == "__main__":
    main()
