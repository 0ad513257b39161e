"""Every bad or edge-case input the public API is known to meet, with its expected outcome: a
`ValueError` naming the argument (raised before anything is traced), a result code / invalid
row, or acceptance where the input is legitimate. One list, so a new case is one line."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from helpers import compile_log

import jaxlmm
from jaxlmm.losses import LeastSquares, LeastSquaresData

SIZES = [4, 5, 3, 6, 4, 5, 4, 3, 5, 6]
N = sum(SIZES)


def _arrays(seed=0, p=6):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(len(SIZES)), SIZES)
    X = rng.normal(size=(N, p))
    y = X[:, 0] - 0.5 * X[:, 1] + rng.normal(size=len(SIZES))[groups] + rng.normal(size=N)
    return X, y, groups


X, Y, GROUPS = _arrays()
DATA = jaxlmm.LMMData.from_arrays(X, Y, GROUPS)
OTHER = jaxlmm.LMMData.from_arrays(*_arrays(seed=1))  # same shapes, other numbers
SINGLETONS = jaxlmm.LMMData.from_arrays(X[:10], Y[:10], np.arange(10))


@pytest.fixture(scope="module")
def quasi_fit():
    return jaxlmm.fit_quasi(DATA, a=1.0, lam=0.1)


def _ls_args():
    return LeastSquaresData(jnp.asarray(X), jnp.asarray(Y), jnp.ones(N), float(N))


# (case id, callable, regex the ValueError message must match)
VALUE_ERRORS = [
    # -- data --------------------------------------------------------------------------------
    ("y NaN", lambda: jaxlmm.LMMData.from_arrays(X, np.where(np.arange(N) == 3, np.nan, Y), GROUPS), "`y`"),
    ("y 2-D", lambda: jaxlmm.LMMData.from_arrays(X, np.c_[Y, Y], GROUPS), "`y` must be a 1-D"),
    ("y constant", lambda: jaxlmm.LMMData.from_arrays(X, np.ones(N), GROUPS), "`y` is constant"),
    ("X 1-D", lambda: jaxlmm.LMMData.from_arrays(X[:, 0], Y, GROUPS), "`X` must be a 2-D"),
    ("X rows", lambda: jaxlmm.LMMData.from_arrays(X[:-1], Y, GROUPS), "`X` has"),
    ("X inf", lambda: jaxlmm.LMMData.from_arrays(np.where(X > 2, np.inf, X), Y, GROUPS), "`X` contains NaN or inf"),
    ("X strings", lambda: jaxlmm.LMMData.from_arrays(X.astype(str), Y, GROUPS), "`X` must hold real numbers"),
    ("X no columns", lambda: jaxlmm.fit_quasi(jaxlmm.LMMData.from_arrays(X[:, :0], Y, GROUPS), a=1.0, lam=0.1),
     "`data.X` has no columns"),
    ("groups length", lambda: jaxlmm.LMMData.from_arrays(X, Y, GROUPS[:-1]), "`groups` has"),
    ("groups one cluster", lambda: jaxlmm.LMMData.from_arrays(X, Y, np.zeros(N)), "at least 2"),
    ("groups NaN", lambda: jaxlmm.LMMData.from_arrays(X, Y, np.where(np.arange(N) == 0, np.nan, GROUPS)),
     "`groups` contains NaN"),
    ("groups None", lambda: jaxlmm.LMMData.from_arrays(X, Y, [None] + list(GROUPS[1:])), "`groups` contains None"),
    ("groups pd.NA", lambda: jaxlmm.LMMData.from_arrays(X, Y, pd.array([pd.NA] + list(GROUPS[1:]), dtype="Int64")),
     "`groups` contains <NA>"),
    ("groups 2-D", lambda: jaxlmm.LMMData.from_arrays(X, Y, np.c_[GROUPS, GROUPS]), "`groups` must be one label"),
    ("groups unhashable", lambda: jaxlmm.LMMData.from_arrays(X, Y, [[g] for g in GROUPS]), "`groups`"),
    ("Z singular", lambda: jaxlmm.LMMData.from_arrays(X, Y, GROUPS, np.c_[np.ones(N), np.ones(N)]), "`Z` is singular"),
    ("stack layouts", lambda: jaxlmm.LMMData.stack([DATA, SINGLETONS]), "`datasets\\[1\\]`"),
    # -- fit_quasi ---------------------------------------------------------------------------
    ("quasi data", lambda: jaxlmm.fit_quasi((X, Y)), "`data` must be an LMMData"),
    ("quasi a < 0", lambda: jaxlmm.fit_quasi(DATA, a=-1.0), "`a`"),
    ("quasi a str", lambda: jaxlmm.fit_quasi(DATA, a="1"), "`a`"),
    ("quasi lam < 0", lambda: jaxlmm.fit_quasi(DATA, a=1.0, lam=-0.1), "`lam`"),
    ("quasi lam str", lambda: jaxlmm.fit_quasi(DATA, a=1.0, lam="abc"), "`lam`"),
    ("quasi lam NaN", lambda: jaxlmm.fit_quasi(DATA, a=1.0, lam=[0.1, np.nan]), "`lam`"),
    ("quasi k float", lambda: jaxlmm.fit_quasi(DATA, a=1.0, k=1.5), "`k` must be an integer"),
    ("quasi k bool", lambda: jaxlmm.fit_quasi(DATA, a=1.0, k=True), "`k` must be an integer"),
    ("quasi k > p", lambda: jaxlmm.fit_quasi(DATA, a=1.0, k=7), "`k` must be between"),
    ("quasi lam and k", lambda: jaxlmm.fit_quasi(DATA, a=1.0, lam=0.1, k=2), "not both"),
    ("quasi unpenalized 1.7", lambda: jaxlmm.fit_quasi(DATA, a=1.0, lam=0.1, unpenalized=[1.7]),
     "`unpenalized` must hold integer"),
    ("quasi unpenalized range", lambda: jaxlmm.fit_quasi(DATA, a=1.0, lam=0.1, unpenalized=[6]), "`unpenalized`"),
    ("quasi unpenalized repeated", lambda: jaxlmm.fit_quasi(DATA, a=1.0, lam=0.1, unpenalized=[1, 1]),
     "`unpenalized` contains repeated"),
    ("quasi all unpenalized", lambda: jaxlmm.fit_quasi(DATA, a=1.0, lam=0.1, unpenalized=range(6)), "Every column"),
    ("quasi weights length", lambda: jaxlmm.fit_quasi(DATA, a=1.0, lam=0.1, weights=[1.0]), "`weights`"),
    ("quasi weights NaN", lambda: jaxlmm.fit_quasi(DATA, a=1.0, lam=0.1, weights=[np.nan] * 6), "`weights`"),
    ("quasi cv_rule", lambda: jaxlmm.fit_quasi(DATA, a=1.0, cv_rule="max"), "`cv_rule`"),
    ("quasi k_criterion", lambda: jaxlmm.fit_quasi(DATA, a=1.0, k_criterion="aic"), "`k_criterion`"),
    ("quasi lambda_min_ratio", lambda: jaxlmm.fit_quasi(DATA, a=1.0, lambda_min_ratio=0.0), "`lambda_min_ratio`"),
    ("quasi n_lambda", lambda: jaxlmm.fit_quasi(DATA, a=1.0, n_lambda=0), "`n_lambda`"),
    ("quasi n_lambda bool", lambda: jaxlmm.fit_quasi(DATA, a=1.0, n_lambda=True), "`n_lambda`"),
    ("quasi lambda_min_ratio str", lambda: jaxlmm.fit_quasi(DATA, a=1.0, lambda_min_ratio="0.1"), "`lambda_min_ratio`"),
    ("quasi n_folds float", lambda: jaxlmm.fit_quasi(DATA, a=1.0, n_folds=2.5), "`n_folds`"),
    ("quasi n_folds > n", lambda: jaxlmm.fit_quasi(DATA, a=1.0, n_folds=11), "`n_folds`"),
    ("quasi a_grid empty", lambda: jaxlmm.fit_quasi(DATA, a_grid=[]), "`a_grid`"),
    ("quasi k_grid > p", lambda: jaxlmm.fit_quasi(DATA, a=1.0, k_grid=[1, 9]), "`k_grid`"),
    # -- post-fit functions --------------------------------------------------------------------
    ("debias other data", lambda: jaxlmm.debias(_fit(), OTHER), "not the data `fit` was fitted on"),
    ("variance_components other data", lambda: jaxlmm.variance_components(_fit(), OTHER),
     "not the data `fit` was fitted on"),
    ("debias coords", lambda: jaxlmm.debias(_fit(), DATA, coords=[6]), "`coords`"),
    ("debias coords float", lambda: jaxlmm.debias(_fit(), DATA, coords=[0.5]), "`coords`"),
    ("debias level", lambda: jaxlmm.debias(_fit(), DATA, level=1.0), "`level`"),
    ("debias path", lambda: jaxlmm.debias(jaxlmm.fit_quasi(DATA, a=1.0, lam=[0.2, 0.1]), DATA), "λ path"),
    ("debias not a fit", lambda: jaxlmm.debias(np.zeros(6), DATA), "`fit` must be a jaxlmm fit"),
    # -- fit_lmmlasso ------------------------------------------------------------------------
    ("lmmlasso lam list", lambda: jaxlmm.fit_lmmlasso(DATA, lam=[1.0, 2.0]), "`lam`"),
    ("lmmlasso lam str", lambda: jaxlmm.fit_lmmlasso(DATA, lam="1"), "`lam`"),
    ("lmmlasso structure", lambda: jaxlmm.fit_lmmlasso(DATA, lam=1.0, structure="ar1"), "`structure`"),
    ("lmmlasso lam 0, p+1 >= N", lambda: jaxlmm.fit_lmmlasso(jaxlmm.LMMData.from_arrays(
        np.random.default_rng(0).normal(size=(N, N)), Y, GROUPS), lam=0.0), "likelihood is unbounded"),
    ("lmmlasso unpenalized 1.5", lambda: jaxlmm.fit_lmmlasso(DATA, lam=1.0, unpenalized=[1.5]), "`unpenalized`"),
    ("lmmlasso weights", lambda: jaxlmm.fit_lmmlasso(DATA, lam=1.0, weights=[-1.0] * 6), "`weights`"),
    ("lmmlasso lambda_min_ratio", lambda: jaxlmm.fit_lmmlasso(DATA, lambda_min_ratio=1.0), "`lambda_min_ratio`"),
    ("lmmlasso n_lambda", lambda: jaxlmm.fit_lmmlasso(DATA, n_lambda=2.0), "`n_lambda`"),
    ("lmmlasso singleton clusters", lambda: jaxlmm.fit_lmmlasso(SINGLETONS, lam=1.0), "cannot be told apart"),
    # -- fit_shel ----------------------------------------------------------------------------
    ("shel lam list", lambda: jaxlmm.fit_shel(DATA, lam=[0.1, 0.2], K=1), "`lam`"),
    ("shel lam str", lambda: jaxlmm.fit_shel(DATA, lam="abc", K=1), "`lam`"),
    ("shel synthetic", lambda: jaxlmm.fit_shel(DATA, synthetic="means"), "`synthetic`"),
    ("shel synthetic varies", lambda: jaxlmm.fit_shel(DATA, synthetic=np.arange(N, dtype=float)), "varies within"),
    ("shel dummies singletons", lambda: jaxlmm.fit_shel(SINGLETONS, synthetic="dummies"),
     "more than one row"),
    ("shel K 0", lambda: jaxlmm.fit_shel(DATA, K=0), "`K`"),
    ("shel K float", lambda: jaxlmm.fit_shel(DATA, K=1.5), "`K`"),
    ("shel K with dummies", lambda: jaxlmm.fit_shel(DATA, synthetic="dummies", K=1), "`K` applies"),
    ("shel level", lambda: jaxlmm.fit_shel(DATA, K=1, level=95), "`level`"),
    ("shel n_splits", lambda: jaxlmm.fit_shel(DATA, K=1, n_splits=0), "`n_splits`"),
    ("shel inference", lambda: jaxlmm.fit_shel(DATA, K=1, inference="bootstrap"), "`inference`"),
    # -- fit_eb_ridge ------------------------------------------------------------------------
    ("eb lam list", lambda: jaxlmm.fit_eb_ridge(DATA, lam=[0.1, 0.2]), "`lam`"),
    ("eb lam str", lambda: jaxlmm.fit_eb_ridge(DATA, lam="abc"), "`lam`"),
    ("eb b 1", lambda: jaxlmm.fit_eb_ridge(DATA, b=1.0), "`b`"),
    ("eb b str", lambda: jaxlmm.fit_eb_ridge(DATA, b="0.5"), "`b`"),
    ("eb A shape", lambda: jaxlmm.fit_eb_ridge(DATA, lam=1.0, b=0.5, A=np.eye(2)), "`A` must be q×q"),
    ("eb A not pd", lambda: jaxlmm.fit_eb_ridge(DATA, lam=1.0, b=0.5, A=-1.0), "`A`"),
    ("eb unpenalized 0.5", lambda: jaxlmm.fit_eb_ridge(DATA, unpenalized=[0.5]), "`unpenalized`"),
    ("eb learn with lam 0", lambda: jaxlmm.fit_eb_ridge(DATA, lam=0.0), "`lam` = 0"),
    # -- solve ---------------------------------------------------------------------------------
    ("solve y0 length", lambda: jaxlmm.solve(LeastSquares(), jaxlmm.L1(0.1), jaxlmm.CoordinateDescent(),
                                             jnp.zeros(7), _ls_args()), "`y0`"),
    ("solve y0 2-D", lambda: jaxlmm.solve(LeastSquares(), jaxlmm.L1(0.1), jaxlmm.CoordinateDescent(),
                                          jnp.zeros((6, 1)), _ls_args()), "`y0` must be a 1-D"),
    ("solve lam < 0", lambda: jaxlmm.solve(LeastSquares(), jaxlmm.L1(-1.0), jaxlmm.CoordinateDescent(),
                                           jnp.zeros(6), _ls_args()), "`lam`"),
    ("solve weights length", lambda: jaxlmm.solve(LeastSquares(), jaxlmm.L1(0.1, jnp.ones(3)),
                                                  jaxlmm.CoordinateDescent(), jnp.zeros(6), _ls_args()), "`weights`"),
    ("solve L0 with CD", lambda: jaxlmm.solve(LeastSquares(), jaxlmm.L0(2), jaxlmm.CoordinateDescent(),
                                              jnp.zeros(6), _ls_args()), "BestSubset"),
    ("solve penalty type", lambda: jaxlmm.solve(LeastSquares(), 0.1, jaxlmm.CoordinateDescent(), jnp.zeros(6),
                                                _ls_args()), "`penalty`"),
    ("solve vector loss", lambda: jaxlmm.solve(lambda b, a: a.X @ b, jaxlmm.L1(0.1), jaxlmm.ProximalGradient(),
                                               jnp.zeros(6), _ls_args()), "real scalar"),
    # -- found by trying as a user or an attacker would (the trust issue) ------------------------
    ("y complex", lambda: jaxlmm.LMMData.from_arrays(X, Y + 1j, GROUPS), "`y` must be real"),
    ("X ragged", lambda: jaxlmm.LMMData.from_arrays([[1.0, 2.0], [3.0]], Y[:2], GROUPS[:2]), "`X` must be a rect"),
    ("groups is None", lambda: jaxlmm.LMMData.from_arrays(X, Y, None), "`groups` must be one cluster label"),
    ("y beyond float32", lambda: _in_float32(lambda: jaxlmm.LMMData.from_arrays(X, Y * 1e200, GROUPS)),
     "`y` has values float32 cannot hold.*jax_enable_x64"),
    ("X below float32", lambda: _in_float32(lambda: jaxlmm.LMMData.from_arrays(X * 1e-150, Y, GROUPS)),
     "`X` has values float32 cannot hold"),
    ("quasi lam True", lambda: jaxlmm.fit_quasi(DATA, a=1.0, lam=True), "`lam` must be a number"),
    ("quasi lam grid bool", lambda: jaxlmm.fit_quasi(DATA, a=1.0, lam=[True, False]), "`lam` must hold numbers"),
    ("quasi solver text", lambda: jaxlmm.fit_quasi(DATA, a=1.0, lam=0.1, solver="cd"), "`solver` must be None"),
    ("quasi seed text", lambda: jaxlmm.fit_quasi(DATA, lam=0.1, seed="x"), "`seed` must be an integer"),
    ("quasi seed < 0", lambda: jaxlmm.fit_quasi(DATA, lam=0.1, seed=-1), "`seed` must be an integer"),
    ("lmmlasso seed float", lambda: jaxlmm.fit_lmmlasso(DATA, seed=1.5), "`seed` must be an integer"),
    ("lmmlasso solver", lambda: jaxlmm.fit_lmmlasso(DATA, solver=jaxlmm.CoordinateDescent()), "`solver` must be"),
    ("lmmlasso max_df < 0", lambda: jaxlmm.fit_lmmlasso(DATA, max_df=-1), "`max_df`"),
    ("shel seed", lambda: jaxlmm.fit_shel(DATA, K=1, seed=2.5), "`seed` must be an integer"),
    ("cluster_folds text", lambda: jaxlmm.cluster_folds("10", 2), "`n_clusters`"),
    ("cluster_folds seed", lambda: jaxlmm.cluster_folds(10, 2, seed=-3), "`seed`"),
    ("debias unpenalised", lambda: jaxlmm.debias(jaxlmm.fit_lmm(DATA), DATA), "`fit` is unpenalised"),
    ("variance unpenalised", lambda: jaxlmm.variance_components(jaxlmm.fit_lmm(DATA), DATA), "`fit` is unpenalised"),
    ("lmm_core structure", lambda: jaxlmm.lmm_core(DATA, structure="bad"), "`structure` must be one of"),
    ("lmmlasso_core structure", lambda: jaxlmm.lmmlasso_core(DATA, 1.0, structure="bad"), "`structure`"),
    ("core lam bool", lambda: jaxlmm.quasi_lasso_core(DATA, 1.0, True), "`lam` must be a number, not a boolean"),
    ("core support range", lambda: jaxlmm.quasi_best_subset_core(DATA, 1.0, (0, 6)), "`support` must hold"),
    ("core k > p", lambda: jaxlmm.quasi_splicing_core(DATA, 1.0, 7), "`k` must be an integer in"),
    ("formula response NaN", lambda: jaxlmm.fit_lmm(_frame().assign(y=lambda f: f.y - 100),
                                                     formula="np.log(y) ~ x0 + (1 | g)"),
     r"\['np.log\(y\)'\] are missing or infinite"),
    ("formula all NA", lambda: jaxlmm.fit_lmm(_frame().assign(z=np.nan), formula="y ~ x0 + z + (1 | g)"),
     "every row has a missing value.*'z'"),
    ("predict text column", lambda: jaxlmm.fit_lmm(_frame(), formula="y ~ x0 + (1 | g)").predict(
        _frame().assign(x0="a")), "`data` column 'x0' must be numeric"),
    ("predict unseen level", lambda: jaxlmm.fit_lmm(_frame().assign(c=np.arange(N) % 2), formula="y ~ C(c) + (1 | g)")
     .predict(_frame().assign(c=2)), r"level\(s\) \['2'\] that the fit did not see"),
]


def _frame():
    return pd.DataFrame({"y": Y, "x0": X[:, 0], "x1": X[:, 1], "g": GROUPS})


def _in_float32(call):
    with jax.enable_x64(False):
        return call()

_FIT = {}


def _fit():
    if "fit" not in _FIT:
        _FIT["fit"] = jaxlmm.fit_quasi(DATA, a=1.0, lam=0.1)
    return _FIT["fit"]


@pytest.mark.parametrize("case,call,match", VALUE_ERRORS, ids=[c[0] for c in VALUE_ERRORS])
def test_value_error_names_the_argument(case, call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _library_programs() -> set[str]:
    """Names of jaxlmm's jitted programs (what a fit compiles; small eager ops do not count)."""
    root = Path(jaxlmm.__file__).parent
    return {name for path in root.rglob("*.py")
            for name in re.findall(r"@eqx\.filter_jit\s*\ndef (\w+)", path.read_text(encoding="utf-8"))}


def test_no_value_error_case_traces_anything():
    """The ValueErrors above come from validation, not from inside a traced program: none of
    the calls compiles one of the library's programs (JAX's compile log says which)."""
    programs = _library_programs()
    assert {"_solve_jit", "_fit_single", "_lasso_cv_at_a", "_learn"} <= programs
    _fit()  # compiled legitimately beforehand
    with compile_log() as compiled:
        for case, call, _ in VALUE_ERRORS:
            if case.startswith(("solve y0", "solve vector", "debias path")):
                continue  # eval_shape traces the loss (shapes only); a path fit is legitimate work
            with pytest.raises(ValueError):
                call()
    names = set(re.findall(r"Compiling jit\((\w+)\)", "\n".join(compiled)))
    assert not names & programs, names & programs


# -- accepted edge cases: legitimate inputs that used to fail -------------------------------------


def test_groups_as_a_column_vector_and_pandas_labels():
    reference = DATA.fingerprint()
    assert jaxlmm.LMMData.from_arrays(X, Y, GROUPS[:, None]).fingerprint() == reference
    assert jaxlmm.LMMData.from_arrays(X, Y, pd.Series(GROUPS).astype("category")).fingerprint() == reference
    strings = jaxlmm.LMMData.from_arrays(X, Y, pd.Series([f"g{g}" for g in GROUPS], dtype="string"))
    assert strings.fingerprint() == reference  # the fingerprint ignores labels and row order


def test_fingerprint_sees_any_change_and_ignores_row_order():
    perm = np.random.default_rng(5).permutation(N)
    assert jaxlmm.LMMData.from_arrays(X[perm], Y[perm], GROUPS[perm] + 100).fingerprint() == DATA.fingerprint()
    nudged = Y.copy()
    nudged[7] = np.nextafter(nudged[7], np.inf)
    assert jaxlmm.LMMData.from_arrays(X, nudged, GROUPS).fingerprint() != DATA.fingerprint()
    moved = GROUPS.copy()
    moved[0] = 1  # one row to another cluster
    assert jaxlmm.LMMData.from_arrays(X, Y, moved).fingerprint() != DATA.fingerprint()


# -- result codes: a number that cannot be trusted is flagged -------------------------------------


def test_debias_marks_a_near_collinear_column_invalid():
    """Column 6 equals column 2 up to 1e-9: β_2 and β_6 are not identifiable, so their rows are
    invalid (before: valid, se 0.066 and p = 6e-5 for a coefficient that is truly 0)."""
    twin = np.c_[X, X[:, 2] + 1e-9 * np.random.default_rng(1).normal(size=N)]
    data = jaxlmm.LMMData.from_arrays(twin, Y, GROUPS)
    fit = jaxlmm.fit_quasi(data, a=1.0, lam=0.05)
    with pytest.warns(RuntimeWarning, match="collinear"):
        table = jaxlmm.debias(fit, data, coords=[0, 2, 6])
    assert table.valid.tolist() == [True, False, False]
    assert table.to_pandas()["result"].tolist() == ["successful", "unidentifiable", "unidentifiable"]
    assert np.isnan(table.std_error[1:]).all() and np.isfinite(table.std_error[0])


def test_successful_result_says_so():
    sol = jaxlmm.solve(LeastSquares(), jaxlmm.L1(0.1), jaxlmm.CoordinateDescent(), jnp.zeros(6), _ls_args())
    assert sol.converged and "Successful" in repr(sol.result)


def test_float32_data_fit_in_float64():
    """float32 data (JAX's default dtype) are fitted in float64 (`in_float64`): the fit equals the
    float64 fit of the same (float32-rounded) numbers, with and without JAX's x64 flag, and is
    returned as float64 NumPy arrays that stay float64 in a float32 session."""
    rounded = [a.astype(np.float32) for a in (X, Y)]
    data = jaxlmm.LMMData.from_arrays(*rounded, GROUPS)
    reference = jaxlmm.fit_quasi(jaxlmm.LMMData.from_arrays(*(a.astype(np.float64) for a in rounded), GROUPS),
                                 a=1.0, n_lambda=30, progress=False)
    with jax.enable_x64(False):
        fit = jaxlmm.fit_quasi(data, a=1.0, n_lambda=30, progress=False)
    assert fit.converged and fit.coef.dtype == np.float64 and np.asarray(fit.path.coef).dtype == np.float64
    np.testing.assert_allclose(fit.coef, reference.coef, rtol=1e-12, atol=1e-14)
    assert fit.data_fingerprint == data.fingerprint()

@pytest.mark.parametrize("core,args", [
    (jaxlmm.quasi_lasso_core, (1.0, np.nan)), (jaxlmm.quasi_lasso_core, (1.0, -0.1)),
    (jaxlmm.quasi_lasso_core, (-1.0, 0.1)), (jaxlmm.shel_core, (-0.1,)), (jaxlmm.lmmlasso_core, (np.inf,)),
    (jaxlmm.eb_ridge_core, (1.0, 1.5, np.eye(1))), (jaxlmm.eb_ridge_core, (1.0, 0.5, -np.eye(1))),
], ids=["lam NaN", "lam < 0", "a < 0", "shel lam < 0", "lmmlasso lam inf", "eb b > 1", "eb A not PD"])
def test_invalid_traced_hyperparameters_give_a_code_and_nan(core, args):
    """A traced hyperparameter cannot raise: the core returns `invalid_argument`, every estimate
    NaN, and a NaN derivative (a solver at λ = NaN returns zeros, whose derivative read 0)."""
    fit = core(DATA, *args)
    assert fit.result == jaxlmm.RESULTS.invalid_argument and not bool(fit.converged)
    assert np.isnan(np.asarray(fit.coef)).all()
    if core is jaxlmm.quasi_lasso_core:
        gradient = jax.grad(lambda lam: jaxlmm.quasi_lasso_core(DATA, args[0], lam).coef[0])(args[1])
        assert np.isnan(gradient)


def test_sweep_reports_invalid_grid_values_per_fit():
    stacked = jaxlmm.LMMData.stack([DATA, OTHER])
    out = jaxlmm.sweep(jaxlmm.quasi_lasso_core, stacked, grid={"a": [1.0], "lam": [-1.0, 0.1]}, progress=False)
    assert out.result[:, 0].tolist() == ["invalid_argument"] * 2 and out.result[:, 1].tolist() == ["successful"] * 2


def test_cross_validation_records_each_grid_points_result():
    """The CV record carries a `RESULTS` code per grid point (the first fold that did not
    succeed there): all `successful` for a default solver; with a solver allowed 2 epochs the
    failures are recorded, and the fit is not `successful`."""
    from jaxlmm._solution import result_names

    fit = jaxlmm.fit_quasi(DATA, a=1.0, progress=False)
    assert set(result_names(fit.cv.result).ravel()) == {"successful"} and fit.result == "successful"
    starved = jaxlmm.CoordinateDescent(max_steps=2, rtol=1e-12)
    bad = jaxlmm.fit_quasi(DATA, a=1.0, solver=starved, progress=False)
    assert "max_steps_reached" in set(result_names(bad.cv.result).ravel()) and bad.result == "max_steps_reached"
    shel = jaxlmm.fit_shel(DATA, synthetic="dummies", solver=starved)
    assert "max_steps_reached" in set(result_names(shel.cv_result).ravel()) and shel.result == "max_steps_reached"
