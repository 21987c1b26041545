"""Any optax optimiser on the activities (momentum, Nesterov, Adam …)."""

from __future__ import annotations

from typing import ClassVar, cast

import optax

from .._custom_types import Activities
from ._base import AbstractInferenceSolver, cost


class OptaxSolver(AbstractInferenceSolver, rtol=1e-5):
    """Inference with an optax gradient transformation applied to the per-sample
    activity gradients ∇_{z_i} F_i (the gradient of Σ_i F_i), so that learning rates
    are per sample exactly as for [`GradientDescent`][pcscale.GradientDescent]:
    `OptaxSolver(optax.sgd(β))` is gradient descent with step β.

    **Arguments:**

    - `optimiser`: an `optax.GradientTransformation`, e.g. `optax.sgd(0.1, momentum=0.9)`
      or `optax.adam(0.05)`.
    - `rtol`, `atol`, `max_steps`, `divergence_factor` (keyword-only): as for
      [`GradientDescent`][pcscale.GradientDescent].

    The optimiser's own hyperparameters live in optax closures, so each new optimiser
    object compiles anew; build it once (or use `optax.inject_hyperparams`) to sweep
    without recompiling.
    """

    optimiser: optax.GradientTransformation

    # An arbitrary transformation (Adam, momentum) need not lower the energy step by
    # step: ending above the start is not taken as divergence (only `divergence_factor`).
    descends: ClassVar[bool] = False

    def __check_init__(self):
        if not isinstance(self.optimiser, optax.GradientTransformation):
            raise TypeError(
                f"`optimiser` must be an optax.GradientTransformation, got "
                f"{type(self.optimiser).__name__}; e.g. optax.sgd(0.1, momentum=0.9)."
            )

    def init(self, model, fn, z, energy, grad, tolerance):
        return self.optimiser.init(z)

    def step(self, model, fn, z, energy, grad, state):
        updates, state = self.optimiser.update(grad, state, z)
        z = cast(Activities, optax.apply_updates(z, updates))  # the same pytree as `z`
        energy, grad = fn(z)
        return z, energy, grad, state, cost(gradients=1)
