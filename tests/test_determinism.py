"""Determinism and hygiene: a fixed seed gives bit-identical results on repeated calls, in a
fresh process and whatever the BLAS thread count, and no public call changes `jax.config`."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from helpers import compile_log

import jaxlmm

# The work whose bits must not depend on the process: simulated data (NumPy's LAPACK), a quasi
# fit with its variance components and debiasing, an lmmLasso and a REML fit. One digest each.
SCRIPT = textwrap.dedent("""
    import hashlib, json, os
    import numpy as np
    import jax
    jax.config.update("jax_enable_x64", True)
    # The suite's compilation cache (conftest.py): the second process loads the first one's
    # programs instead of compiling them again. What differs between the two processes is the
    # host side (NumPy's LAPACK under another BLAS thread count), which the cache does not touch.
    if "JAXLMM_TEST_JIT_CACHE" in os.environ:
        jax.config.update("jax_compilation_cache_dir", os.environ["JAXLMM_TEST_JIT_CACHE"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    import jaxlmm

    def digest(*arrays):
        h = hashlib.sha256()
        for a in arrays:
            h.update(np.ascontiguousarray(np.asarray(a, np.float64)).tobytes())
        return h.hexdigest()[:16]

    sim = jaxlmm.simulate.scope_example_design(seed=3, n_clusters=12)
    # The fits use the shapes and calls of tests/test_protocol.py (12 clusters of 8 rows, p = 10):
    # their programs come from the suite's compilation cache when that module ran first.
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(12), 8)
    X = rng.normal(size=(96, 10))
    y = 2.0 * X[:, 0] - 1.5 * X[:, 3] + np.repeat(rng.normal(size=12), 8) + 0.5 * rng.normal(size=96)
    data = jaxlmm.LMMData.from_arrays(X, y, groups)
    fit = jaxlmm.fit_quasi(data, a=1.0, lam=0.05, progress=False)
    table = jaxlmm.debias(fit, data, coords=[0, 3])
    vc = jaxlmm.variance_components(fit, data)
    lmm = jaxlmm.fit_lmmlasso(data, lam=10.0)
    reml = jaxlmm.fit_lmm(data)
    print("DIGESTS " + json.dumps({
        "data": digest(sim.X, sim.y, sim.Z),
        "quasi": digest(fit.coef, [fit.intercept, fit.sigma2], fit.ranef),
        "debias": digest(table.estimate, table.std_error),
        "variance": digest([vc.sigma2], vc.psi),
        "lmmlasso": digest(lmm.coef, [lmm.sigma2, lmm.loglik], lmm.psi),
        "lmm": digest(reml.coef, [reml.criterion], reml.psi, reml.ranef),
    }))
""")

# One BLAS thread, against the default: NumPy's LAPACK results (an SVD's signs and vectors in a
# degenerate eigenspace) once depended on it, so the serial and the xdist run simulated different
# data. XLA's own thread pool is left as it is: the serial and the parallel run share it, and its
# reductions may round differently with another thread count (it changes lmmLasso's last bits).
THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _digests(env_extra):
    env = {k: v for k, v in os.environ.items() if k not in THREADS}
    env.update(env_extra)
    if "JAXLMM_TEST_JIT_CACHE" in os.environ:
        # The suite's compilation cache: the second process loads the programs the first one
        # compiled (what is compared is how the same programs run in another process with
        # another thread count, not whether XLA compiles deterministically).
        env.update(JAX_COMPILATION_CACHE_DIR=os.environ["JAXLMM_TEST_JIT_CACHE"],
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("DIGESTS ")][-1]
    return json.loads(line[len("DIGESTS "):])


def test_results_are_bit_identical_across_processes_and_thread_counts():
    default = _digests({})
    single = _digests(THREADS)
    assert default == single


def test_repeated_calls_are_bit_identical():
    sim = jaxlmm.simulate.scope_example_design(seed=3, n_clusters=12)
    again = jaxlmm.simulate.scope_example_design(seed=3, n_clusters=12)
    np.testing.assert_array_equal(sim.X, again.X)
    np.testing.assert_array_equal(sim.y, again.y)
    data = jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups, sim.Z)
    first, second = (jaxlmm.fit_quasi(data, a=1.0, n_lambda=20, progress=False) for _ in range(2))
    np.testing.assert_array_equal(first.coef, second.coef)
    np.testing.assert_array_equal(first.cv.error, second.cv.error)


def _config():
    return {k: repr(v) for k, v in jax.config.values.items()}


@pytest.fixture(scope="module")
def small():
    # The shapes (12 clusters of 8 rows, p = 10) and calls of tests/test_protocol.py: programs
    # compiled by either module are loaded from the suite's compilation cache by the other.
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(12), 8)
    X = rng.normal(size=(len(groups), 10))
    y = X[:, 0] + rng.normal(size=12)[groups] + rng.normal(size=len(groups))
    return jaxlmm.LMMData.from_arrays(X, y, groups)


PUBLIC_CALLS = {
    "fit_quasi": lambda d: jaxlmm.fit_quasi(d, a=1.0, lam=0.05, progress=False),
    "fit_quasi best subset": lambda d: jaxlmm.fit_quasi(d, a=1.0, k=2, progress=False),
    "debias": lambda d: jaxlmm.debias(jaxlmm.fit_quasi(d, a=1.0, lam=0.1), d, coords=[0]),
    "variance_components": lambda d: jaxlmm.variance_components(jaxlmm.fit_quasi(d, a=1.0, lam=0.1), d),
    "fit_lmmlasso": lambda d: jaxlmm.fit_lmmlasso(d, lam=3.0),
    "fit_shel": lambda d: jaxlmm.fit_shel(d, K=2, lam=0.05, progress=False),
    "fit_eb_ridge": lambda d: jaxlmm.fit_eb_ridge(d, lam=1.0, b=0.5, A=1.0),
    "whiten": lambda d: jaxlmm.whiten(d, 1.0),
    "blup": lambda d: jaxlmm.blup(d, np.eye(1), 1.0, d.y),
    "simulate": lambda d: jaxlmm.simulate.scope_example_design(seed=0, n_clusters=6),
    "jaxlmm_launcher.configure_environment": lambda d: _launcher_environment(),
}


def _launcher_environment():
    """The `jaxlmm` command switches the compilation cache on through the environment only:
    a default when the variable is unset, the caller's value otherwise."""
    from jaxlmm_launcher import configure_environment, default_cache_dir

    unset, given = {}, {"JAX_COMPILATION_CACHE_DIR": "/elsewhere"}
    configure_environment(unset)
    configure_environment(given)
    assert unset["JAX_COMPILATION_CACHE_DIR"] == str(default_cache_dir())
    assert given["JAX_COMPILATION_CACHE_DIR"] == "/elsewhere"


@pytest.mark.parametrize("name", list(PUBLIC_CALLS))
def test_public_calls_leave_jax_config_unchanged(small, name):
    before = _config()
    PUBLIC_CALLS[name](small)
    assert _config() == before


def test_labels_do_not_reach_compiled_programs(small):
    """`labels` is a static field of LMMData; the estimators fit on a copy with labels 0..n−1,
    so data that differ only in their labels (a sweep over replicates with their own group
    names) reuse the compiled programs instead of compiling them again."""
    X, y = np.asarray(small.X), np.asarray(small.y)
    groups = np.asarray(small.cluster)
    first = jaxlmm.LMMData.from_arrays(X, y, groups)
    renamed = jaxlmm.LMMData.from_arrays(X, y, [f"site-{g}" for g in groups])
    calls = [lambda d: jaxlmm.fit_quasi(d, a=1.0, lam=0.1), lambda d: jaxlmm.fit_lmmlasso(d, lam=3.0),
             lambda d: jaxlmm.fit_shel(d, K=2, lam=0.1, progress=False)]
    for call in calls:
        call(first)
    with compile_log() as compiled:
        fits = [call(renamed) for call in calls]
    assert fits[1].groups == renamed.labels  # reported with the caller's labels
    assert not [m for m in compiled if m.startswith("Compiling jit(_")], compiled[:3]
