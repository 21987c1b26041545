"""The one registry of inference solvers by name. The command line's `--solver` choices,
the experiments' `solver` setting, `auto_solver` (registered as "auto") and the tests'
solver matrix all read it, so a solver added here is offered and tested everywhere."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import optax
import optimistix as optx
from jaxtyping import ArrayLike

from .._model import PCModel
from ._base import AbstractInferenceSolver
from ._preconditioner import DepthPreconditioner
from .auto import auto_solver
from .conjugate_gradient import ConjugateGradient
from .error_coordinates import ErrorCoordinates
from .gauss_newton import GaussNewtonPreconditioner
from .gradient_descent import GradientDescent
from .mixed_precision import MixedPrecision
from .nesterov import Nesterov
from .newton_krylov import NewtonKrylov
from .ode_flow import ODEFlow
from .optax_solver import OptaxSolver
from .optimistix_solver import LBFGS, OptimistixSolver, RoundingArmijo


@dataclasses.dataclass(frozen=True)
class SolverSettings:
    """What a registered solver is built from: the model to solve (some choices depend
    on its structure), the stopping tolerance `rtol`, the per-sample step size β of the
    first-order methods, and optionally a batch (`x`, `y`; "auto" checks the rounding
    floor with it)."""

    model: PCModel | None
    rtol: float
    step_size: float
    x: ArrayLike | None = None
    y: ArrayLike | None = None


@dataclasses.dataclass(frozen=True)
class RegisteredSolver:
    """One entry of [`SOLVERS`][pcscale.SOLVERS]: the class it builds (None for a rule
    that chooses among the others, like "auto"), how it is built from
    `SolverSettings`, and a one-line summary."""

    solver_class: type[AbstractInferenceSolver] | None
    build: Callable[[SolverSettings], AbstractInferenceSolver]
    summary: str


def _residual(model: PCModel) -> bool:
    return any(layer.skip for layer in model.layers[1:-1])


def _required_model(settings: SolverSettings, name: str) -> PCModel:
    """The settings' model, for the choices that depend on its structure."""
    if settings.model is None:
        raise ValueError(f"solver {name!r} chooses from the model's structure: pass `model` (a PCModel).")
    return settings.model


def _auto(settings: SolverSettings) -> AbstractInferenceSolver:
    return auto_solver(_required_model(settings, "auto"), settings.x, settings.y, rtol=settings.rtol)


def _mixed(settings: SolverSettings) -> MixedPrecision:
    preconditioner = DepthPreconditioner() if _residual(_required_model(settings, "mixed")) else None
    return MixedPrecision(solver=NewtonKrylov(rtol=1e-4, preconditioner=preconditioner), rtol=settings.rtol)


def _bfgs(settings: SolverSettings) -> OptimistixSolver:
    # The minimiser's own tolerances are unused: the loop stops on the residual.
    minimiser = eqx.tree_at(lambda m: m.search, optx.BFGS(rtol=0.0, atol=0.0), RoundingArmijo())
    return OptimistixSolver(minimiser, rtol=settings.rtol)


SOLVERS: Mapping[str, RegisteredSolver] = types.MappingProxyType({
    "auto": RegisteredSolver(
        None, _auto,
        "pcscale.auto_solver's choice: conjugate gradients for linear networks, Newton–Krylov otherwise"),
    "gd": RegisteredSolver(
        GradientDescent, lambda s: GradientDescent(step_size=s.step_size, rtol=s.rtol),
        "gradient descent with β = step_size per sample"),
    "nesterov": RegisteredSolver(
        Nesterov, lambda s: Nesterov(step_size=s.step_size / 2, rtol=s.rtol),
        "Nesterov's accelerated gradient with adaptive restart, β = step_size/2 (needs β ≲ 1/λ_max)"),
    "momentum": RegisteredSolver(
        OptaxSolver, lambda s: OptaxSolver(optax.sgd(s.step_size / 2, momentum=0.8), rtol=s.rtol),
        "heavy-ball momentum 0.8 through optax, β = step_size/2"),
    "cg": RegisteredSolver(
        ConjugateGradient, lambda s: ConjugateGradient(rtol=s.rtol),
        "conjugate gradients on Hessian-vector products (exact for linear networks)"),
    "newton": RegisteredSolver(
        NewtonKrylov, lambda s: NewtonKrylov(rtol=s.rtol), "truncated Newton with inner conjugate gradients"),
    "gauss-newton": RegisteredSolver(
        NewtonKrylov, lambda s: NewtonKrylov(rtol=s.rtol, preconditioner=GaussNewtonPreconditioner()),
        "Newton–Krylov preconditioned by the exact Gauss–Newton inverse (Woodbury, error coordinates)"),
    "epc": RegisteredSolver(
        ErrorCoordinates,
        lambda s: ErrorCoordinates(GradientDescent(step_size=s.step_size), rtol=s.rtol),
        "error-based PC: gradient descent on the errors ε, β = step_size per sample"),
    "epc-newton": RegisteredSolver(
        ErrorCoordinates, lambda s: ErrorCoordinates(NewtonKrylov(), rtol=s.rtol),
        "Newton–Krylov on the errors ε (no preconditioner needed there)"),
    "lbfgs": RegisteredSolver(LBFGS, lambda s: LBFGS(rtol=s.rtol), "limited-memory BFGS (Optimistix)"),
    "bfgs": RegisteredSolver(OptimistixSolver, _bfgs, "dense BFGS through the Optimistix adaptor"),
    "ode": RegisteredSolver(ODEFlow, lambda s: ODEFlow(rtol=s.rtol), "the gradient flow, by Diffrax's Tsit5"),
    "mixed": RegisteredSolver(
        MixedPrecision, _mixed, "Newton–Krylov in the model's dtype, certified in float64 (64-bit mode)"),
})
"""Every inference solver by name, read-only: "auto", "gd", "nesterov", "momentum", "cg",
"newton", "gauss-newton", "epc", "epc-newton", "lbfgs", "bfgs", "ode" and "mixed". Each entry holds the solver
class it builds (`solver_class`, None for "auto", which chooses among the others), how it
is built from a tolerance and step size (`build`) and a one-line `summary`. The command
line's `--solver` choices and the experiments' `solver` setting are its keys; build one
with [`make_solver`][pcscale.make_solver]."""


def make_solver(
    name: str,
    model: PCModel | None = None,
    *,
    rtol: float = 1e-6,
    step_size: float = 0.1,
    max_steps: int | None = None,
    x: ArrayLike | None = None,
    y: ArrayLike | None = None,
    progress: bool = False,
) -> AbstractInferenceSolver:
    """The inference solver registered as `name` in [`SOLVERS`][pcscale.SOLVERS].

    **Arguments:**

    - `name`: a key of `SOLVERS`, e.g. "auto", "gd", "cg", "newton".
    - `model`: the [`PCModel`][pcscale.PCModel] to solve; needed by "auto" and "mixed",
      whose choices depend on its structure.
    - `rtol`: the stopping tolerance (relative residual). Default 1e-6.
    - `step_size`: β per sample, used by the first-order methods ("gd" takes it as it
      is, "nesterov" and "momentum" take β/2); the others choose their steps
      themselves. Default 0.1.
    - `max_steps`: the step budget in the solver's own steps (for "mixed", the float64
      polish's Newton steps); default each solver's own.
    - `x`, `y`: a batch, with which "auto" certifies a float32 model in float64 when
      `rtol` lies below its rounding floor.
    - `progress`: print a line every 10 s during long solves.
    """
    if name not in SOLVERS:
        raise ValueError(f"`name` must be one of {', '.join(SOLVERS)}, got {name!r}; e.g. name='auto'.")
    entry = SOLVERS[name]
    if model is None and name in ("auto", "mixed"):
        raise ValueError(f"solver {name!r} chooses from the model's structure: pass `model` (a PCModel).")
    solver = entry.build(SolverSettings(model, rtol, step_size, x, y))
    changes: dict[str, Any] = {"progress": bool(progress)}
    if max_steps is not None:
        changes["max_steps"] = max_steps
    return dataclasses.replace(solver, **changes)
