"""Notebooks that cannot rot: executed here, top to bottom, in their reduced-size mode
(JAXLMM_NOTEBOOK_SMALL=1), with the suite's compilation cache."""

import os
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).parents[1]
NOTEBOOKS = sorted(path.name for path in (ROOT / "notebooks").glob("*.ipynb"))


def test_every_notebook_is_executed():
    # One per seed document and one on real data; a new notebook is picked up by the glob.
    assert {"seed001_quasi_likelihood.ipynb", "lmmlasso_path.ipynb", "shel_target_shift.ipynb",
            "random_effects_vs_ridge.ipynb", "real_data_lme4.ipynb"} <= set(NOTEBOOKS)


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name, monkeypatch):
    monkeypatch.setenv("JAXLMM_NOTEBOOK_SMALL", "1")
    if "JAXLMM_TEST_JIT_CACHE" in os.environ:
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", os.environ["JAXLMM_TEST_JIT_CACHE"])
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in outputs)
