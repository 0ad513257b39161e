"""Solvers for smooth loss + separable penalty, shared by every objective in the package."""

from ._base import AbstractSolver as AbstractSolver
from .best_subset import BestSubset as BestSubset
from .coordinate_descent import CoordinateDescent as CoordinateDescent
from .mixed_model_cgd import MixedModelCGD as MixedModelCGD, MixedModelFit as MixedModelFit
from .proximal_gradient import ProximalGradient as ProximalGradient
from .splicing import splice as splice
