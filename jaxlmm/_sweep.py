"""Sweeps: one compiled program for a method's pure core over a batch of data sets (replicates)
or of responses on one design, times a grid of hyperparameters; chunked for memory, sharded
over the local devices, failures reported per fit."""

from __future__ import annotations

import dataclasses
import inspect
import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._data import LMMData
from ._solution import RESULTS, result_names


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What `sweep` returns, on the host.

    - `fits`: the core's result pytree (a `CoreFit` for the built-in cores) with two leading
      axes, batch (replicate or response) × grid point: `fits.coef` is B × G × p.
    - `grid`: {name: the G values of that hyperparameter}, one entry per grid point (the
      Cartesian product of the values given, in C order).
    - `result`: B × G names of the `RESULTS` codes ("successful", "nonfinite", …).
    - `summary`: {"nnz", and with `truth`: "tp", "fp", "fn", "l2_error"}: B × G arrays computed
      on the device, next to the fits.
    """

    fits: object
    grid: dict
    result: np.ndarray
    summary: dict

    @property
    def converged(self) -> np.ndarray:
        """B × G booleans: the fit met its tolerance."""
        return self.result == "successful"

    def to_pandas(self):
        """One row per (batch index, grid point): `batch`, `grid_point`, the hyperparameters,
        `result`, and the summary columns."""
        import pandas as pd

        n_batch, n_grid = self.result.shape
        columns = {"batch": np.repeat(np.arange(n_batch), n_grid), "grid_point": np.tile(np.arange(n_grid), n_batch)}
        columns.update({name: np.tile(values, n_batch) for name, values in self.grid.items()})
        columns["result"] = self.result.ravel()
        for name in _SUMMARY_ORDER:
            if name in self.summary:
                columns[name] = np.asarray(self.summary[name]).ravel()
        return pd.DataFrame(columns)


_SUMMARY_ORDER = ("nnz", "tp", "fp", "fn", "l2_error")


def _grid_points(grid: dict | None, last: str | None = None) -> dict:
    """The Cartesian product of the grid's values in C order (the `last` name's axis moved to
    the end, so it varies fastest), one array per name."""
    if grid is None:
        return {}
    if not isinstance(grid, dict) or not all(isinstance(name, str) for name in grid):
        raise ValueError("`grid` must be a dict {hyperparameter name: values}.")
    values = {}
    for name, value in grid.items():
        array = np.atleast_1d(np.asarray(value))
        if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"`grid[{name!r}]` must be a non-empty 1-D array of numbers.")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"`grid[{name!r}]` must be finite.")
        values[name] = array
    if last in values:
        values[last] = values.pop(last)
    points = list(itertools.product(*values.values()))
    return {name: np.array([point[k] for point in points]) for k, name in enumerate(values)}


def _summaries(coef, truth):
    support = coef != 0
    out = {"nnz": jnp.sum(support, axis=-1)}
    if truth is not None:
        signal = (truth != 0)[..., None, :]  # broadcast over the grid axis
        out["tp"] = jnp.sum(support & signal, axis=-1)
        out["fp"] = jnp.sum(support & ~signal, axis=-1)
        out["fn"] = jnp.sum(~support & signal, axis=-1)
        out["l2_error"] = jnp.linalg.norm(coef - truth[..., None, :], axis=-1)
    return out


@eqx.filter_jit
def _run_chunk(core, options, data, responses, truth, grid, per_batch, sequential, path_length):
    # vmap runs the fits side by side: right on an accelerator, but a batched solver loop keeps
    # iterating until its slowest lane is done, at every level of nested loops, which on a CPU
    # costs more than it saves. `sequential` runs them one after another (lax.map) inside the
    # same program instead.
    over = (lambda f, xs: lax.map(f, xs)) if sequential else (lambda f, xs: jax.vmap(f)(xs))

    def at_grid(d, extra):
        if not path_length:
            return over(lambda point: core(d, **point, **extra, **options), grid)
        # Warm-started paths: the grid is (other points) × (path), the path axis last; each fit
        # starts from the previous fit of its path (a failed one hands on the start it got).
        rows = jax.tree.map(lambda a: a.reshape(-1, path_length), grid)

        def along(row):
            first = core(d, **jax.tree.map(lambda a: a[0], row), **extra, **options)
            if path_length == 1:
                return jax.tree.map(lambda a: a[None], first)
            kept = {k: v for k, v in extra.items() if k != "start"}

            def step(previous, point):
                fit = core(d, **point, **kept, start=previous, **options)
                ok = (fit.result == RESULTS.successful) & jnp.all(jnp.isfinite(fit.coef))
                return jax.tree.map(lambda new, old: jnp.where(ok, new, old), fit, previous), fit

            _, rest = lax.scan(step, first, jax.tree.map(lambda a: a[1:], row))
            return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)

        fits = over(along, rows)
        return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), fits)

    if responses is None:  # replicates: every array of `data` has the batch axis
        fits = over(lambda db: at_grid(*db), (data, per_batch))
    else:  # one design: only y is batched, so whatever does not depend on y is loop-invariant
        fits = over(lambda yb: at_grid(eqx.tree_at(lambda d: d.y, data, yb[0]), yb[1]), (responses, per_batch))
    return fits, _summaries(fits.coef, truth)


def sweep(core, data: LMMData, grid: dict | None = None, *, responses=None, truth=None, warm_start: str | None = None,
          per_batch: dict | None = None, batch_size: int | None = None, devices=None, vectorize: str = "auto",
          progress: bool = True, **options) -> SweepResult:
    """Fit a pure core (`quasi_lasso_core`, `quasi_splicing_core`, `shel_core`, `lmmlasso_core`,
    `eb_ridge_core`, `lmm_core`, or your own `core(data, **hyperparameters, **options) -> CoreFit`)
    over a batch × a grid, in one compiled program:

        fits[b, g] = core(data_b, **grid_g, **options)

    with data_b the b-th replicate of a stacked `LMMData` (`LMMData.stack`), or, when
    `responses` is given, `data` with its y replaced by the b-th response (many responses on
    one design: X, Z and every per-cluster factorisation that does not depend on y are
    loop-invariant: computed once under vmap, hoisted out of the loop by XLA under lax.map).

    The batch runs in chunks of `batch_size` (one compiled program for all chunks; the last
    is padded), with a tqdm bar over the chunks. Each chunk is sharded along the batch axis over
    `devices` (default: every device of `jax.devices()`, so a multi-host run under
    `jax.distributed` uses all hosts). Nothing raises inside: a fit that fails (NaN data, no
    convergence) gets its own result code, and the others are computed as if it were absent.

    **Arguments:**

    - `core`: the pure function; `data`: a stacked `LMMData` (leading batch axis), or one
      `LMMData` with `responses`.
    - `grid`: {name: values} of the core's hyperparameters (keyword arguments); every
      combination is fitted (the Cartesian product). None: one grid point with no arguments.
    - `responses`: B × N responses in the caller's row order (the order given to
      `LMMData.from_arrays`).
    - `truth`: the true β (p,) or one per batch element (B × p): adds TP/FP/FN and the ℓ2 error
      per fit to `summary`, computed on the device.
    - `warm_start`: the name of one grid hyperparameter (usually "lam") to walk as a path: its
      values are fitted in the order given (give λ decreasing), each fit started from the
      previous one (`start=` the previous `CoreFit`; the cores with a `start` argument:
      `quasi_lasso_core`, `shel_core`, `lmmlasso_core`). Its axis becomes the last of the grid
      product. A failed fit passes on the start it was given. Same optimum, fewer iterations;
      for a nonconvex core (lmmLasso) the path can reach a different local minimum than a cold
      start, as in `fit_lmmlasso`'s warm path.
    - `per_batch`: {name: array with a leading batch axis}: keyword arguments of the core that
      differ per batch element (say `start`, B × (p + 1), a Lasso start per replicate for
      `lmmlasso_core`); with `warm_start`, `start` is the start of each path's first fit.
    - `batch_size`: fits of the batch axis per chunk (default: all at once); rounded up to a
      multiple of the number of devices.
    - `vectorize`: "vmap" (the fits of a chunk side by side), "map" (one after another inside
      the compiled program, `lax.map`) or "auto": "map" on one CPU device, where a vmapped
      solver loop runs every lane until the slowest is done (`benchmarks/bench_sweep.py`
      measures both against a loop of single jitted fits),
      "vmap" on accelerators and over several devices.
    - `options`: further keyword arguments of the core, the same for every fit (`solver=`,
      `structure=`, …).

    Returns a `SweepResult` (`fits` with leading batch × grid axes, `grid`, `result`,
    `summary`, `to_pandas()`).
    """
    if not callable(core):
        raise ValueError("`core` must be a function core(data, **hyperparameters) returning a CoreFit.")
    if not isinstance(data, LMMData):
        raise ValueError("`data` must be an LMMData (stacked with LMMData.stack, or one design with `responses`).")
    points, path_length = _grid_points(grid, last=warm_start), 0
    if warm_start is not None:
        if warm_start not in points:
            raise ValueError(f"`warm_start` must name a hyperparameter of `grid`; got {warm_start!r}.")
        try:
            takes_start = "start" in inspect.signature(core).parameters
        except (TypeError, ValueError):
            takes_start = True
        if not takes_start:
            raise ValueError(f"`warm_start` needs a core with a `start` argument; {getattr(core, '__name__', core)!r} "
                             "has none.")
        path_length = len(np.atleast_1d(grid[warm_start]))
    if responses is None:
        if data.y.ndim != 2:
            raise ValueError("`data` must be stacked (LMMData.stack) with a leading batch axis, or `responses` given.")
        n_batch, n_obs, p = data.y.shape[0], data.y.shape[1], data.X.shape[-1]
    else:
        if data.y.ndim != 1:
            raise ValueError("With `responses`, `data` must be one data set (not stacked).")
        n_obs, p = data.n_obs, data.n_features
        responses = np.asarray(responses, dtype=np.asarray(data.y).dtype)
        if responses.ndim != 2 or responses.shape[1] != n_obs or responses.shape[0] == 0:
            raise ValueError(f"`responses` must be B × N with N = {n_obs} (one response per row).")
        n_batch = responses.shape[0]
        responses = responses[:, np.asarray(data.order)]  # the rows as the data lays them out
    if truth is not None:
        truth = np.asarray(truth, dtype=np.asarray(data.X).dtype)
        if truth.shape not in ((p,), (n_batch, p)):
            raise ValueError(f"`truth` must have shape ({p},) or ({n_batch}, {p}).")
        truth = np.broadcast_to(truth, (n_batch, p))
    per_batch = dict(per_batch or {})
    for name, value in per_batch.items():
        value = np.asarray(value)
        if value.ndim == 0 or value.shape[0] != n_batch:
            raise ValueError(f"`per_batch[{name!r}]` must have a leading batch axis of length {n_batch}.")
        per_batch[name] = value
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("`devices` must name at least one device.")
    if vectorize not in ("auto", "vmap", "map"):
        raise ValueError(f"`vectorize` must be 'auto', 'vmap' or 'map'; got {vectorize!r}.")
    sequential = vectorize == "map" or (vectorize == "auto" and len(devices) == 1 and devices[0].platform == "cpu")
    size = n_batch if batch_size is None else int(batch_size)
    if size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; got {batch_size!r}.")
    size = -(-min(size, n_batch) // len(devices)) * len(devices)
    mesh = Mesh(np.array(devices), ("batch",))
    batched = NamedSharding(mesh, PartitionSpec("batch"))
    replicated = NamedSharding(mesh, PartitionSpec())
    grid_host = {name: values.astype(np.asarray(data.X).dtype) for name, values in points.items()} or {"_": np.zeros(1)}
    grid_arrays = jax.tree.map(lambda a: _place(a, replicated), grid_host)
    core_fn = core if points else _IgnoreGrid(core)

    def chunk_of(host, start):
        index = np.minimum(np.arange(start, start + size), n_batch - 1)  # pad with the last element
        return _place(host[index], batched)

    host_data = jax.tree.map(np.asarray, data)
    shared = None if responses is None else jax.tree.map(lambda a: _place(a, replicated), host_data)
    starts = range(0, n_batch, size)
    if progress and len(starts) > 1:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="sweep", unit="chunk")
    fits_parts, summary_parts = [], []
    for start in starts:
        if responses is None:
            chunk_data, chunk_y = jax.tree.map(lambda a: chunk_of(a, start), host_data), None
        else:
            chunk_data, chunk_y = shared, chunk_of(responses, start)
        chunk_truth = None if truth is None else chunk_of(truth, start)
        chunk_extra = {name: chunk_of(value, start) for name, value in per_batch.items()}
        fits, summary = _run_chunk(core_fn, options, chunk_data, chunk_y, chunk_truth, grid_arrays, chunk_extra,
                                   sequential, path_length)
        keep = min(size, n_batch - start)
        fits_parts.append(jax.tree.map(lambda a: _gather(a)[:keep], fits))
        summary_parts.append({k: _gather(v)[:keep] for k, v in summary.items()})
    fits = jax.tree.map(lambda *parts: np.concatenate(parts), *fits_parts)
    summary = {k: np.concatenate([part[k] for part in summary_parts]) for k in summary_parts[0]}
    result = result_names(fits.result)
    return SweepResult(fits, points, result, summary)


class _IgnoreGrid(eqx.Module):
    """A core called without hyperparameters: the one dummy grid point is dropped."""

    core: object = eqx.field(static=True)

    def __call__(self, data, _, **options):
        return self.core(data, **options)


def _place(host: np.ndarray, sharding) -> jax.Array:
    """A host array as a global array with this sharding (every process passes the same host
    array; each one fills only the shards of its own devices)."""
    host = np.asarray(host)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _gather(array) -> np.ndarray:
    """The whole array on this host (from every process under jax.distributed)."""
    if getattr(array, "is_fully_addressable", True):
        return np.asarray(array)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))
