"""Solvers for a smooth loss + a penalty, shared by every objective in the package; they know no
loss module (a solver that exists for one likelihood lives with its method, e.g.
`estimators.lmmlasso.cgd`)."""

from ._base import AbstractSolver as AbstractSolver
from .best_subset import BestSubset as BestSubset
from .coordinate_descent import CoordinateDescent as CoordinateDescent
from .proximal_gradient import ProximalGradient as ProximalGradient
from .splicing import splice as splice
