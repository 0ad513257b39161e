"""Independent dense references and data generators for the tests."""

import contextlib
import logging

import jax
import numpy as np

import jaxlmm


def random_grouped(seed, sizes, p=6, q=2, label_type=int, shuffle=True):
    """Unbalanced clustered data with labels of `label_type`, rows in random order."""
    rng = np.random.default_rng(seed)
    n_obs = int(np.sum(sizes))
    labels = np.repeat(np.arange(len(sizes)), sizes)
    if label_type is str:
        labels = np.array([f"g{lab:03d}" for lab in labels], dtype=object)
    elif label_type is tuple:
        labels = [("site", int(lab)) for lab in labels]
    order = rng.permutation(n_obs) if shuffle else np.arange(n_obs)
    groups = [labels[i] for i in order]
    X = rng.normal(size=(n_obs, p))
    Z = rng.normal(size=(n_obs, q))
    y = X[:, 0] - 0.5 * X[:, 1] + rng.normal(size=n_obs)
    return X, y, groups, Z


def dense_sigma(groups, Z, a):
    """Σ_a = blockdiag(a Z_i Z_iᵀ + I) as a dense N × N matrix, rows in the caller's order."""
    groups = list(groups)
    n_obs = len(groups)
    S = np.eye(n_obs)
    for label in set(groups):
        idx = np.array([t for t in range(n_obs) if groups[t] == label])
        S[np.ix_(idx, idx)] += a * Z[idx] @ Z[idx].T
    return S


def dense_v(groups, Z, psi, sigma2):
    """V = σ² I + blockdiag(Z_i Ψ Z_iᵀ) as a dense N × N matrix, rows in the order of `groups`."""
    groups = np.asarray(groups)
    V = sigma2 * np.eye(len(groups))
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        V[np.ix_(idx, idx)] += Z[idx] @ psi @ Z[idx].T
    return V


def dense_inverse_sqrt(S):
    """Symmetric S^{-1/2} by eigh (the correct version of the seed's `eig` computation)."""
    w, V = np.linalg.eigh(S)
    return V @ np.diag(w**-0.5) @ V.T


def make_data(seed, sizes, p=6, q=2, **kw):
    X, y, groups, Z = random_grouped(seed, sizes, p, q, **kw)
    return jaxlmm.LMMData.from_arrays(X, y, groups, Z), (X, y, groups, Z)


@contextlib.contextmanager
def compile_log():
    """The messages of JAX's compile log while the block runs (a list, filled as it goes)."""
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            yield messages
    finally:
        logger.removeHandler(handler)
