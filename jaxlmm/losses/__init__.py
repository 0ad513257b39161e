"""Pure loss builders: each returns a loss `fn(params, args)` and the `args` it needs."""

from .least_squares import LeastSquares as LeastSquares, LeastSquaresData as LeastSquaresData
from .mixed_model import (
    MixedModelData as MixedModelData,
    MixedModelNLL as MixedModelNLL,
    MixedModelParams as MixedModelParams,
    mixed_model_nll as mixed_model_nll,
)
from .shel import shel_loss as shel_loss
from .whitened_ql import quasi_likelihood as quasi_likelihood
