"""Inference in error coordinates (error-based PC): any solver, run on the errors."""

from __future__ import annotations

import equinox as eqx

from ._base import AbstractInferenceSolver
from ._preconditioner import AbstractKrylovSolver
from .gradient_descent import GradientDescent


class ErrorCoordinates(AbstractInferenceSolver, rtol=1e-6, max_steps=10_000):
    r"""Run `solver` on the errors instead of the activities: error-based PC (ePC).

    Write the states as z_l = f_l(z_{l−1}) + ε_l (z_0 = x). The errors ε_1 … ε_H are free
    variables as good as the states (the map is a bijection for fixed weights), and the
    energy becomes E(ε) = Σ_l (π_l/2)‖ε_l‖² + λ·ℓ(y, ŷ(z(ε))) (π_l = 1 unless the layers
    carry precisions), its gradient one forward and one backward pass through the
    network. E(ε) = F(z(ε)), so the two have the same
    stationary points and the same equilibria; what changes is the conditioning. In the
    states, a change at the output reaches layer l only after about L − l gradient
    steps; in the errors, every layer sees it at once. The first gradient step from the
    feedforward state (ε = 0) moves every ε_l by −β·λ·∂ℓ/∂z_l, the backpropagated error
    (docs/pc_family.md derives the weight gradient that follows).

    The stopping test is on the state-space residual ‖∇_z Σ_i F_i‖, like every other
    solver's, so that a solve in errors certifies the same thing as one in states; it
    costs one forward and one linear backward pass per step (∇_z F = Aᵀ·∇_ε E, A = ∂ε/∂z),
    counted in `vjp_evals`. [`error_residual`][pcscale.error_residual] gives the residual
    in the errors at any state.

    `ErrorCoordinates(GradientDescent(step_size=β), max_steps=T, rtol=0)` is the ePC
    paper's protocol (T gradient steps on the errors); `ErrorCoordinates(NewtonKrylov())`
    is Newton in the errors, where the Gauss–Newton part Π + λ·JᵀH_ℓJ of the Hessian
    differs from Π in only d_y directions per sample; near the equilibrium, where the
    output's curvature term is small, the inner CG needs few iterations with no
    preconditioner.

    **Arguments:**

    - `solver`: the method that takes the steps, any pcscale solver but a preconditioned
      Krylov solver (its preconditioners are built for the states) or
      [`MixedPrecision`][pcscale.MixedPrecision]; its own stopping settings are unused.
      Default `GradientDescent(step_size=0.1)`.
    - `rtol`, `atol`, `max_steps`, `divergence_factor`, `max_time`, `progress`
      (keyword-only): as for every solver, on the state-space residual. Default rtol =
      1e-6, max_steps = 10 000.
    - `stall_window` (keyword-only): default `solver`'s own.
    """

    solver: AbstractInferenceSolver = eqx.field(default_factory=lambda: GradientDescent(step_size=0.1))

    def __check_init__(self):
        from .mixed_precision import MixedPrecision

        inner = self.solver
        if not isinstance(inner, AbstractInferenceSolver) or isinstance(inner, (ErrorCoordinates, MixedPrecision)):
            raise TypeError(
                f"`solver` must be a pcscale inference solver other than ErrorCoordinates and MixedPrecision, "
                f"got {type(inner).__name__}; e.g. ErrorCoordinates(pcscale.GradientDescent(step_size=0.3))."
            )
        if isinstance(inner, AbstractKrylovSolver) and inner.preconditioner is not None:
            raise ValueError(
                f"`solver` must not carry a preconditioner in error coordinates, got "
                f"{type(inner.preconditioner).__name__}: the preconditioners are built for the states. "
                "Drop it (in the errors the Hessian is already close to I), e.g. "
                "ErrorCoordinates(pcscale.NewtonKrylov())."
            )

    @property
    def window(self):
        return self.solver.window if self.stall_window is None else self.stall_window

    def init(self, model, fn, z, energy, grad, tolerance):  # pragma: no cover - dispatched by infer
        raise NotImplementedError("ErrorCoordinates runs its solver on the errors; infer dispatches it.")

    def step(self, model, fn, z, energy, grad, state):  # pragma: no cover - dispatched by infer
        raise NotImplementedError("ErrorCoordinates runs its solver on the errors; infer dispatches it.")
