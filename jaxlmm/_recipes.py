"""Design columns in a closed vocabulary: how each column of a formula's X and Z is computed
from named DataFrame columns, in a form a saved fit can store and rebuild without evaluating
anything.

A column is a product of `DesignFactor`s (the empty product is the intercept's 1); a factor is
the value of a numeric column, optionally through one of `TRANSFORMS`, or the indicator of one
level of a categorical column. formulaic names the columns it expands (`x`, `g[T.b]`,
`x:g[T.b]`, `np.log(w)`, `center(x)`, `I(x ** 2)`, `C(h)[T.2]`); `derive` reads those names
back into recipes and keeps them only if they reproduce every fitted column on the fitting
rows. A formula with anything else (`poly(x, 2)`, `I(x * w + 1)`, sum contrasts) has no recipes:
it predicts on new DataFrames in the session that fitted it (through formulaic) and, once
saved, on arrays only."""

from __future__ import annotations

import dataclasses
import re

import numpy as np

# name → (function of the column and the constants, how formulaic writes it)
TRANSFORMS = {
    "identity": lambda x, c: x,
    "log": lambda x, c: np.log(x),
    "log2": lambda x, c: np.log2(x),
    "log10": lambda x, c: np.log10(x),
    "sqrt": lambda x, c: np.sqrt(x),
    "exp": lambda x, c: np.exp(x),
    "center": lambda x, c: x - c[0],
    "scale": lambda x, c: (x - c[0]) / c[1],
    "power": lambda x, c: x ** c[0],
}
_CALLS = {"np.log": "log", "log": "log", "np.log2": "log2", "log2": "log2", "np.log10": "log10", "log10": "log10",
          "np.sqrt": "sqrt", "sqrt": "sqrt", "np.exp": "exp", "exp": "exp", "center": "center", "scale": "scale"}
_CALL = re.compile(r"^([A-Za-z_][\w.]*)\((.+)\)$")
_POWER = re.compile(r"^I\((.+?) ?\*\* ?(\d+)\)$")
_LEVEL = re.compile(r"^(.+)\[(T\.)?(.*)\]$")


@dataclasses.dataclass(frozen=True)
class DesignFactor:
    """One factor of a design column: `TRANSFORMS[transform](frame[column], constants)`, or, when
    `level` is set, the indicator frame[column] == level (compared as text)."""

    column: str
    level: str | None = None
    transform: str = "identity"
    constants: tuple = ()

    def evaluate(self, frame) -> np.ndarray:
        values = frame[self.column]
        if self.level is not None:
            return (values.map(str) == self.level).to_numpy(float)
        try:
            numbers = values.to_numpy(float)
        except (TypeError, ValueError):
            raise ValueError(f"`data` column {self.column!r} must be numeric for this fit; it holds "
                             f"{values.dtype} values.") from None
        with np.errstate(all="ignore"):
            return TRANSFORMS[self.transform](numbers, self.constants)


Recipe = tuple  # of DesignFactor: the column is their product


def evaluate(recipes: tuple, frame) -> np.ndarray:
    """The N × len(recipes) matrix of `frame`."""
    columns = [np.ones(len(frame)) for _ in recipes]
    for column, recipe in zip(columns, recipes):
        for factor in recipe:
            column *= factor.evaluate(frame)
    return np.column_stack(columns) if columns else np.zeros((len(frame), 0))


def variables(recipes: tuple) -> set:
    return {factor.column for recipe in recipes for factor in recipe}


def derive(names, matrix: np.ndarray, frame) -> tuple | None:
    """Recipes for the columns `names` of `matrix` (formulaic's expansion of `frame`), or None when
    a name is outside the vocabulary or a recipe does not reproduce its column on `frame`."""
    vocabulary = _Vocabulary(frame)
    recipes = []
    for j, name in enumerate(names):
        recipe = _parse(str(name), vocabulary)
        if recipe is None:
            return None
        values = evaluate((recipe,), frame)[:, 0]
        target = np.asarray(matrix[:, j], float)
        if not np.allclose(values, target, rtol=1e-10, atol=1e-12 * (1.0 + np.max(np.abs(target), initial=0.0))):
            return None
        recipes.append(recipe)
    return tuple(recipes)


def categorical_levels(recipes: tuple, frame) -> dict:
    """Every level each categorical column had on the fitting rows (as text, sorted): new data with
    another level cannot be expanded as the fit was."""
    columns = sorted({f.column for recipe in recipes for f in recipe if f.level is not None})
    return {c: tuple(sorted({str(v) for v in frame[c]})) for c in columns}


class _Vocabulary:
    """What the fitting rows offer, read once: the numeric columns, and each column's levels as text."""

    def __init__(self, frame):
        self.frame = frame
        self.numeric = {str(c) for c in frame.columns if _is_numeric(frame[c])}
        self._levels = {}

    def levels(self, column: str) -> set:
        if column not in self._levels:
            self._levels[column] = {str(v) for v in self.frame[column]} if column in self.frame.columns else set()
        return self._levels[column]


def _parse(name: str, vocabulary: _Vocabulary) -> Recipe | None:
    """`name` as ':'-joined factors (a level may itself hold ':', so every split is tried)."""
    if name == "Intercept":
        return ()
    factor = _factor(name, vocabulary)
    if factor is not None:
        return (factor,)
    for cut in [i for i, ch in enumerate(name) if ch == ":"]:
        head = _factor(name[:cut], vocabulary)
        if head is not None:
            rest = _parse(name[cut + 1:], vocabulary)
            if rest:
                return (head, *rest)
    return None


def _factor(token: str, vocabulary: _Vocabulary) -> DesignFactor | None:
    numeric = vocabulary.numeric
    if token in numeric:
        return DesignFactor(token)
    power = _POWER.match(token)
    if power and power.group(1) in numeric:
        return DesignFactor(power.group(1), transform="power", constants=(int(power.group(2)),))
    call = _CALL.match(token)
    if call and call.group(1) in _CALLS and call.group(2) in numeric:
        transform, column = _CALLS[call.group(1)], call.group(2)
        values = vocabulary.frame[column].to_numpy(float)
        constants = {"center": (float(np.mean(values)),),
                     "scale": (float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 1.0)}
        return DesignFactor(column, transform=transform, constants=constants.get(transform, ()))
    level = _LEVEL.match(token)
    if level:
        column = level.group(1)
        if column.startswith("C(") and column.endswith(")"):
            column = column[2:-1]
        if level.group(3) in vocabulary.levels(column):
            return DesignFactor(column, level=level.group(3))
    return None


def _is_numeric(series) -> bool:
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    return is_numeric_dtype(series.dtype) or is_bool_dtype(series.dtype)
