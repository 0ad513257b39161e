"""lme4-style formulas on pandas DataFrames: `y ~ x1 + x2 + (1 + t | id)`.

formulaic parses and expands every term (categoricals with named treatment contrasts, `I()`,
transforms, `.` for all other columns); this module only finds the random-effect bars in
formulaic's token stream, splits them off, and records how each column was made (`_recipes`)
so that new data (`Fit.predict` on a DataFrame) is expanded exactly as the fitting data was."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from ._recipes import categorical_levels, derive, evaluate, variables as recipe_variables


@dataclasses.dataclass(frozen=True, eq=False)
class FormulaDesign:
    """How a DataFrame became (X, y, groups, Z): kept by `LMMData.from_formula` and every fit made
    from a formula, and used again by `Fit.predict(df)`.

    - `formula`: the formula as given; `response`: its left-hand side; `fixed_formula`,
      `random_formula`: the two parts (the bars split off). Text for summaries: a saved fit never
      parses them again.
    - `group`: the grouping column(s) (`a:b` nests two columns into one factor).
    - `intercept`: whether the fixed part has an intercept ("0 +" or "- 1" removes it).
    - `structure`: Ψ's structure the bars ask for: "full" for `(x | g)` (unstructured, as in
      lme4), "diagonal" for `(x || g)` or for several single-column bars of the same group.
    - `columns`: numeric columns appended to X by name (the `columns` argument), after the
      formula's own columns.
    - `feature_names`, `random_names`: the names of X's and Z's columns.
    - `n_dropped`: rows dropped for missing values in a variable the model uses (as lme4's
      `na.omit`).
    - `fixed_recipes`, `random_recipes`, `levels`: X's formula columns and Z's columns in the
      closed vocabulary of `jaxlmm._recipes` (None when the formula uses anything else), and the
      levels each categorical column had; what `matrices` evaluates, in a session and after loading.
    - `fixed_spec`, `random_spec`: formulaic's `ModelSpec`s, for formulas without recipes, in the
      session that fitted them only (None in a loaded fit).
    """

    formula: str
    response: str
    fixed_formula: str
    random_formula: str
    group: tuple
    intercept: bool
    structure: str
    columns: tuple
    feature_names: tuple
    random_names: tuple
    n_dropped: int
    fixed_recipes: tuple | None
    random_recipes: tuple | None
    levels: dict
    fixed_spec: object = None
    random_spec: object = None

    @property
    def portable(self) -> bool:
        """Whether new data can be expanded without formulaic (and so after loading)."""
        return self.fixed_recipes is not None and self.random_recipes is not None

    def matrices(self, frame):
        """(X, Z, groups) of `frame`, expanded as the fitting data was. A `ValueError` names
        missing columns, columns with missing values, and categorical levels the fit did not see."""
        if not self.portable and self.fixed_spec is None:
            raise ValueError(
                f"this fit's formula {self.formula!r} uses terms that a saved fit does not rebuild (loading never "
                "evaluates code); predict on arrays: fit.predict(X, groups=..., Z=...) with the columns "
                f"{list(self.feature_names)[:8]} of X and {list(self.random_names)} of Z."
            )
        used = self.variables()
        missing = [c for c in used if c not in frame.columns]
        if missing:
            raise ValueError(f"`data` has no column(s) {missing} that the formula {self.formula!r} uses.")
        incomplete = [c for c in used if frame[c].isna().any()]
        if incomplete:
            raise ValueError(f"`data` has missing values in {incomplete}; drop or impute those rows first.")
        if self.portable:
            for column, levels in self.levels.items():
                unseen = sorted({str(v) for v in frame[column]} - set(levels))
                if unseen:
                    raise ValueError(f"`data` column {column!r} has level(s) {unseen[:5]} that the fit did not see "
                                     f"(it saw {list(levels)[:10]}).")
            X, Z = evaluate(self.fixed_recipes, frame), evaluate(self.random_recipes, frame)
        else:
            try:
                X = np.asarray(self.fixed_spec.get_model_matrix(frame), float)
                Z = np.asarray(self.random_spec.get_model_matrix(frame), float)
            except Exception as error:  # formulaic's encoding errors (a column of another type, a new level)
                raise ValueError(f"`data` cannot be expanded by the formula {self.formula!r}: {error}") from None
            if self.intercept:
                X = X[:, 1:]
        if self.columns:
            try:
                extra = np.asarray(frame[list(self.columns)], float)
            except (TypeError, ValueError):
                raise ValueError(f"`data` columns {list(self.columns)[:10]} must be numeric.") from None
            X = np.column_stack([X, extra])
        if not (np.all(np.isfinite(X)) and np.all(np.isfinite(Z))):
            raise ValueError(f"`data` gives non-finite values in the design of {self.formula!r} "
                             "(a log of a value ≤ 0?).")
        return X, Z, _group_labels(frame, self.group)

    def variables(self) -> list:
        """The DataFrame columns the right-hand side reads (not the response)."""
        if self.portable:
            names = recipe_variables(self.fixed_recipes) | recipe_variables(self.random_recipes)
        else:
            names = {str(n) for n in self.fixed_spec.required_variables} | {str(n) for n in
                                                                             self.random_spec.required_variables}
        return sorted(names | set(self.group) | set(self.columns))


def _group_labels(frame, group: tuple) -> list:
    if len(group) == 1:
        return list(frame[group[0]])
    return [":".join(str(v) for v in row) for row in zip(*(frame[g] for g in group))]


def _bars(formula: str):
    """The random-effect bars of `formula` from formulaic's tokens, and the fixed part left over:
    ([(lhs, rhs, double), ...], fixed) — the two sides of each bar and whether it was `||`."""
    from formulaic.parser import DefaultFormulaParser

    try:
        tokens = [t for t in DefaultFormulaParser().get_tokens(formula) if t.source_start is not None]
    except Exception as error:  # formulaic's FormulaSyntaxError, with its pointer to the place
        raise ValueError(f"`formula` {formula!r} cannot be parsed: {error}") from None
    bars, stack = [], []
    for i, token in enumerate(tokens):
        text = str(token.token)
        if text == "(":
            stack.append((i, []))
        elif text == ")" and stack:
            opened, pipes = stack.pop()
            if pipes:
                first, last = pipes[0], pipes[-1]
                if len(pipes) > 1 and not (len(pipes) == 2 and first.source_start == last.source_start):
                    raise ValueError(f"`formula`: more than one bar inside one pair of parentheses: {formula!r}.")
                start, end = tokens[opened].source_start, token.source_end
                double = first.source_end > first.source_start
                lhs = formula[start + 1:first.source_start].strip()
                rhs = formula[first.source_end + 1:end].strip()
                bars.append((opened, i, lhs, rhs, double))
        elif text == "|" and stack:
            stack[-1][1].append(token)
    if stack:
        raise ValueError(f"`formula` {formula!r} cannot be parsed: a parenthesis is not closed.")
    # The fixed part: the formula without the bar terms and the `+` that joined each one, cut
    # out as character ranges (formulaic rewrites some tokens, "0" as "- 1", without a source).
    spans = []
    for opened, closed, *_ in bars:
        start, end = tokens[opened].source_start, tokens[closed].source_end
        if opened > 0 and str(tokens[opened - 1].token) == "+":
            start = tokens[opened - 1].source_start
        elif closed + 1 < len(tokens) and str(tokens[closed + 1].token) == "+":
            end = tokens[closed + 1].source_end
        spans.append((start, end))
    pieces, cursor = [], 0
    for start, end in sorted(spans):
        pieces.append(formula[cursor:start])
        cursor = end + 1
    pieces.append(formula[cursor:])
    fixed = "".join(pieces)
    if fixed.strip().endswith("~"):
        fixed = fixed.rstrip() + " 1"
    return [tuple(b[2:]) for b in bars], fixed


def parse_formula(formula: str, frame, columns=None):
    """(y, X, groups, Z, design) of `frame` under `formula` (see `LMMData.from_formula`)."""
    import pandas as pd
    from formulaic import Formula, model_matrix

    if not isinstance(formula, str) or "~" not in formula:
        raise ValueError(f"`formula` must be a string 'response ~ terms + (terms | group)'; got {formula!r}.")
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"`data` must be a pandas DataFrame to go with `formula`; got {type(frame).__name__}.")
    bars, fixed = _bars(formula)
    if not bars:
        raise ValueError(f"`formula` {formula!r} has no random-effect term such as (1 | group): a mixed model "
                         "needs one.")
    groups = {b[1] for b in bars}
    if len(groups) > 1:
        raise ValueError(f"`formula`: random effects of one grouping factor only (got {sorted(groups)}); crossed "
                         "or nested grouping factors are not supported.")
    group_text = bars[0][1]
    if "/" in group_text:
        raise ValueError(f"`formula`: nested grouping `{group_text}` means two grouping factors; only one is "
                         "supported (write `a:b` for the nested factor alone).")
    group = tuple(g.strip() for g in group_text.split(":"))
    if len(bars) == 1:
        random_text, structure = bars[0][0], "diagonal" if bars[0][2] else "full"
    else:  # (1 | g) + (0 + x | g): independent single-column terms, a diagonal Ψ
        random_text, structure = " + ".join(b[0] for b in bars), "diagonal"
    response = fixed.split("~", 1)[0].strip()
    if not response:
        raise ValueError(f"`formula` {formula!r} has no response on the left of `~`.")
    if response in frame.columns and not pd.api.types.is_numeric_dtype(frame[response].dtype):
        raise ValueError(f"`formula`: the response {response!r} is not numeric (dtype {frame[response].dtype}).")
    available = {"__formulaic_variables_available__": [str(c) for c in frame.columns if str(c) not in group]}
    try:
        fixed_needed = {str(n) for n in Formula(fixed, _context=available).required_variables}
        needed = fixed_needed | {str(n) for n in Formula(random_text).required_variables} | set(group)
    except Exception as error:
        raise ValueError(f"`formula` {formula!r} cannot be parsed: {error}") from None
    columns = _columns(columns, frame)
    needed = {str(n) for n in needed} | set(columns)
    missing = sorted(n for n in needed if n not in frame.columns)
    if missing:
        raise ValueError(f"`data` has no column(s) {missing} that `formula` uses; it has {list(frame.columns)[:20]}.")
    # `.` means every column but the response and the grouping columns; a grouping column that
    # the fixed part names (`recipe` in `recipe + (1 | recipe:replicate)`) stays a fixed effect.
    fixed_frame = frame.drop(columns=[c for c in group if c in frame.columns and c not in fixed_needed])
    used = sorted(needed)
    complete = frame[used].notna().all(axis=1).to_numpy()
    if not complete.any():
        missing = frame[used].isna().sum()
        raise ValueError(f"`data`: every row has a missing value in a variable the formula uses (missing per column: "
                         f"{ {c: int(v) for c, v in missing[missing > 0].items()} }).")
    n_dropped = int((~complete).sum())
    frame, fixed_frame = frame[complete], fixed_frame[complete]
    try:  # na_action="ignore": rows stay aligned, and non-finite terms are named below
        matrices = model_matrix(fixed, fixed_frame, na_action="ignore")
        random = model_matrix(random_text, frame, na_action="ignore")
    except Exception as error:
        raise ValueError(f"`formula` {formula!r} cannot be expanded on `data`: {error}") from None
    for part in (matrices.lhs, matrices.rhs, random):
        values = np.asarray(part, float)
        bad = [str(c) for c, ok in zip(part.columns, np.isfinite(values).all(axis=0)) if not ok]
        if bad:
            raise ValueError(f"`formula` {formula!r}: {bad[:5]} are missing or infinite on "
                             f"{int((~np.isfinite(values).all(axis=1)).sum())} rows (a log of a value ≤ 0?).")
    names = list(matrices.rhs.columns)
    intercept = "Intercept" in names
    X = np.asarray(matrices.rhs, float)
    if intercept:
        X, names = X[:, 1:], names[1:]
    if matrices.lhs.shape[1] != 1:
        raise ValueError(f"`formula`: the response {response!r} must be one numeric column; it expands to "
                         f"{list(matrices.lhs.columns)} (a categorical response?).")
    if columns:
        X = np.column_stack([X, np.asarray(frame[list(columns)], float)])
        names += list(columns)
    formula_columns = list(matrices.rhs.columns)[1:] if intercept else list(matrices.rhs.columns)
    read = sorted({str(v) for v in matrices.rhs.model_spec.required_variables}
                  | {str(v) for v in random.model_spec.required_variables})
    fixed_recipes = derive(formula_columns, X[:, :len(formula_columns)], frame[read])
    random_recipes = derive(list(random.columns), np.asarray(random, float), frame[read])
    levels = (categorical_levels(fixed_recipes + random_recipes, frame)
              if fixed_recipes is not None and random_recipes is not None else {})
    design = FormulaDesign(formula=formula, response=response, fixed_formula=fixed, random_formula=random_text,
                           group=group, intercept=intercept, structure=structure, columns=tuple(columns),
                           feature_names=tuple(names), random_names=tuple(str(c) for c in random.columns),
                           n_dropped=n_dropped, fixed_recipes=fixed_recipes, random_recipes=random_recipes,
                           levels=levels, fixed_spec=matrices.rhs.model_spec, random_spec=random.model_spec)
    y = np.asarray(matrices.lhs, float)[:, 0]
    return y, X, _group_labels(frame, group), np.asarray(random, float), design


def _columns(columns, frame) -> list:
    """Extra numeric fixed-effect columns: None, a list of names, or a regular expression that
    each chosen name matches in full."""
    if columns is None:
        return []
    if isinstance(columns, str):
        try:
            pattern = re.compile(columns)
        except re.error as error:
            raise ValueError(f"`columns` {columns!r} is not a valid regular expression: {error}") from None
        chosen = [str(c) for c in frame.columns if pattern.fullmatch(str(c))]
        if not chosen:
            raise ValueError(f"`columns`: no column name matches {columns!r}.")
    elif isinstance(columns, Sequence):
        chosen = [str(c) for c in columns]
        absent = [c for c in chosen if c not in frame.columns]
        if absent:
            raise ValueError(f"`columns`: {absent[:10]} are not columns of `data`.")
    else:
        raise ValueError(f"`columns` must be a list of column names or a regular expression; got {columns!r}.")
    from pandas.api.types import is_numeric_dtype

    numeric = frame[chosen].dtypes.map(is_numeric_dtype)
    if not numeric.all():
        raise ValueError(f"`columns` must be numeric; {list(numeric.index[~numeric])[:10]} are not.")
    return chosen
