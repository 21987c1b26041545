"""Inference as the gradient flow dz/dt = −∇_z F, integrated by Diffrax."""

from __future__ import annotations

from typing import ClassVar, cast

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optax.tree_utils as otu
from jaxtyping import Array, Bool, Float, PyTree

from .._validation import is_finite_real
from ._base import AbstractInferenceSolver, check_positive, cost, to_float, to_optional_float


class _FlowState(eqx.Module):
    t0: Float[Array, ""]
    t1: Float[Array, ""]
    made_jump: Bool[Array, ""]
    solver_state: PyTree
    controller_state: PyTree
    step_atol: Float[Array, ""]
    first: Bool[Array, ""]


def _tableau(solver: diffrax.AbstractRungeKutta) -> diffrax.ButcherTableau:
    """The tableau of an explicit Runge–Kutta solver: one `ButcherTableau` (Diffrax types
    `tableau` for the whole Runge–Kutta family, whose additive methods have several)."""
    return cast(diffrax.ButcherTableau, solver.tableau)


def _stages(solver) -> int:
    """New vector-field evaluations per step of an explicit Runge–Kutta solver."""
    tableau = solver.tableau
    return len(tableau.c) + 1 - (1 if tableau.fsal else 0)


class ODEFlow(AbstractInferenceSolver, max_steps=100_000):
    r"""Integrate the gradient flow dz/dt = −∇_z Σ_i F_i (the continuous-time limit of
    gradient descent, as in the PC literature) with a Diffrax explicit Runge–Kutta
    solver and an adaptive step-size controller, and stop on the vector field: at the
    first accepted step where ‖∇_z Σ_i F_i‖ ≤ atol + rtol·(initial value) — a
    steady-state test on the gradient, not on the change of the state.

    Each loop step is one attempted integration step (rejected attempts count as steps
    and leave z unchanged). Gradient evaluations count the solver's stages plus one
    evaluation at each accepted point, where the energy and residual are certified.

    The flow is stiff for deep networks (the activity Hessian's condition number grows
    like L²), so an explicit integrator's step is limited by stability, not accuracy:
    expect a cost similar to gradient descent at its largest stable step. It is here for
    fidelity to continuous-time PC; for speed use
    [`NewtonKrylov`][pcscale.NewtonKrylov] or [`ConjugateGradient`][pcscale.ConjugateGradient].

    **Arguments:**

    - `solver`: an explicit Runge–Kutta Diffrax solver with an embedded error estimate,
      e.g. `diffrax.Tsit5()` (default), `diffrax.Bosh3()`, `diffrax.Heun()`.
    - `step_rtol`, `step_atol`: the controller's local error tolerances (Diffrax's
      root-mean-square error norm). Default `step_rtol = 0` and `step_atol = None`, which
      derives it from the stopping tolerance τ: 0.01·τ/√n for n activity coordinates
      in all, so that the integration error in z cannot hold the residual above τ
      (λ_max ≲ 10 for PC networks). On deep networks the step is limited by stability,
      not by these tolerances, so tightening them costs little.
    - `dt0`: the first step size in flow time. Default 0.1.
    - `rtol`, `atol`, `max_steps`, `divergence_factor` (keyword-only): as for
      [`GradientDescent`][pcscale.GradientDescent], with rtol = 1e-6 and
      max_steps = 100 000 by default.
    """

    solver: diffrax.AbstractRungeKutta = eqx.field(default_factory=diffrax.Tsit5, static=True)
    step_rtol: float = eqx.field(default=0.0, converter=to_float)
    step_atol: float | None = eqx.field(default=None, converter=to_optional_float)
    dt0: float = eqx.field(default=0.1, converter=to_float)

    step_cost: ClassVar[int] = 6  # the Runge–Kutta stages

    def __check_init__(self):
        if not isinstance(self.solver, diffrax.AbstractERK):
            raise TypeError(
                f"`solver` must be an explicit Diffrax Runge–Kutta solver (diffrax.AbstractERK), got "
                f"{type(self.solver).__name__}; e.g. diffrax.Tsit5()."
            )
        if _tableau(self.solver).b_error is None:
            raise ValueError(
                f"{type(self.solver).__name__} has no embedded error estimate, so its step "
                "cannot be adapted; use diffrax.Tsit5(), diffrax.Bosh3() or diffrax.Heun()."
            )
        check_positive(self, "dt0", "dt0=0.1")
        if not (is_finite_real(self.step_rtol) and self.step_rtol >= 0):
            raise ValueError(
                f"`step_rtol` must be a non-negative finite float, got {self.step_rtol!r}; e.g. "
                "step_rtol=0.0."
            )
        if self.step_atol is not None and not (is_finite_real(self.step_atol) and self.step_atol > 0):
            raise ValueError(
                f"`step_atol` must be None (derived from the tolerance) or a positive finite float, "
                f"got {self.step_atol!r}; e.g. step_atol=1e-8."
            )

    def _parts(self, fn, step_atol):
        term = diffrax.ODETerm(lambda t, z, args: jax.tree.map(jnp.negative, fn(z)[1]))
        controller = diffrax.PIDController(rtol=self.step_rtol, atol=step_atol)
        return term, controller

    def init(self, model, fn, z, energy, grad, tolerance):
        if self.step_atol is None:
            size = sum(leaf.size for leaf in jax.tree.leaves(z))
            floor = 10 * jnp.finfo(energy.dtype).eps
            step_atol = jnp.maximum(0.01 * tolerance / size**0.5, floor).astype(energy.dtype)
        else:
            step_atol = jnp.asarray(self.step_atol, energy.dtype)
        term, controller = self._parts(fn, step_atol)
        t0 = jnp.zeros((), energy.dtype)
        horizon = jnp.asarray(jnp.inf, energy.dtype)
        solver_state = self.solver.init(term, t0, t0 + self.dt0, z, None)
        t1, controller_state = controller.init(
            term, t0, horizon, z, self.dt0, None, self.solver.func, self.solver.error_order(term)
        )
        t1 = jnp.asarray(t1, energy.dtype)
        return _FlowState(t0, t1, jnp.array(False), solver_state, controller_state, step_atol, jnp.array(True))

    def step(self, model, fn, z, energy, grad, state):
        term, controller = self._parts(fn, state.step_atol)
        candidate, error, _, solver_state, _ = self.solver.step(
            term, state.t0, state.t1, z, None, state.solver_state, state.made_jump
        )
        keep, t0, t1, made_jump, controller_state, _ = controller.adapt_step_size(
            state.t0,
            state.t1,
            z,
            candidate,
            None,
            error,
            # Diffrax types this argument as not None, yet its own loop passes `error_order`
            # as here, and the controller raises a clear error for None.
            self.solver.error_order(term),  # pyright: ignore[reportArgumentType]  # as diffrax's own loop
            state.controller_state,
        )
        new_energy, new_grad = jax.lax.cond(keep, lambda: fn(candidate), lambda: (energy, grad))
        new_z = otu.tree_where(keep, candidate, z)
        solver_state = otu.tree_where(keep, solver_state, state.solver_state)
        new_state = _FlowState(
            jnp.asarray(t0, energy.dtype),
            jnp.asarray(t1, energy.dtype),
            jnp.asarray(made_jump),
            solver_state,
            controller_state,
            state.step_atol,
            jnp.array(False),
        )
        # A first-same-as-last solver evaluated the field once in `init`: counted here.
        initial = (state.first & _tableau(self.solver).fsal).astype(jnp.int32)
        # Diffrax types `keep` as a bool or an array; the PID controller's is an array.
        evaluations = _stages(self.solver) + jnp.asarray(keep).astype(jnp.int32) + initial
        return new_z, new_energy, new_grad, new_state, cost(gradients=evaluations)
