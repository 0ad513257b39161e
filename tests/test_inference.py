"""Debiased quasi-likelihood Lasso: dense NumPy/scikit-learn re-implementation, row-order
invariance, a vmapped 200-replicate coverage study, and bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import dense_inverse_sqrt, dense_sigma, make_data
from scipy import stats
from sklearn.linear_model import Lasso

import jaxlmm
from jaxlmm._covariance import covariance_basis
from jaxlmm._inference import debiased_lasso
from jaxlmm._variance_components import estimate_variance_components
from jaxlmm.estimators.quasi.debias import debias
from jaxlmm.losses import quasi_likelihood

SIZES = [3, 5, 4, 7, 6, 5, 4, 8, 5, 6, 2, 7]


@pytest.fixture(scope="module")
def small():
    data, (X, y, groups, Z) = make_data(3, SIZES, p=15, q=2, label_type=str)
    fit = jaxlmm.fit_quasi(data, a=1.5, lam=0.08, progress=False)
    return data, (X, y, groups, Z), fit


def _sklearn_scaled_lasso(others, response, n_eff, p, tol=1e-12):
    """Scaled Lasso (Sun & Zhang) of `response` on `others`, with an unpenalised column
    others[:, 0] removed by Frisch–Waugh; our loss ½‖·‖²/n_eff + λ‖κ‖₁ is sklearn's
    1/(2N)‖·‖² + α‖κ‖₁ with α = λ n_eff / N."""
    n = len(response)
    c = others[:, 0]
    project = lambda v: v - np.outer(c, c @ v) / (c @ c) if v.ndim == 2 else v - c * (c @ v) / (c @ c)
    Xp, yp = project(others[:, 1:]), project(response)
    lam0 = np.sqrt(2 * np.log(p) / n_eff)
    sigma = np.sqrt(yp @ yp / n_eff)
    model = Lasso(fit_intercept=False, tol=tol, max_iter=1_000_000, warm_start=True)
    for _ in range(500):
        model.set_params(alpha=sigma * lam0 * n_eff / n)
        model.fit(Xp, yp)
        resid = yp - Xp @ model.coef_
        new = np.sqrt(resid @ resid / n_eff)
        if abs(new - sigma) < 1e-12 * sigma:
            break
        sigma = new
    return resid, sigma * lam0  # resid = ŵ_j (the intercept part is projected out)


def test_debias_matches_dense_reference(small):
    """Debiased estimates, cluster-robust SEs, node-wise λ_j, intervals and p-values equal a
    dense re-implementation: eigh whitening, sklearn node-wise Lassos, a per-label loop."""
    data, (X, y, groups, Z), fit = small
    a, p = 1.5, X.shape[1]
    S = dense_sigma(groups, Z, a)
    L = dense_inverse_sqrt(S)
    n_eff = np.trace(np.linalg.inv(S))
    X1 = np.column_stack([np.ones(len(y)), X])
    Xa, ya = L @ X1, L @ y
    r = ya - Xa @ np.concatenate([[fit.intercept], fit.coef])
    labels = np.asarray(groups)
    coords = [0, 1, 4, 9]
    with pytest.warns(RuntimeWarning, match="not a scaled-Lasso fit"):
        table = debias(fit, data, coords=coords, level=0.9, initial="fit")
    for row, j in enumerate(coords):
        others = np.delete(Xa, j + 1, axis=1)
        w, lam_j = _sklearn_scaled_lasso(others, Xa[:, j + 1], n_eff, p)
        denom = w @ Xa[:, j + 1]
        est = fit.coef[j] + w @ r / denom
        se = np.sqrt(sum(np.sum((w * r)[labels == g]) ** 2 for g in set(labels))) / abs(denom)
        np.testing.assert_allclose(table.extra["node_lam"][row], lam_j, rtol=1e-5)
        np.testing.assert_allclose(table.estimate[row], est, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(table.std_error[row], se, rtol=1e-5)
        z = stats.norm.ppf(0.95)
        interval = [table.ci_low[row], table.ci_high[row]]
        np.testing.assert_allclose(interval, [est - z * se, est + z * se], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(table.p_value[row], 2 * stats.norm.sf(abs(est / se)), rtol=1e-4, atol=1e-10)
    assert table.valid.all()
    np.testing.assert_array_equal(table.extra["initial"], fit.coef[coords])


def test_debias_starts_from_the_scaled_lasso_whatever_the_fit(small):
    """A fit at another λ (here a given 0.08; a CV λ alike) is debiased from the scaled-Lasso
    fit at its a — the initial estimator the intervals' theory needs — and says so."""
    data, _, fit = small
    table = debias(fit, data, coords=[0, 1, 4])
    universal = jaxlmm.fit_quasi(data, a=1.5, lam="universal", progress=False)
    want = debias(universal, data, coords=[0, 1, 4])
    assert "scaled-Lasso refit" in table.extra["initial_fit"] and want.extra["initial_fit"] == "the fit's own estimate"
    np.testing.assert_allclose(table.estimate, want.estimate, rtol=1e-8)
    np.testing.assert_allclose(table.std_error, want.std_error, rtol=1e-8)
    with pytest.raises(ValueError, match="`initial`"):
        debias(fit, data, initial="cv")


def test_debias_is_invariant_to_row_order_and_labels(small):
    """The published code assumed balanced, sorted rows; ours depends only on the clusters."""
    data, (X, y, groups, Z), fit = small
    perm = np.random.default_rng(0).permutation(len(y))
    relabel = {g: i * 7 for i, g in enumerate(sorted(set(groups)))}
    shuffled = jaxlmm.LMMData.from_arrays(X[perm], y[perm], [relabel[groups[t]] for t in perm], Z[perm])
    a = debias(fit, data, coords=[0, 3])
    b = debias(fit, shuffled, coords=[0, 3])
    np.testing.assert_allclose(b.estimate, a.estimate, rtol=1e-9)
    np.testing.assert_allclose(b.std_error, a.std_error, rtol=1e-9)


def test_default_coords_cover_all_columns_and_table_layout(small):
    data, _, fit = small
    table = debias(fit, data, batch_size=4)
    assert len(table) == data.n_features and table.valid.all()
    np.testing.assert_allclose(table.estimate[[0, 4]], debias(fit, data, coords=[0, 4]).estimate, rtol=1e-9)
    frame = table.to_pandas()
    assert list(frame.columns[:5]) == ["estimate", "std_error", "ci_low", "ci_high", "p_value"]
    assert "debiased" in str(table)


def test_debias_accepts_a_best_subset_fit(small):
    data, _, _ = small
    fit = jaxlmm.fit_quasi(data, a=1.5, k=2, progress=False)
    table = debias(fit, data, coords=[0, 1])
    assert table.valid.all() and np.all(table.std_error > 0)


def test_constant_column_is_flagged_not_silent_nan(small):
    """A column equal to the intercept has nothing left after the node-wise regression:
    that row is marked invalid (NaN, with a warning); the other rows are unaffected."""
    data, (X, y, groups, Z), _ = small
    X2 = X.copy()
    X2[:, 2] = 3.0
    data2 = jaxlmm.LMMData.from_arrays(X2, y, groups, Z)
    fit = jaxlmm.fit_quasi(data2, a=1.5, lam=0.08, progress=False)
    with pytest.warns(RuntimeWarning, match=r"columns \[2\]"):
        table = debias(fit, data2, coords=[1, 2])
    np.testing.assert_array_equal(table.valid, [True, False])
    assert np.isnan(table.estimate[1]) and np.isfinite(table.estimate[0])


def test_debias_bad_inputs(small):
    data, _, fit = small
    with pytest.raises(ValueError, match="`coords` must lie"):
        debias(fit, data, coords=[15])
    with pytest.raises(ValueError, match="repeated"):
        debias(fit, data, coords=[1, 1])
    with pytest.raises(ValueError, match="`coords`"):
        debias(fit, data, coords=[0.5])
    with pytest.raises(ValueError, match="`level`"):
        debias(fit, data, level=1.5)
    with pytest.raises(ValueError, match="`batch_size`"):
        debias(fit, data, batch_size=0)
    with pytest.raises(ValueError, match="λ path"):
        debias(jaxlmm.fit_quasi(data, a=1.0, lam=[0.2, 0.1], progress=False), data)
    other, _ = make_data(1, SIZES, p=4)
    with pytest.raises(ValueError, match="p = 4"):
        debias(fit, other)
    with pytest.raises(ValueError, match="must be a jaxlmm fit"):
        debias(fit.coef, data)


# ---- the simulation study of the issue: one vmapped program over 200 replicates -------------

N_REPLICATES = 200
N_COORDS = 20  # the 5 nonzero coefficients and 15 zeros
A = 1.0


def _replicate(data, solver, penalised_mask, basis):
    """Scaled-Lasso fit (intercept and x_0, which has a random slope, unpenalised), then
    debiasing of the first N_COORDS columns and the variance components, all in JAX."""
    p = data.n_features
    fn, args = quasi_likelihood(data, A, intercept=True)
    fit = jaxlmm.scaled_lasso(fn, args, solver, jnp.zeros(p + 1), args.scale, p, None, penalised_mask)
    coef, b0 = fit.coef[1:], fit.coef[0]
    db = debiased_lasso(data, A, coef, b0, jnp.arange(N_COORDS), 0.95, solver, N_COORDS)
    vc = estimate_variance_components(data, A, data.y - data.X @ coef - b0, basis, jnp.sum(coef != 0))
    return db, vc, fit.converged


def _sweep(n_replicates):
    sizes = np.random.default_rng(123).integers(4, 13, size=40)
    sims = [jaxlmm.simulate.li_cai_li_design(seed=r, cluster_size=sizes) for r in range(n_replicates)]
    stacked = jaxlmm.LMMData.stack([jaxlmm.LMMData.from_arrays(s.X, s.y, s.groups, s.Z) for s in sims])
    solver = jaxlmm.CoordinateDescent(rtol=1e-7)
    mask = jnp.zeros(301, bool).at[0].set(True).at[1].set(True)
    basis = jnp.asarray(covariance_basis("diagonal", 2))
    db, vc, converged = jax.jit(jax.vmap(lambda d: _replicate(d, solver, mask, basis)))(stacked)
    return sims, stacked, db, vc, np.asarray(converged)


@pytest.fixture(scope="module")
def sweep():
    return _sweep(N_REPLICATES)


@pytest.mark.slow
def test_sweep_coverage_size_and_variance_components(sweep):
    """n = 40 clusters of 4–12, p = 300, q = 2, Ψ = diag(1, .5), σ = 1, β = (1, .5, .2, .1, .05):
    95% intervals cover in 90–99% of replicates; the zero coordinates are rejected at most 8%
    of the time; σ̂_e² and Ψ̂ are within 15% of the truth on average."""
    sims, _, db, vc, converged = sweep
    assert converged.all() and np.asarray(db.converged).all()
    beta = sims[0].beta[:N_COORDS]
    covered = (np.asarray(db.ci_low) <= beta) & (beta <= np.asarray(db.ci_high))
    coverage = covered.mean(axis=0)
    assert np.all((0.90 <= coverage[:5]) & (coverage[:5] <= 0.99)), coverage[:5]
    assert 0.90 <= coverage[5:].mean() <= 0.99, coverage[5:]
    assert np.all(coverage[5:] >= 0.88), coverage[5:]
    rejection = (np.asarray(db.p_value)[:, 5:] < 0.05).mean()
    assert rejection <= 0.08, rejection
    # Power against β_0 = 1 and β_1 = 0.5 is complete at this size.
    assert np.all(np.asarray(db.p_value)[:, :2] < 0.05)
    np.testing.assert_allclose(np.mean(vc.sigma2), sims[0].sigma**2, rtol=0.15)
    np.testing.assert_allclose(np.diag(np.mean(vc.psi, axis=0)), np.diag(sims[0].Psi), rtol=0.15)


def test_sweep_equals_host_calls():
    """Two replicates of the vmapped sweep equal `fit_quasi` + `debias` + `variance_components`
    called one data set at a time (to 1e-3 standard errors: `fit_quasi` re-solves once more at
    the scaled-Lasso λ, whose fixed point is found to rtol 1e-6)."""
    from jaxlmm._variance_components import variance_components

    sims, stacked, db, vc, converged = _sweep(8)  # the same program as the 200-replicate sweep
    assert converged.all()
    for r in (0, 7):
        data = jax.tree.map(lambda x: x[r], stacked)
        fit = jaxlmm.fit_quasi(data, a=A, lam="universal", unpenalized=[0], progress=False)
        table = debias(fit, data, coords=np.arange(N_COORDS))
        assert np.max(np.abs(table.estimate - db.estimate[r]) / table.std_error) < 1e-3
        np.testing.assert_allclose(table.std_error, db.std_error[r], rtol=1e-3)
        comps = variance_components(fit, data, "diagonal")
        np.testing.assert_allclose(comps.sigma2, vc.sigma2[r], rtol=1e-4)
        np.testing.assert_allclose(comps.psi, vc.psi[r], rtol=1e-3)
