"""Notebooks that cannot rot: executed here, top to bottom, in their reduced-size mode
(JAXLMM_NOTEBOOK_SMALL=1), with the suite's compilation cache."""

import os
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).parents[1]
# The seed notebooks (lmmlasso_path, random_effects_vs_ridge, shel_target_shift) run at
# simulation scale with `make notebooks`; they have no reduced-size mode yet.
EXECUTED_IN_THE_SUITE = ["real_data_lme4.ipynb"]


@pytest.mark.parametrize("name", EXECUTED_IN_THE_SUITE)
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
