"""Fits saved on 2026-12-08 in the jaxlmm-fit/2 format (`tests/data/fits/make_fits.py`) still
load, name no module path, and give what a fit of today gives: a saved file survives moving the
package's modules."""

import json
from pathlib import Path

import numpy as np
import pytest

import jaxlmm

FITS = Path(__file__).parent / "data" / "fits"
NAMES = ("lmm_sleepstudy", "quasi", "shel", "lmmlasso", "eb_ridge")


@pytest.fixture(scope="module")
def data():
    stored = np.load(FITS / "data.npz")
    return jaxlmm.LMMData.from_arrays(stored["X"], stored["y"], stored["groups"], stored["Z"])


@pytest.mark.parametrize("name", NAMES)
def test_a_stored_fit_loads_and_names_records_only(name):
    text = (FITS / f"{name}.json").read_text()
    assert "jaxlmm." not in text and "estimators" not in text  # record names, never module paths
    fit = jaxlmm.load_fit(FITS / f"{name}.json")
    assert isinstance(fit, jaxlmm.Fit) and fit.result == "successful"
    assert np.all(np.isfinite(fit.coef)) and np.isfinite(fit.intercept)
    assert fit.summary()  # the summary renders
    assert json.loads(text)["fit"]["record"] == type(fit).__name__


@pytest.mark.parametrize("name", NAMES[1:])
def test_a_stored_fit_predicts_as_today(name, data):
    """Its predictions are those of its own coefficients and BLUPs, and of a fit made today with
    the same arguments (to the solvers' tolerance)."""
    fit = jaxlmm.load_fit(FITS / f"{name}.json")
    stored = np.load(FITS / "data.npz")
    marginal = fit.predict(stored["X"])
    np.testing.assert_allclose(marginal, stored["X"] @ fit.coef + fit.intercept, rtol=1e-12, atol=1e-12)
    again = {
        "quasi": lambda: jaxlmm.fit_quasi(data, a=1.0, lam=0.1),
        "shel": lambda: jaxlmm.fit_shel(data, lam=0.05, K=2),
        "lmmlasso": lambda: jaxlmm.fit_lmmlasso(data, lam=5.0),
        "eb_ridge": lambda: jaxlmm.fit_eb_ridge(data, lam=2.0, b=0.3, A=np.eye(2)),
    }[name]()
    np.testing.assert_allclose(fit.coef, again.coef, atol=1e-5)
    np.testing.assert_allclose(marginal, again.predict(stored["X"]), atol=1e-5)
