"""The README's quick start (the quasi-likelihood and inference examples) runs as written in a fresh
interpreter with JAX's defaults — float32, `jax_enable_x64` never touched, as a new user has it —
and gives what the README says it gives."""

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


def test_quick_start_runs_as_written_with_jax_defaults():
    checks_after_quasi = textwrap.dedent("""
        import jax
        import numpy as np
        assert not jax.config.jax_enable_x64  # the user's setting, untouched
        assert fit.support.tolist() == [1, 5, 10] and fit.a >= 1.0, (fit.a, fit.support)
        np.testing.assert_allclose(fit.coef[fit.support], [0.942, 0.464, 0.312], atol=0.05)
        assert fit.coef.dtype == np.float64 and lasso.converged
    """)
    checks_after_inference = textwrap.dedent("""
        assert np.all(table.valid) and np.all(np.isfinite(table.std_error))
        assert 0.0 < comps.sigma2 < 10.0 and not jax.config.jax_enable_x64
        print("README OK")
    """)
    code = _snippet_code("quasi") + checks_after_quasi + _snippet_code("inference") + checks_after_inference
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_ENABLE_X64", "JAX_COMPILATION_CACHE_DIR")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0 and "README OK" in done.stdout, done.stderr[-3000:]
