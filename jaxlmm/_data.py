"""Grouped data for linear mixed models, validated once and laid out for jit/vmap."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Hashable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array


def _float_dtype(*arrays: np.ndarray) -> np.dtype:
    dtype = np.result_type(*arrays)
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def _array(name: str, value) -> np.ndarray:
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as error:  # ragged nested lists
        raise ValueError(f"`{name}` must be a rectangular array of numbers: {str(error).split('.')[0]}.") from None


def _stored_dtype(dtype: np.dtype, arrays: dict) -> np.dtype:
    """The dtype JAX will store `dtype` data in: float32 unless 64-bit types are enabled. A
    `ValueError` names the array whose values float32 cannot hold (beyond ±3.4e38, or all of them
    below 1e-31), instead of inf or 0 in the data."""
    stored = np.dtype(jax.dtypes.canonicalize_dtype(dtype))
    if stored == dtype:
        return dtype
    finfo = np.finfo(stored)
    for name, values in arrays.items():
        magnitude = np.abs(values[np.isfinite(values)].astype(np.float64))
        nonzero = magnitude[magnitude > 0]
        # Overflow anywhere, or an array so small that float32 keeps few of its digits (a single
        # tiny entry among ordinary ones loses nothing that matters).
        if nonzero.size and (nonzero.max() > finfo.max or nonzero.max() < finfo.tiny / finfo.eps):
            raise ValueError(
                f"`{name}` has values float32 cannot hold (|values| from {nonzero.min():.3g} to {nonzero.max():.3g}), "
                "and JAX stores data in float32 unless 64-bit types are enabled: build the data after "
                "jax.config.update('jax_enable_x64', True) or inside `with jax.enable_x64(True):`, or rescale it "
                "(the fits themselves always compute in float64)."
            )
    return stored


def _as_2d(name: str, value, n_rows: int) -> np.ndarray:
    arr = _array(name, value)
    if arr.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D array (rows × columns); got shape {arr.shape}.")
    if arr.shape[0] != n_rows:
        raise ValueError(
            f"`{name}` has {arr.shape[0]} rows but `y` has {n_rows}: every row of `{name}` "
            "must be one observation."
        )
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"`{name}` must hold real numbers; got dtype {arr.dtype}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` contains NaN or inf; remove or impute those rows first.")
    return arr


def _encode_groups(groups, n_rows: int) -> tuple[np.ndarray, tuple[Hashable, ...]]:
    """Cluster index per row (0..n-1) and the labels in that index order.

    Labels are sorted when they can be (as R's factor levels are); otherwise kept in order of
    first appearance.
    """
    if groups is None or isinstance(groups, str | bytes) or not hasattr(groups, "__len__"):
        raise ValueError(f"`groups` must be one cluster label per row (a list or array); got {type(groups).__name__}.")
    ndim = getattr(groups, "ndim", 1)  # arrays and data frames; lists may hold tuple labels
    if ndim == 2 and 1 in groups.shape:  # a column or row vector of labels
        groups = np.asarray(groups).ravel()
    elif ndim != 1:
        raise ValueError(f"`groups` must be one label per row (1-D); got shape {groups.shape}.")
    # NumPy scalars become Python objects: labels live in a static (hashed, compared) field.
    labels = [g.item() if isinstance(g, np.generic) else g for g in groups]
    if len(labels) != n_rows:
        raise ValueError(f"`groups` has {len(labels)} labels but `y` has {n_rows} rows.")
    for label in labels:
        if isinstance(label, float) and not np.isfinite(label):
            raise ValueError("`groups` contains NaN or inf; every row needs a cluster label.")
        if label is None or type(label).__name__ in ("NAType", "NaTType"):
            raise ValueError(f"`groups` contains {label!r}; every row needs a cluster label.")
        try:
            hash(label)
        except TypeError:
            raise ValueError(f"`groups` labels must be hashable scalars; got {type(label).__name__}.") from None
    try:
        unique = sorted(set(labels))
    except TypeError:
        unique = list(dict.fromkeys(labels))
    index = {label: i for i, label in enumerate(unique)}
    return np.fromiter((index[label] for label in labels), np.int64, n_rows), tuple(unique)


def _above_rank_tolerance(s, size: int, q: int, eps: float):
    """The singular values (last axis, largest first) above numpy's matrix-rank tolerance
    s_max · max(m_i, q) · eps: the directions each cluster's Z_i really has."""
    return s > s[..., :1] * max(size, q) * eps


def _cluster_svd(Z: np.ndarray, cluster: np.ndarray, n_clusters: int):
    """Thin SVD of each cluster's Z_i, batched over clusters of equal size.

    Returns the left singular vectors laid out row by row (N × q, a column of zeros past the
    rank of Z_i) and the singular values (n × q, zero past the rank). Directions whose singular
    value is below numpy's matrix-rank tolerance are dropped, so rank-deficient Z_i and
    clusters with fewer rows than q are exact.
    """
    n_rows, q = Z.shape
    basis = np.zeros((n_rows, q), Z.dtype)
    singular = np.zeros((n_clusters, q), Z.dtype)
    sizes = np.bincount(cluster, minlength=n_clusters)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for size in np.unique(sizes):
        members = np.flatnonzero(sizes == size)
        rows = starts[members][:, None] + np.arange(size)[None, :]
        u, s, _ = np.linalg.svd(Z[rows], full_matrices=False)
        r = s.shape[1]
        keep = _above_rank_tolerance(s, size, q, np.finfo(Z.dtype).eps)
        basis[rows.ravel(), :r] = (u * keep[:, None, :]).reshape(-1, r)
        singular[members, :r] = s * keep
    return basis, singular


def stacked_sorted(X: Array, y: Array, Z: Array, sizes: np.ndarray) -> LMMData:
    """A stacked `LMMData` (leading batch axis) from batched arrays whose rows are already sorted
    by cluster (`sizes[i]` rows of cluster i, in order), laid out as `from_arrays` lays out each
    data set — the per-cluster thin SVDs of Z as `_cluster_svd` computes them — but in JAX, so
    replicates drawn on a device stay there. No validation: for data the library generated."""
    batch, n_rows, q = Z.shape
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])

    @jax.jit
    def svd(Z):
        basis = jnp.zeros(Z.shape, Z.dtype)
        singular = jnp.zeros((batch, len(sizes), q), Z.dtype)
        for size in np.unique(sizes):
            members = np.flatnonzero(sizes == size)
            rows = starts[members][:, None] + np.arange(size)[None, :]
            u, s, _ = jnp.linalg.svd(Z[:, rows], full_matrices=False)
            r = s.shape[-1]
            keep = _above_rank_tolerance(s, size, q, jnp.finfo(Z.dtype).eps)
            basis = basis.at[:, rows.ravel(), :r].set((u * keep[..., None, :]).reshape(batch, -1, r))
            singular = singular.at[:, members, :r].set(s * keep)
        return basis, singular

    basis, singular = svd(Z)
    cluster = np.repeat(np.arange(len(sizes)), sizes)
    index = jnp.broadcast_to(jnp.asarray(cluster, jnp.int32), (batch, n_rows))
    order = jnp.broadcast_to(jnp.arange(n_rows, dtype=jnp.int32), (batch, n_rows))
    return LMMData(X=X, y=y, Z=Z, cluster=index, order=order, z_basis=basis, z_singular=singular,
                   labels=tuple(range(len(sizes))))


class LMMData(eqx.Module):
    """Grouped data y_i = X_i β + Z_i b_i + ε_i, rows sorted by cluster.

    Build it with `LMMData.from_arrays`. Every array field is a JAX array, so an `LMMData` can
    be passed through `jit` and stacked for `vmap` across datasets that share a cluster layout.
    Per-cluster algebra uses `cluster` as segment ids, so no N×N matrix (and no padding) is ever
    formed.

    **Fields:**

    - `X` (N × p), `y` (N,), `Z` (N × q): the data, rows sorted by cluster.
    - `cluster` (N,): the cluster index 0..n-1 of each sorted row.
    - `order` (N,): the caller's row number of each sorted row (`X = X_caller[order]`).
    - `z_basis` (N × q), `z_singular` (n × q): the thin SVD Z_i = U_i S_i W_iᵀ of each cluster,
      U_i stored row by row and zero past rank(Z_i).
    - `labels`: the group label of each cluster index (static).
    - `feature_names`: the names of X's columns (static; None for x0, x1, …). Fits report them.
    - `design`: the `FormulaDesign` when built by `from_formula` (static; None otherwise).
    """

    X: Array
    y: Array
    Z: Array
    cluster: Array
    order: Array
    z_basis: Array
    z_singular: Array
    labels: tuple = eqx.field(static=True)
    feature_names: tuple | None = eqx.field(static=True, default=None)
    design: object = eqx.field(static=True, default=None)

    @classmethod
    def from_arrays(cls, X, y, groups: Sequence[Hashable], Z=None, feature_names=None) -> LMMData:
        """Validate flat arrays and lay them out by cluster.

        **Arguments:**

        - `X`: fixed-effects design, N × p (p may exceed N; p = 0, an intercept-only model, is
          for `fit_lmm` alone: the penalised methods need columns). Include a column of ones yourself
          only if you want it penalised like the others; the estimators add an unpenalised
          intercept by default.
        - `y`: response, length N; must not be constant.
        - `groups`: N cluster labels of any hashable type, in any order; clusters may be
          unbalanced. At least two clusters are required.
        - `Z`: random-effects design, N × q; `None` means a random intercept (a column of ones).
          Z must have full column rank overall; individual clusters may be rank-deficient
          (for example clusters with fewer rows than q).
        - `feature_names`: p names for X's columns (default: the columns of a DataFrame `X`, else
          x0, x1, …); every fit reports its coefficients under them.

        Raises `ValueError`, naming the argument, for mismatched lengths, non-2-D `X` or `Z`,
        NaN/inf, p = 0, fewer than two clusters, a constant `y` or a rank-deficient `Z`.
        """
        y_arr = _array("y", y)
        if y_arr.ndim == 2 and y_arr.shape[1] == 1:
            y_arr = y_arr[:, 0]
        if y_arr.ndim != 1:
            raise ValueError(f"`y` must be a 1-D array of length N; got shape {y_arr.shape}.")
        n_rows = y_arr.shape[0]
        if n_rows == 0:
            raise ValueError("`y` is empty.")
        if np.iscomplexobj(y_arr):
            raise ValueError("`y` must be real: complex values are not cast (their imaginary parts would be dropped).")
        if not np.issubdtype(y_arr.dtype, np.number) or not np.all(np.isfinite(y_arr)):
            raise ValueError("`y` must be real and finite; it contains NaN, inf or non-numbers.")
        if feature_names is None and hasattr(X, "columns"):
            feature_names = [str(c) for c in X.columns]
        X_arr = _as_2d("X", X, n_rows)
        if feature_names is not None:
            feature_names = tuple(str(name) for name in feature_names)
            if len(feature_names) != X_arr.shape[1] or len(set(feature_names)) != len(feature_names):
                raise ValueError(f"`feature_names` must be {X_arr.shape[1]} distinct names, one per column of X.")
        if np.ptp(y_arr) == 0:
            raise ValueError("`y` is constant: there is nothing to explain.")
        # The default Z takes the dtype of X and y, so float32 data stay float32.
        Z_arr = np.ones((n_rows, 1), _float_dtype(X_arr, y_arr)) if Z is None else _as_2d("Z", Z, n_rows)
        if Z_arr.shape[1] == 0:
            raise ValueError("`Z` has no columns; pass Z=None for a random intercept.")
        cluster, labels = _encode_groups(groups, n_rows)
        if len(labels) < 2:
            raise ValueError(
                f"`groups` has {len(labels)} distinct label(s); a mixed model needs at least 2 "
                "clusters."
            )
        dtype = _stored_dtype(_float_dtype(X_arr, y_arr, Z_arr), {"X": X_arr, "y": y_arr, "Z": Z_arr})
        X_arr, y_arr, Z_arr = (a.astype(dtype) for a in (X_arr, y_arr, Z_arr))
        if np.linalg.matrix_rank(Z_arr) < Z_arr.shape[1]:
            raise ValueError(
                f"`Z` is singular: its {Z_arr.shape[1]} columns have rank "
                f"{np.linalg.matrix_rank(Z_arr)}. Drop duplicated or collinear random-effect "
                "columns."
            )
        order = np.argsort(cluster, kind="stable")
        cluster = cluster[order]
        basis, singular = _cluster_svd(Z_arr[order], cluster, len(labels))
        return cls(
            X=jnp.asarray(X_arr[order]),
            y=jnp.asarray(y_arr[order]),
            Z=jnp.asarray(Z_arr[order]),
            cluster=jnp.asarray(cluster, dtype=jnp.int32),
            order=jnp.asarray(order, dtype=jnp.int32),
            z_basis=jnp.asarray(basis),
            z_singular=jnp.asarray(singular),
            labels=labels,
            feature_names=feature_names,
        )

    @classmethod
    def from_formula(cls, formula: str, data, columns=None) -> LMMData:
        """Grouped data from a pandas DataFrame and an lme4-style formula, expanded by formulaic:

            "Reaction ~ Days + (Days | Subject)",  "distance ~ age * Sex + (1 | Subject)",
            "y ~ . + (1 + t || id)",  "y ~ 0 + x + (1 | school:class)".

        - The fixed part is any formulaic formula: categorical columns get treatment contrasts
          with named columns (`Sex[T.Male]`), `I(x**2)`, `np.log(x)` and interactions work, `.`
          means every column except the response and the group, and "0 +" removes the intercept
          (the estimators add an unpenalised one otherwise; its column is not in X).
        - One grouping factor, in one bar `(terms | g)` — an unstructured Ψ, as in lme4 — or
          `(terms || g)` or several single-column bars of g — a diagonal Ψ. `g` may be `a:b`
          (the combinations of two columns). Crossed or nested factors are refused.
        - `columns`: more numeric fixed-effect columns appended by name, without formula
          expansion (thousands of them, as in p ≫ N): a list of names, or a regular expression
          that the chosen names match in full (`columns=r"gene_\\d+"`).
        - Rows with a missing value in any variable the model uses are dropped, as lme4 does;
          `design.n_dropped` says how many, and fits report it.

        The result's `design` (a `FormulaDesign`) is what `fit_*` reads for the intercept and
        Ψ's structure, and what `Fit.predict(df)` uses to expand new data. Raises `ValueError`
        for a formula that does not parse, missing columns, a formula without a bar, more than
        one grouping factor, a categorical response, and whatever `from_arrays` refuses.
        """
        from ._formula import parse_formula

        y, X, groups, Z, design = parse_formula(formula, data, columns)
        made = cls.from_arrays(X, y, groups, Z, feature_names=design.feature_names)
        return dataclasses.replace(made, design=design)

    @classmethod
    def stack(cls, datasets: Sequence[LMMData]) -> LMMData:
        """Stack data sets with the same cluster layout (labels and cluster sizes) along a new
        leading axis, for `jax.vmap` over replicates: `jax.vmap(f)(LMMData.stack(ds))`."""
        datasets = list(datasets)
        if not datasets or not all(isinstance(d, LMMData) for d in datasets):
            raise ValueError("`datasets` must be a non-empty sequence of LMMData.")
        first = datasets[0]
        for i, d in enumerate(datasets[1:], start=1):
            if d.labels != first.labels or d.X.shape != first.X.shape or d.Z.shape != first.Z.shape:
                raise ValueError(
                    f"`datasets[{i}]` has other labels or shapes than `datasets[0]`; only data sets "
                    "with one cluster layout can be stacked."
                )
            if not np.array_equal(np.asarray(d.cluster), np.asarray(first.cluster)):
                raise ValueError(f"`datasets[{i}]` has other cluster sizes than `datasets[0]`.")
        return jax.tree.map(lambda *xs: jnp.stack(xs), *datasets)

    def fingerprint(self) -> str:
        """A digest of the data as clusters of rows (x_t, y_t, z_t): fits record it so that
        post-fit functions (`debias`, `variance_components`) can refuse other data. It does not
        depend on the row order, on the group labels (which no estimator depends on either) or on
        the dtype of values that float32 holds exactly.
        Each row is reduced to two 64-bit multiplicative hashes of its bits (linear time, no
        sort of whole rows: 48,000 × 500 takes 0.2 s)."""
        rng = np.random.default_rng(20261203)
        keys = np.zeros((self.n_obs, 2), np.uint64)
        with np.errstate(over="ignore"):
            for array in (self.X, self.y, self.Z):
                # As float64 (exact for float32): the float64 copy a fit makes of float32 data has the
                # same fingerprint as the data the caller holds.
                host = np.ascontiguousarray(np.asarray(array, np.float64).reshape(self.n_obs, -1))
                bits = host.view(np.uint64)
                odd = rng.integers(1, 2**63, size=(bits.shape[1], 2), dtype=np.uint64) | np.uint64(1)
                keys += bits @ odd  # wraps modulo 2^64
        cluster = np.asarray(self.cluster)
        order = np.lexsort((keys[:, 1], keys[:, 0], cluster))
        bounds = np.flatnonzero(np.diff(cluster[order])) + 1
        members = sorted(part.tobytes() for part in np.split(keys[order], bounds))
        digest = hashlib.blake2b(digest_size=16)
        digest.update(str((self.X.shape, self.Z.shape)).encode())
        for part in members:
            digest.update(len(part).to_bytes(8, "little") + part)
        return digest.hexdigest()

    def astype(self, dtype) -> LMMData:
        """The same data in floating dtype `dtype` (the per-cluster SVD of Z computed again there
        when the precision rises, so that it is as accurate as the new dtype allows)."""
        dtype = np.dtype(dtype)
        if self.X.dtype == dtype:
            return self
        X, y, Z = (jnp.asarray(np.asarray(a), dtype) for a in (self.X, self.y, self.Z))
        if dtype.itemsize > self.X.dtype.itemsize and self.X.ndim == 2:
            basis, singular = (jnp.asarray(a) for a in _cluster_svd(np.asarray(Z), np.asarray(self.cluster),
                                                                    self.n_clusters))
        else:
            basis, singular = (jnp.asarray(np.asarray(a), dtype) for a in (self.z_basis, self.z_singular))
        return dataclasses.replace(self, X=X, y=y, Z=Z, z_basis=basis, z_singular=singular)

    def with_intercept(self) -> Array:
        """[1, X]: the fixed-effects design with an intercept column first (rows sorted by cluster)."""
        return jnp.concatenate([jnp.ones((self.n_obs, 1), self.X.dtype), self.X], axis=1)

    def with_index_labels(self) -> LMMData:
        """The same data with labels 0..n−1. `labels` is a static field, so it is part of every
        compiled program's cache key: the estimators fit on this copy (without `feature_names`
        and `design`, static too), and data sets that differ only in their labels share compiled programs."""
        if self.labels == tuple(range(len(self.labels))) and self.feature_names is None and self.design is None:
            return self
        return dataclasses.replace(self, labels=tuple(range(len(self.labels))), feature_names=None, design=None)

    def column_names(self) -> tuple:
        """`feature_names`, or x0, x1, … when none were given."""
        return self.feature_names or tuple(f"x{k}" for k in range(self.n_features))

    @property
    def n_obs(self) -> int:
        return self.y.shape[-1]

    @property
    def n_features(self) -> int:
        return self.X.shape[-1]

    @property
    def n_clusters(self) -> int:
        return len(self.labels)

    @property
    def cluster_sizes(self) -> Array:
        return jnp.bincount(self.cluster, length=self.n_clusters)

    def to_caller_order(self, rows: Array) -> Array:
        """Put per-row values (leading axis N, sorted by cluster) back in the caller's order."""
        return jnp.zeros_like(rows).at[self.order].set(rows)
