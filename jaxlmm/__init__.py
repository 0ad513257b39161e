"""jaxlmm: high-dimensional linear mixed models in JAX."""

from typing import TYPE_CHECKING

from ._jaxlib import warn_if_deadlocking as _warn_if_deadlocking
from ._lazy import attach as _attach

_warn_if_deadlocking()

if TYPE_CHECKING:  # the public API; at run time each name is imported on first use (`_lazy`)
    from . import losses as losses, plots as plots, simulate as simulate, solvers as solvers
    from ._covariance import blup as blup
    from ._data import LMMData as LMMData
    from ._fit import Fit as Fit, Tuning as Tuning
    from ._inference import (
        DebiasedLasso as DebiasedLasso,
        InferenceTable as InferenceTable,
        debiased_lasso as debiased_lasso,
    )
    from ._path import (
        LassoPath as LassoPath,
        lambda_grid as lambda_grid,
        lambda_max as lambda_max,
        solve_path as solve_path,
    )
    from ._penalties import (
        L0 as L0,
        L1 as L1,
        MCP as MCP,
        SCAD as SCAD,
        AbstractPenalty as AbstractPenalty,
        ElasticNet as ElasticNet,
        GroupLasso as GroupLasso,
    )
    from ._select import cluster_folds as cluster_folds, scaled_lasso as scaled_lasso
    from ._solution import (
        RESULTS as RESULTS,
        Solution as Solution,
        result_code as result_code,
        result_name as result_name,
    )
    from ._solve import solve as solve
    from ._sweep import SweepResult as SweepResult, sweep as sweep
    from ._variance_components import (
        VarianceComponents as VarianceComponents,
        VarianceEstimate as VarianceEstimate,
        estimate_variance_components as estimate_variance_components,
        variance_components as variance_components,
    )
    from ._whiten import Whitened as Whitened, effective_sample_size as effective_sample_size, whiten as whiten
    from .estimators import (
        CoreFit as CoreFit,
        CVCurve as CVCurve,
        EBRidgeFit as EBRidgeFit,
        LMMFit as LMMFit,
        LMMLassoFit as LMMLassoFit,
        LMMLassoPath as LMMLassoPath,
        QuasiFit as QuasiFit,
        SHELFit as SHELFit,
        fit_eb_ridge as fit_eb_ridge,
        fit_lmm as fit_lmm,
        fit_lmmlasso as fit_lmmlasso,
        fit_quasi as fit_quasi,
        fit_shel as fit_shel,
        lmmlasso_path as lmmlasso_path,
        load_fit as load_fit,
    )
    from .estimators.eb_ridge.core import eb_ridge_core as eb_ridge_core
    from .estimators.lmm.core import lmm_core as lmm_core
    from .estimators.lmmlasso.cgd import MixedModelCGD as MixedModelCGD
    from .estimators.lmmlasso.core import lmmlasso_core as lmmlasso_core
    from .estimators.lmmlasso.random_effects import (
        RandomEffectsSelection as RandomEffectsSelection,
        select_random_effects as select_random_effects,
    )
    from .estimators.quasi.core import (
        quasi_best_subset_core as quasi_best_subset_core,
        quasi_lasso_core as quasi_lasso_core,
        quasi_splicing_core as quasi_splicing_core,
    )
    from .estimators.quasi.debias import debias as debias
    from .estimators.quasi.gradient_tuning import GradientTuning as GradientTuning, tune_by_gradient as tune_by_gradient
    from .estimators.quasi.influence import Influence as Influence, influence as influence
    from .estimators.shel.core import shel_core as shel_core
    from .solvers import (
        BestSubset as BestSubset,
        CoordinateDescent as CoordinateDescent,
        ProximalGradient as ProximalGradient,
    )

__getattr__, __dir__, __all__ = _attach(__name__, __file__)
