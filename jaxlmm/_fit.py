"""The fit protocol: what every estimator returns, with the same names and meanings."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings

import numpy as np

from ._data import LMMData
from ._precision import in_float64
from ._scale import DataScale
from ._solution import RESULTS
from ._validate import check_data, check_same_data


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tuning:
    """How the hyperparameters were chosen.

    - `parameters`: the grid of each tuned hyperparameter ({"a": (n_a,), "lam": (n_a, n_λ)}, …).
    - `criterion`: what was minimised or maximised ("cv error", "bic", "ebic", "gic",
      "laplace evidence").
    - `values`: the criterion per grid point (None when the search had no grid).
    - `fold_values`: per fold and grid point (cross-validation only).
    - `choice`: the chosen values, by name.
    """

    parameters: dict
    criterion: str
    values: np.ndarray | None
    fold_values: np.ndarray | None
    choice: dict


def _format(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    array = np.asarray(value, float)
    if array.ndim == 0:
        return f"{float(array):.4g}"
    return np.array2string(array, precision=4, separator=", ", max_line_width=60)


# The records a saved fit may hold, by class name (never a module path, so moving a module breaks
# no saved file): every `Fit` subclass, and the classes marked `@savable`. Read by `jaxlmm._persist`.
SAVABLE: dict[str, type] = {}


def savable(cls: type) -> type:
    """Class decorator: `cls` may be part of a saved fit, named by its class name (which must be
    unique among savable records)."""
    if SAVABLE.setdefault(cls.__name__, cls) is not cls:
        raise TypeError(f"two savable records named {cls.__name__}")
    return cls


@dataclasses.dataclass(frozen=True, kw_only=True)
class Fit:
    """The fields and methods every jaxlmm fit shares (`QuasiFit`, `LMMLassoFit`, `SHELFit`,
    `EBRidgeFit` add their method-specific ones).

    For the model y_i = β_0 + X_i β + Z_i b_i + ε_i:

    - `coef` β̂ (p, on the caller's columns; n_λ × p for an explicit λ path), `intercept` β̂_0,
      `support` (indices of the nonzero β̂_k), `feature_names`, `groups` (the cluster labels,
      the row order of `ranef`).
    - `sigma2` σ̂², `psi` Ψ̂ (q × q) and `ranef` the BLUPs b̂_i (n × q), where the method
      estimates them (None otherwise).
    - `result` (the name of a `jaxlmm.RESULTS` code, "successful" when the optimum was reached and
      every reported number is finite; `converged` is `result == "successful"`), `n_iter`
      (iterations of the final solve, int; 0 where the solver does not report them).
    - `n_obs`, `n_clusters`; `inference` (an `InferenceTable`, or None);
      `data_fingerprint` (`LMMData.fingerprint()` of the data, which post-fit functions check);
      `design` (the `FormulaDesign` when fitted from a formula and a DataFrame, else None).

    Properties that each method defines: `method` (its name), `hyperparameters` (the values
    used or chosen), `criteria` (log-likelihood, information criteria, evidence, where defined),
    `tuning` (a `Tuning`, or None when nothing was tuned).
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        savable(cls)


    coef: np.ndarray
    intercept: float
    support: np.ndarray
    feature_names: tuple
    groups: tuple
    sigma2: float | None
    psi: np.ndarray | None
    ranef: np.ndarray | None
    result: str
    n_iter: int
    n_obs: int
    n_clusters: int
    inference: object | None = None  # an InferenceTable
    data_fingerprint: str | None = None
    design: object | None = None  # a FormulaDesign when fitted from a formula

    # How each field maps from the fitting scale to the caller's (`on_caller_scale`).
    UNITS = {"coef": "coef", "intercept": "y", "sigma2": "y2", "psi": "y2", "ranef": "y"}
    method = "fit"
    penalized = True  # False for fit_lmm: nothing to debias, its Wald table is already valid

    @property
    def converged(self) -> bool:
        """`result == "successful"` (the one outcome channel is `result`)."""
        return self.result == "successful"

    @property
    def hyperparameters(self) -> dict:
        return {}

    @property
    def criteria(self) -> dict:
        return {}

    @property
    def tuning(self) -> Tuning | None:
        return None

    def proxy_ratio(self) -> float:
        """The a of Σ_a = blockdiag(a Z_i Z_iᵀ + I) that post-fit inference whitens by: for a
        likelihood fit tr(Ψ̂) / (q σ̂²), so that Σ_a ∝ V_i when Ψ̂ is a multiple of I (any a ≥ 0
        keeps the cluster-robust inference valid; this one makes it efficient)."""
        if self.psi is None or self.sigma2 is None or not self.sigma2 > 0:
            raise ValueError(f"`fit` ({self.method}) has no variance components to whiten by.")
        psi = np.atleast_2d(self.psi)
        return float(np.trace(psi) / (psi.shape[0] * self.sigma2))

    def predict(self, X, groups=None, Z=None) -> np.ndarray:
        """ŷ = β̂_0 + X β̂, plus Z_t b̂_i for every row t whose group label i was in the fit; rows of
        new groups (and all rows when `groups` is None) get the marginal prediction β̂_0 + x_tᵀβ̂,
        with a warning that says how many. Labels match as they are or by their text (the group
        7 of the fit is the "7" of a table read as text).

        **Arguments:** `X` (N × p), `groups` (N labels, optional), `Z` (N × q; default a column of
        ones, the random intercept). For a fit made from a formula, `X` may instead be a
        DataFrame with the formula's columns: X, Z and the groups are built from it as they were
        for the fit (then `groups` and `Z` must not be given).
        """
        if self.design is not None and hasattr(X, "columns"):
            if groups is not None or Z is not None:
                raise ValueError("`groups` and `Z` come from the DataFrame for a formula fit; do not pass them.")
            X, Z, groups = self.design.matrices(X)
        X = np.asarray(X, float)
        p = np.shape(self.coef)[-1]
        if X.ndim != 2 or X.shape[1] != p:
            raise ValueError(f"`X` must be N × p with p = {p} columns; got shape {X.shape}.")
        out = X @ np.asarray(self.coef).T + self.intercept
        if groups is None or self.ranef is None:
            return out
        groups = list(np.asarray(groups).ravel()) if hasattr(groups, "shape") else list(groups)
        if len(groups) != X.shape[0]:
            raise ValueError(f"`groups` has {len(groups)} labels but `X` has {X.shape[0]} rows.")
        q = self.ranef.shape[1]
        Z = np.ones((X.shape[0], 1)) if Z is None else np.asarray(Z, float)
        if Z.shape != (X.shape[0], q):
            raise ValueError(f"`Z` must be N × q = {X.shape[0]} × {q} (the fit's random effects); got {Z.shape}.")
        rows = _group_rows(self.groups, groups)
        known = rows >= 0
        if not known.all():
            new = sorted({str(g) for g, k in zip(groups, known) if not k})
            warnings.warn(f"predict: {np.sum(~known)} of {len(rows)} rows belong to {len(new)} group(s) that were not "
                          f"in the fit ({', '.join(new[:5])}{', …' if len(new) > 5 else ''}); they get the marginal "
                          "prediction β̂_0 + xᵀβ̂, without random effects.", UserWarning, stacklevel=2)
        out = np.array(out, float)
        out[known] += np.sum(Z[known] * self.ranef[rows[known]], axis=1)
        return out

    def to_pandas(self):
        """The coefficients as a DataFrame indexed by name ("intercept" first): `coef`,
        `selected`, and the inference columns (NaN for coefficients without a row)."""
        import pandas as pd

        coef = np.asarray(self.coef)
        if coef.ndim != 1:
            raise ValueError("`coef` holds a λ path; `to_pandas` needs one fit.")
        frame = pd.DataFrame({"coef": np.concatenate([[self.intercept], coef]),
                              "selected": np.concatenate([[True], coef != 0])},
                             index=pd.Index(("intercept", *self.feature_names), name="term"))
        if self.inference is not None:
            table = self.inference
            for column in table.COLUMNS:
                values = np.full(len(frame), np.nan)
                values[np.asarray(table.coords) + 1] = getattr(table, column)
                frame[column] = values
        return frame

    def summary(self) -> str:
        """A statsmodels-style text summary: the method, the data, the hyperparameters, the
        selected coefficients (with the inference columns when there are any), the variance
        components, the criteria and the solver's status."""
        width = 78
        lines = ["=" * width, f"jaxlmm: {self.method}".center(width), "=" * width]
        p = np.shape(self.coef)[-1]
        support = self.support if isinstance(self.support, np.ndarray) else np.asarray([], int)
        lines.append(f"observations: {self.n_obs}   clusters: {self.n_clusters}   p: {p}   "
                     f"selected: {len(support)}")
        if self.design is not None:
            lines.append(f"formula: {self.design.formula}")
            if self.design.n_dropped:
                lines.append(f"rows dropped for missing values: {self.design.n_dropped}")
        for name, value in self.hyperparameters.items():
            lines.append(f"{name:>22}: {_format(value)}")
        tuning = self.tuning
        if tuning is not None:
            grid = ", ".join(f"{k} ({np.size(v)} values)" for k, v in tuning.parameters.items())
            lines.append(f"{'tuned':>22}: {grid or '—'} by {tuning.criterion}")
        if self.sigma2 is not None:
            lines.append(f"{'residual variance σ²':>22}: {_format(self.sigma2)}")
        if self.psi is not None:
            lines.append(f"{'random effects Ψ':>22}: {_format(self.psi)}")
        for name, value in self.criteria.items():
            lines.append(f"{name:>22}: {_format(value)}")
        status = "converged" if self.converged else "NOT converged"
        lines.append(f"{'result':>22}: {self.result} ({status}, {self.n_iter} iterations)")
        if np.ndim(self.coef) == 1:
            lines.append("-" * width)
            frame = self.to_pandas()
            frame = frame[frame["selected"]].drop(columns="selected")
            lines.append(frame.to_string(float_format=lambda v: f"{v:.4g}"))
        if self.inference is not None:
            lines.append(f"inference: {self.inference.method}, level {self.inference.level}")
        lines.append("=" * width)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def save(self, path):
        """Write the fit to `path` as portable JSON (no pickle); `jaxlmm.load_fit(path)` reads it
        back with every field, and `predict` works on the loaded fit. A formula fit's file holds
        the fitted rows of the formula's variables (formulaic's state is rebuilt from them)."""
        from ._persist import save_fit

        return save_fit(self, path)


def _group_rows(fitted: tuple, labels) -> np.ndarray:
    """The row of `ranef` for each label (−1 for a group not in the fit). Labels match as they
    are, or else by their text, so that the group 7 of a fit made from integers is the group "7"
    of a table read with text columns (or 7.0 of one with floats); a text that two fitted labels
    share (7 and "7") matches neither."""
    index = {label: i for i, label in enumerate(fitted)}
    by_text: dict = {}
    for i, label in enumerate(fitted):
        key = _label_text(label)
        by_text[key] = -1 if key in by_text else i
    rows = []
    for label in labels:
        label = label.item() if isinstance(label, np.generic) else label
        row = index.get(label) if _hashable(label) else None
        rows.append(row if row is not None else by_text.get(_label_text(label), -1))
    return np.asarray(rows, int)


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _label_text(label) -> str:
    if isinstance(label, float) and label.is_integer():
        return str(int(label))
    return str(label).strip()


def single_fit(fit, data: LMMData) -> tuple[np.ndarray, float, float]:
    """(β̂, β̂_0, a) of a fit at one λ, checked against `data` (the data it was fitted on), for the
    post-fit functions that whiten by Σ_a (`debias`, `variance_components`); a `ValueError`
    saying why otherwise."""
    check_data(data)
    if not isinstance(fit, Fit):
        raise ValueError(
            f"`fit` must be a jaxlmm fit (fit_quasi, fit_lmmlasso, fit_eb_ridge); got {type(fit).__name__}."
        )
    if not fit.penalized:
        raise ValueError(f"`fit` is unpenalised ({fit.method}): its estimates need no debiasing, and its "
                         "`inference` table already holds Wald intervals and its `psi`, `sigma2` the variance "
                         "components.")
    coef = np.asarray(fit.coef)
    if coef.ndim != 1:
        raise ValueError("`fit` holds a λ path (coef is 2-D); refit at one λ first.")
    if coef.shape[0] != data.n_features:
        raise ValueError(
            f"`fit` has {coef.shape[0]} coefficients but `data` has p = {data.n_features} columns: "
            "pass the data the model was fitted on."
        )
    check_same_data(fit, data)
    return coef, float(fit.intercept), fit.proxy_ratio()


def on_caller_scale(record, scale: DataScale, **factors):
    """`record` (a `Fit`, or a record a fit holds) with every field its class declares in `UNITS`
    taken from the fitting scale (y / s_y, X / s_x: `jaxlmm._scale`) to the caller's: multiplied
    by `scale.factor(unit)`, a field that holds a record with `UNITS` mapped in turn, None kept.
    `factors` overrides a field whose unit depends on the fit (a λ under another rule, a
    coefficient path with an intercept column): a number or array to multiply by, a function of
    the value (an additive shift of a log-likelihood), or for a nested record a dict of its own
    overrides."""
    if scale.identity:  # every factor is 1 and every shift 0 (they derive from s_y, s_x): no eager array ops
        return record
    changes = {}
    for name, unit in type(record).UNITS.items():
        value, factor = getattr(record, name), factors.get(name)
        if value is None:
            continue
        if hasattr(type(value), "UNITS"):
            changes[name] = on_caller_scale(value, scale, **(factor or {}))
            continue
        if factor is None and unit is None:
            raise TypeError(f"{type(record).__name__}.{name} has no fixed unit: the caller must give its factor.")
        with np.errstate(over="ignore", invalid="ignore"):  # y·1e200: a nonfinite fit, which `finish` reports
            if callable(factor):
                changes[name] = factor(value)
                continue
            for each in scale.factor(unit) if factor is None else (factor,):
                value = _times(value, each)
            changes[name] = value
    if dataclasses.is_dataclass(record):
        return dataclasses.replace(record, **changes)
    import equinox as eqx  # noqa: PLC0415 (in-JIT records are equinox modules)

    names = tuple(changes)
    return eqx.tree_at(lambda r: tuple(getattr(r, n) for n in names), record, tuple(changes[n] for n in names))


def _times(value, factor):
    """value · factor in value's own kind: a JAX array stays one (in its dtype), a float a float."""
    if isinstance(value, float | int) and not isinstance(value, bool) and np.ndim(factor) == 0:
        return float(value) * float(factor)
    if isinstance(value, np.ndarray | np.generic):
        return value * np.asarray(factor)
    import jax.numpy as jnp  # noqa: PLC0415

    return value * jnp.asarray(factor, value.dtype)


def finish(fit: Fit, throw: bool) -> Fit:
    """What every `fit_*` returns: `fit`, or with `throw=True` a `RuntimeError` carrying the
    `RESULTS` message when the fit did not succeed (with `throw=False` the fit's `result`
    leaves the decision to the caller). `successful` is kept only where every reported
    estimate and criterion is finite and σ̂² > 0: a fit whose numbers overflow or underflow float64
    on the caller's scale (a y of scale 1e200 has a variance of 1e400) becomes `nonfinite`, with a
    warning that says which ones and what to change."""
    unusable = _unusable(fit)
    if unusable and fit.result == "successful":
        warnings.warn(f"{fit.method}: {', '.join(unusable)} cannot be represented in float64 on the data's scale "
                      "(overflow or underflow); the fit is reported as 'nonfinite'. Rescale y (and X) by a power "
                      "of ten and fit again.", RuntimeWarning, stacklevel=3)
        fit = dataclasses.replace(fit, result="nonfinite")
    if throw and fit.result != "successful":
        message = RESULTS[getattr(RESULTS, fit.result)]
        raise RuntimeError(f"{fit.method} did not succeed ({fit.result}): {message}")
    return fit


def _unusable(fit: Fit) -> list:
    """The names of the reported numbers that are not finite (and σ̂² = 0, an underflow: a
    Gaussian fit's residual variance is positive)."""
    values = {"coef": fit.coef, "intercept": fit.intercept, "sigma2": fit.sigma2, "psi": fit.psi, "ranef": fit.ranef}
    values.update({name: value for name, value in fit.criteria.items() if not isinstance(value, str)})
    bad = [name for name, value in values.items()
           if value is not None and not np.all(np.isfinite(np.asarray(value, float)))]
    if fit.sigma2 is not None and fit.sigma2 == 0 and "sigma2" not in bad:
        bad.append("sigma2 (= 0)")
    return bad


def accepts_formula(fit_function):
    """Give a `fit_*(data, ...)` the formula route: `fit_*(df, formula="y ~ x + (1 | g)", ...)`.

    `data` may then be a pandas DataFrame (with `formula`), or an `LMMData` made by
    `LMMData.from_formula`. The formula decides the intercept ("0 +" removes it; methods that
    always fit one refuse such a formula) and Ψ's structure where the method has a `structure`
    argument (`(x | g)` unstructured, `(x || g)` diagonal), unless the caller passes them; the fit
    keeps the `FormulaDesign` for names, summaries and `predict(df)`. The fit runs in float64
    (`in_float64`)."""
    parameters = inspect.signature(fit_function).parameters
    # Declared by the function itself, so that its signature (and the API reference) names it.
    if "formula" not in parameters or parameters["formula"].kind is not inspect.Parameter.KEYWORD_ONLY:
        raise TypeError(f"{fit_function.__name__} must declare a keyword-only `formula: str | None = None`.")

    @functools.wraps(fit_function)
    def fit(data, *args, formula=None, **kwargs):
        if formula is not None:
            if isinstance(data, LMMData):
                raise ValueError("`formula` goes with a pandas DataFrame `data`; this `data` is already an LMMData.")
            data = LMMData.from_formula(formula, data)
        elif hasattr(data, "columns") and not isinstance(data, LMMData):
            raise ValueError("`data` is a DataFrame: pass `formula=` (e.g. 'y ~ x1 + x2 + (1 | group)').")
        design = getattr(data, "design", None)
        if design is None:
            return fit_function(data, *args, **kwargs)
        if not design.intercept:
            if "intercept" not in parameters:
                raise ValueError(f"`formula` removes the intercept, but {fit_function.__name__} always fits one.")
            if kwargs.get("intercept", False):
                raise ValueError("`formula` removes the intercept (0 + … or - 1) but `intercept=True` was passed.")
            kwargs["intercept"] = False
        if "structure" in parameters and len(design.random_names) > 1:  # with q = 1 every structure is ψ I
            kwargs.setdefault("structure", design.structure)
        return dataclasses.replace(fit_function(data, *args, **kwargs), design=design)

    fit.__doc__ = (fit_function.__doc__ or "") + _FORMULA_NOTE
    return in_float64(fit)


_FORMULA_NOTE = """
    **Formulas:** `data` may be a pandas DataFrame with `formula="y ~ x1 + x2 + (1 + t | g)"`
    (lme4 syntax through formulaic; see `LMMData.from_formula`), or an `LMMData` made by
    `from_formula`. The formula sets the intercept and, where there is a `structure` argument,
    Ψ's structure; the fit keeps its names and `predict` accepts a DataFrame.

    **Precision:** the fit is computed in float64 whatever JAX's `jax_enable_x64` flag (inside
    `jax.enable_x64(True)`, which changes nothing outside the call), on a float64 copy of `data`.
"""
