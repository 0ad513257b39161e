"""Time to first result: every method's first call in a fresh process, with an empty and with a
warm persistent compilation cache, beside a repeated call in the same process.

Each case runs in two new Python processes that share one new cache directory (set through the
environment, `JAX_COMPILATION_CACHE_DIR`, as the README tells script users to do):

* cold     — first call in the first process (empty cache: tracing + compilation + run);
* cached   — first call in the second process (programs loaded from the cache: tracing + run);
* repeated — a second call in the second process (jit's in-memory cache: run only).

Imports are not timed (about 1.5 s for jax + jaxlmm on this machine). float64, as in the tests.
Usage: python benchmarks/first_call.py [case ...]   (default: every case)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap

# Each case: (data setup, the timed call). The setup runs before the clock starts.
CASES = {
    "quasi Lasso, fixed a and λ": (
        "sim = jaxlmm.simulate.scope_example_design(seed=0)\n"
        "data = jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups, sim.Z)",
        "jaxlmm.fit_quasi(data, a=2.0, lam=0.05)",
    ),
    "quasi Lasso, a × λ by CV (default)": (
        "sim = jaxlmm.simulate.scope_example_design(seed=0)\n"
        "data = jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups, sim.Z)",
        "jaxlmm.fit_quasi(data, progress=False)",
    ),
    "quasi best subset k = 3, a by CV": (
        "sim = jaxlmm.simulate.scope_example_design(seed=0)\n"
        "data = jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups, sim.Z)",
        "jaxlmm.fit_quasi(data, k=3, progress=False)",
    ),
    "debias (20 columns) after universal λ": (
        "sim = jaxlmm.simulate.scope_example_design(seed=0)\n"
        "data = jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups, sim.Z)\n"
        "fit = jaxlmm.fit_quasi(data, a=2.0, lam='universal')",
        "jaxlmm.debias(fit, data, coords=list(range(20)))",
    ),
    "lmmLasso, one λ (H1 data)": (
        "sim = jaxlmm.simulate.schelldorfer_design(seed=0, design='H1')\n"
        "data = jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups, sim.Z)",
        "jaxlmm.fit_lmmlasso(data, lam=60.0)",
    ),
    "lmmLasso, 50-λ BIC path (H1 data)": (
        "sim = jaxlmm.simulate.schelldorfer_design(seed=0, design='H1')\n"
        "data = jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups, sim.Z)",
        "jaxlmm.fit_lmmlasso(data)",
    ),
    "SHEL, K and λ by CV": (
        "sim = jaxlmm.simulate.target_shift(0, n_clusters=30, p=200)\n"
        "data = jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups)",
        "jaxlmm.fit_shel(data, progress=False)",
    ),
    "EB ridge, λ, b, A learned": (
        "rng = np.random.default_rng(0)\n"
        "n, m, q = 40, 5, 4\n"
        "groups = np.repeat(np.arange(n), m)\n"
        "t = rng.normal(size=n * m)\n"
        "Z = np.column_stack([t**k for k in range(q)])\n"
        "X = rng.normal(size=(n * m, 2))\n"
        "u = rng.normal(size=(n, q))[groups]\n"
        "y = X @ rng.normal(size=2) + np.einsum('tk,tk->t', Z, u) + rng.normal(size=n * m)\n"
        "data = jaxlmm.LMMData.from_arrays(X, y, groups, Z)",
        "jaxlmm.fit_eb_ridge(data)",
    ),
}

CHILD = """
import json, sys, time
import numpy as np
import jax
import jaxlmm
{setup}
out = {{}}
start = time.perf_counter()
jax.block_until_ready({call})
out["first"] = time.perf_counter() - start
if {repeat}:
    start = time.perf_counter()
    jax.block_until_ready({call})
    out["repeated"] = time.perf_counter() - start
print("RESULT " + json.dumps(out))
"""


def run_child(setup: str, call: str, cache: str, repeat: bool) -> dict:
    env = dict(os.environ, JAX_ENABLE_X64="1", JAX_COMPILATION_CACHE_DIR=cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    code = CHILD.format(setup=setup, call=call, repeat=repeat)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"case failed:\n{call}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(names):
    print(f"{'method':40} {'cold s':>8} {'cached s':>9} {'repeated s':>11}")
    for name in names:
        setup, call = CASES[name]
        with tempfile.TemporaryDirectory(prefix="jaxlmm-first-call-") as cache:
            cold = run_child(textwrap.dedent(setup), call, cache, repeat=False)
            warm = run_child(textwrap.dedent(setup), call, cache, repeat=True)
        print(f"{name:40} {cold['first']:8.2f} {warm['first']:9.2f} {warm['repeated']:11.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or list(CASES))
