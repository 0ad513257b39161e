"""Execute notebooks in place (outputs saved): python notebooks/run.py notebooks/*.ipynb"""

import sys
import time

import nbclient
import nbformat

for path in sys.argv[1:]:
    start = time.perf_counter()
    notebook = nbformat.read(path, as_version=4)
    resources = {"metadata": {"path": "."}}
    client = nbclient.NotebookClient(notebook, timeout=3600, kernel_name="python3", resources=resources)
    client.execute()
    nbformat.write(notebook, path)
    print(f"{path}: executed in {time.perf_counter() - start:.0f} s")
