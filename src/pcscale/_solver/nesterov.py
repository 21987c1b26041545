"""Nesterov-accelerated gradient descent with adaptive restart."""

from __future__ import annotations

from typing import cast

import equinox as eqx
import jax.numpy as jnp
import optax.tree_utils as otu
from jaxtyping import Array, Float

from .._custom_types import Activities
from ._base import AbstractInferenceSolver, check_step_size, cost, to_float, to_optional_float


class _NesterovState(eqx.Module):
    previous: Activities  # x_k, the gradient-step sequence
    counter: Float[Array, ""]  # steps since the last restart


class Nesterov(AbstractInferenceSolver, max_steps=100_000):
    r"""Nesterov's accelerated gradient method with gradient-based adaptive restart
    (O'Donoghue & Candès, 2015). With y the point where the gradient is taken:

    x_{k+1} = y_k − β·∇F(y_k),  y_{k+1} = x_{k+1} + μ_k·(x_{k+1} − x_k),

    with momentum μ_k = k/(k + 3) counted from the last restart, or a constant
    `momentum` if given. The momentum is reset whenever ∇F(y_k)ᵀ(x_{k+1} − x_k) > 0,
    i.e. when the step stops being a descent direction, which recovers the optimal
    O(√κ·log(1/rtol)) rate without knowing the condition number κ. One gradient per
    step; the residual is certified at the returned point y.

    Too large a step on a saturating (e.g. tanh) network need not blow up: the
    iterates can oscillate with a bounded energy, far below `divergence_factor` × the
    initial energy. Such a solve still ends `RESULTS.diverged`, because it finishes
    above both its initial energy and its initial residual (the rule shared by every
    solver, [`AbstractInferenceSolver`][pcscale.AbstractInferenceSolver]); reduce β.

    **Arguments:**

    - `step_size`: β per sample (as for [`GradientDescent`][pcscale.GradientDescent];
      stable for β < 2/λ_max). Default 0.2.
    - `momentum`: a constant μ in [0, 1), or None (default) for the k/(k + 3) schedule.
    - `restart`: adaptive restart on (default True).
    - `rtol`, `atol`, `max_steps`, `divergence_factor` (keyword-only): as for
      [`GradientDescent`][pcscale.GradientDescent], with rtol = 1e-6 and
      max_steps = 100 000 by default.
    """

    step_size: float = eqx.field(default=0.2, converter=to_float)
    momentum: float | None = eqx.field(default=None, converter=to_optional_float)
    restart: bool = True

    def __check_init__(self):
        check_step_size(self)
        if self.momentum is not None and not (isinstance(self.momentum, float) and 0 <= self.momentum < 1):
            raise ValueError(
                f"`momentum` must be None (the k/(k + 3) schedule) or a float in [0, 1), got "
                f"{self.momentum!r}; e.g. momentum=0.9."
            )
        if not isinstance(self.restart, bool):
            raise TypeError(f"`restart` must be a bool, got {self.restart!r}; e.g. restart=True.")

    def init(self, model, fn, z, energy, grad, tolerance):
        return _NesterovState(previous=z, counter=jnp.zeros((), energy.dtype))

    def step(self, model, fn, z, energy, grad, state):
        x_new = otu.tree_add_scale(z, -self.step_size, grad)
        difference = otu.tree_sub(x_new, state.previous)
        # `otu.tree_vdot` is typed ArrayLike; it gives a real scalar array.
        reset = (cast(Array, otu.tree_vdot(grad, difference)) > 0) if self.restart else jnp.array(False)
        k = jnp.where(reset, 0.0, state.counter)
        mu = k / (k + 3.0) if self.momentum is None else jnp.where(reset, 0.0, self.momentum)
        y_new = otu.tree_add_scale(x_new, mu, difference)
        new_energy, new_grad = fn(y_new)
        return y_new, new_energy, new_grad, _NesterovState(x_new, k + 1.0), cost(gradients=1)
