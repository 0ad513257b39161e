"""SHEL, the synthetic-variable Lasso: `core` (`shel_core`) and `estimator` (`fit_shel`)."""

from .core import shel_core as shel_core
from .estimator import SHELFit as SHELFit, fit_shel as fit_shel
