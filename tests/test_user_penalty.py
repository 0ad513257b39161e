"""A user's penalty reaches the estimators: a capped ℓ1 written in 20 lines (the example of the
docs' protocol page) is tuned by cluster CV or BIC, fitted by `fit_quasi`, `fit_shel` and `fit_lmmlasso`, summarised,
and swept — and where its optimum has a closed form, equals it."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import make_data

import jaxlmm


# --8<-- [start:capped]
class CappedL1(jaxlmm.AbstractPenalty):
    """λ Σ_k min(|β_k|, τ): the Lasso up to |β_k| = τ and flat beyond, so large effects are not shrunk."""

    lam: jax.Array
    cap: float = eqx.field(static=True, default=1.0)

    def __call__(self, beta):
        return self.lam * jnp.sum(jnp.minimum(jnp.abs(beta), self.cap))

    def prox(self, beta, step):  # the better of the minimisers on |b| ≤ τ and on |b| ≥ τ
        inside = jnp.sign(beta) * jnp.clip(jnp.abs(beta) - step * self.lam, 0.0, self.cap)
        outside = jnp.sign(beta) * jnp.maximum(jnp.abs(beta), self.cap)

        def cost(b):
            return 0.5 * (b - beta) ** 2 + step * self.lam * jnp.minimum(jnp.abs(b), self.cap)

        return jnp.where(cost(inside) <= cost(outside), inside, outside)

    def coordinate_prox(self, z, step, k):
        return self.prox(z, step)

    def kkt_residual(self, beta, grad):
        slope = jnp.where(jnp.abs(beta) < self.cap, self.lam * jnp.sign(beta), 0.0)
        return jnp.where(beta == 0, jnp.maximum(jnp.abs(grad) - self.lam, 0.0), jnp.abs(grad + slope))

    def thresholds(self):
        return self.lam
# --8<-- [end:capped]


@pytest.fixture(scope="module")
def data():
    data, (X, y, groups, Z) = make_data(5, [6, 8, 7, 9, 6, 7, 8, 6, 7, 8, 6, 9], p=10, q=2)
    # Strong effects on columns 0 and 1 (|β| ≫ τ), nothing elsewhere.
    y = 3.0 * X[:, 0] - 2.0 * X[:, 1] + np.random.default_rng(1).normal(size=len(y))
    return jaxlmm.LMMData.from_arrays(X, y, groups, Z)


def test_capped_l1_does_not_shrink_large_effects(data):
    """With every selected |β̂_k| > τ the penalty is flat there: β̂ is the whitened least-squares
    refit on its support (`quasi_best_subset_core`), where the Lasso at the same λ shrinks it."""
    lam = 0.3
    fit = jaxlmm.fit_quasi(data, a=1.0, lam=lam, penalty=CappedL1(1.0, cap=0.2), variance=False,
                           solver=jaxlmm.CoordinateDescent(rtol=1e-12))
    assert fit.result == "successful" and fit.support.tolist() == [0, 1]
    assert np.all(np.abs(fit.coef[fit.support]) > 0.2)
    refit = jaxlmm.quasi_best_subset_core(data, 1.0, (0, 1))
    np.testing.assert_allclose(fit.coef, refit.coef, atol=1e-8)
    np.testing.assert_allclose(fit.intercept, refit.intercept, atol=1e-8)
    lasso = jaxlmm.fit_quasi(data, a=1.0, lam=lam, variance=False)
    assert np.all(np.abs(lasso.coef[:2]) < np.abs(fit.coef[:2]) - 0.1)


def test_capped_l1_is_tuned_summarised_and_swept(data):
    fit = jaxlmm.fit_quasi(data, a=1.0, penalty=CappedL1(1.0, cap=0.2), progress=False)
    assert fit.result == "successful" and fit.cv is not None and {0, 1} <= set(fit.support.tolist())
    assert "CappedL1" in fit.summary()
    batch = jaxlmm.LMMData.stack([data, data])
    out = jaxlmm.sweep(jaxlmm.quasi_lasso_core, batch, {"a": [1.0], "lam": [fit.lam]}, penalty=CappedL1(1.0, cap=0.2))
    np.testing.assert_allclose(np.asarray(out.fits.coef)[:, 0], np.stack([fit.coef, fit.coef]), atol=1e-6)
    assert set(out.to_pandas()["result"]) == {"successful"}


def test_capped_l1_in_shel_equals_its_core(data):
    penalty = CappedL1(1.0, cap=0.2)
    solver = jaxlmm.CoordinateDescent(rtol=1e-12)
    fit = jaxlmm.fit_shel(data, lam=0.3, synthetic="dummies", penalty=penalty, solver=solver)
    core = jaxlmm.shel_core(data, 0.3, None, solver=solver, penalty=penalty)
    assert fit.result == "successful"
    for name in ("coef", "intercept", "sigma2", "ranef"):
        np.testing.assert_allclose(getattr(fit, name), np.asarray(getattr(core, name)), atol=1e-10, err_msg=name)


def test_a_penalty_refuses_the_lasso_only_arguments(data):
    for kwargs in ({"weights": np.ones(10)}, {"unpenalized": [0]}, {"k": 2}, {"lam": "universal"}):
        with pytest.raises(ValueError, match="`penalty` replaces the Lasso"):
            jaxlmm.fit_quasi(data, a=1.0, penalty=CappedL1(1.0), **kwargs)
    with pytest.raises(ValueError, match="AbstractPenalty"):
        jaxlmm.fit_quasi(data, a=1.0, penalty="mcp")


def _support_columns(data, columns):
    X = np.asarray(data.X)[np.argsort(np.asarray(data.order))][:, columns]  # rows in the caller's order
    y = np.asarray(data.y)[np.argsort(np.asarray(data.order))]
    Z = np.asarray(data.Z)[np.argsort(np.asarray(data.order))]
    groups = np.asarray(data.labels)[np.asarray(data.cluster)][np.argsort(np.asarray(data.order))]
    return jaxlmm.LMMData.from_arrays(X, y, groups, Z)


def test_capped_l1_in_lmmlasso(data):
    """lmmLasso's likelihood with the capped ℓ1: where every selected |β̂_k| > τ the penalty is flat,
    so β̂, σ̂² and Ψ̂ are the unpenalised ML fit of the same model on the support (`fit_lmm`, an
    independent solver); the ℓ1 at the same λ shrinks the effects. The BIC path, the core and
    `sweep` take the same penalty."""
    solver = jaxlmm.MixedModelCGD(tol=1e-10)
    fit = jaxlmm.fit_lmmlasso(data, lam=30.0, penalty=CappedL1(1.0, cap=0.2), solver=solver)
    assert fit.result == "successful" and fit.support.tolist() == [0, 1]
    assert "CappedL1" in fit.summary() and fit.hyperparameters["lam"] == 30.0
    ml = jaxlmm.fit_lmm(_support_columns(data, [0, 1]), reml=False, structure="identity")
    np.testing.assert_allclose(fit.coef[:2], ml.coef, rtol=1e-5)
    np.testing.assert_allclose(fit.intercept, ml.intercept, atol=1e-5)
    np.testing.assert_allclose(fit.sigma2, ml.sigma2, rtol=1e-4)
    np.testing.assert_allclose(fit.psi, ml.psi, rtol=1e-3, atol=1e-6)
    lasso = jaxlmm.fit_lmmlasso(data, lam=30.0, standardize=False, unpenalized=[], solver=solver)
    assert np.all(np.abs(lasso.coef[:2]) < np.abs(fit.coef[:2]) - 0.05)
    # λ by BIC along the path, the core and its sweep, the Lasso-only arguments refused.
    penalty = CappedL1(1.0, cap=0.2)
    path_fit = jaxlmm.fit_lmmlasso(data, penalty=penalty)
    assert path_fit.result == "successful" and {0, 1} <= set(path_fit.support.tolist())
    assert path_fit.path is not None and path_fit.tuning.criterion == "bic"
    # The core from the fit's own β̂ (one start; from β = 0 it stays in the basin where σ² has
    # absorbed the signal, which is why the estimator tries a second, cold start).
    start = np.concatenate([[fit.intercept], fit.coef])
    core = jaxlmm.lmmlasso_core(data, 30.0, start=start, solver=solver, penalty=penalty)
    np.testing.assert_allclose(fit.coef, np.asarray(core.coef), atol=1e-6)
    np.testing.assert_allclose(fit.sigma2, float(core.sigma2), rtol=1e-6)
    out = jaxlmm.sweep(jaxlmm.lmmlasso_core, jaxlmm.LMMData.stack([data, data]), {"lam": [30.0]}, penalty=penalty,
                       solver=solver, start=start)
    np.testing.assert_allclose(np.asarray(out.fits.coef)[:, 0], np.stack([core.coef, core.coef]), atol=1e-8)
    for kwargs in ({"weights": np.ones(10)}, {"unpenalized": [0]}, {"adaptive": True}):
        with pytest.raises(ValueError, match="`penalty` replaces the Lasso"):
            jaxlmm.fit_lmmlasso(data, lam=30.0, penalty=penalty, **kwargs)
