"""Fits saved in every format this version reads (`tests/data/fits/format<N>`, written by
`tests/data/fits/make_fits.py`: jaxlmm-fit/2 and /3 on 2026-12-08) still load, name no module
path, and give what a fit of today gives: a saved file survives moving the package's modules and
a change of format (format 2 carried `converged`, `message` and per-row `valid` flags, format 3
result codes only)."""

import json
from pathlib import Path

import numpy as np
import pytest

import jaxlmm

FITS = Path(__file__).parent / "data" / "fits"
NAMES = ("lmm_sleepstudy", "quasi", "shel", "lmmlasso", "eb_ridge")
FORMATS = ("format2", "format3")


@pytest.fixture(scope="module")
def data():
    stored = np.load(FITS / "data.npz")
    return jaxlmm.LMMData.from_arrays(stored["X"], stored["y"], stored["groups"], stored["Z"])


@pytest.mark.parametrize("folder", FORMATS)
@pytest.mark.parametrize("name", NAMES)
def test_a_stored_fit_loads_and_names_records_only(name, folder):
    text = (FITS / folder / f"{name}.json").read_text()
    assert json.loads(text)["format"] == "jaxlmm-fit/" + folder.removeprefix("format")
    assert "jaxlmm." not in text and "estimators" not in text  # record names, never module paths
    fit = jaxlmm.load_fit(FITS / folder / f"{name}.json")
    assert isinstance(fit, jaxlmm.Fit) and fit.result == "successful"
    assert np.all(np.isfinite(fit.coef)) and np.isfinite(fit.intercept)
    assert fit.summary()  # the summary renders
    assert json.loads(text)["fit"]["record"] == type(fit).__name__


@pytest.mark.parametrize("name", NAMES)
def test_a_migrated_fit_equals_the_same_fit_saved_today(name):
    """A format-2 file, migrated on load, equals the format-3 file of the same fit field by field
    (`converged` and `valid` are now read from the result codes)."""
    old, new = (jaxlmm.load_fit(FITS / folder / f"{name}.json") for folder in FORMATS)
    assert type(old) is type(new) and old.result == new.result and old.converged is new.converged is True
    np.testing.assert_allclose(old.coef, new.coef, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(old.intercept, new.intercept, rtol=1e-9, atol=1e-12)
    if new.ranef is not None:
        np.testing.assert_allclose(old.ranef, new.ranef, rtol=1e-7, atol=1e-10)
    if new.inference is not None:
        np.testing.assert_array_equal(old.inference.valid, new.inference.valid)
        assert list(old.inference.to_pandas()["result"]) == list(new.inference.to_pandas()["result"])


@pytest.mark.parametrize("name", NAMES[1:])
def test_a_stored_fit_predicts_as_today(name, data):
    """In every format, its predictions are those of its own coefficients and BLUPs, and of a fit
    made today with the same arguments (to the solvers' tolerance)."""
    stored = np.load(FITS / "data.npz")
    again = {
        "quasi": lambda: jaxlmm.fit_quasi(data, a=1.0, lam=0.1),
        "shel": lambda: jaxlmm.fit_shel(data, lam=0.05, K=2),
        "lmmlasso": lambda: jaxlmm.fit_lmmlasso(data, lam=5.0),
        "eb_ridge": lambda: jaxlmm.fit_eb_ridge(data, lam=2.0, b=0.3, A=np.eye(2)),
    }[name]()
    for folder in FORMATS:
        fit = jaxlmm.load_fit(FITS / folder / f"{name}.json")
        marginal = fit.predict(stored["X"])
        np.testing.assert_allclose(marginal, stored["X"] @ fit.coef + fit.intercept, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(fit.coef, again.coef, atol=1e-5)
        np.testing.assert_allclose(marginal, again.predict(stored["X"]), atol=1e-5)
