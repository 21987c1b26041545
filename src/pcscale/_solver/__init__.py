"""Inference solvers: one final class per file, all sharing AbstractInferenceSolver."""

from ._base import AbstractInferenceSolver as AbstractInferenceSolver
from .gradient_descent import GradientDescent as GradientDescent
from .optax_solver import OptaxSolver as OptaxSolver
