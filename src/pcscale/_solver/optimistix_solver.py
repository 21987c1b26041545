"""Any Optimistix minimiser on the activities, driven one step at a time by the
inference loop (so that stopping, divergence and evaluation counts stay ours)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Float

from .._validation import is_finite_real
from ._base import AbstractInferenceSolver, check_positive, cost

_TAGS = frozenset()


class _BacktrackingState(eqx.Module):
    step_size: Float[Array, ""]


class RoundingArmijo(optx.AbstractSearch):
    """Backtracking Armijo search whose sufficient-decrease test allows the energy's
    rounding error: accept when F(y_eval) − F(y) ≤ c·∇Fᵀ(y_eval − y) + 16·eps·|F(y)|.

    Optimistix's `BacktrackingArmijo` compares energies exactly; near an equilibrium the
    decrease a step can achieve (∝ ‖∇F‖²) falls below the rounding error of F, every
    trial is rejected and the solve stalls around a relative residual of 1e-8 in
    float64. Allowing rounding lets the quasi-Newton step (which is good there) through.
    """

    decrease_factor: float = 0.5
    slope: float = 0.1
    step_init: float = 1.0

    def __check_init__(self):
        for name, low, high in (("decrease_factor", 0.0, 1.0), ("slope", 0.0, 0.5)):
            value = getattr(self, name)
            if not (is_finite_real(value) and low < value < high):
                raise ValueError(f"`{name}` must be in ({low:g}, {high:g}), got {value!r}; e.g. {name}=0.1.")
        check_positive(self, "step_init", "step_init=1.0")

    def init(self, y, f_info_struct):
        return _BacktrackingState(step_size=jnp.array(self.step_init))

    def step(self, first_step, y, y_eval, f_info, f_eval_info, state):
        difference = jax.tree.map(jnp.subtract, y_eval, y)
        predicted = f_info.compute_grad_dot(difference)
        f, f_eval = f_info.as_min(), f_eval_info.as_min()
        rounding = 16 * jnp.finfo(jnp.result_type(f)).eps * jnp.abs(f)
        armijo = f_eval - f <= self.slope * predicted + rounding
        accept = first_step | (armijo & (predicted <= 0) & jnp.isfinite(f_eval))
        step_size = jnp.where(accept, self.step_init, self.decrease_factor * state.step_size)
        return step_size, accept, optx.RESULTS.successful, _BacktrackingState(step_size=step_size)


def _scalar(fn):
    return lambda z, args: (fn.value(z), None)


def minimiser_init(minimiser, fn, z, energy):
    return minimiser.init(_scalar(fn), z, None, {}, jax.ShapeDtypeStruct(energy.shape, energy.dtype), None, _TAGS)


def minimiser_step(minimiser, fn, z, energy, grad, state):
    """One step of `minimiser`; the energy and gradient at the point it returns are
    read from its state (Optimistix keeps them as `f_info` for every gradient-based
    minimiser), so no extra evaluation is needed. A rejected trial leaves the point and
    its values unchanged."""
    new_z, state, _ = minimiser.step(_scalar(fn), z, None, {}, state, _TAGS)
    info = state.f_info
    return new_z, info.f, info.grad, state, cost(gradients=1)


def check_minimiser(minimiser) -> None:
    if not isinstance(minimiser, optx.AbstractMinimiser):
        raise TypeError(
            f"`minimiser` must be an optimistix.AbstractMinimiser, got {type(minimiser).__name__}; "
            "e.g. optimistix.NonlinearCG(rtol=1e-6, atol=1e-6) (its own rtol/atol are not "
            "used: the inference loop stops on the residual)."
        )


class OptimistixSolver(AbstractInferenceSolver):
    """Inference with an Optimistix minimiser stepping on Σ_i F_i, e.g.
    `optimistix.NonlinearCG`, `optimistix.BFGS` or `optimistix.LBFGS` (for the latter,
    [`LBFGS`][pcscale.LBFGS] is a shortcut). The minimiser's own `rtol`/`atol` are
    ignored: the loop of [`infer`][pcscale.infer] stops on the residual
    ‖∇_z Σ_i F_i‖, counts one gradient evaluation per step, and reads the energy and
    gradient from the minimiser's state (its `f_info`, which every gradient-based
    Optimistix minimiser keeps).

    Note that Optimistix's first step re-evaluates the starting point, so the counts
    include one evaluation more than the minimiser strictly needs. Minimisers with an
    exact Armijo line search (`optimistix.BacktrackingArmijo`) stall near a relative
    residual of 1e-8 in float64, where the energy decrease falls below rounding; swap
    in [`RoundingArmijo`][pcscale.RoundingArmijo] with `equinox.tree_at` to go further.

    **Arguments:**

    - `minimiser`: an `optimistix.AbstractMinimiser` whose state has `f_info` with `f`
      and `grad` (all of Optimistix's gradient-based minimisers).
    - `rtol`, `atol`, `max_steps`, `divergence_factor` (keyword-only): as for
      [`GradientDescent`][pcscale.GradientDescent], with rtol = 1e-6 by default.
    """

    minimiser: optx.AbstractMinimiser = eqx.field(static=True)

    def __check_init__(self):
        check_minimiser(self.minimiser)

    def init(self, model, fn, z, energy, grad, tolerance):
        state = minimiser_init(self.minimiser, fn, z, energy)
        if not hasattr(state, "f_info"):
            raise TypeError(
                f"{type(self.minimiser).__name__} keeps no `f_info` (energy and gradient) in its "
                "state, so the inference loop cannot certify its residual; use a "
                "gradient-based minimiser such as optimistix.NonlinearCG or optimistix.BFGS."
            )
        return state

    def step(self, model, fn, z, energy, grad, state):
        return minimiser_step(self.minimiser, fn, z, energy, grad, state)


class LBFGS(AbstractInferenceSolver):
    """Limited-memory BFGS: Optimistix's `LBFGS` (two-loop recursion on the last
    `history_length` curvature pairs) with a backtracking Armijo line search that
    allows the energy's rounding error (so that it can reach relative residuals far
    below 1e-8 in float64; Optimistix's own exact test stalls there). One gradient per
    step; rejected line-search trials count as steps.

    **Arguments:**

    - `history_length`: curvature pairs kept. Default 10.
    - `rtol`, `atol`, `max_steps`, `divergence_factor` (keyword-only): as for
      [`GradientDescent`][pcscale.GradientDescent], with rtol = 1e-6 by default.
    """

    history_length: int = eqx.field(default=10, static=True)

    def __check_init__(self):
        value = self.history_length
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`history_length` must be a positive int, got {value!r}; e.g. 10.")

    @property
    def _minimiser(self):
        # The minimiser's own tolerances are unused: the loop stops on the residual.
        minimiser = optx.LBFGS(rtol=0.0, atol=0.0, history_length=self.history_length)
        return eqx.tree_at(lambda m: m.search, minimiser, RoundingArmijo())

    def init(self, model, fn, z, energy, grad, tolerance):
        if jax.config.read("jax_enable_x64") and energy.dtype != jnp.float64:
            raise TypeError(
                f"LBFGS cannot run on {energy.dtype} activities while jax_enable_x64 is on: "
                "Optimistix's L-BFGS history mixes in float64 scalars and fails to trace. "
                "Build the model in float64, turn x64 off, or use pcscale.NewtonKrylov."
            )
        return minimiser_init(self._minimiser, fn, z, energy)

    def step(self, model, fn, z, energy, grad, state):
        return minimiser_step(self._minimiser, fn, z, energy, grad, state)

