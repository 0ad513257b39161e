"""`sweep`: one program over replicates or responses × a grid equals the per-fit cores; a failed
fit is reported alone; sharded over 4 (forced host) devices and over two processes under
jax.distributed it equals the single-device result."""

import os
import socket
import subprocess
import sys
import textwrap

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlmm

SIZES = np.array([6, 4, 7, 5, 6, 8, 4, 6, 5, 7])  # one unbalanced cluster layout for every replicate
GRID = {"a": [0.5, 2.0], "lam": [0.05, 0.2]}


def _sims(n=5, p=20):
    return [jaxlmm.simulate.li_cai_li_design(seed=r, n_clusters=len(SIZES), cluster_size=SIZES, p=p) for r in range(n)]


def _data(sim, y=None):
    return jaxlmm.LMMData.from_arrays(sim.X, sim.y if y is None else y, sim.groups, sim.Z)


@pytest.fixture(scope="module")
def replicates():
    sims = _sims()
    stacked = jaxlmm.LMMData.stack([_data(s) for s in sims])
    return sims, stacked, jaxlmm.sweep(jaxlmm.quasi_lasso_core, stacked, GRID, truth=sims[0].beta, batch_size=2,
                                       progress=False)


def test_sweep_equals_per_replicate_cores(replicates):
    sims, _, result = replicates
    assert result.fits.coef.shape == (5, 4, 20) and result.converged.all()
    np.testing.assert_array_equal(result.grid["a"], [0.5, 0.5, 2.0, 2.0])
    np.testing.assert_array_equal(result.grid["lam"], [0.05, 0.2, 0.05, 0.2])
    for b in (0, 3, 4):  # 4 is alone in the last, padded chunk
        for g in range(4):
            one = jaxlmm.quasi_lasso_core(_data(sims[b]), result.grid["a"][g], result.grid["lam"][g])
            # To 1e-10: the programs differ (a loop inside one program against one fit), and so does rounding.
            np.testing.assert_allclose(result.fits.coef[b, g], one.coef, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(result.fits.intercept[b, g], one.intercept, rtol=1e-10)
    # The on-device summaries against NumPy.
    support, truth = result.fits.coef != 0, sims[0].beta != 0
    np.testing.assert_array_equal(result.summary["nnz"], support.sum(-1))
    np.testing.assert_array_equal(result.summary["tp"], (support & truth).sum(-1))
    np.testing.assert_array_equal(result.summary["fp"], (support & ~truth).sum(-1))
    np.testing.assert_array_equal(result.summary["fn"], (~support & truth).sum(-1))
    np.testing.assert_allclose(result.summary["l2_error"], np.linalg.norm(result.fits.coef - sims[0].beta, axis=-1))
    frame = result.to_pandas()
    assert len(frame) == 20 and list(frame.columns[:4]) == ["batch", "grid_point", "a", "lam"]
    assert frame.loc[(frame.batch == 3) & (frame.grid_point == 1), "nnz"].item() == result.summary["nnz"][3, 1]


@pytest.mark.parametrize("vectorize", ["map", "vmap"])
def test_warm_started_paths_equal_cold_fits_in_fewer_steps(replicates, vectorize):
    """`warm_start="lam"`: the λ axis is walked in the order given, each fit from the previous
    one; the Lasso is convex, so the fits equal the cold ones to the solver's tolerance, and the
    path needs fewer coordinate epochs. The path axis moves last in the grid."""
    sims, stacked, cold = replicates
    lams = [0.2, 0.1, 0.05]
    grid = {"lam": lams, "a": [0.5, 2.0]}
    warm = jaxlmm.sweep(jaxlmm.quasi_lasso_core, stacked, grid, warm_start="lam", vectorize=vectorize, progress=False)
    np.testing.assert_array_equal(warm.grid["a"], [0.5] * 3 + [2.0] * 3)
    np.testing.assert_array_equal(warm.grid["lam"], lams * 2)
    full = jaxlmm.sweep(jaxlmm.quasi_lasso_core, stacked, grid, progress=False)
    order = [np.flatnonzero((full.grid["a"] == a) & (full.grid["lam"] == lam))[0]
             for a, lam in zip(warm.grid["a"], warm.grid["lam"])]
    assert warm.converged.all()
    np.testing.assert_allclose(warm.fits.coef, full.fits.coef[:, order], rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(warm.fits.intercept, full.fits.intercept[:, order], rtol=1e-8, atol=1e-9)
    assert warm.fits.num_steps.sum() < full.fits.num_steps.sum()
    # A per-replicate start for each path's first fit: the cold solutions themselves.
    first = np.concatenate([full.fits.intercept[:, order[0], None], full.fits.coef[:, order[0]]], axis=1)
    again = jaxlmm.sweep(jaxlmm.quasi_lasso_core, stacked, grid, warm_start="lam", per_batch={"start": first},
                         vectorize=vectorize, progress=False)
    np.testing.assert_allclose(again.fits.coef, warm.fits.coef, rtol=1e-8, atol=1e-9)
    assert np.all(again.fits.num_steps[:, 0] <= 1)


@pytest.mark.parametrize("vectorize", ["map", "vmap"])
def test_a_failed_replicate_gets_its_own_code(replicates, vectorize):
    """One NaN in replicate 2: its fits get a failure code, the others are those of the clean
    sweep, whether the fits run one after another (the CPU default) or side by side (vmap, where
    the NaN lane shares every loop with the others)."""
    sims, stacked, result = replicates
    poisoned = eqx.tree_at(lambda d: d.y, stacked, stacked.y.at[2, 5].set(jnp.nan))
    again = jaxlmm.sweep(jaxlmm.quasi_lasso_core, poisoned, GRID, batch_size=2, vectorize=vectorize, progress=False)
    assert np.all(again.result[2] != "successful")
    keep = [0, 1, 3, 4]
    np.testing.assert_array_equal(again.result[keep], result.result[keep])
    # vmap and map round differently: equal to the solver's tolerance.
    np.testing.assert_allclose(again.fits.coef[keep], result.fits.coef[keep], rtol=1e-10, atol=1e-10)


def test_many_responses_on_one_design_equal_per_response_fits():
    sims = _sims(4)
    design = _data(sims[0])
    rng = np.random.default_rng(1)
    responses = np.stack([s.y for s in sims] + [rng.normal(size=len(sims[0].y))])
    quasi = jaxlmm.sweep(jaxlmm.quasi_lasso_core, design, {"a": [1.0], "lam": [0.1]}, responses=responses,
                         progress=False)
    shel = jaxlmm.sweep(jaxlmm.shel_core, design, {"lam": [0.1, 0.3]}, responses=responses, batch_size=3,
                        progress=False)
    for b in range(len(responses)):
        data_b = _data(sims[0], responses[b])
        # Equal to the solvers' tolerance (1e-10): the batched and the single programs round differently.
        np.testing.assert_allclose(quasi.fits.coef[b, 0], jaxlmm.quasi_lasso_core(data_b, 1.0, 0.1).coef,
                                   rtol=1e-10, atol=1e-10)
        for g, lam in enumerate((0.1, 0.3)):
            one = jaxlmm.shel_core(data_b, lam)
            np.testing.assert_allclose(shel.fits.coef[b, g], one.coef, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(shel.fits.sigma2[b, g], one.sigma2, rtol=1e-9)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"grid": {"a": []}}, "grid"),
        ({"grid": {"a": [np.nan]}}, "finite"),
        ({"batch_size": 0}, "batch_size"),
        ({"truth": np.zeros(3)}, "truth"),
        ({"responses": np.zeros((2, 3))}, "data"),
        ({"vectorize": "pmap"}, "vectorize"),
        ({"warm_start": "k"}, "warm_start"),
        ({"per_batch": {"start": np.zeros((3, 21))}}, "per_batch"),
    ],
)
def test_bad_inputs_raise(replicates, kwargs, match):
    _, stacked, _ = replicates
    with pytest.raises(ValueError, match=match):
        jaxlmm.sweep(jaxlmm.quasi_lasso_core, stacked, **{"grid": GRID, **kwargs})


def test_unstacked_data_without_responses_raise():
    with pytest.raises(ValueError, match="stacked"):
        jaxlmm.sweep(jaxlmm.quasi_lasso_core, _data(_sims(1)[0]), GRID)


# The same sweep in a fresh process: on 4 forced host devices, on 1, and as two processes joined by
# jax.distributed (one device each). It prints a digest of every coefficient's bits.
SCRIPT = textwrap.dedent("""
    import hashlib, os, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    if len(sys.argv) > 1:
        jax.distributed.initialize(f"127.0.0.1:{sys.argv[1]}", num_processes=2, process_id=int(sys.argv[2]))
    import numpy as np
    import jaxlmm
    sizes = np.array([6, 4, 7, 5, 6, 8, 4, 6, 5, 7])
    sims = [jaxlmm.simulate.li_cai_li_design(seed=r, n_clusters=10, cluster_size=sizes, p=20) for r in range(6)]
    stacked = jaxlmm.LMMData.stack([jaxlmm.LMMData.from_arrays(s.X, s.y, s.groups, s.Z) for s in sims])
    out = jaxlmm.sweep(jaxlmm.quasi_lasso_core, stacked, {"a": [0.5, 2.0], "lam": [0.05, 0.2]}, batch_size=4,
                       vectorize="vmap", progress=False)
    assert out.converged.all()
    digest = hashlib.sha256(np.ascontiguousarray(out.fits.coef).tobytes()).hexdigest()
    coef = ",".join(repr(float(v)) for v in out.fits.coef.ravel())
    print("DEVICES", jax.device_count(), "DIGEST", digest, "COEF", coef)
""")


def _run(args=(), **env):
    full = {**os.environ, **env}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, *args], env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _result(proc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    line = next(ln for ln in out.splitlines() if ln.startswith("DEVICES "))
    parts = line.split()
    return int(parts[1]), parts[3], np.array([float(v) for v in parts[5].split(",")])


@pytest.mark.timeout(600)
def test_sharded_and_distributed_equal_single_device():
    single = _run(XLA_FLAGS="--xla_force_host_platform_device_count=1")
    four = _run(XLA_FLAGS="--xla_force_host_platform_device_count=4")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    procs = [_run((port, str(i)), XLA_FLAGS="--xla_force_host_platform_device_count=1") for i in range(2)]
    n1, _, coef1 = _result(single)
    n4, _, coef4 = _result(four)
    assert (n1, n4) == (1, 4)
    np.testing.assert_allclose(coef4, coef1, rtol=1e-10, atol=1e-12)
    for proc in procs:
        n, _, coef = _result(proc)
        assert n == 2
        np.testing.assert_allclose(coef, coef1, rtol=1e-10, atol=1e-12)


def test_plain_lmm_for_many_responses_equals_fit_lmm():
    """The gene-expression case: one design (random intercept and slope), many responses, ML.
    Each response's fit equals `fit_lmm(reml=False)` (itself equal to lme4, tests/test_lmm.py) to
    the L-BFGS tolerance."""
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(30), 6)
    t = rng.uniform(-1, 1, len(groups))
    X = np.column_stack([t, rng.normal(size=(len(groups), 2))])
    Z = np.column_stack([np.ones(len(groups)), t])
    responses = np.stack([X @ [1.0, 0.5, 0.0] + np.einsum("tk,tk->t", Z, rng.normal(size=(30, 2))[groups] * [1, 0.5])
                          + rng.normal(size=len(groups)) for _ in range(5)])
    out = jaxlmm.sweep(jaxlmm.lmm_core, jaxlmm.LMMData.from_arrays(X, responses[0], groups, Z), responses=responses,
                       progress=False)
    assert out.converged.all()
    for b in range(len(responses)):
        ref = jaxlmm.fit_lmm(jaxlmm.LMMData.from_arrays(X, responses[b], groups, Z), reml=False)
        np.testing.assert_allclose(out.fits.coef[b, 0], ref.coef, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(out.fits.intercept[b, 0], ref.intercept, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(out.fits.sigma2[b, 0], ref.sigma2, rtol=1e-6)
        np.testing.assert_allclose(out.fits.psi[b, 0], ref.psi, rtol=1e-5, atol=1e-7 * np.abs(ref.psi).max())
        np.testing.assert_allclose(out.fits.ranef[b, 0], ref.ranef, rtol=1e-5, atol=1e-6)


def test_float32_data_sweep_in_float32():
    """The sweep keeps the data's dtype: float32 replicates give float32 fits, close to float64's."""
    sims = _sims(3)
    as32 = [jaxlmm.LMMData.from_arrays(*(np.asarray(a, np.float32) for a in (s.X, s.y)), s.groups,
                                       np.asarray(s.Z, np.float32)) for s in sims]
    out32 = jaxlmm.sweep(jaxlmm.quasi_lasso_core, jaxlmm.LMMData.stack(as32), {"a": [1.0], "lam": [0.2]},
                         truth=sims[0].beta, progress=False)
    out64 = jaxlmm.sweep(jaxlmm.quasi_lasso_core, jaxlmm.LMMData.stack([_data(s) for s in sims]),
                         {"a": [1.0], "lam": [0.2]}, progress=False)
    assert out32.fits.coef.dtype == np.float32 and out32.result.shape == (3, 1)
    assert np.all(np.isin(out32.result, ["successful", "max_steps_reached"]))  # float32 may not reach rtol 1e-10
    np.testing.assert_allclose(out32.fits.coef, out64.fits.coef, atol=2e-4)
