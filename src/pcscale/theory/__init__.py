"""Exact theory of linear PC networks (closed-form equilibrium, rescaling S, exact
activities, predicted gaps), activity-Hessian tools for any network, and the DMFT
solver (docs/background.md §4)."""

from ._activities import (
    AbstractLinearSolve as AbstractLinearSolve,
    ConjugateGradient as ConjugateGradient,
    DenseSolve as DenseSolve,
    Propagation as Propagation,
    equilibrium_activities as equilibrium_activities,
)
from ._auto import auto_solver as auto_solver
from ._closed_form import (
    Rescaling as Rescaling,
    closed_form_gradients as closed_form_gradients,
    equilibrium_energy as equilibrium_energy,
    rescaling as rescaling,
)
from ._dmft import DMFTResult as DMFTResult, dmft as dmft
from ._gap import predicted_gap as predicted_gap
from ._hessian import (
    HessianSpectrum as HessianSpectrum,
    activity_hessian as activity_hessian,
    hessian_spectrum as hessian_spectrum,
    hessian_vector_product as hessian_vector_product,
)
from ._step import ClosedFormStepMetrics as ClosedFormStepMetrics, closed_form_step as closed_form_step
from ._structure import enable_float64 as enable_float64
from ._coord import CoordCheck as CoordCheck, coord_check as coord_check, spread as spread
from ._coord import load_coord_check as load_coord_check, save_coord_check as save_coord_check
from ._coord import coord_check_from_record as coord_check_from_record, coord_check_record as coord_check_record
