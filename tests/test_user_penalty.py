"""A user's penalty reaches the estimators: a capped ℓ1 written in 20 lines (the example of the
docs' protocol page) is tuned by cluster CV, fitted by `fit_quasi` and `fit_shel`, summarised,
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
