"""pcscale: predictive coding networks at large width and depth, with their BP twins."""

import importlib.metadata

from . import (
    nn as nn,
    theory as theory,  # builds on the core modules, which it imports itself
)
from ._compare import (
    EquilibriumComparison as EquilibriumComparison,
    GradientAlignment as GradientAlignment,
    compare_at_equilibrium as compare_at_equilibrium,
    compare_gradients as compare_gradients,
)
from ._energy import (
    MSE as MSE,
    AbstractOutputEnergy as AbstractOutputEnergy,
    CrossEntropy as CrossEntropy,
    gaussian_energy as gaussian_energy,
)
from ._equilibrium import (
    AbstractInferenceMethod as AbstractInferenceMethod,
    Equilibrium as Equilibrium,
    IterativeInference as IterativeInference,
    inference_method as inference_method,
)
from ._gradients import bp_gradients as bp_gradients, pc_gradients as pc_gradients
from ._health import TrainingFailure as TrainingFailure
from ._infer import infer as infer
from ._layer import PCLayer as PCLayer
from ._model import PCModel as PCModel
from ._optimiser import (
    SGD as SGD,
    AbstractOptimiser as AbstractOptimiser,
    Adam as Adam,
    FromOptax as FromOptax,
    make_optimiser as make_optimiser,
)
from ._parameterisation import (
    NTP as NTP,
    SP as SP,
    AbstractParameterisation as AbstractParameterisation,
    AdamRule as AdamRule,
    CompleteP as CompleteP,
    DepthMuP as DepthMuP,
    Init as Init,
    InitStdRule as InitStdRule,
    MuP as MuP,
    MuPC as MuPC,
    NetworkShape as NetworkShape,
    Role as Role,
    Scaling as Scaling,
    WeightRole as WeightRole,
)
from ._parameterised import Parameterised as Parameterised
from ._precision import residual_floor as residual_floor
from ._sharding import make_data_mesh as make_data_mesh, replicate as replicate, shard_batch as shard_batch
from ._single_step import bp_step as bp_step, pc_step as pc_step
from ._solution import (
    RESULTS as RESULTS,
    InferenceSolution as InferenceSolution,
    InferenceStats as InferenceStats,
)
from ._solver import (
    LBFGS as LBFGS,
    SOLVERS as SOLVERS,
    AbstractInferenceSolver as AbstractInferenceSolver,
    AbstractPreconditioner as AbstractPreconditioner,
    ConjugateGradient as ConjugateGradient,
    Cost as Cost,
    DepthPreconditioner as DepthPreconditioner,
    GaussNewtonPreconditioner as GaussNewtonPreconditioner,
    GradientDescent as GradientDescent,
    MixedPrecision as MixedPrecision,
    Nesterov as Nesterov,
    NewtonKrylov as NewtonKrylov,
    ODEFlow as ODEFlow,
    OptaxSolver as OptaxSolver,
    OptimistixSolver as OptimistixSolver,
    Preconditioning as Preconditioning,
    RoundingArmijo as RoundingArmijo,
    auto_solver as auto_solver,
    make_solver as make_solver,
)
from ._step import (
    BPStepMetrics as BPStepMetrics,
    ComparisonMetrics as ComparisonMetrics,
    PCStepMetrics as PCStepMetrics,
    ReferenceCheck as ReferenceCheck,
)
from ._train import TrainingRun as TrainingRun, train as train

try:
    __version__ = importlib.metadata.version("pcscale")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkout
    __version__ = "0.0.0"
