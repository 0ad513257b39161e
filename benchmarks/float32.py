"""float32 against float64: every method of `first_call.py` in a fresh process with JAX's default
float32 (x64 off, as a new user runs it) and with x64 on, on identical data. Prints the first
call (tracing + compilation + run, no persistent cache), a repeated call, the status the fit
reports and the largest coefficient difference between the two precisions.

Usage: python benchmarks/float32.py [case ...]   (default: every case)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from first_call import CASES

CHILD = """
import json, time, warnings
import numpy as np
import jax
import jaxlmm
warnings.simplefilter("ignore")  # float64 → float32 truncation notices when x64 is off
{setup}
start = time.perf_counter()
result = jax.block_until_ready({call})
first = time.perf_counter() - start
start = time.perf_counter()
result = jax.block_until_ready({call})
repeated = time.perf_counter() - start
status = getattr(result, "converged", getattr(result, "valid", None))
status = bool(np.all(status)) if status is not None else None
coef = np.asarray(getattr(result, "coef", getattr(result, "estimate", [])), float).ravel().tolist()
print("RESULT " + json.dumps(dict(first=first, repeated=repeated, converged=status, coef=coef)))
"""


def run(setup: str, call: str, x64: bool) -> dict:
    env = dict(os.environ, JAX_ENABLE_X64="1" if x64 else "0")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    proc = subprocess.run([sys.executable, "-c", CHILD.format(setup=setup, call=call)], env=env,
                          capture_output=True, text=True, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"case failed:\n{call}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(names):
    print(f"{'method':40} {'f32 first':>9} {'f64 first':>9} {'f32 rep':>8} {'f64 rep':>8} "
          f"{'f32 ok':>6} {'f64 ok':>6} {'max|Δβ|':>8}")
    for name in names:
        setup, call = CASES[name]
        f32, f64 = (run(textwrap.dedent(setup), call, x64) for x64 in (False, True))
        diff = max((abs(a - b) for a, b in zip(f32["coef"], f64["coef"])), default=0.0)
        print(f"{name:40} {f32['first']:9.2f} {f64['first']:9.2f} {f32['repeated']:8.3f} {f64['repeated']:8.3f} "
              f"{str(f32['converged']):>6} {str(f64['converged']):>6} {diff:8.2g}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or list(CASES))
