"""Every fit is equivariant to the units of y and X (the estimators fit on internally rescaled
data and report on the caller's scale), up to the dtype's range: y·1e200 must neither change
the selection nor raise, and its variances (1e400, past float64) make the fit `nonfinite` with a
warning, never `successful`.

Reference: the same fit on the unscaled data, mapped by the exact rules (β·s_y/s_x, intercept
·s_y, variances ·s_y², λ of the least-squares objectives ·s_y·s_x, ...). With power-of-two
factors the internal data are bit-identical, so the mapping is exact; with 1e200 it holds to the
solvers' tolerance.
"""

import numpy as np
import pytest
from helpers import random_grouped

import jaxlmm

pytestmark = [pytest.mark.filterwarnings("ignore:overflow encountered"),
              pytest.mark.filterwarnings("ignore:.*cannot be represented in float64")]

FACTORS = [(2.0**40, 2.0**-30), (1e200, 1.0), (1.0, 1e-150), (1e-120, 1e150)]  # (y factor, X factor)
SIZES = [5, 3, 6, 4, 5, 7, 2, 6, 5, 4, 6, 5]


@pytest.fixture(scope="module")
def raw():
    X, y, groups, Z = random_grouped(3, SIZES, p=8, q=2)
    return X, y, groups, Z


def _pair(raw, fy, fx):
    X, y, groups, Z = raw
    return (jaxlmm.LMMData.from_arrays(X, y, groups, Z),
            jaxlmm.LMMData.from_arrays(X * fx, y * fy, groups, Z))


def _close(a, b, exact):
    a, b = np.asarray(a, float), np.asarray(b, float)
    if exact:
        np.testing.assert_array_equal(a, b)
    else:
        finite = np.abs(b[np.isfinite(b)])  # y·1e200 squared overflows to inf on both sides
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8 * np.max(finite, initial=0.0))


def _honest(fit, fy) -> bool:
    """Successful exactly when the variances on the caller's scale are finite and nonzero."""
    representable = np.isfinite(np.float64(fy) ** 2) and np.float64(fy) ** 2 > 0
    return fit.converged if representable else fit.result == "nonfinite" and not fit.converged


@pytest.mark.parametrize("fy,fx", FACTORS)
def test_quasi_lasso_cv_debias_and_variance_components(raw, fy, fx):
    exact = np.log2(fy).is_integer() and np.log2(fx).is_integer()
    fy, fx = np.float64(fy), np.float64(fx)  # y's variances may overflow: inf, not an exception
    data, scaled = _pair(raw, fy, fx)
    fit = jaxlmm.fit_quasi(data, a=1.0, n_lambda=30, progress=False)
    other = jaxlmm.fit_quasi(scaled, a=1.0, n_lambda=30, progress=False)
    assert np.array_equal(fit.support, other.support) and _honest(other, fy)
    _close(other.coef, fit.coef * fy / fx, exact)
    _close(other.intercept, fit.intercept * fy, exact)
    _close(other.lam, fit.lam * fy * fx, exact)  # λ is in the units of Xᵀy
    _close(other.cv.error, fit.cv.error * fy * fy, exact)
    table, scaled_table = (jaxlmm.debias(f, d, coords=[0, 1, 5]) for f, d in ((fit, data), (other, scaled)))
    assert scaled_table.valid.all() and np.all(np.isfinite(scaled_table.std_error))
    if fx == 1.0:  # node-wise λ_j follow the scaled-Lasso rule on the caller's columns: y only
        _close(scaled_table.estimate, table.estimate * fy / fx, exact)
        _close(scaled_table.std_error, table.std_error * fy / fx, exact)
        _close(scaled_table.p_value, table.p_value, exact)
    vc, scaled_vc = jaxlmm.variance_components(fit, data), jaxlmm.variance_components(other, scaled)
    _close(scaled_vc.sigma2, vc.sigma2 * fy * fy, exact)
    _close(scaled_vc.psi, vc.psi * fy * fy, exact)
    _close(scaled_vc.ranef, vc.ranef * fy, exact)


@pytest.mark.parametrize("fy,fx", [(2.0**40, 1.0), (1e200, 1.0), (1e-100, 2.0**-30)])
def test_quasi_universal_and_best_subset(raw, fy, fx):
    """The universal λ = σ̂ sqrt(2 log p / n) assumes the caller's columns (as Sun & Zhang's rule
    does): equivariant to y's units, and best subset to both."""
    exact = np.log2(fy).is_integer() and np.log2(fx).is_integer()
    fy, fx = np.float64(fy), np.float64(fx)  # y's variances may overflow: inf, not an exception
    data, scaled = _pair(raw, fy, fx)
    if fx == 1.0:
        fit, other = (jaxlmm.fit_quasi(d, a=0.5, lam="universal", progress=False) for d in (data, scaled))
        _close(other.coef, fit.coef * fy, exact)
        _close(other.lam, fit.lam * fy, exact)
    fit, other = (jaxlmm.fit_quasi(d, a=0.5, k_grid=[1, 2, 3], k_criterion="ebic", progress=False)
                  for d in (data, scaled))
    assert fit.k == other.k
    _close(other.coef, fit.coef * fy / fx, exact)
    shift = fit.effective_sample_size * 2 * np.log(fy)
    np.testing.assert_allclose([other.ic[k] - shift for k in (1, 2, 3)], [fit.ic[k] for k in (1, 2, 3)], rtol=1e-9)


@pytest.mark.parametrize("fy,fx", FACTORS)
def test_lmmlasso(raw, fy, fx):
    exact = np.log2(fy).is_integer() and np.log2(fx).is_integer()
    fy, fx = np.float64(fy), np.float64(fx)  # y's variances may overflow: inf, not an exception
    data, scaled = _pair(raw, fy, fx)
    fit = jaxlmm.fit_lmmlasso(data, lam=5.0)
    other = jaxlmm.fit_lmmlasso(scaled, lam=5.0 / fy)  # λ acts on standardised columns, in y's units⁻¹
    assert fit.converged and _honest(other, fy) and np.array_equal(fit.support, other.support)
    tol = dict(rtol=1e-5)
    for got, want in [(other.coef, fit.coef * fy / fx), (other.intercept, fit.intercept * fy),
                      (other.sigma2, fit.sigma2 * fy * fy), (other.psi, fit.psi * fy * fy),
                      (other.ranef, fit.ranef * fy)]:
        if exact:
            _close(got, want, True)
        else:
            np.testing.assert_allclose(got, want, atol=1e-5 * np.max(np.abs(want)), **tol)
    np.testing.assert_allclose(other.loglik, fit.loglik - data.n_obs * np.log(fy), rtol=1e-9, atol=1e-6)
    assert other.lam == pytest.approx(5.0 / fy, rel=1e-12)


@pytest.mark.parametrize("fy,fx", FACTORS[:2])
def test_shel(raw, fy, fx):
    exact = np.log2(fy).is_integer() and np.log2(fx).is_integer()
    fy, fx = np.float64(fy), np.float64(fx)  # y's variances may overflow: inf, not an exception
    data, scaled = _pair(raw, fy, fx)
    fit, other = (jaxlmm.fit_shel(d, K=2, n_lambda=20, progress=False) for d in (data, scaled))
    assert np.array_equal(fit.support, other.support)
    _close(other.coef, fit.coef * fy / fx, exact)
    _close(other.lam, fit.lam * fy * fx, exact)
    _close(other.cv_error, fit.cv_error * fy * fy, exact)
    np.testing.assert_allclose(other.gamma, fit.gamma * fy, rtol=1e-6, atol=1e-9 * np.abs(fit.gamma * fy).max())


@pytest.mark.parametrize("fy,fx", [FACTORS[0], (1e100, 1e-50)])  # A is given in y's units squared
def test_eb_ridge_fixed_hyperparameters(raw, fy, fx):
    exact = np.log2(fy).is_integer() and np.log2(fx).is_integer()
    fy, fx = np.float64(fy), np.float64(fx)  # y's variances may overflow: inf, not an exception
    data, scaled = _pair(raw, fy, fx)
    A = np.array([[0.5, 0.1], [0.1, 0.4]])
    fit = jaxlmm.fit_eb_ridge(data, lam=2.0, b=0.6, A=A)
    other = jaxlmm.fit_eb_ridge(scaled, lam=2.0 * fx * fx, b=0.6, A=A * fy * fy)
    assert fit.converged and other.converged
    for got, want in [(other.coef, fit.coef * fy / fx), (other.intercept, fit.intercept * fy),
                      (other.sigma2, fit.sigma2 * fy * fy), (other.psi, fit.psi * fy * fy),
                      (other.ranef, fit.ranef * fy)]:
        np.testing.assert_allclose(got, want, rtol=0 if exact else 1e-6, atol=1e-7 * np.max(np.abs(want)))
    # Densities change by the Jacobian of y and of the flat-prior intercept: log p(y) by
    # −(N − 1) log f_y; J by −N log f_y and its log|Ψ| prior term by −c_b q log f_y.
    n_obs, n, q = data.n_obs, data.n_clusters, 2
    c_b = 0.6 * n / (1 - 0.6)
    assert other.log_marginal_likelihood == pytest.approx(fit.log_marginal_likelihood - (n_obs - 1) * np.log(fy),
                                                          rel=1e-9, abs=1e-6)
    expected = fit.log_posterior - (n_obs + c_b * q) * np.log(fy)
    assert other.log_posterior == pytest.approx(expected, rel=1e-9, abs=1e-6)


def test_eb_ridge_learned_hyperparameters_follow_the_units(raw):
    """X·1e-4 once stopped at the starting λ and reported success: the learned λ must move with
    the units (λ·f_x², A·f_y²) and the fit must not change."""
    fy, fx = np.float64(3.0), np.float64(1e-4)
    data, scaled = _pair(raw, fy, fx)
    fit, other = jaxlmm.fit_eb_ridge(data), jaxlmm.fit_eb_ridge(scaled)
    assert fit.converged and other.converged, (fit.result, other.result)
    # Both searches stop on L-BFGS's tolerance on an evidence that is flat towards b → 1: the
    # maxima agree to 1e-5 relative (after the Jacobian of y, −(N − 1) log f_y; measured 1e-6),
    # the maximisers to a percent.
    shift = -(data.n_obs - 1) * np.log(fy)
    assert other.log_marginal_likelihood == pytest.approx(fit.log_marginal_likelihood + shift, rel=1e-5)
    assert other.lam == pytest.approx(fit.lam * fx * fx, rel=1e-2)
    np.testing.assert_allclose(other.A, fit.A * fy * fy, rtol=1e-2)
    np.testing.assert_allclose(other.coef, fit.coef * fy / fx, rtol=1e-2, atol=1e-3 * np.abs(fit.coef * fy / fx).max())
