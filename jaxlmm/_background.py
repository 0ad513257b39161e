"""Compile a jitted program on a worker thread while the caller does other work.

XLA compiles outside Python's global interpreter lock, so a host-level fit that needs two
programs — a start and the fit that uses it — can compile the second while the first compiles
and runs (on two cores a first `fit_lmmlasso` waited for both one after the other).
"""

from __future__ import annotations

import threading

import jax


class CompileAhead:
    """`CompileAhead(jitted, *example_args)` lowers and compiles `jitted` (an `equinox.filter_jit`
    function) for the shapes, dtypes and static arguments of `example_args` on a worker thread;
    calling the object with arguments of those shapes runs that executable. If compiling failed
    (or the arguments' shapes differ) the call falls back to `jitted` itself, which reports any
    error as it would have. The worker runs in the caller's 64-bit mode (a thread-local setting).
    """

    def __init__(self, jitted, *example_args):
        self._jitted = jitted
        self._compiled = None
        x64 = bool(jax.config.jax_enable_x64)
        self._thread = threading.Thread(target=self._compile, args=(x64, example_args), daemon=True)
        self._thread.start()

    def _compile(self, x64, example_args):
        try:
            with jax.enable_x64(x64):
                self._compiled = self._jitted.lower(*example_args).compile()
        except Exception:  # the foreground call reports it with its own traceback
            self._compiled = None

    def __call__(self, *args):
        self._thread.join()
        if self._compiled is not None:
            try:
                return self._compiled(*args)
            except (TypeError, ValueError):  # arguments that do not match the compiled signature
                pass
        return self._jitted(*args)
