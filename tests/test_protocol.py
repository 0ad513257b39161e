"""The fit protocol: every estimator returns the same fields with the same types and meanings."""

import dataclasses
import functools

import numpy as np
import pandas as pd
import pytest

import jaxlmm

N_CLUSTERS, SIZE, P = 12, 8, 10
NAMES = tuple(f"gene_{k}" for k in range(P))


def _frame():
    rng = np.random.default_rng(5)
    groups = np.repeat([f"site{i:02d}" for i in range(N_CLUSTERS)], SIZE)
    X = rng.normal(size=(N_CLUSTERS * SIZE, P))
    b = np.repeat(rng.normal(size=N_CLUSTERS), SIZE)
    y = 2.0 * X[:, 0] - 1.5 * X[:, 3] + b + 0.5 * rng.normal(size=len(groups))
    order = rng.permutation(len(groups))
    frame = pd.DataFrame(X[order], columns=NAMES)
    frame["y"], frame["site"] = y[order], groups[order]
    return frame


FRAME = _frame()
FORMULA = "y ~ " + " + ".join(NAMES) + " + (1 | site)"
DATA = jaxlmm.LMMData.from_arrays(FRAME[list(NAMES)].to_numpy(), FRAME["y"].to_numpy(), FRAME["site"].to_numpy(),
                                  feature_names=NAMES)
FITTERS = {
    "quasi": lambda data, **kw: jaxlmm.fit_quasi(data, a=1.0, lam=0.05, progress=False, **kw),
    "lmmlasso": lambda data, **kw: jaxlmm.fit_lmmlasso(data, lam=10.0, **kw),
    "shel": lambda data, **kw: jaxlmm.fit_shel(data, K=2, lam=0.05, progress=False, **kw),
    "eb_ridge": lambda data, **kw: jaxlmm.fit_eb_ridge(data, lam=1.0, b=0.5, A=1.0, **kw),
    "lmm": lambda data, **kw: jaxlmm.fit_lmm(data, **kw),
}
RESULT_NAMES = set(jaxlmm.RESULTS._name_to_item)


@functools.cache
def fit_of(name):
    return FITTERS[name](DATA)


@pytest.fixture(scope="module", params=sorted(FITTERS))
def fitted(request):
    return request.param, fit_of(request.param)


def test_fields_and_types(fitted):
    name, fit = fitted
    assert isinstance(fit, jaxlmm.Fit)
    assert isinstance(fit.coef, np.ndarray) and fit.coef.shape == (P,)
    assert isinstance(fit.intercept, float)
    np.testing.assert_array_equal(fit.support, np.flatnonzero(fit.coef))
    assert fit.feature_names == NAMES and fit.groups == DATA.labels
    assert isinstance(fit.sigma2, float) and fit.sigma2 > 0
    assert isinstance(fit.ranef, np.ndarray) and fit.ranef.shape == (N_CLUSTERS, 1)
    if name == "shel":
        assert fit.psi is None  # SHEL does not model Ψ
    else:
        assert fit.psi.shape == (1, 1) and fit.psi[0, 0] >= 0
    assert fit.result in RESULT_NAMES and fit.result == "successful" and fit.converged is True
    assert isinstance(fit.n_iter, int) and fit.n_iter >= 0
    assert (fit.n_obs, fit.n_clusters) == (DATA.n_obs, DATA.n_clusters)
    assert fit.data_fingerprint == DATA.fingerprint()
    assert isinstance(fit.hyperparameters, dict) and ("lam" in fit.hyperparameters or name == "lmm")
    assert isinstance(fit.criteria, dict) and isinstance(fit.method, str)
    assert fit.tuning is None  # every hyperparameter was given
    # The strong columns are found by every method.
    assert {0, 3} <= set(fit.support.tolist())


def test_predict_against_dense_formula(fitted):
    _, fit = fitted
    rng = np.random.default_rng(1)
    X_new = rng.normal(size=(6, P))
    groups = ["site03", "site03", "new", "site11", "other", "site00"]
    expected = X_new @ fit.coef + fit.intercept
    np.testing.assert_allclose(fit.predict(X_new), expected, rtol=1e-12)
    index = {g: i for i, g in enumerate(fit.groups)}
    conditional = expected + np.array([fit.ranef[index[g], 0] if g in index else 0.0 for g in groups])
    np.testing.assert_allclose(fit.predict(X_new, groups=groups), conditional, rtol=1e-12)
    # New clusters get β alone.
    assert fit.predict(X_new, groups=groups)[2] == pytest.approx(expected[2])
    with pytest.raises(ValueError, match="`X` must be N × p"):
        fit.predict(X_new[:, :3])
    with pytest.raises(ValueError, match="`Z` must be N × q"):
        fit.predict(X_new, groups=groups, Z=np.ones((6, 2)))
    with pytest.raises(ValueError, match="`groups` has 2 labels"):
        fit.predict(X_new, groups=groups[:2])


def test_summary_and_table(fitted):
    _, fit = fitted
    text = fit.summary()
    assert fit.method in text and f"clusters: {N_CLUSTERS}" in text
    for k in fit.support:
        assert NAMES[k] in text
    unselected = [NAMES[k] for k in range(P) if k not in set(fit.support.tolist())]
    assert all(f"\n{name} " not in text for name in unselected)
    frame = fit.to_pandas()
    assert list(frame.index) == ["intercept", *NAMES]
    np.testing.assert_allclose(frame["coef"].to_numpy(), np.concatenate([[fit.intercept], fit.coef]))


@pytest.mark.parametrize("name", sorted(FITTERS))
def test_formula_fit_equals_array_fit(name):
    """A DataFrame and a formula give the array fit (the same numbers, the same compiled program),
    with the formula's names, and `predict` on a DataFrame builds X, Z and the groups itself."""
    fit = FITTERS[name](FRAME, formula=FORMULA)
    reference = fit_of(name)
    np.testing.assert_allclose(fit.coef, reference.coef, rtol=1e-12, atol=1e-14)
    assert fit.intercept == pytest.approx(reference.intercept, rel=1e-12)
    assert fit.sigma2 == pytest.approx(reference.sigma2, rel=1e-12)
    assert fit.feature_names == NAMES and fit.groups == reference.groups and fit.design.formula == FORMULA
    assert fit.data_fingerprint == DATA.fingerprint()
    new = FRAME.iloc[:10].copy()
    new.loc[new.index[:3], "site"] = "unseen"
    X_new = new[list(NAMES)].to_numpy()
    np.testing.assert_allclose(fit.predict(new), reference.predict(X_new, groups=new["site"].to_numpy()),
                               rtol=1e-12)
    np.testing.assert_allclose(fit.predict(new)[:3], X_new[:3] @ fit.coef + fit.intercept, rtol=1e-12)
    assert FORMULA in fit.summary()


@pytest.mark.parametrize("name", sorted(FITTERS))
def test_save_load_round_trip(name, tmp_path):
    """A saved fit loads back with every field equal (arrays bit for bit) and predicts the same,
    on arrays and, for a formula fit, on a DataFrame."""
    fit = FITTERS[name](FRAME, formula=FORMULA) if name in ("lmm", "quasi") else fit_of(name)
    path = fit.save(tmp_path / f"{name}.json")
    loaded = jaxlmm.load_fit(path)
    assert type(loaded) is type(fit)
    for field in dataclasses.fields(fit):
        if field.name == "design":
            continue
        a, b = getattr(fit, field.name), getattr(loaded, field.name)
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
        elif dataclasses.is_dataclass(a):
            assert type(a) is type(b)
        else:
            assert a == b, field.name
    X_new = FRAME[list(NAMES)].to_numpy()[:7]
    groups = FRAME["site"].to_numpy()[:7]
    np.testing.assert_array_equal(loaded.predict(X_new, groups=groups), fit.predict(X_new, groups=groups))
    assert loaded.summary() == fit.summary()
    if fit.design is not None:
        np.testing.assert_array_equal(loaded.predict(FRAME.iloc[:7]), fit.predict(FRAME.iloc[:7]))
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a jaxlmm fit file"):
        jaxlmm.load_fit(tmp_path / "other.json")


BAD_INPUTS = [
    ("data is not LMMData", lambda f: f(np.zeros((4, 2))), "`data`"),
    ("negative lam", lambda f: f(DATA, lam=-1.0), "`lam`"),
    ("NaN lam", lambda f: f(DATA, lam=float("nan")), "`lam`"),
    ("lam is text", lambda f: f(DATA, lam="large"), "`lam`"),
    ("throw is text", lambda f: f(DATA, throw="yes"), "`throw`"),
]
BAD_CALLS = {
    "quasi": lambda data, lam=0.05, **kw: jaxlmm.fit_quasi(data, a=1.0, lam=lam, progress=False, **kw),
    "lmmlasso": lambda data, lam=10.0, **kw: jaxlmm.fit_lmmlasso(data, lam=lam, **kw),
    "shel": lambda data, lam=0.05, **kw: jaxlmm.fit_shel(data, K=2, lam=lam, progress=False, **kw),
    "eb_ridge": lambda data, lam=1.0, **kw: jaxlmm.fit_eb_ridge(data, lam=lam, b=0.5, A=1.0, **kw),
}


@pytest.mark.parametrize("method", sorted(BAD_CALLS))
@pytest.mark.parametrize("case,call,match", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_same_bad_inputs_same_errors(method, case, call, match):
    with pytest.raises(ValueError, match=match):
        call(BAD_CALLS[method])


STARVED = {  # a step budget no fit can meet
    "quasi": dict(solver=jaxlmm.CoordinateDescent(max_steps=1)),
    "lmmlasso": dict(solver=jaxlmm.MixedModelCGD(max_steps=1)),
    "shel": dict(solver=jaxlmm.CoordinateDescent(max_steps=1)),
}


@pytest.mark.parametrize("method", sorted(STARVED))
def test_throw_raises_the_result_message_and_false_returns_the_code(method):
    quiet = BAD_CALLS[method](DATA, **STARVED[method])
    assert quiet.result == "max_steps_reached" and quiet.converged is False
    with pytest.raises(RuntimeError, match="did not succeed \\(max_steps_reached\\).*max_steps"):
        BAD_CALLS[method](DATA, throw=True, **STARVED[method])


def test_throw_returns_a_successful_fit():
    assert BAD_CALLS["eb_ridge"](DATA, throw=True).converged


def test_post_fit_functions_accept_likelihood_fits():
    lmm = fit_of("lmmlasso")
    a = float(lmm.psi[0, 0] / lmm.sigma2)
    with pytest.warns(RuntimeWarning, match="not a scaled-Lasso fit"):
        table = jaxlmm.debias(lmm, DATA, coords=[0, 3], initial="fit")
    assert np.all(table.valid) and np.all(np.abs(table.estimate - [2.0, -1.5]) < 0.3)
    # The same as debiasing a quasi fit with that a and the same β̂ (a = tr Ψ̂ / (q σ̂²)).
    quasi = jaxlmm.fit_quasi(DATA, a=a, lam=0.05, progress=False)
    same = dataclasses.replace(quasi, coef=lmm.coef, intercept=lmm.intercept)
    with pytest.warns(RuntimeWarning, match="not a scaled-Lasso fit"):
        again = jaxlmm.debias(same, DATA, coords=[0, 3], initial="fit")
    np.testing.assert_allclose(again.estimate, table.estimate, rtol=1e-10)
    vc = jaxlmm.variance_components(fit_of("eb_ridge"), DATA)
    assert vc.sigma2 > 0
    with pytest.raises(ValueError, match="SHEL fit"):
        jaxlmm.debias(fit_of("shel"), DATA)
