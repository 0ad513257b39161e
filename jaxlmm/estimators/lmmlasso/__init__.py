"""Schelldorfer, Bühlmann & van de Geer's ℓ1-penalised mixed model: `cgd` (its coordinate gradient
descent solver), `core` (`lmmlasso_core`), `estimator` (`fit_lmmlasso`, `lmmlasso_path`) and
`random_effects` (`select_random_effects`)."""

from .cgd import MixedModelCGD as MixedModelCGD, MixedModelFit as MixedModelFit
from .core import lmmlasso_core as lmmlasso_core
from .estimator import (
    LMMLassoFit as LMMLassoFit,
    LMMLassoPath as LMMLassoPath,
    fit_lmmlasso as fit_lmmlasso,
    lmmlasso_path as lmmlasso_path,
)
