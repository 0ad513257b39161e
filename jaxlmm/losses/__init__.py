"""Pure loss builders: each returns a loss `fn(params, args)` and the `args` it needs."""

from .least_squares import LeastSquares as LeastSquares, LeastSquaresData as LeastSquaresData
from .whitened_ql import quasi_likelihood as quasi_likelihood
