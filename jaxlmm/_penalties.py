"""Penalties: the value, proximal operator, KKT residual (distance to the subdifferential) and what
coordinate descent and λ paths need of each. Users add their own by subclassing `AbstractPenalty`."""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array


def soft_threshold(z: Array, threshold: Array) -> Array:
    """sign(z) · max(|z| − threshold, 0); threshold = inf gives 0."""
    return jnp.sign(z) * jnp.maximum(jnp.abs(z) - threshold, 0.0)


def _concrete(x) -> np.ndarray | None:
    """The value of x when it is known before tracing (None inside jit/vmap)."""
    return None if x is None or isinstance(x, jax.core.Tracer) else np.asarray(x)


class AbstractPenalty(eqx.Module):
    """A penalty P(β) = λ·(...) for `jaxlmm.solve`, `solve_path` and the estimators.

    Subclasses implement:

    - `__call__(beta)`: the value P(β).
    - `prox(beta, step)`: argmin_b ½‖b − β‖² + step·P(b) (`step` a scalar).
    - `kkt_residual(beta, grad)`: per coordinate, dist(−grad_k, ∂_k P(β)); zero at a stationary
      point of f + P (solvers stop on its maximum; `solve` reports it).
    - `thresholds()`: per coordinate, the radius of ∂_k P at β_k = 0 (λ w_k for the Lasso), or a
      scalar; 0 for unpenalised coordinates. Solvers use it for their scale and working sets.
    - `with_lam(lam)`: the same penalty at another λ (paths); the default replaces the `lam` field.

    Separable penalties (the default `separable = True`) also implement
    `coordinate_prox(z, step, k)`: the prox of coordinate k alone, which is all
    `CoordinateDescent` needs. A penalty that is not separable (`GroupLasso`) sets
    `separable = False` and is solved by `ProximalGradient`.
    `critical_lambda(grad)`: the smallest λ at which a point whose penalised coefficients are 0
    is stationary, given ∇f there (the top of a λ path); the default is
    max_k |grad_k| / thresholds_k at λ = 1.
    `check(p)`: raise `ValueError` (naming the argument) for values known before tracing.
    """

    lam: eqx.AbstractVar[Array]
    separable: ClassVar[bool] = True

    @abc.abstractmethod
    def __call__(self, beta: Array) -> Array: ...

    @abc.abstractmethod
    def prox(self, beta: Array, step) -> Array: ...

    @abc.abstractmethod
    def kkt_residual(self, beta: Array, grad: Array) -> Array: ...

    @abc.abstractmethod
    def thresholds(self) -> Array: ...

    def coordinate_prox(self, z: Array, step, k) -> Array:
        raise NotImplementedError(f"{type(self).__name__} is not separable: it has no coordinate prox.")

    def with_lam(self, lam) -> AbstractPenalty:
        return eqx.tree_at(lambda pen: pen.lam, self, lam)

    def critical_lambda(self, grad: Array) -> Array:
        unit = jnp.broadcast_to(self.with_lam(jnp.ones_like(self.lam)).thresholds(), grad.shape)
        ratio = jnp.where(unit > 0, jnp.abs(grad) / jnp.where(unit > 0, unit, 1.0), 0.0)
        return jnp.max(jnp.where(jnp.isfinite(ratio), ratio, 0.0))

    def check(self, p: int) -> None:
        lam = _concrete(self.lam)
        if lam is not None and (np.any(np.isnan(lam)) or np.any(lam < 0)):
            raise ValueError(f"`lam` must be ≥ 0; got {lam}.")


class _WeightedSeparable(AbstractPenalty):
    """Shared fields of the separable penalties: per-coordinate weights w_k (inf keeps β_k at 0)
    and a mask U of unpenalised coordinates; the per-coordinate level is λ_k = λ w_k (0 on U)."""

    def levels(self) -> Array:
        """λ w_k per coordinate (0 on U); a scalar when neither weights nor U are given."""
        if self.weights is None:
            t = self.lam
        else:
            # w_k = inf drops β_k at any λ, λ = 0 included (0·inf would be NaN); the inner where
            # keeps d/dλ of the dropped entries finite, so gradients in λ stay NaN-free.
            dropped = jnp.isinf(self.weights)
            t = jnp.where(dropped, jnp.inf, self.lam * jnp.where(dropped, 1.0, self.weights))
        return t if self.unpenalized is None else jnp.where(self.unpenalized, 0.0, t)

    def check(self, p: int) -> None:
        super().check(p)
        for name in ("weights", "unpenalized"):
            value = getattr(self, name)
            if value is not None and jnp.shape(value)[-1:] != (p,):
                raise ValueError(f"`{name}` must have length p = {p}; got shape {jnp.shape(value)}.")
        weights = _concrete(self.weights)
        if weights is not None and (np.any(np.isnan(weights)) or np.any(weights < 0)):
            raise ValueError("`weights` must be ≥ 0 (inf drops a coefficient); got NaN or < 0.")

    def coordinate_prox(self, z, step, k):
        levels = self.levels()
        level = levels if jnp.ndim(levels) == 0 else levels[k]
        return self._scalar_prox(z, step, level)

    def thresholds(self):
        return self.levels()

    def __call__(self, beta):
        t = jnp.broadcast_to(self.levels(), beta.shape)
        # where() keeps 0·inf (a dropped coefficient sitting at 0) from becoming NaN.
        return jnp.sum(jnp.where(beta == 0, 0.0, self._value(jnp.abs(beta), jnp.where(beta == 0, 0.0, t))))

    def prox(self, beta, step):
        return self._scalar_prox(beta, step, jnp.broadcast_to(self.levels(), beta.shape))

    def kkt_residual(self, beta, grad):
        """Per coordinate: dist(−grad_k, ∂P_k(β_k)); at β_k = 0 the subdifferential is
        [−thresholds_k, thresholds_k], elsewhere the slope of P_k along |β_k| (times sign β_k)."""
        t = jnp.broadcast_to(self.levels(), beta.shape)
        at_zero = jnp.maximum(jnp.abs(grad) - jnp.broadcast_to(self.thresholds(), beta.shape), 0.0)
        # where() keeps a dropped coefficient (level inf) sitting at 0 from making NaN.
        slope = jnp.where(beta == 0, 0.0, self._slope(jnp.abs(beta), jnp.where(beta == 0, 0.0, t)))
        return jnp.where(beta == 0, at_zero, jnp.abs(grad + slope * jnp.sign(beta)))

    @abc.abstractmethod
    def _scalar_prox(self, z, step, level): ...

    @abc.abstractmethod
    def _value(self, magnitude, level):
        """P_k(β_k) at |β_k| = magnitude > 0, for the level λ_k = λ w_k."""

    @abc.abstractmethod
    def _slope(self, magnitude, level):
        """d P_k / d|β_k| at |β_k| = magnitude > 0, for the level λ_k = λ w_k."""

    @staticmethod
    def _check_above(name: str, value, bound: float) -> None:
        value = _concrete(value)
        if value is not None and not np.all(value > bound):
            raise ValueError(f"`{name}` must be > {bound:g}; got {value}.")


def intercept_mask(size: int) -> Array:
    """The unpenalised mask of a design with an intercept column first: True at 0 only."""
    return jnp.zeros(size, bool).at[0].set(True)


class FreeLeading(AbstractPenalty):
    """`penalty` on the coordinates after the first `n_free`, which stay unpenalised: how an
    estimator puts a user's penalty on β (length p) of a design with an intercept column first
    (length p + 1). Separable exactly when `penalty` is.

    **Arguments:** `penalty` (any `AbstractPenalty` on the last p coordinates), `n_free` (static),
    `size` (p + n_free, static)."""

    lam: Array  # the inner penalty's λ (read only; `with_lam` sets both)
    penalty: AbstractPenalty
    n_free: int = eqx.field(static=True)
    size: int = eqx.field(static=True)

    def __init__(self, penalty: AbstractPenalty, n_free: int, size: int):
        self.lam, self.penalty, self.n_free, self.size = penalty.lam, penalty, n_free, size

    @property
    def separable(self) -> bool:
        return self.penalty.separable

    def __call__(self, beta):
        return self.penalty(beta[self.n_free:])

    def prox(self, beta, step):
        return jnp.concatenate([beta[: self.n_free], self.penalty.prox(beta[self.n_free:], step)])

    def kkt_residual(self, beta, grad):
        return jnp.concatenate([jnp.abs(grad[: self.n_free]),
                                self.penalty.kkt_residual(beta[self.n_free:], grad[self.n_free:])])

    def thresholds(self):
        inner = jnp.broadcast_to(self.penalty.thresholds(), (self.size - self.n_free,))
        return jnp.concatenate([jnp.zeros(self.n_free, inner.dtype), inner])

    def coordinate_prox(self, z, step, k):
        inner = self.penalty.coordinate_prox(z, step, jnp.maximum(k - self.n_free, 0))
        return jnp.where(k < self.n_free, z, inner)

    def with_lam(self, lam):
        return FreeLeading(self.penalty.with_lam(lam), self.n_free, self.size)

    def critical_lambda(self, grad):
        return self.penalty.critical_lambda(grad[self.n_free:])

    def check(self, p: int) -> None:
        self.penalty.check(p - self.n_free)


class L1(_WeightedSeparable):
    """Weighted Lasso penalty λ Σ_{k ∉ U} w_k |β_k|.

    **Arguments:**

    - `lam`: λ ≥ 0 (an array, so it can be traced, vmapped and differentiated).
    - `weights`: per-coefficient w_k ≥ 0 (length p), default 1. w_k = inf keeps β_k at 0.
    - `unpenalized`: boolean mask (length p) of the set U of unpenalised coefficients.
    """

    lam: Array
    weights: Array | None = None
    unpenalized: Array | None = None

    def _value(self, magnitude, level):
        return level * magnitude

    def _scalar_prox(self, z, step, level):
        return soft_threshold(z, step * level)

    def _slope(self, magnitude, level):
        return level


class ElasticNet(_WeightedSeparable):
    """Elastic net λ Σ_{k ∉ U} w_k (α |β_k| + (1 − α) β_k² / 2) (glmnet's parameterisation).

    **Arguments:** `lam` (λ ≥ 0), `l1_ratio` (α ∈ (0, 1]; 1 is the Lasso), `weights`,
    `unpenalized` as for `L1`.
    """

    lam: Array
    l1_ratio: Array = eqx.field(default=0.5)
    weights: Array | None = None
    unpenalized: Array | None = None

    def thresholds(self):
        return self.l1_ratio * self.levels()

    def _value(self, magnitude, level):
        return level * (self.l1_ratio * magnitude + 0.5 * (1.0 - self.l1_ratio) * magnitude**2)

    def _scalar_prox(self, z, step, level):
        # ½(b − z)² + step·level·(α|b| + (1−α)b²/2) is minimised by a soft threshold, then a shrink.
        return soft_threshold(z, step * level * self.l1_ratio) / (1.0 + step * level * (1.0 - self.l1_ratio))

    def _slope(self, magnitude, level):
        return level * (self.l1_ratio + (1.0 - self.l1_ratio) * magnitude)

    def check(self, p):
        super().check(p)
        self._check_above("l1_ratio", self.l1_ratio, 0.0)
        ratio = _concrete(self.l1_ratio)
        if ratio is not None and not np.all(ratio <= 1):
            raise ValueError(f"`l1_ratio` must be in (0, 1]; got {ratio}.")


class MCP(_WeightedSeparable):
    """Minimax concave penalty (Zhang 2010), per coordinate with λ_k = λ w_k:
    P(b) = λ_k|b| − b²/(2γ) for |b| ≤ γλ_k, γλ_k²/2 beyond. Non-convex: it stops shrinking large
    coefficients, which removes the Lasso's bias. The prox with step t (firm thresholding) is
    defined for γ > t: with `CoordinateDescent` the step is 1/H_k (H_k the coordinate curvature,
    1 for columns scaled to unit mean square), so γ > 1 there, as in ncvreg (default 3).

    **Arguments:** `lam`, `gamma` (γ > 0), `weights`, `unpenalized` as for `L1`.
    """

    lam: Array
    gamma: Array = eqx.field(default=3.0)
    weights: Array | None = None
    unpenalized: Array | None = None

    def _value(self, magnitude, level):
        inner = level * magnitude - magnitude**2 / (2.0 * self.gamma)
        return jnp.where(magnitude <= self.gamma * level, inner, 0.5 * self.gamma * level**2)

    def _scalar_prox(self, z, step, level):
        a = jnp.abs(z)
        firm = soft_threshold(z, step * level) / (1.0 - step / self.gamma)
        return jnp.where(a > self.gamma * level, z, firm)

    def _slope(self, magnitude, level):
        return jnp.maximum(level - magnitude / self.gamma, 0.0)

    def check(self, p):
        super().check(p)
        self._check_above("gamma", self.gamma, 0.0)


class SCAD(_WeightedSeparable):
    """Smoothly clipped absolute deviation (Fan & Li 2001), per coordinate with λ_k = λ w_k:
    P'(|b|) = λ_k for |b| ≤ λ_k, (aλ_k − |b|)/(a − 1) up to aλ_k, 0 beyond. The prox with step t
    is defined for a > 1 + t (with `CoordinateDescent`, step 1/H_k: a > 2 on unit-scale
    columns; the default a = 3.7 is Fan & Li's).

    **Arguments:** `lam`, `a` (> 1), `weights`, `unpenalized` as for `L1`.
    """

    lam: Array
    a: Array = eqx.field(default=3.7)
    weights: Array | None = None
    unpenalized: Array | None = None

    def _value(self, magnitude, level):
        x, t, a = magnitude, level, self.a
        middle = (2.0 * a * t * x - x * x - t * t) / (2.0 * (a - 1.0))
        return jnp.where(x <= t, t * x, jnp.where(x <= a * t, middle, 0.5 * (a + 1.0) * t * t))

    def _scalar_prox(self, z, step, level):
        x, a = jnp.abs(z), self.a
        middle = jnp.sign(z) * jnp.maximum((a - 1.0) * x - step * a * level, 0.0) / (a - 1.0 - step)
        inner = soft_threshold(z, step * level)
        return jnp.where(x <= level * (1.0 + step), inner, jnp.where(x <= a * level, middle, z))

    def _slope(self, magnitude, level):
        return jnp.where(magnitude <= level, level, jnp.maximum(self.a * level - magnitude, 0.0) / (self.a - 1.0))

    def check(self, p):
        super().check(p)
        self._check_above("a", self.a, 1.0)


class GroupLasso(AbstractPenalty):
    """Group Lasso λ Σ_g w_g ‖β_g‖₂ over column groups (for example the dummies of one factor):
    a group enters or leaves the model as a whole.

    **Arguments:**

    - `lam`: λ ≥ 0.
    - `groups`: group id per coefficient (length p, integers 0..G−1); −1 leaves a coefficient
      unpenalised.
    - `n_groups`: G (static: the number of segments).
    - `weights`: per group w_g ≥ 0 (length G); default sqrt(group size).

    Not separable: solve it with `ProximalGradient` (`CoordinateDescent` says so).
    """

    lam: Array
    groups: Array
    n_groups: int = eqx.field(static=True)
    weights: Array | None = None
    separable: ClassVar[bool] = False

    def _group_weights(self):
        if self.weights is not None:
            return self.weights
        sizes = jax.ops.segment_sum(jnp.ones(self.groups.shape), self._segments(), self.n_groups + 1)[: self.n_groups]
        return jnp.sqrt(sizes)

    def _segments(self):
        # The unpenalised coordinates (−1) go to an extra segment that is ignored.
        return jnp.where(self.groups < 0, self.n_groups, self.groups)

    def _group_norms(self, v):
        return jnp.sqrt(jax.ops.segment_sum(v * v, self._segments(), self.n_groups + 1)[: self.n_groups])

    def _per_coordinate(self, per_group, fill):
        return jnp.where(self.groups < 0, fill, jnp.concatenate([per_group, jnp.zeros(1, per_group.dtype)])[
            self._segments()])

    def thresholds(self):
        return self._per_coordinate(self.lam * self._group_weights(), 0.0)

    def __call__(self, beta):
        norms = self._group_norms(beta)
        # where() keeps λ = inf times a group at 0 (the start of a path) from becoming NaN.
        return jnp.sum(jnp.where(norms == 0, 0.0, self.lam * self._group_weights() * norms))

    def prox(self, beta, step):
        norms = self._group_norms(beta)
        level = step * self.lam * self._group_weights()
        factor = jnp.where(norms > level, 1.0 - level / jnp.where(norms > 0, norms, 1.0), 0.0)
        return beta * self._per_coordinate(factor, 1.0)

    def kkt_residual(self, beta, grad):
        level = self.lam * self._group_weights()
        beta_norms = self._group_norms(beta)
        at_zero = jnp.maximum(self._group_norms(grad) - level, 0.0)
        direction = beta / self._per_coordinate(jnp.where(beta_norms > 0, beta_norms, 1.0), 1.0)
        off = self._group_norms(grad + self._per_coordinate(level, 0.0) * direction)
        group_residual = jnp.where(beta_norms == 0, at_zero, off)
        return self._per_coordinate(group_residual, 0.0) + jnp.where(self.groups < 0, jnp.abs(grad), 0.0)

    def critical_lambda(self, grad):
        return jnp.max(self._group_norms(grad) / self._group_weights())

    def check(self, p):
        super().check(p)
        groups = _concrete(self.groups)
        if groups is not None:
            if groups.shape != (p,) or not np.issubdtype(groups.dtype, np.integer):
                raise ValueError(f"`groups` must be p = {p} integers (group ids, −1 unpenalised); got {groups.shape}.")
            if groups.max(initial=-1) >= self.n_groups or groups.min(initial=0) < -1:
                raise ValueError(f"`groups` ids must lie in −1..n_groups−1 = {self.n_groups - 1}.")
        weights = _concrete(self.weights)
        if weights is not None and (weights.shape != (self.n_groups,) or np.any(~(weights > 0))):
            raise ValueError(f"`weights` must be n_groups = {self.n_groups} positive numbers.")


class L0(eqx.Module):
    """Sparsity constraint ‖β_{∉U}‖₀ ≤ k (best subset), solved by `BestSubset`.

    **Arguments:**

    - `k`: the number of penalised coefficients allowed to be nonzero (a Python int).
    - `unpenalized`: boolean mask (length p) of coefficients always in the model.
    """

    k: int = eqx.field(static=True)
    unpenalized: Array | None = None

    def check(self, p: int) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int | np.integer):
            raise ValueError(f"`k` must be an integer; got {self.k!r}.")
        n_free = p - (0 if self.unpenalized is None else int(np.sum(self.unpenalized)))
        if not 0 <= self.k <= n_free:
            raise ValueError(
                f"`k` must be between 0 and the number of penalised coefficients ({n_free}); got k = {self.k}."
            )


def check_user_penalty(penalty, p: int, **lasso_only) -> None:
    """`penalty` (None or an `AbstractPenalty` for p coefficients) as an estimator's `penalty=`:
    its known values checked, and refused together with the Lasso-only arguments in `lasso_only`
    that are set (not None, or a string rule for `lam`)."""
    if penalty is None:
        return
    if not isinstance(penalty, AbstractPenalty):
        raise ValueError(f"`penalty` must be a jaxlmm.AbstractPenalty (e.g. jaxlmm.MCP(1.0)); got {penalty!r}.")
    given = [name for name, value in lasso_only.items()
             if value is not None and (name != "lam" or isinstance(value, str))]
    if given:
        raise ValueError(f"`penalty` replaces the Lasso: drop {', '.join(f'`{n}`' for n in given)} (they belong to "
                         "the Lasso), or express them in the penalty.")
    penalty.check(p)
