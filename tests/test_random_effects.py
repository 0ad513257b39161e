"""`select_random_effects` (Schelldorfer, Bühlmann & van de Geer 2011, §6.2): the candidate models
fitted in one program equal `fit_lmmlasso` fits of the same models; BIC_0 is the base model's
`fit_lmmlasso` BIC; a strong random slope is found and kept; bad arguments; the H4 design."""

import jax
import numpy as np
import pytest

import jaxlmm
from jaxlmm import simulate


def slope_data(seed=3, n_clusters=20, size=6, p=30, slope_variance=2.0, intercept_variance=1.0):
    """A random intercept and a random slope on x_0 only; x_0, x_1, x_2 have fixed effects."""
    rng = np.random.default_rng(seed)
    n_obs = n_clusters * size
    groups = np.repeat(np.arange(n_clusters), size)
    X = rng.normal(size=(n_obs, p))
    b = rng.normal(size=(n_clusters, 2)) * np.sqrt([intercept_variance, slope_variance])
    y = 1.0 + X[:, :3] @ np.array([2.0, 3.0, 1.5]) + b[groups, 0] + b[groups, 1] * X[:, 0]
    y = y + 0.5 * rng.normal(size=n_obs)
    order = rng.permutation(n_obs)  # rows not sorted by cluster
    data = jaxlmm.LMMData.from_arrays(X[order], y[order], groups[order])
    return data, np.var(b[:, 1], ddof=1) * np.var(X[:, 0], ddof=1)  # the realised slope variance per sd


@pytest.fixture(scope="module")
def drawn():
    return slope_data()


@pytest.fixture(scope="module")
def data(drawn):
    return drawn[0]


@pytest.fixture(scope="module")
def selection(data):
    return jaxlmm.select_random_effects(data, candidates=[0, 1, 2, 5])


def test_candidates_equal_single_fits(data, selection):
    """Step (ii) in one program gives what `fit_lmmlasso` gives for each model Z = [1, x_l]
    (x_l standardised), diagonal Ψ, x_l unpenalised: θ̂²_l and BIC_l; BIC_0 is its random-
    intercept fit's BIC."""
    X = np.asarray(data.to_caller_order(data.X))
    y = np.asarray(data.to_caller_order(data.y))
    groups = np.asarray(data.to_caller_order(data.cluster))
    x = (X - X.mean(axis=0)) / X.std(axis=0, ddof=1)
    for i, k in enumerate(selection.candidates):
        single = jaxlmm.LMMData.from_arrays(X, y, groups, np.column_stack([np.ones(len(y)), x[:, k]]))
        fit = jaxlmm.fit_lmmlasso(single, structure="diagonal", unpenalized=[k])
        np.testing.assert_allclose(selection.theta2[i], fit.psi[1, 1], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(selection.bic[i], fit.bic, rtol=1e-9)
    base = jaxlmm.fit_lmmlasso(data, structure="diagonal")
    np.testing.assert_allclose(selection.bic_0, base.bic, rtol=1e-9)


def test_candidates_at_once_equal_one_after_another(data, selection):
    """`vectorize="vmap"` (every candidate in one vmapped program, the accelerator route) gives
    what the CPU's one-after-another route gives."""
    at_once = jaxlmm.select_random_effects(data, candidates=[0, 5], vectorize="vmap")
    rows = np.isin(selection.candidates, [0, 5])
    np.testing.assert_allclose(at_once.theta2, selection.theta2[rows], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(at_once.bic, selection.bic[rows], rtol=1e-9)
    np.testing.assert_allclose(at_once.bic_0, selection.bic_0, rtol=1e-9)


def test_strong_slope_is_found_and_kept(drawn, selection):
    """The true random slope stands out by a wide margin: θ̂² within a factor 2 of the variance
    of the slopes drawn (per sd of x_0) and a BIC 20 below the base model's; the final fit keeps
    it with a variance in the same range, and keeps nothing it did not select."""
    realised = drawn[1]
    table = selection.to_pandas().set_index("column")
    assert realised / 2 < table.loc[0, "theta2"] < 2 * realised
    assert table.loc[0, "bic_minus_bic0"] < -20
    assert 0 in selection.selected and 0 in selection.kept
    assert set(selection.kept) <= set(selection.selected)
    psi = np.diag(selection.fit.psi)
    assert psi.shape == (1 + len(selection.kept),) and np.all(psi[1:] > 0)
    assert realised / 2 < psi[1 + list(selection.kept).index(0)] < 2 * realised
    assert selection.fit.structure == "diagonal"
    assert 0 in selection.fit.unpenalized and set(selection.fit.support) >= {0, 1, 2}


def test_lasso_candidates_and_no_base(data):
    """Without `candidates`, they are the Lasso start's support (here it holds the three signal
    columns); with `base=False` (the paper's riboflavin model) BIC_0 is the Lasso's BIC with σ²
    by ML, which `fit_lmmlasso(structure="none")` computes."""
    sel = jaxlmm.select_random_effects(data, base=False)
    assert {0, 1, 2} <= set(sel.candidates)
    lasso = jaxlmm.fit_lmmlasso(data, structure="none")
    np.testing.assert_allclose(sel.bic_0, lasso.bic, rtol=1e-9)
    assert 0 in sel.kept
    assert sel.fit.psi.shape == (len(sel.kept), len(sel.kept))


@pytest.mark.parametrize("kwargs, name", [
    ({"kappa": -0.1}, "kappa"),
    ({"kappa": "0.05"}, "kappa"),
    ({"candidates": [0, 99]}, "candidates"),
    ({"candidates": []}, "candidates"),
    ({"base": 1}, "base"),
    ({"vectorize": "pmap"}, "vectorize"),
    ({"n_lambda": 0}, "n_lambda"),
])
def test_bad_arguments(kwargs, name):
    data = slope_data(p=5)[0]
    with pytest.raises(ValueError, match=f"`{name}`"):
        jaxlmm.select_random_effects(data, **kwargs)


def test_h4_design():
    """H4: Ψ = diag(3, 3, 2) on (1, x_2, x_3); `theta2` replaces the diagonal, in both generators."""
    sim = simulate.schelldorfer_design(0, "H4")
    np.testing.assert_array_equal(sim.Psi, np.diag([3.0, 3.0, 2.0]))
    assert sim.Z.shape == (150, 3) and sim.X.shape == (150, 299)
    weak = simulate.schelldorfer_design(0, "H1", theta2=(0.1, 0.2))
    np.testing.assert_array_equal(weak.Psi, np.diag([0.1, 0.2]))
    batch = simulate.draw("schelldorfer", jax.random.split(jax.random.key(0), 2), None, variant="H4",
                          theta2=(1.0, 0.5, 0.25))
    np.testing.assert_array_equal(np.asarray(batch.Psi), np.diag([1.0, 0.5, 0.25]))
    with pytest.raises(ValueError, match="`theta2`"):
        simulate.schelldorfer_design(0, "H4", theta2=(1.0, 2.0))
    with pytest.raises(ValueError, match="`theta2`"):
        simulate.schelldorfer_design(0, "H1", theta2=-1.0)


def test_variance_penalty_kkt(drawn):
    """`MixedModelCGD.run(variance_penalty=v)` minimises −log L + Σ_l v_l Ψ_ll over Ψ_ll ≥ 0: at
    its solution the slope g_l = ∂(−log L)/∂Ψ_ll (by autodiff through T_i = I + ZᵢᵀZᵢΨ/σ², valid
    at Ψ_ll = 0) satisfies g_l + v_l = 0 where Ψ_ll > 0 and g_l + v_l ≥ 0 where Ψ_ll = 0, and a
    penalty above the largest −g_l at 0 sets every penalised variance to 0."""
    import jax.numpy as jnp

    from jaxlmm._covariance import ClusterCovariance
    from jaxlmm.losses import MixedModelParams, mixed_model_nll
    from jaxlmm.losses.mixed_model import cluster_statistics

    data = drawn[0]
    X = np.asarray(data.X)
    Z = np.column_stack([np.ones(data.n_obs), X[:, [0, 1, 2, 5]]])
    model = jaxlmm.LMMData.from_arrays(X, np.asarray(data.y), np.asarray(data.cluster), Z)
    design = jnp.column_stack([jnp.ones(data.n_obs), model.X[:, :6]])
    _, args = mixed_model_nll(model, design, "diagonal")
    unpenalized = jnp.ones(7, bool)  # β by ML: the variance block's KKT conditions are the point
    start = MixedModelParams(jnp.zeros(7), jnp.full(5, 0.5), jnp.asarray(0.0))
    solver = jaxlmm.MixedModelCGD(tol=1e-10)

    def slopes(fit):
        stats = cluster_statistics(args, fit.params.beta)

        def nll(psi_diagonal):
            cov = ClusterCovariance(stats.ZtZ, stats.sizes, jnp.diag(psi_diagonal), jnp.exp(2 * fit.params.log_sigma))
            return 0.5 * (cov.log_det() + cov.quadratic(stats.Ztr, stats.rr))

        return np.asarray(jax.grad(nll)(fit.params.theta**2))

    v = np.array([0.0, 2.0, 2.0, 2.0, 2.0])
    fit = solver.run("diagonal", args, jaxlmm.L1(jnp.asarray(1.0), None, unpenalized), start, None, jnp.asarray(v))
    assert fit.result == jaxlmm.RESULTS.successful
    psi, g = np.asarray(fit.params.theta) ** 2, slopes(fit)
    assert psi[1] > 0.1 and np.sum(psi[2:] == 0) >= 2  # the true slope stays, noise slopes go to 0
    np.testing.assert_allclose((g + v)[psi > 0], 0.0, atol=1e-5)
    assert np.all((g + v)[psi == 0] >= -1e-8)
    top = np.max(-slopes(fit)[1:] * (psi[1:] == 0), initial=0.0)  # noise slopes stay 0 from here
    assert top < 2.0
    huge = np.array([0.0, *[10 * (2.0 + abs(g[1]) + 100.0)] * 4])
    fit = solver.run("diagonal", args, jaxlmm.L1(jnp.asarray(1.0), None, unpenalized), start, None,
                     jnp.asarray(huge))
    assert np.all(np.asarray(fit.params.theta)[1:] == 0)


@pytest.mark.slow
def test_penalty_method_keeps_the_slope(data):
    """method="penalty": the joint fit with a variance penalty tuned by BIC keeps the strong
    slope; its λ_γ grid runs down to 0 and the BIC at the chosen λ_γ is the smallest."""
    sel = jaxlmm.select_random_effects(data, candidates=[0, 1, 2, 5], method="penalty", n_penalty=3)
    assert sel.method == "penalty" and 0 in sel.selected and 0 in sel.kept
    assert set(sel.kept) <= set(sel.selected) and len(sel.candidates) == 4
    assert sel.variance_penalties[-1] == 0 and np.all(np.diff(sel.variance_penalties) < 0)
    assert sel.penalty_bic.min() == sel.penalty_bic[list(sel.variance_penalties).index(sel.variance_penalty)]
    assert np.all(np.isnan(sel.bic))
