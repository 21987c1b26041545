"""pcscale: predictive coding networks at large width and depth, with their BP twins.

The public names below load on first use (`pcscale.infer` imports JAX and the solvers
the first time it is touched), so that `import pcscale` and the `pcscale` command's help
and listings start in a fraction of a second. Everything else behaves as eager imports:
`from pcscale import infer`, `pcscale.nn`, `dir(pcscale)`.
"""

import importlib as _importlib
import importlib.metadata as _metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the public names, for type checkers and the API reference
    from . import nn as nn, theory as theory
    from ._bidirectional import (
        BidirectionalModel as BidirectionalModel,
        BidirectionalSolution as BidirectionalSolution,
        BidirectionalStepMetrics as BidirectionalStepMetrics,
        ancestral_sample as ancestral_sample,
        bpc_step as bpc_step,
        infer_bidirectional as infer_bidirectional,
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
    from ._hybrid import Amortiser as Amortiser, HybridMetrics as HybridMetrics, hybrid_step as hybrid_step
    from ._incremental import IncrementalMetrics as IncrementalMetrics, ipc_step as ipc_step
    from ._infer import error_residual as error_residual, infer as infer
    from ._layer import PCLayer as PCLayer
    from ._model import PCModel as PCModel
    from ._monte_carlo import (
        MonteCarloSamples as MonteCarloSamples,
        MonteCarloStepMetrics as MonteCarloStepMetrics,
        effective_sample_size as effective_sample_size,
        mcpc_sample as mcpc_sample,
        mcpc_step as mcpc_step,
    )
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
        ErrorCoordinates as ErrorCoordinates,
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
    from ._variances import (
        depth_stable_precisions as depth_stable_precisions,
        with_learnt_variances as with_learnt_variances,
        with_precisions as with_precisions,
    )


try:
    __version__ = _metadata.version("pcscale")
except _metadata.PackageNotFoundError:  # pragma: no cover - source checkout
    __version__ = "0.0.0"


# Where each public name lives ("." holds the sub-packages), for loading on first use.
# The same names as the TYPE_CHECKING imports above, which type checkers and the API
# reference read; tests/test_lazy_exports.py checks that the two lists agree.
_EXPORTS_BY_MODULE: dict[str, tuple[str, ...]] = {
    ".": ("nn", "theory"),
    "._bidirectional": (
        "BidirectionalModel", "BidirectionalSolution", "BidirectionalStepMetrics", "ancestral_sample", "bpc_step",
        "infer_bidirectional",
    ),
    "._compare": ("EquilibriumComparison", "GradientAlignment", "compare_at_equilibrium", "compare_gradients"),
    "._energy": ("MSE", "AbstractOutputEnergy", "CrossEntropy", "gaussian_energy"),
    "._equilibrium": ("AbstractInferenceMethod", "Equilibrium", "IterativeInference", "inference_method"),
    "._gradients": ("bp_gradients", "pc_gradients"),
    "._health": ("TrainingFailure",),
    "._hybrid": ("Amortiser", "HybridMetrics", "hybrid_step"),
    "._incremental": ("IncrementalMetrics", "ipc_step"),
    "._infer": ("error_residual", "infer"),
    "._layer": ("PCLayer",),
    "._model": ("PCModel",),
    "._monte_carlo": (
        "MonteCarloSamples", "MonteCarloStepMetrics", "effective_sample_size", "mcpc_sample", "mcpc_step",
    ),
    "._optimiser": ("SGD", "AbstractOptimiser", "Adam", "FromOptax", "make_optimiser"),
    "._parameterisation": (
        "NTP", "SP", "AbstractParameterisation", "AdamRule", "CompleteP", "DepthMuP", "Init", "InitStdRule",
        "MuP", "MuPC", "NetworkShape", "Role", "Scaling", "WeightRole",
    ),
    "._parameterised": ("Parameterised",),
    "._precision": ("residual_floor",),
    "._sharding": ("make_data_mesh", "replicate", "shard_batch"),
    "._single_step": ("bp_step", "pc_step"),
    "._solution": ("RESULTS", "InferenceSolution", "InferenceStats"),
    "._solver": (
        "LBFGS", "SOLVERS", "AbstractInferenceSolver", "AbstractPreconditioner", "ConjugateGradient", "Cost",
        "DepthPreconditioner", "ErrorCoordinates", "GaussNewtonPreconditioner", "GradientDescent", "MixedPrecision",
        "Nesterov", "NewtonKrylov", "ODEFlow", "OptaxSolver", "OptimistixSolver", "Preconditioning", "RoundingArmijo",
        "auto_solver", "make_solver",
    ),
    "._step": ("BPStepMetrics", "ComparisonMetrics", "PCStepMetrics", "ReferenceCheck"),
    "._train": ("TrainingRun", "train"),
    "._variances": ("depth_stable_precisions", "with_learnt_variances", "with_precisions"),
}
_EXPORTS = {name: module for module, names in _EXPORTS_BY_MODULE.items() for name in names}
# Type checkers read the TYPE_CHECKING imports above, which are these names.
__all__ = sorted(_EXPORTS)  # pyright: ignore[reportUnsupportedDunderAll]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pcscale' has no attribute {name!r}")
    loaded = _importlib.import_module(module if module != "." else "." + name, __name__)
    value = loaded if module == "." else getattr(loaded, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({name for name in globals() if not name.startswith("_")} | set(__all__) | {"__version__"})
