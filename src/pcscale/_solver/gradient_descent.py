"""Gradient descent on the activities with a per-sample step size."""

from __future__ import annotations

import jax
import equinox as eqx

from ._base import AbstractInferenceSolver, check_step_size, check_tolerances, cost, to_float


class GradientDescent(AbstractInferenceSolver):
    """Gradient descent with a per-sample step β:

    z_{i,l} ← z_{i,l} − β·∂F_i/∂z_{i,l},

    which equals z ← z − (β·B)·∇_z F on the batch-mean energy F. β therefore does not
    depend on the batch size. (Early reference code stepped on the batch mean with rate
    `lr`; convert with β = lr / B.) On a quadratic energy GD is stable only for
    β < 2/λ_max(H_z), with H_z the per-sample activity Hessian: β ≲ 0.3–0.45 for μPC
    networks.

    **Arguments:**

    - `step_size`: β, per sample. Default 0.1.
    - `rtol`, `atol`: stop when ‖∇_z Σ_i F_i‖ ≤ atol + rtol·(initial value). Default
      rtol = 1e-5, atol = 0.
    - `max_steps`: the step budget. Default 10 000.
    - `divergence_factor`: report divergence as soon as the energy exceeds this
      multiple of its initial value. Default 1e4. A solve that ends unconverged above
      its initial energy and residual is reported diverged too, whatever this factor
      ([`AbstractInferenceSolver`][pcscale.AbstractInferenceSolver]).
    """

    step_size: float = eqx.field(default=0.1, converter=to_float)
    rtol: float = eqx.field(default=1e-5, converter=to_float)
    atol: float = eqx.field(default=0.0, converter=to_float)
    max_steps: int = 10_000
    divergence_factor: float = eqx.field(default=1e4, converter=to_float)

    def __check_init__(self):
        check_step_size(self)
        check_tolerances(self)

    def init(self, fn, z, energy, grad, tolerance):
        return None

    def step(self, fn, z, energy, grad, state):
        beta = self.step_size
        z = jax.tree.map(lambda z_l, g_l: z_l - beta * g_l, z, grad)
        energy, grad = fn(z)
        return z, energy, grad, state, cost(gradients=1)
