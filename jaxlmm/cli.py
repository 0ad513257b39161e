"""Command line: `jaxlmm fit data.csv --formula "y ~ x + (1 | g)" --method lmm` fits a model to
a CSV file and prints its summary; `jaxlmm demo` runs the quasi-likelihood workflow on its embedded
default design, then a tour of every method on the same data. The `jaxlmm` script enters
through `jaxlmm_launcher`, which sets up the compilation cache first."""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def demo(seed: int = 0, k: int = 3, tour: bool = True) -> None:
    import jax

    # float64 for the demo only, scoped: the library never changes global JAX config.
    with jax.enable_x64(True):
        sim, data, fit = _demo(seed, k)
        if tour:
            _tour(sim, data, fit)


def _demo(seed: int, k: int):
    import jaxlmm

    sim = jaxlmm.simulate.scope_example_design(seed=seed)
    data = jaxlmm.LMMData.from_arrays(sim.X, sim.y, sim.groups, sim.Z)
    print(f"Design (skscope example): N = {data.n_obs} rows in n = {data.n_clusters} clusters, "
          f"p = {data.n_features} fixed effects, q = {sim.Z.shape[1]} random effects")
    print(f"True support {np.flatnonzero(sim.beta).tolist()} with values "
          f"{sim.beta[sim.beta != 0].tolist()}\n")

    start = time.perf_counter()
    fit = jaxlmm.fit_quasi(data, k=k)
    elapsed = time.perf_counter() - start
    print(f"\nBest subset (k = {k}) on the Σ_a-whitened quasi-likelihood, a by 5-fold cluster CV "
          f"({elapsed:.1f} s)")
    print("  a        CV error (held-out marginal MSE)")
    for a, err in zip(fit.cv.a_grid, fit.cv.error[:, 0]):
        mark = "  <- chosen" if a == fit.a else ""
        print(f"  {a:<8g} {err:.4f}{mark}")
    print(f"\nChosen a = {fit.a:g}   effective sample size tr(Σ_a^-1) = "
          f"{fit.effective_sample_size:.1f}")
    print(f"Support: {fit.support.tolist()}   recovered: "
          f"{set(fit.support.tolist()) == set(np.flatnonzero(sim.beta).tolist())}")
    print("  index  true    estimate")
    for j in sorted(set(fit.support.tolist()) | set(np.flatnonzero(sim.beta).tolist())):
        print(f"  {j:<6d} {sim.beta[j]:<7.3f} {fit.coef[j]:.4f}")
    ours = np.linalg.norm(fit.coef - sim.beta)
    print(f"\nℓ2 error, jaxlmm best subset:      {ours:.4f}")
    try:
        from statsmodels.regression.mixed_linear_model import MixedLM
    except ImportError:
        print("(install statsmodels to compare with MixedLM)")
        return sim, data, fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mixed = MixedLM(sim.y, sim.X, groups=sim.groups, exog_re=sim.Z).fit()
    theirs = np.linalg.norm(np.asarray(mixed.fe_params) - sim.beta)
    print(f"ℓ2 error, statsmodels MixedLM:     {theirs:.4f}   ({theirs / ours:.0f}× larger)")
    return sim, data, fit


def _tour(sim, data, best_subset) -> None:
    """Every method on the same design, in one table (first calls: compilation included)."""
    import dataclasses

    import jaxlmm

    print("\nA tour of the other methods on the same data (time includes compilation on a first run):")
    print(f"  {'method':<44} {'support':<22} {'ℓ2 error':>9} {'time s':>7}")

    def row(name, call):
        start = time.perf_counter()
        fit = call()
        elapsed = time.perf_counter() - start
        support = fit.support.tolist()
        shown = str(support) if len(support) <= 6 else f"{len(support)} columns"
        mark = "" if fit.converged else f"  ({fit.result})"
        print(f"  {name:<44} {shown:<22} {np.linalg.norm(fit.coef - sim.beta):>9.4f} {elapsed:>7.1f}{mark}")
        return fit

    a = best_subset.a
    lasso = row(f"quasi Lasso, a = {a:g}, universal λ", lambda: jaxlmm.fit_quasi(data, a=a, lam="universal",
                                                                                progress=False))
    row("lmmLasso, λ by BIC", lambda: jaxlmm.fit_lmmlasso(data))
    row("SHEL, K = 2, the same λ", lambda: jaxlmm.fit_shel(data, lam=lasso.lam, K=2, progress=False))
    row("EB ridge (no selection), λ, b, A learned", lambda: jaxlmm.fit_eb_ridge(data))
    support = best_subset.support
    names = tuple(data.column_names()[j] for j in support)
    refit = dataclasses.replace(data, X=data.X[:, support], feature_names=names)
    start = time.perf_counter()
    lmm = jaxlmm.fit_lmm(refit)
    elapsed = time.perf_counter() - start
    coef = np.zeros_like(sim.beta)
    coef[support] = lmm.coef
    print(f"  {'LMM (REML) refit on the best subset':<44} {str(support.tolist()):<22} "
          f"{np.linalg.norm(coef - sim.beta):>9.4f} {elapsed:>7.1f}")
    print("  (the refit's Wald intervals ignore the selection: see debias() for valid ones)")


METHODS = {
    "lmm": "fit_lmm",
    "quasi": "fit_quasi",
    "lmmlasso": "fit_lmmlasso",
    "shel": "fit_shel",
    "eb": "fit_eb_ridge",
}


class UsageError(Exception):
    """A problem with the command's input, reported in one line with exit code 2."""


def _writable(option: str, target: str) -> None:
    """A file `target` can be written: its folder exists and is writable, and it is not a folder."""
    target_path = Path(target)
    folder = target_path.parent
    if target_path.is_dir():
        raise UsageError(f"{option} {target}: is a folder; give a file name")
    if not folder.is_dir():
        raise UsageError(f"{option} {target}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{option} {target}: the folder {folder} is not writable")


def fit(path: str, formula: str, method: str, ml: bool = False, out: str | None = None,
        save: str | None = None) -> None:
    # Every check of the command's input comes before JAX is imported (2-3 s).
    if not Path(path).is_file():
        raise UsageError(f"no such file: {path}")
    if ml and method != "lmm":
        raise UsageError("--ml applies to --method lmm only")
    for option, target in (("--out", out), ("--save", save)):
        if target is not None:
            _writable(option, target)
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UsageError(f"{path} is not a readable CSV file: {str(error).strip()}") from None
    import jaxlmm

    options = {"reml": not ml} if method == "lmm" else {}
    try:
        result = getattr(jaxlmm, METHODS[method])(frame, formula=formula, **options)
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(result.summary())
    try:
        if out is not None:
            result.to_pandas().to_csv(out)
            print(f"estimates written to {out}")
        if save is not None:
            result.save(save)
            print(f"fit saved to {save} (read it with jaxlmm.load_fit)")
    except (OSError, ValueError) as error:
        raise UsageError(str(error)) from None
    if not result.converged:
        print(f"warning: the fit did not converge ({result.result})", file=sys.stderr)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="jaxlmm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fit_parser = sub.add_parser("fit", help="fit a model to a CSV file and print its summary")
    fit_parser.add_argument("data", help="CSV file with a header row")
    fit_parser.add_argument("--formula", required=True,
                            help="lme4-style formula, e.g. 'Reaction ~ Days + (Days | Subject)'")
    fit_parser.add_argument("--method", choices=sorted(METHODS), default="lmm",
                            help="lmm (REML, as lme4; default), quasi, lmmlasso, shel or eb (empirical-Bayes ridge)")
    fit_parser.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML (lmm)")
    fit_parser.add_argument("--out", help="write the coefficient table to this CSV file")
    fit_parser.add_argument("--save", help="write the whole fit to this JSON file (jaxlmm.load_fit reads it)")
    demo_parser = sub.add_parser("demo", help="the quasi-likelihood workflow on the embedded default design")
    demo_parser.add_argument("--seed", type=int, default=0)
    demo_parser.add_argument("--k", type=int, default=3)
    demo_parser.add_argument("--no-tour", dest="tour", action="store_false",
                             help="the quasi-likelihood workflow only, without the tour of the other methods")
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(seed=args.seed, k=args.k, tour=args.tour)
    elif args.command == "fit":
        try:
            fit(args.data, args.formula, args.method, ml=args.ml, out=args.out, save=args.save)
        except UsageError as error:
            print(f"jaxlmm fit: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None


if __name__ == "__main__":
    main()
