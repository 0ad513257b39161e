"""The README's tour runs as written in a fresh interpreter with JAX's defaults — float32,
`jax_enable_x64` never touched, as a new user has it — and gives what the README says it gives."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def _snippet_code(name: str) -> str:
    """The Python code blocks between the README's `--8<-- [start:name]` and `[end:name]` markers."""
    text = README.read_text()
    section = text.split(f"--8<-- [start:{name}]")[1].split(f"--8<-- [end:{name}]")[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, flags=re.S))


def test_readme_is_a_front_door():
    assert len(README.read_text().splitlines()) <= 150


def test_tour_runs_as_written_with_jax_defaults():
    checks = textwrap.dedent("""
        import jax
        import numpy as np
        assert not jax.config.jax_enable_x64  # the user's setting, untouched
        assert subset.support.tolist() == [1, 5, 10] and subset.a >= 1.0, (subset.a, subset.support)
        np.testing.assert_allclose(subset.coef[subset.support], [0.942, 0.464, 0.312], atol=0.05)
        assert subset.coef.dtype == np.float64 and lasso.converged
        assert np.all(table.valid) and np.all(np.isfinite(table.std_error))
        assert 0.0 < comps.sigma2 < 10.0
        for fit in (penalised, shel, ridge, lmm):
            assert fit.result == "successful", (fit.method, fit.result)
        assert set(sweep.to_pandas()["result"]) == {"successful"} and len(sweep.to_pandas()) == 9
        print("README OK")
    """)
    # JAX's defaults (x64 off, nothing configured); only the run's compilation cache is shared, so
    # programs the other tests compiled are loaded (a cache changes compile time, not results).
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    env["JAX_COMPILATION_CACHE_DIR"] = os.environ["JAXLMM_TEST_JIT_CACHE"]
    done = subprocess.run([sys.executable, "-c", _snippet_code("tour") + checks], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0 and "README OK" in done.stdout, done.stderr[-3000:]
