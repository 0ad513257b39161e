"""Simulated designs from the seeds and papers, for tests, demos and sweeps."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np

from ._validate import check_seed


@dataclasses.dataclass(frozen=True)
class Simulated:
    """A simulated data set: flat arrays (`X`, `y`, `groups`, `Z`) and the truth (`beta`,
    `ranef`: one row of random effects per cluster, `Psi`, `sigma`)."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    Z: np.ndarray
    beta: np.ndarray
    ranef: np.ndarray
    Psi: np.ndarray
    sigma: float


def _symmetric_sqrt_abs(cov: np.ndarray) -> np.ndarray:
    """|cov|^{1/2} = V |w|^{1/2} Vᵀ, the one symmetric square root of the matrix absolute value.

    The seed's covariance is not positive semi-definite (x_j and z_j, j < q, have correlation 1
    and the cross terms make it indefinite: eigenvalues down to −0.36 for p = 50, q = 4). The
    seed's `multivariate_normal` samples from |cov| through an SVD, but the SVD's vectors are
    arbitrary inside the eigenvalue-1 eigenspace (multiplicity p − q), so the data it draws
    changed with the number of BLAS threads (and so between a serial and a parallel test run).
    The symmetric root is unique: the same distribution, drawn reproducibly.
    """
    w, V = np.linalg.eigh(cov)
    return (V * np.sqrt(np.abs(w))) @ V.T


def scope_example_design(
    seed: int = 0,
    n_clusters: int = 15,
    cluster_size: int | np.ndarray = 8,
    p: int = 50,
    q: int = 4,
    sigma: float = 0.25,
    rho: float = 0.2,
    support=(1, 5, 10),
    values=(1.0, 0.5, 0.3),
    psi_rho: float = 0.56,
) -> Simulated:
    """The linear mixed model of the skscope example, with unbalanced clusters allowed.

    Rows of [X, Z] are N(0, |C|), C = [[I_p, Σ_xz], [Σ_xzᵀ, I_q]] with Σ_xz[j, l] = rho^{|j−l|} when
    max(j, l) ≤ q − 1 (Z is correlated with the first q columns of X) and 0 otherwise (C is
    indefinite; |C| is what the seed's sampler draws from, see `_symmetric_sqrt_abs`);
    b_i ~ N(0, Ψ) with Ψ_jl = psi_rho^{|j−l|}; y = Xβ + Z_i b_i + σ ε with β nonzero on
    `support`. `cluster_size` is one size for all clusters or one per cluster.
    """
    rng = np.random.default_rng(check_seed(seed))
    sizes = np.broadcast_to(np.asarray(cluster_size, int), (n_clusters,))
    n_obs = int(sizes.sum())
    j, l = np.meshgrid(np.arange(p), np.arange(q), indexing="ij")
    cross = np.where(np.maximum(j, l) <= q - 1, rho ** np.abs(j - l), 0.0)
    cov = np.block([[np.eye(p), cross], [cross.T, np.eye(q)]])
    XZ = rng.standard_normal((n_obs, p + q)) @ _symmetric_sqrt_abs(cov)
    X, Z = XZ[:, :p], XZ[:, p:]
    beta = np.zeros(p)
    beta[list(support)] = values
    Psi = psi_rho ** np.abs(np.subtract.outer(np.arange(q), np.arange(q)))
    ranef = rng.multivariate_normal(np.zeros(q), Psi, size=n_clusters)
    groups = np.repeat(np.arange(n_clusters), sizes)
    y = X @ beta + np.einsum("tk,tk->t", Z, ranef[groups]) + sigma * rng.normal(size=n_obs)
    return Simulated(X, y, groups, Z, beta, ranef, Psi, sigma)


def li_cai_li_design(
    seed: int = 0,
    n_clusters: int = 40,
    size_range: tuple[int, int] = (4, 12),
    cluster_size: np.ndarray | None = None,
    p: int = 300,
    q: int = 2,
    psi_diag=(1.0, 0.5),
    sigma: float = 1.0,
    support=(0, 1, 2, 3, 4),
    values=(1.0, 0.5, 0.2, 0.1, 0.05),
) -> Simulated:
    """Sparse high-dimensional LMM in the style of Li, Cai & Li (2022)'s simulations.

    Unbalanced clusters (sizes uniform on `size_range`, or `cluster_size` given), rows of X iid
    N(0, I_p), Z = [1, x_0, …, x_{q−2}] (a random intercept and random slopes on the first
    q − 1 covariates, which also have fixed effects), b_i ~ N(0, diag(`psi_diag`)),
    ε ~ N(0, σ²), β = `values` on `support`. Give `cluster_size` to keep one cluster layout
    across seeds (as `LMMData.stack` needs for a vmapped sweep).
    """
    rng = np.random.default_rng(check_seed(seed))
    if cluster_size is None:
        sizes = rng.integers(size_range[0], size_range[1] + 1, size=n_clusters)
    else:
        sizes = np.broadcast_to(np.asarray(cluster_size, int), (n_clusters,))
    n_obs = int(sizes.sum())
    X = rng.normal(size=(n_obs, p))
    Z = np.concatenate([np.ones((n_obs, 1)), X[:, : q - 1]], axis=1)
    beta = np.zeros(p)
    beta[list(support)] = values
    Psi = np.diag(np.broadcast_to(np.asarray(psi_diag, float), (q,)))
    ranef = rng.normal(size=(n_clusters, q)) * np.sqrt(np.diag(Psi))
    groups = np.repeat(np.arange(n_clusters), sizes)
    y = X @ beta + np.einsum("tk,tk->t", Z, ranef[groups]) + sigma * rng.normal(size=n_obs)
    return Simulated(X, y, groups, Z, beta, ranef, Psi, sigma)


SCHELLDORFER_DESIGNS = {
    # name: (clusters N, cluster size n, p including the intercept, q, σ², θ²)
    "H1": (25, 6, 300, 2, 0.25, 0.56),
    "H2": (30, 6, 500, 1, 0.25, 0.56),
    "H3": (30, 6, 1000, 3, 0.25, 0.56),
    # H4: Ψ = diag(3, 3, 2) on (1, x_2, x_3); the paper fits it with a diagonal Ψ of dimension 4.
    "H4": (25, 6, 300, 3, 0.25, (3.0, 3.0, 2.0)),
}


def schelldorfer_design(seed: int = 0, design: str = "H1", theta2=None) -> Simulated:
    """The high-dimensional designs H1–H4 of Schelldorfer, Bühlmann & van de Geer (2011, §5.1).

    Clusters of n = 6; covariates x_2..x_p ~ N(0, Σ), Σ_kl = 0.2^|k−l| (x_1 is the intercept,
    not part of the returned X); Z = the first q columns of [1, X]; b_i ~ N(0, diag(θ²)) with
    θ² = 0.56 (H1–H3) or (3, 3, 2) (H4), or the caller's `theta2` (one value or q values);
    ε ~ N(0, σ²); β = (1, 2, 4, 3, 3, 0, …) with β_1 the intercept. Returned `beta` has length
    p − 1 (the coefficients of X); the intercept is 1.
    """
    n_clusters, size, p, q, sigma2, theta2 = _schelldorfer_variances(design, theta2)
    rng = np.random.default_rng(check_seed(seed))
    n_obs = n_clusters * size
    k = np.arange(p - 1)
    chol = np.linalg.cholesky(0.2 ** np.abs(np.subtract.outer(k, k)))
    X = rng.normal(size=(n_obs, p - 1)) @ chol.T
    beta = np.zeros(p - 1)
    beta[:4] = (2.0, 4.0, 3.0, 3.0)
    Z = np.column_stack([np.ones(n_obs), X[:, : q - 1]])
    Psi = np.diag(theta2)
    ranef = rng.normal(size=(n_clusters, q)) * np.sqrt(theta2)
    groups = np.repeat(np.arange(n_clusters), size)
    y = 1.0 + X @ beta + np.einsum("tk,tk->t", Z, ranef[groups]) + np.sqrt(sigma2) * rng.normal(size=n_obs)
    return Simulated(X, y, groups, Z, beta, ranef, Psi, float(np.sqrt(sigma2)))


def _schelldorfer_variances(design, theta2):
    """The design's constants with θ² as q variances (the caller's `theta2` if given)."""
    if design not in SCHELLDORFER_DESIGNS:
        raise ValueError(f"`design` must be one of {sorted(SCHELLDORFER_DESIGNS)}; got {design!r}.")
    n_clusters, size, p, q, sigma2, default = SCHELLDORFER_DESIGNS[design]
    value = default if theta2 is None else theta2
    try:
        variances = np.broadcast_to(np.asarray(value, float), (q,)).copy()
    except ValueError:
        raise ValueError(f"`theta2` must be one variance or q = {q} of them; got {theta2!r}.") from None
    if not np.all(np.isfinite(variances)) or np.any(variances < 0):
        raise ValueError(f"`theta2` must hold finite variances ≥ 0; got {theta2!r}.")
    return n_clusters, size, p, q, sigma2, variances


def schelldorfer_prediction_design(seed: int = 0, p: int = 10, theta2: float = 1.0,
                                   test_size: int = 50) -> tuple[Simulated, Simulated]:
    """The within-group prediction designs P1–P3 of Schelldorfer, Bühlmann & van de Geer (2011,
    §5.2, Table 5): 25 clusters of 6 training rows, q = 3 (a random intercept and random slopes
    on x_2, x_3), β = (1, 1.5, 1.2, 1, 2, 0, …) with β_1 the intercept, σ² = 1, covariates
    N(0, Σ) with Σ_kl = 0.2^|k−l|, Ψ = θ² I; `p` counts the intercept (P1: 10, P2: 100, P3: 500).

    Returns `(train, test)`: the test set has `test_size` new rows per cluster with the same
    random effects b_i (what within-group prediction is measured on), drawn as the training rows.
    """
    theta2 = float(theta2)
    if not np.isfinite(theta2) or theta2 < 0:
        raise ValueError(f"`theta2` must be a finite variance ≥ 0; got {theta2!r}.")
    if int(p) < 6:
        raise ValueError(f"`p` must be ≥ 6 (the intercept and five signal columns); got {p!r}.")
    n_clusters, size, q = 25, 6, 3
    rng = np.random.default_rng(check_seed(seed))
    k = np.arange(int(p) - 1)
    chol = np.linalg.cholesky(0.2 ** np.abs(np.subtract.outer(k, k)))
    beta = np.zeros(int(p) - 1)
    beta[:4] = (1.5, 1.2, 1.0, 2.0)
    ranef = rng.normal(size=(n_clusters, q)) * np.sqrt(theta2)

    def rows(per_cluster):
        groups = np.repeat(np.arange(n_clusters), per_cluster)
        X = rng.normal(size=(len(groups), int(p) - 1)) @ chol.T
        Z = np.column_stack([np.ones(len(groups)), X[:, : q - 1]])
        y = 1.0 + X @ beta + np.einsum("tk,tk->t", Z, ranef[groups]) + rng.normal(size=len(groups))
        return Simulated(X, y, groups, Z, beta, ranef, theta2 * np.eye(q), 1.0)

    return rows(size), rows(int(test_size))


EB_RIDGE_TIMES = ("uniform", "normal")


def eb_ridge_design(seed=0, n_individuals: int = 40, repeats: int = 2, p: int = 2, q: int = 4, nu: float | None = None,
                    times: str = "uniform", sigma: float = 1.0) -> Simulated:
    """The simulation design of the empirical-Bayes ridge LMM's experiments (Amestoy, van de Wiel &
    van Wieringen 2021, slides
    'Results'), with the choices the slides leave open stated:

        y_ij = x_ijᵀβ + z_ijᵀb_i + σ ε_ij,   z_ij = (1, t_ij, …, t_ij^{q−1}),   x_ij ~ N(0, I_p),
        β ~ N(0, I_p),   b_i ~ N(0, Σ),   Σ ~ IW(ν, (ν − q − 1) I)   (so E Σ = I_q),

    `n_individuals` individuals with `repeats` observations each, time points t drawn per
    observation from U(−1, 1) (`times="uniform"`) or N(0, 1) (`"normal"`); ν = q + 2 by default
    (the one ν with scale ∝ I and E Σ = I that keeps the prior as flat as possible). β and Σ
    are drawn anew for every data set; the returned `beta` and `Psi` are the drawn ones.
    Experiment 1 of the slides is q = 4 with 2, 3, 5 or 8 repeats and p = 2; experiment 2 is
    q = 2, 7 repeats and p = 2 or 500. `seed`: an int, a JAX PRNG key or a NumPy Generator (to
    draw many data sets from one stream).
    """
    n, repeats, p, q = int(n_individuals), int(repeats), int(p), int(q)
    nu = _eb_ridge_checks(n, repeats, p, q, nu, times)
    from scipy import stats

    rng = seed if isinstance(seed, np.random.Generator) else _rng(seed)
    N = n * repeats
    groups = np.repeat(np.arange(n), repeats)
    t = rng.uniform(-1, 1, size=N) if times == "uniform" else rng.normal(size=N)
    Z = np.column_stack([t**k for k in range(q)])
    Sigma = stats.invwishart(df=nu, scale=(nu - q - 1) * np.eye(q)).rvs(random_state=rng).reshape(q, q)
    ranef = rng.multivariate_normal(np.zeros(q), Sigma, size=n)
    X = rng.normal(size=(N, p))
    beta = rng.normal(size=p)
    y = X @ beta + np.einsum("tk,tk->t", Z, ranef[groups]) + sigma * rng.normal(size=N)
    return Simulated(X, y, groups, Z, beta, ranef, Sigma, float(sigma))


def _eb_ridge_checks(n, repeats, p, q, nu, times):
    if times not in EB_RIDGE_TIMES:
        raise ValueError(f"`times` must be one of {EB_RIDGE_TIMES}; got {times!r}.")
    if n < 2 or repeats < 1 or p < 1 or q < 1:
        raise ValueError("`n_individuals` ≥ 2, `repeats` ≥ 1, `p` ≥ 1 and `q` ≥ 1 are needed.")
    nu = float(q + 2 if nu is None else nu)
    if not nu > q + 1:
        raise ValueError(f"`nu` must exceed q + 1 = {q + 1} (E Σ = I needs a finite mean); got {nu!r}.")
    return nu


@dataclasses.dataclass(frozen=True)
class TargetShift(Simulated):
    """A `target_shift` data set: `Simulated` plus the latent cluster effects `alpha` (n) and
    the indices of the `proxies` (covariates whose cluster means are driven by α_i)."""

    alpha: np.ndarray = None
    proxies: np.ndarray = None


def _rng(key) -> np.random.Generator:
    """A NumPy generator from an int seed or a JAX PRNG key (typed or raw uint32)."""
    if isinstance(key, int | np.integer) or key is None or isinstance(key, str | float):
        return np.random.default_rng(check_seed(key))
    import jax

    data = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return np.random.default_rng(np.asarray(data, np.uint32).ravel().tolist())


def target_shift(
    key=0,
    n_clusters: int = 50,
    size_range: tuple[int, int] = (4, 12),
    cluster_size: np.ndarray | None = None,
    p: int = 500,
    n_proxy: int = 10,
    c: float = 1.5,
    values=(1.0, 0.8, 0.6, 0.5, 0.4),
    sigma: float = 1.0,
    alpha_sd: float = 1.0,
    mean_sd: float = 1.0,
) -> TargetShift:
    """The target-shift mechanism of the SHEL abstract, for tests and sweeps.

        y_ij = x_ijᵀβ + α_i + ε_ij,   α_i ~ N(0, alpha_sd²),   ε_ij ~ N(0, σ²),
        x_ij = μ_i + e_ij,   e_ij ~ N(0, I_p),   μ_ik = c α_i + u_ik  (k a proxy),   μ_ik = u_ik  (otherwise),

    u_ik ~ N(0, mean_sd²): every covariate's distribution shifts across clusters, and the
    `n_proxy` proxies (columns 0..n_proxy−1) shift with the latent α_i, so a Lasso that
    ignores the clusters can use them to predict α_i. β is zero on the proxies and equals
    `values` on the next len(values) columns. Cluster sizes are uniform on `size_range`, or
    `cluster_size` (one layout across keys, so replicates share compiled shapes).
    `key`: an int seed or a JAX PRNG key.
    """
    rng = _rng(key)
    if n_proxy + len(values) > p:
        raise ValueError(f"`p` = {p} is smaller than n_proxy + len(values) = {n_proxy + len(values)}.")
    if cluster_size is None:
        sizes = rng.integers(size_range[0], size_range[1] + 1, size=n_clusters)
    else:
        sizes = np.broadcast_to(np.asarray(cluster_size, int), (n_clusters,))
    groups = np.repeat(np.arange(n_clusters), sizes)
    alpha = alpha_sd * rng.normal(size=n_clusters)
    mu = mean_sd * rng.normal(size=(n_clusters, p))
    mu[:, :n_proxy] += c * alpha[:, None]
    X = mu[groups] + rng.normal(size=(len(groups), p))
    beta = np.zeros(p)
    beta[n_proxy : n_proxy + len(values)] = values
    y = X @ beta + alpha[groups] + sigma * rng.normal(size=len(groups))
    return TargetShift(X, y, groups, np.ones((len(groups), 1)), beta, alpha[:, None],
                       np.array([[alpha_sd**2]]), float(sigma), alpha, np.arange(n_proxy))


# ---- key-driven batches: every replicate drawn in one jitted program ----------------------------


@dataclasses.dataclass(frozen=True)
class Batch:
    """Replicates drawn by `draw`: `data`, a stacked `LMMData` (leading axis = keys, ready for
    `jaxlmm.sweep`), and the truth per replicate: `beta` (B × p), `ranef` (B × n × q), `intercept`
    (the fixed intercept of the design), `Psi` (q × q; B × q × q for "eb_ridge", which draws β
    and Ψ per replicate) and `sigma`; `extra` holds what a design adds (target shift: `alpha` B × n and `proxies`)."""

    data: object
    beta: object
    ranef: object
    intercept: float
    Psi: np.ndarray
    sigma: float
    extra: dict


DESIGNS = ("scope_example", "li_cai_li", "schelldorfer", "target_shift", "eb_ridge")


def draw(design: str, keys, cluster_size, **options) -> Batch:
    """Draw one replicate per PRNG key of a design of the seeds and papers, all in one jitted
    JAX program (no Python loop over replicates; on an accelerator the data are drawn there).

    The distributions are those of the NumPy generators of the same name (`scope_example_design`,
    `li_cai_li_design`, `schelldorfer_design`, `target_shift`, `eb_ridge_design`): the same
    distributions, not the same numbers. The cluster layout is one for the whole batch (`cluster_size`: one
    size for every cluster, or one per cluster), so the replicates stack.

    **Arguments:**

    - `design`: "scope_example" (the skscope example), "li_cai_li", "schelldorfer" (`variant` "H1"–"H4",
      and `theta2` for another diagonal of Ψ; its cluster count and size come from the paper,
      so give `cluster_size=None`), "target_shift" (the SHEL abstract) or "eb_ridge" (the EB ridge paper's
      experiments: `cluster_size` = repeats per individual; `p`, `q`, `nu`, `times`, `sigma`;
      β ~ N(0, I) and Σ ~ inverse Wishart drawn per replicate, by Bartlett's decomposition).
    - `keys`: a batch of PRNG keys (`jax.random.split(jax.random.key(0), B)`).
    - `options`: the design's parameters, named as in its NumPy generator (`p`, `q`, `sigma`, …).

    Returns a `Batch`; `batch.data` goes straight into `jaxlmm.sweep`.
    """
    import jax
    import jax.numpy as jnp

    from ._data import stacked_sorted

    if design not in DESIGNS:
        raise ValueError(f"`design` must be one of {DESIGNS}; got {design!r}.")
    keys = jnp.asarray(keys) if not isinstance(keys, jax.Array) else keys
    if keys.ndim < 1 or keys.shape[0] == 0:
        raise ValueError("`keys` must be a non-empty batch of PRNG keys (jax.random.split(key, B)).")
    if design == "schelldorfer":
        variant = options.pop("variant", "H1")
        if variant not in SCHELLDORFER_DESIGNS:
            raise ValueError(f"`variant` must be one of {sorted(SCHELLDORFER_DESIGNS)}; got {variant!r}.")
        n_clusters, size, p, q, sigma2, theta2 = _schelldorfer_variances(variant, options.pop("theta2", None))
        if cluster_size is not None:
            raise ValueError("`cluster_size` is fixed by the Schelldorfer design; pass None.")
        cluster_size = np.full(n_clusters, size)
    if cluster_size is None:
        raise ValueError(f"`cluster_size` is needed for design {design!r}: one size, or one per cluster.")
    sizes = np.asarray(cluster_size, int)
    if sizes.ndim == 0:
        n_default = {"scope_example": 15, "li_cai_li": 40, "target_shift": 50, "eb_ridge": 40}[design]
        sizes = np.full(options.pop("n_clusters", n_default), int(sizes))
    if sizes.ndim != 1 or len(sizes) < 2 or np.any(sizes < 1):
        raise ValueError("`cluster_size` must be a positive size, or one per cluster (at least 2 clusters).")
    groups = np.repeat(np.arange(len(sizes)), sizes)
    extra = {}
    builder = {"scope_example": _scope_example, "li_cai_li": _li_cai_li, "target_shift": _target_shift,
               "eb_ridge": _eb_ridge}.get(design)
    if builder is not None:
        allowed = set(inspect.signature(builder).parameters) - {"groups"}
        if set(options) - allowed:
            raise ValueError(f"unknown option(s) {sorted(set(options) - allowed)} for design {design!r}; "
                             f"it takes {sorted(allowed)}.")
    elif options:
        raise ValueError(f"design 'schelldorfer' takes only `variant` and `theta2`; got {sorted(options)}.")
    if design == "scope_example":
        draw_one, beta, Psi, sigma, intercept = _scope_example(groups, **options)
    elif design == "li_cai_li":
        draw_one, beta, Psi, sigma, intercept = _li_cai_li(groups, **options)
    elif design == "schelldorfer":
        draw_one, beta, Psi, sigma, intercept = _schelldorfer(groups, p, q, sigma2, theta2)
    elif design == "eb_ridge":
        draw_one, beta, Psi, sigma, intercept = _eb_ridge(groups, **options)
    else:
        draw_one, beta, Psi, sigma, intercept, extra = _target_shift(groups, **options)
    X, y, Z, ranef, latent = jax.jit(jax.vmap(draw_one))(keys)
    if design == "target_shift":
        extra = {"alpha": latent, **extra}
    if design == "eb_ridge":  # the truth is drawn per replicate
        beta, Psi = latent
    data = stacked_sorted(X, y, Z, sizes)
    return Batch(data, jnp.broadcast_to(jnp.asarray(beta, X.dtype), (X.shape[0], X.shape[2])), ranef, intercept,
                 np.asarray(Psi), float(sigma), extra)


def _dtype():
    import jax.numpy as jnp

    return jnp.zeros(()).dtype  # float64 when the caller enabled x64, else float32


def _gaussian_lmm(groups, covariates, beta, ranef_root, sigma, intercept=0.0):
    """One replicate per key of y = intercept + Xβ + Z_i b_i + σε, b_i = ranef_rootᵀ-scaled
    standard normals (b_i ~ N(0, ranef_rootᵀ ranef_root)), with (X, Z) = covariates(key, dtype)."""
    import jax
    import jax.numpy as jnp

    n, N, dt = groups.max() + 1, len(groups), _dtype()

    def one(key):
        k1, k2, k3 = jax.random.split(key, 3)
        X, Z = covariates(k1, dt)
        ranef = jax.random.normal(k2, (n, Z.shape[1]), dt) @ jnp.asarray(ranef_root, dt)
        y = (intercept + X @ jnp.asarray(beta, dt) + jnp.sum(Z * ranef[groups], 1)
             + sigma * jax.random.normal(k3, (N,), dt))
        return X, y, Z, ranef, None

    return one


def _scope_example(groups, p=50, q=4, sigma=0.25, rho=0.2, support=(1, 5, 10), values=(1.0, 0.5, 0.3),
                   psi_rho=0.56):
    import jax
    import jax.numpy as jnp

    j, l = np.meshgrid(np.arange(p), np.arange(q), indexing="ij")
    cross = np.where(np.maximum(j, l) <= q - 1, rho ** np.abs(j - l), 0.0)
    root = _symmetric_sqrt_abs(np.block([[np.eye(p), cross], [cross.T, np.eye(q)]]))
    beta = np.zeros(p)
    beta[list(support)] = values
    Psi = psi_rho ** np.abs(np.subtract.outer(np.arange(q), np.arange(q)))

    def covariates(key, dt):
        XZ = jax.random.normal(key, (len(groups), p + q), dt) @ jnp.asarray(root, dt)
        return XZ[:, :p], XZ[:, p:]

    return _gaussian_lmm(groups, covariates, beta, np.linalg.cholesky(Psi).T, sigma), beta, Psi, sigma, 0.0


def _with_random_slopes(X, q):
    """Z = [1, the first q − 1 columns of X]."""
    import jax.numpy as jnp

    return jnp.concatenate([jnp.ones((X.shape[0], 1), X.dtype), X[:, : q - 1]], axis=1)


def _li_cai_li(groups, p=300, q=2, psi_diag=(1.0, 0.5), sigma=1.0, support=(0, 1, 2, 3, 4),
               values=(1.0, 0.5, 0.2, 0.1, 0.05)):
    import jax

    beta = np.zeros(p)
    beta[list(support)] = values
    sd = np.sqrt(np.broadcast_to(np.asarray(psi_diag, float), (q,)))

    def covariates(key, dt):
        X = jax.random.normal(key, (len(groups), p), dt)
        return X, _with_random_slopes(X, q)

    return _gaussian_lmm(groups, covariates, beta, np.diag(sd), sigma), beta, np.diag(sd**2), sigma, 0.0


def _schelldorfer(groups, p, q, sigma2, theta2):
    import jax
    import jax.numpy as jnp

    k = np.arange(p - 1)
    chol = np.linalg.cholesky(0.2 ** np.abs(np.subtract.outer(k, k)))
    beta = np.zeros(p - 1)
    beta[:4] = (2.0, 4.0, 3.0, 3.0)
    sigma = float(np.sqrt(sigma2))

    def covariates(key, dt):
        X = jax.random.normal(key, (len(groups), p - 1), dt) @ jnp.asarray(chol.T, dt)
        return X, _with_random_slopes(X, q)

    one = _gaussian_lmm(groups, covariates, beta, np.diag(np.sqrt(theta2)), sigma, intercept=1.0)
    return one, beta, np.diag(theta2), sigma, 1.0


def _target_shift(groups, p=500, n_proxy=10, c=1.5, values=(1.0, 0.8, 0.6, 0.5, 0.4), sigma=1.0, alpha_sd=1.0,
                  mean_sd=1.0):
    import jax
    import jax.numpy as jnp

    if n_proxy + len(values) > p:
        raise ValueError(f"`p` = {p} is smaller than n_proxy + len(values) = {n_proxy + len(values)}.")
    beta = np.zeros(p)
    beta[n_proxy : n_proxy + len(values)] = values
    shift = np.zeros(p)
    shift[:n_proxy] = c
    n, N, dt = groups.max() + 1, len(groups), _dtype()

    def one(key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        alpha = alpha_sd * jax.random.normal(k1, (n,), dt)
        mu = mean_sd * jax.random.normal(k2, (n, p), dt) + alpha[:, None] * jnp.asarray(shift, dt)
        X = mu[groups] + jax.random.normal(k3, (N, p), dt)
        y = X @ jnp.asarray(beta, dt) + alpha[groups] + sigma * jax.random.normal(k4, (N,), dt)
        return X, y, jnp.ones((N, 1), dt), alpha[:, None], alpha

    return one, beta, np.array([[alpha_sd**2]]), sigma, 0.0, {"proxies": np.arange(n_proxy)}


def _eb_ridge(groups, p=2, q=4, nu=None, times="uniform", sigma=1.0):
    import jax
    import jax.numpy as jnp
    from jax.scipy.linalg import solve_triangular

    n, N, dt = groups.max() + 1, len(groups), _dtype()
    p, q = int(p), int(q)
    nu = _eb_ridge_checks(n, 1, p, q, nu, times)
    below = np.tril_indices(q, -1)

    def one(key):
        kt, kc, kn, kb, kx, kbeta, ke = jax.random.split(key, 7)
        t = jax.random.uniform(kt, (N,), dt, -1.0, 1.0) if times == "uniform" else jax.random.normal(kt, (N,), dt)
        Z = t[:, None] ** jnp.arange(q, dtype=dt)
        # Bartlett: Σ⁻¹ = A Aᵀ / (ν − q − 1) ~ Wishart(ν, I/(ν − q − 1)), A lower triangular with
        # A_kk² ~ χ²(ν − k) and N(0, 1) below; then b_i = √(ν − q − 1) A⁻ᵀ u_i, u_i ~ N(0, I).
        A = jnp.diag(jnp.sqrt(jax.random.chisquare(kc, nu - jnp.arange(q, dtype=dt), dtype=dt)))
        A = A.at[below].set(jax.random.normal(kn, (len(below[0]),), dt))
        root = jnp.sqrt(nu - q - 1.0) * solve_triangular(A, jnp.eye(q, dtype=dt), lower=True).T  # Σ = root rootᵀ
        ranef = jax.random.normal(kb, (n, q), dt) @ root.T
        X = jax.random.normal(kx, (N, p), dt)
        beta = jax.random.normal(kbeta, (p,), dt)
        y = X @ beta + jnp.sum(Z * ranef[groups], 1) + sigma * jax.random.normal(ke, (N,), dt)
        return X, y, Z, ranef, (beta, root @ root.T)

    return one, None, None, float(sigma), 0.0
