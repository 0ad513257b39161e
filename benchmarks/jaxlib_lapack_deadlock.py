"""Minimal reproduction of the deadlock behind the hung test runs (upstream-ready: JAX alone).

jaxlib 0.10.0–0.11.0 split a batched LAPACK call (triangular solve, Cholesky, SVD, …; the SVD
alone from 0.9.1) into chunks, schedule the chunks on XLA's intra-op thread pool and block the
calling thread until they finish (`ParallelBatchMap` in jaxlib/cpu/lapack_kernels.cc:
`thread_pool.Schedule` then `BlockingCounter::Wait`). The calling thread is itself a thread of
that pool whenever XLA runs independent operations of one program concurrently. With as many
such batched calls running at once as the pool has threads (2 on a 2-core machine), every pool
thread waits for chunks that only a pool thread can run: a deadlock (futex waits at 0 % CPU).

Seen in the suite as a worker stuck in `BlockUntilReady` while both `tf_XLAEigen` threads sat
in `lapack_dtrsm_ffi → ParallelBatchMap → BlockingCounter::Wait` (gdb `thread apply all bt`).
Upstream turned the chunking off in open-source builds after 0.11.0 (jax-ml/jax commit 8599924,
"Don't try to parallelize LAPACK kernels in opensource builds"); jaxlmm's requirements exclude
the affected releases and the lock pins jaxlib 0.9.0.

Usage: python benchmarks/jaxlib_lapack_deadlock.py [calls]   (on a 2-core machine; exits 1 and
prints the stuck stack when a call has not returned after 20 s)
"""

from __future__ import annotations

import faulthandler
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def main(calls: int) -> None:
    batch, q, k = 4096, 4, 64  # enough work per call (≥ 2e5 flop) for jaxlib to split it
    rng = np.random.default_rng(0)
    L = jnp.asarray(np.tril(rng.standard_normal((batch, q, q))) + 4 * np.eye(q), jnp.float32)
    B = jnp.asarray(rng.standard_normal((batch, q, k)), jnp.float32)

    @jax.jit
    def independent_solves(L, B):
        solve = lambda L, B: jax.lax.linalg.triangular_solve(L, B, left_side=True, lower=True)  # noqa: E731
        return [solve(L * c, B + c) for c in range(1, 7)]  # six batched LAPACK calls XLA may run at once

    start = time.perf_counter()
    for _ in range(calls):
        faulthandler.dump_traceback_later(20, exit=True)  # one call takes milliseconds
        jax.block_until_ready(independent_solves(L, B))
        faulthandler.cancel_dump_traceback_later()
    print(f"no deadlock in {calls} calls ({time.perf_counter() - start:.1f} s): jax {jax.__version__}, "
          f"{os.cpu_count()} CPUs")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
