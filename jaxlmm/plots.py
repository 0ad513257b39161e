"""Plots of fits (matplotlib, the optional `plots` extra; imported when a function is called).

Every function draws on `ax` (a new figure's axes when None) and returns the axes, so plots
compose into the caller's figures; names come from the fit (a formula's column names)."""

from __future__ import annotations

import numpy as np


def _axes(ax, size=(6.4, 4.2)):
    if ax is not None:
        return ax
    try:
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - the extra is installed by every lock file
        raise ImportError("jaxlmm.plots needs matplotlib: pip install 'jaxlmm[plots]'.") from None
    return plt.subplots(figsize=size, layout="constrained")[1]


def coefficient_path(fit, ax=None, label_top: int = 8):
    """β̂_k against λ (log scale) for a fit that computed a path — `fit_lmmlasso` with λ by BIC
    (`coef_path`), `fit_quasi` with λ by CV (`path` at the chosen a) or with an explicit λ
    array — with the chosen λ marked. The `label_top` largest |β̂_k| at the chosen λ are named."""
    lambdas, coefs = _path_of(fit)
    ax = _axes(ax)
    ax.plot(lambdas, coefs, lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("λ")
    ax.set_ylabel("coefficient")
    chosen = fit.hyperparameters.get("lam")
    if chosen is not None and np.ndim(chosen) == 0:
        ax.axvline(float(chosen), color="k", ls="--", lw=1, label=f"chosen λ = {float(chosen):.3g}")
        ax.legend(loc="best", fontsize="small")
    names = fit.feature_names
    final = np.asarray(fit.coef) if np.ndim(fit.coef) == 1 else coefs[-1]
    for k in np.argsort(-np.abs(final))[:label_top]:
        if final[k] != 0:
            ax.annotate(names[k], (lambdas[-1], coefs[-1, k]), fontsize="x-small", xytext=(2, 0),
                        textcoords="offset points")
    ax.set_title(f"{_short(fit)}: coefficient path")
    return ax


def _short(fit) -> str:
    return fit.method.split(" (")[0]


def _path_of(fit):
    coef_path = getattr(fit, "coef_path", None)
    if coef_path is not None:
        return np.asarray(fit.path.lambdas), np.asarray(coef_path)
    path = getattr(fit, "path", None)
    if path is not None and hasattr(path, "coef"):
        coefs = np.asarray(path.coef)
        p = np.shape(fit.coef)[-1]
        return np.asarray(path.lambdas), coefs[:, -p:]  # an intercept, when fitted, is column 0
    lam = getattr(fit, "lam", None)
    if np.ndim(fit.coef) == 2 and lam is not None and np.ndim(lam) == 1:
        return np.asarray(lam), np.asarray(fit.coef)
    raise ValueError(f"`fit` ({fit.method}) holds no λ path: fit with λ chosen by BIC or CV, or with an array of λ.")


def tuning_curve(fit, ax=None):
    """The tuning criterion over the grid (`fit.tuning`): CV error over λ with one line per a
    (quasi), over λ/λ_max per K (SHEL), BIC over λ (lmmLasso), or over k; the choice marked."""
    tuning = fit.tuning
    if tuning is None or tuning.values is None:
        raise ValueError(f"`fit` ({fit.method}) has no tuning grid to plot: its hyperparameters were given "
                         "or learned without a grid.")
    ax = _axes(ax)
    names = list(tuning.parameters)
    values = np.asarray(tuning.values, float)
    if values.ndim == 1:
        x = np.asarray(tuning.parameters[names[-1]], float)
        ax.plot(x, values, marker=".", lw=1)
        _mark(ax, tuning.choice.get(names[-1]), x, values)
        xname = names[-1]
    else:
        outer, inner = names[0], names[-1]
        outer_values = np.asarray(tuning.parameters[outer], float)
        x_all = np.broadcast_to(np.asarray(tuning.parameters[inner], float), values.shape)
        for i, value in enumerate(outer_values):
            chosen = np.isclose(value, float(tuning.choice.get(outer, np.nan)))
            ax.plot(x_all[i], values[i], lw=2 if chosen else 1, label=f"{outer} = {value:g}", zorder=3 if chosen else 2)
        row = int(np.argmin(np.abs(outer_values - float(tuning.choice.get(outer, outer_values[0])))))
        _mark(ax, tuning.choice.get(inner), x_all[row], values[row])
        ax.legend(fontsize="x-small", ncol=2)
        xname = inner
    if xname.startswith("lam"):
        ax.set_xscale("log")
    ax.set_xlabel(xname)
    ax.set_ylabel(tuning.criterion)
    ax.set_title(f"{_short(fit)}: {tuning.criterion}")
    return ax


def _mark(ax, choice, x, y):
    if choice is None or np.ndim(choice) != 0:
        return
    i = int(np.argmin(np.abs(x - float(choice))))
    ax.plot([x[i]], [y[i]], "k*", ms=12, zorder=4, label="chosen")


def forest(fit, ax=None, include_intercept: bool = False):
    """Estimates with their confidence intervals (`fit.inference`: debiased, post-selection or
    Wald), one row per coefficient, named."""
    table = fit.inference
    if table is None:
        raise ValueError(f"`fit` ({fit.method}) has no inference table (fit_lmm has Wald intervals; "
                         "debias() or fit_shel(inference=...) make one).")
    coords = np.asarray(table.coords)
    names = np.array(["intercept" if c < 0 else fit.feature_names[c] for c in coords])
    keep = (coords >= 0) | include_intercept
    estimate, low, high = (np.asarray(getattr(table, c))[keep] for c in ("estimate", "ci_low", "ci_high"))
    names = names[keep]
    ax = _axes(ax, (6.4, max(2.0, 0.28 * len(names) + 1)))
    rows = np.arange(len(names))[::-1]
    ax.errorbar(estimate, rows, xerr=[estimate - low, high - estimate], fmt="o", ms=4, capsize=2)
    ax.axvline(0.0, color="grey", lw=1)
    ax.set_yticks(rows, names)
    ax.set_xlabel(f"estimate, {table.level:.0%} interval ({table.method})")
    ax.set_title(f"{_short(fit)}: intervals")
    return ax


def caterpillar(fit, column: int = 0, ax=None):
    """The BLUPs b̂_i of one random-effect column, sorted, one row per group (named)."""
    if fit.ranef is None:
        raise ValueError(f"`fit` ({fit.method}) has no BLUPs.")
    values = np.asarray(fit.ranef)[:, column]
    order = np.argsort(values)
    ax = _axes(ax, (5.0, max(2.0, 0.18 * len(values) + 1)))
    ax.plot(values[order], np.arange(len(values)), "o", ms=3)
    ax.axvline(0.0, color="grey", lw=1)
    ax.set_yticks(np.arange(len(values)), [str(fit.groups[i]) for i in order], fontsize="x-small")
    design = getattr(fit, "design", None)
    name = design.random_names[column] if design is not None else f"column {column} of Z"
    ax.set_xlabel(f"BLUP of the random effect of {name}")
    ax.set_title(f"{_short(fit)}: random effects")
    return ax


def selection_frequencies(supports, p: int | None = None, names=None, truth=None, ax=None):
    """How often each column was selected over replicates: `supports` a replicates × p boolean
    (or 0/1) matrix, or a list of index arrays (then `p` is needed); true columns (`truth`,
    indices) are drawn in another colour."""
    if isinstance(supports, np.ndarray) and supports.ndim == 2:
        selected = supports.astype(bool)
    else:
        if p is None:
            raise ValueError("`p` is needed when `supports` is a list of index arrays.")
        selected = np.zeros((len(supports), p), bool)
        for row, support in zip(selected, supports):
            row[np.asarray(support, int)] = True
    frequency = selected.mean(axis=0)
    p = frequency.size
    names = [f"x{k}" for k in range(p)] if names is None else list(names)
    ax = _axes(ax, (max(6.4, 0.12 * p), 3.6))
    colours = np.array(["tab:blue"] * p, dtype=object)
    if truth is not None:
        colours[np.asarray(truth, int)] = "tab:red"
    ax.bar(np.arange(p), frequency, color=list(colours))
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"selected in {len(selected)} replicates")
    if p <= 40:
        ax.set_xticks(np.arange(p), names, rotation=90, fontsize="x-small")
    ax.set_title("selection frequencies" + (" (red: true support)" if truth is not None else ""))
    return ax
