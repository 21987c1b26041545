"""Inference solvers: one final class per file, all sharing AbstractInferenceSolver, and
the one registry of them by name (SOLVERS)."""

from ._base import AbstractInferenceSolver as AbstractInferenceSolver, Cost as Cost
from ._preconditioner import (
    AbstractKrylovSolver as AbstractKrylovSolver,
    AbstractPreconditioner as AbstractPreconditioner,
    DepthPreconditioner as DepthPreconditioner,
    Preconditioning as Preconditioning,
)
from ._registry import (
    SOLVERS as SOLVERS,
    RegisteredSolver as RegisteredSolver,
    SolverSettings as SolverSettings,
    make_solver as make_solver,
)
from .auto import auto_solver as auto_solver
from .conjugate_gradient import ConjugateGradient as ConjugateGradient
from .error_coordinates import ErrorCoordinates as ErrorCoordinates
from .gauss_newton import GaussNewtonPreconditioner as GaussNewtonPreconditioner
from .gradient_descent import GradientDescent as GradientDescent
from .mixed_precision import MixedPrecision as MixedPrecision
from .nesterov import Nesterov as Nesterov
from .newton_krylov import NewtonKrylov as NewtonKrylov
from .ode_flow import ODEFlow as ODEFlow
from .optax_solver import OptaxSolver as OptaxSolver
from .optimistix_solver import (
    LBFGS as LBFGS,
    OptimistixSolver as OptimistixSolver,
    RoundingArmijo as RoundingArmijo,
)
