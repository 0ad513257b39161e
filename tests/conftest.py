import os
import shutil
import tempfile
import uuid
from pathlib import Path

# The suite compiles hundreds of programs and runs most of them once: LLVM's cheapest
# optimisation level cuts its compile time by about a fifth (test_eb_ridge + test_gradients:
# 400 → 315 CPU s). Results agree with the optimised build to the tests' tolerances. Set before
# JAX starts its backend; workers, subprocesses and notebook kernels inherit it.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

# Tests run in float64; the library itself never changes this flag.
jax.config.update("jax_enable_x64", True)

# One on-disk compilation cache per test run: the path is chosen by the first process to load
# this file (the xdist controller) and inherited by its workers through the environment, so a
# program compiled in one worker or module is loaded, not compiled again, in the others. It is
# deleted at the end of the run, so no run starts warm.
_CACHE = Path(os.environ.setdefault("JAXLMM_TEST_JIT_CACHE",
                                    str(Path(tempfile.gettempdir()) / f"jaxlmm-tests-{uuid.uuid4().hex}")))
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput"):  # the controller (or a run without xdist)
        shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's in-memory compiled programs after each test module: the modules share few
    programs, and without this one worker process accumulates several GB of them."""
    yield
    jax.clear_caches()


def pytest_collection_modifyitems(items):
    """The README tour first: the suite's longest test (a fresh process compiling every method),
    which stretches the run by its whole length when it is the last to start on a worker."""
    items.sort(key=lambda item: "test_readme.py::test_tour" not in item.nodeid)
