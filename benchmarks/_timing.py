"""Shared timing helper for the benchmark scripts."""

import time

import jax


def best_of(fn, repeats=3):
    """(best wall time over `repeats` calls, last result); JAX results are blocked on."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best, out


def first_call(fn):
    """Wall time of the first call (includes compilation) and its result."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, out
