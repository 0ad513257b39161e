"""The estimators, one private module per method (re-exported here and by `jaxlmm`):
`_quasi` (Li, Cai & Li's Σ_a-whitened Lasso and best subset), `_lmmlasso` (Schelldorfer,
Bühlmann & van de Geer's l1-penalised likelihood), `_shel` (SHEL), `_eb_ridge` (the
empirical-Bayes ridge LMM), `_lmm` (the unpenalised LMM by REML or ML, as lme4's `lmer`). Each
validates its arguments, accepts a formula and a DataFrame (`jaxlmm._fit.accepts_formula`) and
returns a `jaxlmm.Fit`."""

from ._eb_ridge import EBRidgeFit as EBRidgeFit, fit_eb_ridge as fit_eb_ridge
from ._lmm import LMMFit as LMMFit, fit_lmm as fit_lmm
from ._lmmlasso import (
    LMMLassoFit as LMMLassoFit,
    LMMLassoPath as LMMLassoPath,
    fit_lmmlasso as fit_lmmlasso,
    lmmlasso_path as lmmlasso_path,
)
from ._quasi import CVCurve as CVCurve, QuasiFit as QuasiFit, fit_quasi as fit_quasi
from ._shel import SHELFit as SHELFit, fit_shel as fit_shel
