"""Any optax optimiser on the activities (momentum, Nesterov, Adam …)."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import optax

from ._base import AbstractInferenceSolver, cost, check_tolerances, to_float


class OptaxSolver(AbstractInferenceSolver):
    """Inference with an optax gradient transformation applied to the per-sample
    activity gradients ∇_{z_i} F_i (the gradient of Σ_i F_i), so that learning rates
    are per sample exactly as for [`GradientDescent`][pcscale.GradientDescent]:
    `OptaxSolver(optax.sgd(β))` is gradient descent with step β.

    **Arguments:**

    - `optimiser`: an `optax.GradientTransformation`, e.g. `optax.sgd(0.1, momentum=0.9)`
      or `optax.adam(0.05)`.
    - `rtol`, `atol`, `max_steps`, `divergence_factor`: as for
      [`GradientDescent`][pcscale.GradientDescent].

    The optimiser's own hyperparameters live in optax closures, so each new optimiser
    object compiles anew; build it once (or use `optax.inject_hyperparams`) to sweep
    without recompiling.
    """

    optimiser: optax.GradientTransformation
    rtol: float = eqx.field(default=1e-5, converter=to_float)
    atol: float = eqx.field(default=0.0, converter=to_float)
    max_steps: int = 10_000
    divergence_factor: float = eqx.field(default=1e4, converter=to_float)

    # An arbitrary transformation (Adam, momentum) need not lower the energy step by
    # step: ending above the start is not taken as divergence (only `divergence_factor`).
    descends: ClassVar[bool] = False

    def __check_init__(self):
        if not isinstance(self.optimiser, optax.GradientTransformation):
            raise TypeError(
                f"`optimiser` must be an optax.GradientTransformation, got "
                f"{type(self.optimiser).__name__}; e.g. optax.sgd(0.1, momentum=0.9)."
            )
        check_tolerances(self)

    def init(self, fn, z, energy, grad, tolerance):
        return self.optimiser.init(z)

    def step(self, fn, z, energy, grad, state):
        updates, state = self.optimiser.update(grad, state, z)
        z = optax.apply_updates(z, updates)
        energy, grad = fn(z)
        return z, energy, grad, state, cost(gradients=1)
