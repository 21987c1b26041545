"""pcscale: predictive coding networks at large width and depth, with their BP twins."""

import importlib.metadata

from . import nn as nn
from ._compare import (
    EquilibriumComparison as EquilibriumComparison,
    GradientAlignment as GradientAlignment,
    compare_at_equilibrium as compare_at_equilibrium,
    compare_gradients as compare_gradients,
)
from ._energy import (
    AbstractOutputEnergy as AbstractOutputEnergy,
    CrossEntropy as CrossEntropy,
    MSE as MSE,
    gaussian_energy as gaussian_energy,
)
from ._gradients import bp_gradients as bp_gradients, pc_gradients as pc_gradients
from ._infer import infer as infer
from ._layer import PCLayer as PCLayer
from ._model import PCModel as PCModel
from ._parameterised import Parameterised as Parameterised
from ._optimiser import (
    AbstractOptimiser as AbstractOptimiser,
    Adam as Adam,
    FromOptax as FromOptax,
    SGD as SGD,
    make_optimiser as make_optimiser,
)
from ._parameterisation import (
    AbstractParameterisation as AbstractParameterisation,
    AdamRule as AdamRule,
    InitStdRule as InitStdRule,
    CompleteP as CompleteP,
    DepthMuP as DepthMuP,
    Init as Init,
    MuP as MuP,
    MuPC as MuPC,
    NetworkShape as NetworkShape,
    NTP as NTP,
    Role as Role,
    Scaling as Scaling,
    SP as SP,
    WeightRole as WeightRole,
)
from ._precision import residual_floor as residual_floor
from ._sharding import make_data_mesh as make_data_mesh, replicate as replicate, shard_batch as shard_batch
from ._solution import (
    InferenceSolution as InferenceSolution,
    InferenceStats as InferenceStats,
    RESULTS as RESULTS,
)
from ._solver import (
    AbstractInferenceSolver as AbstractInferenceSolver,
    AbstractPreconditioner as AbstractPreconditioner,
    ConjugateGradient as ConjugateGradient,
    Cost as Cost,
    DepthPreconditioner as DepthPreconditioner,
    GradientDescent as GradientDescent,
    LBFGS as LBFGS,
    MixedPrecision as MixedPrecision,
    Nesterov as Nesterov,
    NewtonKrylov as NewtonKrylov,
    ODEFlow as ODEFlow,
    OptaxSolver as OptaxSolver,
    OptimistixSolver as OptimistixSolver,
    RoundingArmijo as RoundingArmijo,
)
from ._health import TrainingFailure as TrainingFailure
from ._train import (
    BPStepMetrics as BPStepMetrics,
    ComparisonMetrics as ComparisonMetrics,
    PCStepMetrics as PCStepMetrics,
    TrainingRun as TrainingRun,
    bp_step as bp_step,
    pc_step as pc_step,
    train as train,
)
from . import theory as theory  # after the core: theory builds on it
from .theory import auto_solver as auto_solver

try:
    __version__ = importlib.metadata.version("pcscale")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkout
    __version__ = "0.0.0"
