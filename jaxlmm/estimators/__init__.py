"""The estimators, one subpackage per method (re-exported here and by `jaxlmm`):

- `quasi`: Li, Cai & Li's Σ_a-whitened quasi-likelihood Lasso and best subset;
- `lmmlasso`: Schelldorfer, Bühlmann & van de Geer's ℓ1-penalised likelihood, with its solver
  (`cgd`) and the selection of random effects;
- `shel`: the synthetic-variable Lasso (SHEL);
- `eb_ridge`: the empirical-Bayes ridge LMM (its model algebra, ECM and evidence);
- `lmm`: the unpenalised LMM by REML or ML, as lme4's `lmer`.

Each has `core.py`, the method's pure core `(data, hyperparameters) -> CoreFit` that
`jaxlmm.sweep` runs, and `estimator.py`, whose `fit_*` validates its arguments, accepts a
formula and a DataFrame and returns a `jaxlmm.Fit`. `_core` holds what every core shares."""

from .._persist import load_fit as load_fit  # here: importing the estimators registers every record a file may hold
from ._core import CoreFit as CoreFit
from .eb_ridge.estimator import EBRidgeFit as EBRidgeFit, fit_eb_ridge as fit_eb_ridge
from .lmm.estimator import LMMFit as LMMFit, fit_lmm as fit_lmm
from .lmmlasso.estimator import (
    LMMLassoFit as LMMLassoFit,
    LMMLassoPath as LMMLassoPath,
    fit_lmmlasso as fit_lmmlasso,
    lmmlasso_path as lmmlasso_path,
)
from .quasi.estimator import CVCurve as CVCurve, QuasiFit as QuasiFit, fit_quasi as fit_quasi
from .shel.estimator import SHELFit as SHELFit, fit_shel as fit_shel
