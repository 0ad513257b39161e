"""The empirical-Bayes ridge LMM: `model` (its design algebra and posterior), `core`
(`eb_ridge_core`) and `estimator` (ECM, the evidence and `fit_eb_ridge`)."""

from .core import eb_ridge_core as eb_ridge_core
from .estimator import EBRidgeFit as EBRidgeFit, fit_eb_ridge as fit_eb_ridge
