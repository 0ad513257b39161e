"""Issue 16, benchmark (v): how a sweep's time grows with the batch size, N and p, and how close
the whitened Lasso iteration comes to the memory-bandwidth bound, on whatever device JAX has
(this script is what `benchmarks/gpu.sh` runs on a GPU, in float32 and float64).

1. Batch: `sweep(quasi_lasso_core)` on the Li–Cai–Li design (N ≈ 320, p = 300), one (a, λ),
   B replicates; time per fit after compilation, compilation separately.
2. N and p: one quasi-Lasso fit (`quasi_lasso_core`, jitted) as the clusters (N) or the columns
   (p) grow; time per fit after compilation.
3. Bandwidth: one proximal-gradient (ISTA) step of the whitened Lasso reads X_a twice (X_a β and
   X_aᵀ r), 2·N·p·itemsize bytes; its achieved bandwidth is set against the device's measured
   copy bandwidth (a jitted y = 2x over an array of the same size: read + write) and, on the
   H100/H200, the vendor's peak. A step whose time is dominated by those reads is at the bound.

    python benchmarks/bench_scaling.py [--float32] [--np 1e7]     # N·p of the bandwidth check
"""

import argparse
import time

import jax
import jax.numpy as jnp
from _timing import best_of, first_call

PEAK_GBS = {"H100": 3350.0, "H200": 4800.0}  # vendor HBM peaks (SXM), GB/s


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--float32", action="store_true")
    parser.add_argument("--np", type=float, default=1e7, help="N·p of the bandwidth check (GPU: 1e8 or more)")
    parser.add_argument("--batches", default="8,32,128")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", not args.float32)
    import jaxlmm

    dtype = jnp.zeros(()).dtype
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({device.platform}), {len(jax.devices())} device(s), dtype {dtype}")

    print("\n1. batch size (li_cai_li, 40 clusters of 8, p = 300, one a and λ)")
    print(f"{'B':>6} {'compile s':>10} {'run s':>8} {'ms / fit':>9}")
    for B in (int(b) for b in args.batches.split(",")):
        batch = jaxlmm.simulate.draw("li_cai_li", jax.random.split(jax.random.key(0), B), 8)
        run = lambda: jaxlmm.sweep(jaxlmm.quasi_lasso_core, batch.data, {"a": [1.0], "lam": [0.1]},  # noqa: E731
                                   progress=False).fits.coef
        t_first, _ = first_call(run)
        t_again, _ = best_of(run, 2)
        print(f"{B:>6} {t_first - t_again:>10.2f} {t_again:>8.3f} {1e3 * t_again / B:>9.2f}")

    print("\n2. N and p (one jitted quasi-Lasso fit, a = 1, λ = 0.1)")
    print(f"{'clusters':>8} {'N':>7} {'p':>6} {'compile s':>10} {'run s':>8}")
    core = jax.jit(jaxlmm.quasi_lasso_core)
    for n_clusters, p in ((40, 300), (160, 300), (640, 300), (40, 1200), (40, 4800)):
        batch = jaxlmm.simulate.draw("li_cai_li", jax.random.split(jax.random.key(1), 1), 8, n_clusters=n_clusters, p=p)
        data = jax.tree.map(lambda v: v[0], batch.data)
        run = lambda: core(data, 1.0, 0.1).coef  # noqa: E731
        t_first, _ = first_call(run)
        t_again, _ = best_of(run, 3)
        print(f"{n_clusters:>8} {8 * n_clusters:>7} {p:>6} {t_first - t_again:>10.2f} {t_again:>8.4f}")

    print("\n3. bandwidth of the whitened Lasso iteration (ISTA step: X_a β, X_aᵀ r, soft threshold)")
    n_cols = 1000
    n_rows = int(args.np) // n_cols
    batch = jaxlmm.simulate.draw("li_cai_li", jax.random.split(jax.random.key(2), 1), 10, n_clusters=n_rows // 10,
                                 p=n_cols)
    data = jax.tree.map(lambda v: v[0], batch.data)
    white = jaxlmm.whiten(data, 1.0)
    Xa, ya = jax.block_until_ready((white.X, white.y))
    step = 1.0 / float(jnp.linalg.norm(Xa[:, :64], 2) ** 2 * (n_cols / 64))  # a safe-ish step; its value is not timed
    iterations = 50

    @jax.jit
    def ista(beta):
        def one(_, b):
            g = Xa.T @ (Xa @ b - ya)
            z = b - step * g
            return jnp.sign(z) * jnp.maximum(jnp.abs(z) - step * 0.1, 0.0)

        return jax.lax.fori_loop(0, iterations, one, beta)

    @jax.jit
    def copy(x):
        return 2.0 * x

    beta0 = jnp.zeros(n_cols, dtype)
    first_call(lambda: ista(beta0))
    t_ista, _ = best_of(lambda: ista(beta0), 3)
    first_call(lambda: copy(Xa))
    t_copy, _ = best_of(lambda: copy(Xa), 3)
    nbytes = Xa.size * Xa.dtype.itemsize
    achieved = 2 * nbytes * iterations / t_ista / 1e9
    copy_bw = 2 * nbytes / t_copy / 1e9
    peak = next((v for k, v in PEAK_GBS.items() if k in device.device_kind), None)
    print(f"N × p = {Xa.shape[0]} × {Xa.shape[1]} ({nbytes / 1e9:.2f} GB); {1e3 * t_ista / iterations:.2f} ms per "
          f"step = {achieved:.0f} GB/s; copy {copy_bw:.0f} GB/s; achieved / copy = {achieved / copy_bw:.2f}"
          + (f"; achieved / vendor peak {peak:.0f} GB/s = {achieved / peak:.2f}" if peak else ""))


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"total {time.time() - t0:.0f} s")
