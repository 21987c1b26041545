"""Exact theory of linear PC networks (closed-form equilibrium, rescaling S, exact
activities, predicted gaps), the rescaling matrix and one-step energy estimate of any
network, activity-Hessian tools for any network, and the DMFT solver
(docs/background.md §4)."""

from .._solver import auto_solver as auto_solver  # the core's; kept here as an alias
from ._activities import (
    AbstractLinearSolve as AbstractLinearSolve,
    DenseCholesky as DenseCholesky,
    LinearCG as LinearCG,
    Propagation as Propagation,
    equilibrium_activities as equilibrium_activities,
)
from ._closed_form import (
    Rescaling as Rescaling,
    closed_form_gradients as closed_form_gradients,
    equilibrium_energy as equilibrium_energy,
    rescaling as rescaling,
)
from ._coord import CoordCheck as CoordCheck, coord_check as coord_check, spread as spread
from ._dmft import DMFTResult as DMFTResult, dmft as dmft
from ._gap import predicted_gap as predicted_gap
from ._hessian import (
    HessianSpectrum as HessianSpectrum,
    activity_hessian as activity_hessian,
    hessian_spectrum as hessian_spectrum,
    hessian_vector_product as hessian_vector_product,
)
from ._nonlinear import NonlinearRescaling as NonlinearRescaling, nonlinear_rescaling as nonlinear_rescaling
from ._step import (
    ClosedForm as ClosedForm,
    ClosedFormStepMetrics as ClosedFormStepMetrics,
    RescalingGaps as RescalingGaps,
    closed_form_step as closed_form_step,
)
from ._structure import enable_float64 as enable_float64

__all__ = [
    "AbstractLinearSolve", "ClosedForm", "ClosedFormStepMetrics", "CoordCheck", "DMFTResult",
    "DenseCholesky", "HessianSpectrum", "LinearCG", "NonlinearRescaling", "Propagation",
    "Rescaling", "RescalingGaps", "activity_hessian", "auto_solver", "closed_form_gradients",
    "closed_form_step", "coord_check", "dmft", "enable_float64", "equilibrium_activities",
    "equilibrium_energy", "hessian_spectrum", "hessian_vector_product", "nonlinear_rescaling",
    "predicted_gap", "rescaling", "spread",
]

# Names that moved, kept for one release: name → (module, new qualified name).
_MOVED = {
    name: ("pcscale.experiments._coord_files", f"pcscale.experiments.{name}")
    for name in ("coord_check_record", "coord_check_from_record", "save_coord_check", "load_coord_check")
}
# Linear-solve methods renamed, kept for one release: old name → new name in this module
# (pcscale.ConjugateGradient is the inference solver; the theory's CG is LinearCG).
_RENAMED = {"ConjugateGradient": "LinearCG", "DenseSolve": "DenseCholesky"}


def __getattr__(name: str):
    if name in _MOVED:
        import importlib
        import warnings

        module, new = _MOVED[name]
        warnings.warn(f"pcscale.theory.{name} moved to {new}; the old name goes in the next release.",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(module), name)
    if name in _RENAMED:
        import warnings

        warnings.warn(f"pcscale.theory.{name} is renamed pcscale.theory.{_RENAMED[name]}; the old name "
                      "goes in the next release.", DeprecationWarning, stacklevel=2)
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module 'pcscale.theory' has no attribute {name!r}")
