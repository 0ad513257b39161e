"""The `jaxlmm` command: sets the environment, then runs `jaxlmm.cli.main`.

It lives outside the `jaxlmm` package because importing the package imports JAX, and JAX reads
JAX_COMPILATION_CACHE_DIR once, at import. Setting the variable here, first, switches on JAX's
persistent compilation cache for the command line through the environment (a second run loads
its compiled programs instead of compiling them again); the library itself never changes JAX's
configuration. Scripts get the same by exporting the variable.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/jaxlmm/jax (~/.cache/jaxlmm/jax)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jaxlmm" / "jax"


def configure_environment(environ=os.environ) -> None:
    """JAX_COMPILATION_CACHE_DIR defaults to `default_cache_dir()`; a value already set wins."""
    environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(default_cache_dir()))


def main(argv=None) -> None:
    configure_environment()
    from jaxlmm.cli import main as run

    run(argv)


if __name__ == "__main__":
    main()
