"""jaxlmm: high-dimensional linear mixed models in JAX."""

from . import losses as losses, solvers as solvers
from ._data import LMMData as LMMData
from ._solution import RESULTS as RESULTS, Solution as Solution
from ._solve import solve as solve
from ._whiten import Whitened as Whitened, effective_sample_size as effective_sample_size, whiten as whiten
from .penalties import L0 as L0, L1 as L1
from .solvers import BestSubset as BestSubset, CoordinateDescent as CoordinateDescent, ProximalGradient as ProximalGradient
from .estimators import CVCurve as CVCurve, QuasiFit as QuasiFit, fit_quasi as fit_quasi
from .path import LassoPath as LassoPath, lambda_grid as lambda_grid, lambda_max as lambda_max, solve_path as solve_path
from .select import cluster_folds as cluster_folds, scaled_lasso as scaled_lasso
from . import simulate as simulate
