import itertools

import jax
import jax.numpy as jnp
import numpy as np

import jaxlmm
from jaxlmm.losses import LeastSquares, quasi_likelihood


def _exhaustive(X, y, k):
    best = (np.inf, None)
    for subset in itertools.combinations(range(X.shape[1]), k):
        cols = list(subset)
        coef, *_ = np.linalg.lstsq(X[:, cols], y, rcond=None)
        rss = np.sum((y - X[:, cols] @ coef) ** 2)
        if rss < best[0]:
            best = (rss, (cols, coef))
    return best


def test_best_subset_equals_exhaustive_search():
    rng = np.random.default_rng(0)
    n, p = 60, 9
    groups = np.repeat(np.arange(10), 6)
    X = rng.normal(size=(n, p))
    y = X[:, [2, 6]] @ [1.0, -0.7] + 0.3 * X[:, 4] + rng.normal(size=n) + rng.normal(size=10)[groups]
    data = jaxlmm.LMMData.from_arrays(X, y, groups)
    fn, args = quasi_likelihood(data, 1.0)
    for k in (1, 2, 3):
        sol = jaxlmm.solve(fn, jaxlmm.L0(k), jaxlmm.BestSubset(), jnp.zeros(p), args)
        rss, (cols, coef) = _exhaustive(np.asarray(args.X), np.asarray(args.y), k)
        np.testing.assert_array_equal(np.flatnonzero(sol.value), sorted(cols))
        np.testing.assert_allclose(np.asarray(sol.value)[cols], coef, atol=1e-10)
        np.testing.assert_allclose(float(sol.objective), rss / (2 * float(args.scale)), rtol=1e-10)


def test_unpenalized_columns_are_always_in_and_not_counted():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 8))
    y = X[:, 5] + rng.normal(size=40)
    data = jaxlmm.LMMData.from_arrays(X, y, np.arange(40) % 5)
    fn, args = quasi_likelihood(data, 0.5)
    unpen = jnp.zeros(8, bool).at[0].set(True)
    sol = jaxlmm.solve(fn, jaxlmm.L0(1, unpen), jaxlmm.BestSubset(), jnp.zeros(8), args)
    np.testing.assert_array_equal(np.flatnonzero(sol.value), [0, 5])


def test_jax_config_is_restored_and_data_goes_through_data_argument():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 6))
    data = jaxlmm.LMMData.from_arrays(X, X[:, 1] + rng.normal(size=30), np.arange(30) % 3)
    fn, args = quasi_likelihood(data, 1.0)
    before = {k: jax.config.values[k] for k in ("jax_platform_name", "jax_platforms", "jax_enable_x64")}
    jaxlmm.solve(fn, jaxlmm.L0(1), jaxlmm.BestSubset(), jnp.zeros(6), args)
    after = {k: jax.config.values[k] for k in before}
    assert after == before


def test_objective_is_not_retraced_for_every_a(monkeypatch):
    traces = []
    original = LeastSquares.__call__

    def counting(self, beta, args):
        traces.append(1)
        return original(self, beta, args)

    monkeypatch.setattr(LeastSquares, "__call__", counting)
    jaxlmm.solvers.best_subset._compiled.cache_clear()
    sim = jaxlmm.simulate.scope_example_design(seed=3, n_clusters=9, p=20)
    data = jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups, sim.Z)
    jaxlmm.fit_quasi(data, k=2, a_grid=(0.5, 2.0, 8.0), n_folds=3, progress=False)
    first = len(traces)
    jaxlmm.fit_quasi(data, k=2, a_grid=(1.0, 4.0, 16.0, 32.0), n_folds=3, progress=False)
    # value + gradient are traced once each, for the first a only
    assert first <= 2 and len(traces) == first
    jaxlmm.solvers.best_subset._compiled.cache_clear()
