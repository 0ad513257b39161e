"""The unpenalised LMM by REML or ML (lme4's `lmer`): `core` (`lmm_core`) and `estimator` (`fit_lmm`)."""

from .core import lmm_core as lmm_core
from .estimator import LMMFit as LMMFit, fit_lmm as fit_lmm
