"""A warning for the jaxlib releases whose CPU runtime can deadlock (see
benchmarks/jaxlib_lapack_deadlock.py): the requirements exclude them, but an environment can
still hold one (a forced install, conda)."""

from __future__ import annotations

import warnings
from importlib import metadata

# Batched LAPACK calls block a thread of the pool that runs their chunks (SVD from 0.9.1, every
# batched call from 0.10.0); chunking is off in open-source builds after 0.11.0.
DEADLOCKING = ("0.9.1", "0.9.2", "0.10.0", "0.10.1", "0.10.2", "0.11.0")


def warn_if_deadlocking() -> None:
    try:
        version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return
    if version in DEADLOCKING:
        warnings.warn(
            f"jaxlib {version} can deadlock on the CPU when two batched linear-algebra calls run at once "
            "(machines with few cores; a fit then never returns). Install jaxlib 0.9.0 or a release after "
            "0.11.0 (pip install 'jax==0.9.0' 'jaxlib==0.9.0').", RuntimeWarning, stacklevel=3)
