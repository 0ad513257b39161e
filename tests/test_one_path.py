"""One path per method: each `fit_*` at given hyperparameters equals its pure core (the one
`jaxlmm.sweep` runs) field by field — coefficients, intercept, σ̂², Ψ̂, BLUPs — so no copy of a
method can drift from the other. And the package's layers: imports only point down."""

import ast
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import make_data

import jaxlmm

CD = jaxlmm.CoordinateDescent(rtol=1e-12)
CGD = jaxlmm.MixedModelCGD(tol=1e-13, max_steps=5000, beta_solver=jaxlmm.CoordinateDescent(rtol=1e-13))
FIELDS = ("coef", "intercept", "sigma2", "psi", "ranef")


@pytest.fixture(scope="module")
def data():
    return make_data(3, [4, 6, 5, 7, 3, 5, 6, 4, 5, 6, 4, 7], p=8, q=2)[0]


def _cluster_rows(data, rows):
    """The n × k cluster-level matrix (cluster index order) of N × k rows given in caller order."""
    sorted_rows = np.asarray(rows)[np.asarray(data.order)]
    return np.stack([sorted_rows[np.asarray(data.cluster) == i][0] for i in range(data.n_clusters)])


def _synthetic_of_mean_five(data):
    """A user cluster-level variable of mean ≈ 5.9 (not centred: the intercept is not γ̂_0)."""
    return 5.0 + np.arange(data.n_clusters) % 3 + 0.1 * np.arange(data.n_clusters)


def _shel_user(data):
    level = _synthetic_of_mean_five(data)
    rows = np.empty(data.n_obs)
    rows[np.asarray(data.order)] = level[np.asarray(data.cluster)]
    weights, unpenalized = np.linspace(0.5, 2.0, data.n_features), [1]
    fit = jaxlmm.fit_shel(data, lam=0.05, synthetic=rows[:, None], weights=weights, unpenalized=unpenalized,
                          solver=CD)
    synthetic = jnp.column_stack([jnp.ones(data.n_clusters), level])
    penalty = jaxlmm.L1(1.0, jnp.asarray(weights), jnp.zeros(data.n_features, bool).at[1].set(True))
    return fit, jaxlmm.shel_core(data, 0.05, synthetic, penalty=penalty, solver=CD)


def _shel_pca(data):
    fit = jaxlmm.fit_shel(data, lam=0.05, K=2, solver=CD)
    return fit, jaxlmm.shel_core(data, 0.05, jnp.asarray(_cluster_rows(data, fit.synthetic)), solver=CD)


def _quasi_best_subset(data):
    fit = jaxlmm.fit_quasi(data, a=0.7, k=3, variance=False)
    return fit, jaxlmm.quasi_best_subset_core(data, 0.7, tuple(int(j) for j in fit.support))


# (method, fit and core, fields compared, relative tolerance). lmmLasso and the EB ridge stop on
# an iterative criterion from different starts (two starts and a λ path; ECM from its own start):
# the same optimum to the solvers' tolerance, not to rounding.
CASES = {
    "quasi Lasso": (lambda d: (jaxlmm.fit_quasi(d, a=0.7, lam=0.05, solver=CD, variance=False),
                               jaxlmm.quasi_lasso_core(d, 0.7, 0.05, solver=CD)), ("coef", "intercept"), 1e-10),
    "quasi best subset": (_quasi_best_subset, ("coef", "intercept"), 1e-10),
    "SHEL dummies": (lambda d: (jaxlmm.fit_shel(d, lam=0.05, synthetic="dummies", solver=CD),
                                jaxlmm.shel_core(d, 0.05, None, solver=CD)), FIELDS, 1e-10),
    "SHEL PCA": (_shel_pca, FIELDS, 1e-10),
    "SHEL user synthetic, weights, unpenalised": (_shel_user, FIELDS, 1e-10),
    "LMM ML": (lambda d: (jaxlmm.fit_lmm(d, reml=False), jaxlmm.lmm_core(d, reml=False)), FIELDS, 1e-10),
    "LMM REML": (lambda d: (jaxlmm.fit_lmm(d), jaxlmm.lmm_core(d, reml=True)), FIELDS, 1e-10),
    "lmmLasso": (lambda d: (jaxlmm.fit_lmmlasso(d, lam=3.0, standardize=False, structure="diagonal", solver=CGD),
                            jaxlmm.lmmlasso_core(d, 3.0, "diagonal", solver=CGD)), FIELDS, 1e-8),
    "EB ridge": (lambda d: (jaxlmm.fit_eb_ridge(d, lam=2.0, b=0.3, A=np.eye(2)),
                            jaxlmm.eb_ridge_core(d, 2.0, 0.3, np.eye(2))), FIELDS, 1e-7),
}


@pytest.mark.parametrize("method", CASES)
def test_fit_equals_its_core(data, method):
    make, fields, tolerance = CASES[method]
    fit, core = make(data)
    assert fit.result == "successful" and bool(core.converged)
    for name in fields:
        ours, reference = np.asarray(getattr(fit, name), float), np.asarray(getattr(core, name), float)
        assert ours.shape == reference.shape, name
        scale = max(1.0, float(np.max(np.abs(reference))))
        np.testing.assert_allclose(ours, reference, rtol=0, atol=tolerance * scale, err_msg=f"{method}: {name}")
    if "support" in dir(fit):
        np.testing.assert_array_equal(fit.support, np.flatnonzero(np.asarray(core.coef)))


def test_shel_intercept_is_the_mean_cluster_effect(data):
    """Regression: with a synthetic variable of mean ≈ 6, `fit_shel` reported γ̂_0 (the effect at
    S = 0, an extrapolation) where the core reports the mean cluster effect; intercept + ranef
    is each cluster's effect S_i γ̂ in both, and they now agree."""
    fit, _ = _shel_user(data)
    effects = _cluster_rows(data, fit.synthetic) @ fit.gamma
    np.testing.assert_allclose(fit.intercept, effects.mean(), rtol=1e-10)
    np.testing.assert_allclose(fit.intercept + fit.ranef[:, 0], effects, rtol=1e-10)
    assert abs(fit.intercept - fit.gamma[0]) > 0.01  # the two conventions differ here (by 0.077)


# -- the layers ------------------------------------------------------------------------------------

PACKAGE = Path(jaxlmm.__file__).parent
LAYERS = (  # from the bottom: a module may import its own layer and those below
    ("data", {"_data", "_formula", "_validate", "_scale", "_precision", "_jaxlib", "_lazy", "_recipes"}),
    ("covariance", {"_covariance", "_whiten"}),
    ("losses and penalties", {"losses", "_penalties"}),
    ("solvers", {"solvers", "_solution", "_solve", "_path", "_implicit"}),
    ("tuning, inference, the fit protocol", {"_select", "_inference", "_variance_components", "_fit", "_persist"}),
    ("estimators", {"estimators"}),
    ("face", {"_sweep", "cli", "plots", "simulate", "__init__"}),
)


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return next(rank for rank, (_, names) in enumerate(LAYERS) if top in names)


def _imports():
    """(importing module, imported module) for every relative import in the package."""
    for path in PACKAGE.rglob("*.py"):
        parts = ["jaxlmm", *path.relative_to(PACKAGE).with_suffix("").parts]
        package = parts[:-1]
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - node.level + 1]
                if node.module:
                    yield module, ".".join([*base, node.module])
                else:
                    yield from ((module, ".".join([*base, alias.name])) for alias in node.names)


def test_imports_point_down():
    upward = sorted({f"{a} -> {b}" for a, b in _imports() if b != "jaxlmm" and _layer(b) > _layer(a)})
    assert not upward, upward


def test_no_method_imports_another_methods_modules():
    """A method may use another's public names (`from ..quasi import fit_quasi`), never its modules."""
    crossing = sorted({f"{a} -> {b}" for a, b in _imports()
                       if a.startswith("jaxlmm.estimators.") and b.startswith("jaxlmm.estimators.")
                       and len(b.split(".")) > 3 and not b.split(".")[2].startswith("_")
                       and a.split(".")[2] != b.split(".")[2]})
    assert not crossing, crossing


def test_solvers_know_no_loss_module():
    assert not sorted({b for a, b in _imports() if a.startswith("jaxlmm.solvers") and b.startswith("jaxlmm.losses")})
