"""Inference methods: how a training step finds the activity equilibrium and the PC weight
gradient there. An iterative solver and the linear theory's closed form are two methods
behind one interface, so the step kernel (`pcscale._step`) never asks which kind it got."""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
from jax.sharding import NamedSharding
from jaxtyping import Array, Float

from ._custom_types import Activities
from ._gradients import energy_gradients, loss_gradients
from ._infer import solve_activities
from ._model import PCModel
from ._precise import full_precision
from ._precision import warn_if_uncertifiable
from ._solution import InferenceStats
from ._solver import AbstractInferenceSolver
from ._solver._base import with_traced_numbers


class Equilibrium(eqx.Module):
    """What an inference method returns for one batch at weights θ.

    - `energy`: F at the returned activities (F* for an exact method).
    - `loss`: the feedforward (BP) loss 𝓛(θ).
    - `gradients`: ∇_θF at the returned activities, a model-shaped pytree: the PC weight
      gradient.
    - `stats`: the [`InferenceStats`][pcscale.InferenceStats] of the solve.
    - `activities`: the activities (None for a method that never forms them).
    - `diagnostics`: a method's own extra scalars (the closed form's rescaling gaps), or
      None.
    """

    energy: Float[Array, ""]
    loss: Float[Array, ""]
    gradients: PCModel
    stats: InferenceStats
    activities: Activities | None = None
    diagnostics: eqx.Module | None = None


class AbstractInferenceMethod(eqx.Module):
    """How a training step reaches the activity equilibrium: an iterative solver
    (wrapped by [`inference_method`][pcscale.inference_method]) or an exact method such as
    [`pcscale.theory.ClosedForm`][pcscale.theory.ClosedForm]. Subclasses implement
    `equilibrium`; `exact` says the equilibrium is exact (there is no solve to check)."""

    exact: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        # Every method's maths runs at full float32 matmul precision, also when a user
        # calls it eagerly or inside their own jit.
        super().__init_subclass__(**kwargs)
        for name in ("equilibrium", "loss_and_gradients"):
            if name in cls.__dict__ and not getattr(cls.__dict__[name], "__isabstractmethod__", False):
                setattr(cls, name, full_precision(cls.__dict__[name]))

    @abc.abstractmethod
    def equilibrium(
        self, model: PCModel, x: Array, y: Array, sharding: NamedSharding | None = None, *,
        z0: Activities | None = None,
    ) -> Equilibrium:
        """The [`Equilibrium`][pcscale.Equilibrium] of validated inputs (callable inside
        jit). `z0`: validated starting activities (a warm start), default the feedforward
        state; an iterative method starts there, an exact method ignores it. Either way
        the equilibrium certifies the same tolerance (relative to the feedforward
        residual)."""

    @full_precision
    def loss_and_gradients(self, model: PCModel, x: Array, y: Array) -> tuple[Array, PCModel]:
        """The feedforward loss 𝓛(θ) and ∇_θ𝓛 (the BP gradient), by the cheapest exact
        evaluation this method knows; by default the batched forward pass."""
        return loss_gradients(model, x, y)

    def prepare(self, model: PCModel, x: Array, y: Array, *, stacklevel: int) -> None:
        """Checks and warnings, once, before the first step (outside jit)."""


class IterativeInference(AbstractInferenceMethod):
    """Inference by an iterative solver from the feedforward state (or a warm start
    `z0`), then ∇_θF at the activities it returns (certified only if `stats.result` is
    converged)."""

    solver: AbstractInferenceSolver

    def equilibrium(self, model, x, y, sharding=None, *, z0=None) -> Equilibrium:
        solution = solve_activities(model, x, y, self.solver, z0, sharding)
        energy, gradients = energy_gradients(model, solution.activities, x, y)
        # The solve's initial energy is the feedforward one also from a warm start: λ·𝓛.
        loss = solution.initial_energy / model.output_precision
        return Equilibrium(energy, loss, gradients, solution.stats, solution.activities)

    def prepare(self, model, x, y, *, stacklevel: int) -> None:
        warn_if_uncertifiable(model, x, y, self.solver, stacklevel=stacklevel + 1)


def inference_method(solver, name: str = "solver") -> AbstractInferenceMethod:
    """`solver` as an [`AbstractInferenceMethod`][pcscale.AbstractInferenceMethod]: a
    pcscale inference solver is wrapped (its numbers traced, so that a new tolerance
    does not recompile), a method is returned as it is. `name` is the argument's name in
    the error raised for anything else."""
    if isinstance(solver, AbstractInferenceMethod):
        return solver
    if isinstance(solver, AbstractInferenceSolver):
        return IterativeInference(with_traced_numbers(solver))
    raise TypeError(
        f"`{name}` must be a pcscale inference solver (e.g. pcscale.GradientDescent(step_size=0.1)) or an "
        f"inference method such as pcscale.theory.ClosedForm(), got {type(solver).__name__}."
    )
