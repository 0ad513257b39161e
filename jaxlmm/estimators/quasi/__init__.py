"""Li, Cai & Li's Σ_a-whitened quasi-likelihood method: `core` (the Lasso, best-subset and splicing
cores), `estimator` (`fit_quasi`), `debias` (debiased inference), `influence`, `gradient_tuning`."""

from .core import (
    quasi_best_subset_core as quasi_best_subset_core,
    quasi_lasso_core as quasi_lasso_core,
    quasi_splicing_core as quasi_splicing_core,
)
from .estimator import CVCurve as CVCurve, QuasiFit as QuasiFit, fit_quasi as fit_quasi
