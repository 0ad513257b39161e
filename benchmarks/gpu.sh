#!/usr/bin/env bash
# The GPU checks of issue 16 in one script, for a machine with an NVIDIA GPU and a CUDA build of
# jaxlib (`pip install -U "jax[cuda12]"` into .venv where PyPI is reachable; the device machines
# lent to this project reach nothing outside, so there it needs a .venv prepared with it).
# Budget: under eight minutes. Writes everything to ${OUT:-gpu-results}/.
#
#   bash benchmarks/gpu.sh
#
# Not yet run on a device: no GPU was lent to the sessions that wrote it (see README, Benchmarks).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
$PY -c "import jax; print(jax.devices())" | tee "$OUT/devices.txt"
# 1. The test suite on the GPU (float64, as in CI), 4 workers sharing the one device.
XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 300 $PY -m pytest -q -n 4 -p no:cacheprovider \
    --ignore=tests/test_notebooks.py --durations=15 > "$OUT/tests.txt" 2>&1
echo "tests: exit $?" | tee -a "$OUT/summary.txt"
cd benchmarks
# 2. Scaling with batch, N and p, and the bandwidth of the whitened Lasso step (N·p = 1e8), both dtypes.
for dtype in --float32 ""; do
    timeout 120 ../$PY bench_scaling.py $dtype --np 1e8 --batches 32,256,2048 > "../$OUT/scaling${dtype:-_float64}.txt" 2>&1
    echo "scaling $dtype: exit $?" | tee -a "../$OUT/summary.txt"
done
# 3. Benchmark (i): 1000 replicates × 10 a, vmapped on the device, against skscope's loop on 5 replicates.
timeout 120 ../$PY bench_replicates.py 1000 --loop 5 > "../$OUT/replicates.txt" 2>&1
echo "replicates: exit $?" | tee -a "../$OUT/summary.txt"
tail -n 5 ../"$OUT"/*.txt
