"""Gradient descent on the activities with a per-sample step size."""

from __future__ import annotations

import equinox as eqx
import optax.tree_utils as otu

from ._base import AbstractInferenceSolver, check_step_size, cost, to_float


class GradientDescent(AbstractInferenceSolver, rtol=1e-5):
    """Gradient descent with a per-sample step β:

    z_{i,l} ← z_{i,l} − β·∂F_i/∂z_{i,l},

    which equals z ← z − (β·B)·∇_z F on the batch-mean energy F. β therefore does not
    depend on the batch size. (Early reference code stepped on the batch mean with rate
    `lr`; convert with β = lr / B.) On a quadratic energy GD is stable only for
    β < 2/λ_max(H_z), with H_z the per-sample activity Hessian: β ≲ 0.3–0.45 for μPC
    networks.

    **Arguments:**

    - `step_size`: β, per sample. Default 0.1.
    - `rtol`, `atol`: stop when ‖∇_z Σ_i F_i‖ ≤ atol + rtol·(its feedforward value).
      Default rtol = 1e-5, atol = 0.
    - `max_steps`: the step budget. Default 10 000.
    - `divergence_factor`: report divergence as soon as the energy exceeds this
      multiple of its initial value. Default 1e4. A solve that ends unconverged above
      its initial energy and residual is reported diverged too, whatever this factor
      ([`AbstractInferenceSolver`][pcscale.AbstractInferenceSolver]).

    The stopping fields are keyword-only, as for every solver.
    """

    step_size: float = eqx.field(default=0.1, converter=to_float)

    def __check_init__(self):
        check_step_size(self)

    def init(self, model, fn, z, energy, grad, tolerance):
        return None

    def step(self, model, fn, z, energy, grad, state):
        z = otu.tree_add_scale(z, -self.step_size, grad)
        energy, grad = fn(z)
        return z, energy, grad, state, cost(gradients=1)
