"""The interface every inference solver implements, and the settings all of them share."""

from __future__ import annotations

import abc
import functools
import inspect
import numbers
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Int

from .._custom_types import Activities
from .._model import PCModel
from .._validation import is_finite_real

# value_and_grad of the summed per-sample energy Σ_i F_i with respect to the activities.
EnergyAndGrad = Callable[[Activities], tuple[Array, Activities]]


def to_float(value):
    """Field converter: real numbers become Python floats (so that `1` and `1.0` trace
    and cache alike); anything else is left for `__check_init__` to reject."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def to_optional_float(value):
    return value if value is None else to_float(value)


def check_positive(solver, name: str, example: str) -> None:
    """`solver.<name>` must be a positive finite number (converted to float)."""
    value = getattr(solver, name)
    if not (is_finite_real(value) and value > 0):
        raise ValueError(f"`{name}` must be a positive finite float, got {value!r}; e.g. {example}.")


def check_step_size(solver, hint: str = "μPC networks are stable for β ≲ 0.3–0.45.") -> None:
    """Shared validation of a per-sample step size β."""
    if not (is_finite_real(solver.step_size) and solver.step_size > 0):
        raise ValueError(
            f"`step_size` must be a positive finite float (β per sample), got "
            f"{solver.step_size!r}; e.g. step_size=0.1. {hint}"
        )


def _convert(solver):
    def convert(leaf):
        if isinstance(leaf, (int, float)) and not isinstance(leaf, bool):
            return jnp.asarray(leaf)
        return leaf

    return jax.tree.map(convert, solver)


@functools.lru_cache(maxsize=64)
def _converted(solver, x64: bool):
    return _convert(solver)


def with_traced_numbers(solver):
    """The solver with its numeric fields (β, tolerances, budget …) turned into
    weakly-typed arrays, so that jitted callers trace them instead of recompiling for
    every new value. Booleans and non-numeric leaves (e.g. optax functions) are kept.
    Conversions are cached, so a training loop pays for them once."""
    try:
        # Keyed by 64-bit mode too: the same numbers convert to float64 arrays in it.
        return _converted(solver, bool(jax.config.read("jax_enable_x64")))
    except TypeError:  # an unhashable field: convert without caching
        return _convert(solver)


class Cost(eqx.Module):
    """Evaluations one solver step used: `gradients` of the energy (each a forward and a
    backward pass; line-search trials included), `hvps`, Hessian-vector products of
    the activity Hessian (forward-over-reverse, about twice a gradient), and `vjps`,
    linear passes through the network (a preconditioner's products with the linearised
    error-to-state map or its transpose, about half a gradient each)."""

    gradients: Int[Array, ""]
    hvps: Int[Array, ""]
    vjps: Int[Array, ""] | int = 0


def cost(gradients: ArrayLike = 0, hvps: ArrayLike = 0, vjps: ArrayLike = 0) -> Cost:
    return Cost(*(jnp.asarray(count, jnp.int32) for count in (gradients, hvps, vjps)))


# The stopping fields' types. A solver class changes a default with a class keyword, e.g.
# `class NewtonKrylov(AbstractInferenceSolver, max_steps=100)`, which re-declares the
# field with the same converter and a new default (`_stopping_field`).
_STOPPING_TYPES = {"rtol": float, "atol": float, "max_steps": int, "divergence_factor": float}


def _stopping_field(name: str, default):
    if _STOPPING_TYPES[name] is float:
        return eqx.field(default=default, kw_only=True, converter=to_float)
    return eqx.field(default=default, kw_only=True)


class AbstractInferenceSolver(eqx.Module):
    """Base of all inference solvers.

    A solver minimises the summed per-sample energy Σ_i F_i over the activities (so every
    sample moves by its own gradient and step sizes are per sample, independent of the
    batch size). The loop in [`infer`][pcscale.infer] calls `init` once, then `step`
    until the residual ‖∇_z Σ_i F_i‖ ≤ `atol` + `rtol`·(residual at the feedforward state,
    also from a warm start), the budget
    `max_steps` runs out, or the solve diverges.

    Divergence (`RESULTS.diverged`) is decided alike for every solver:

    - during the solve, as soon as the energy or the residual is non-finite or the
      energy exceeds `divergence_factor` × its initial value (a runaway);
    - at the end of a solve that did not converge (budget, stall or time), when it
      finished both above its initial energy (by more than the energy's rounding error,
      64·eps·|F_0|) and with a residual above its initial residual: every solver is a
      descent method, so a solve that ends worse than its start on both counts has gone
      backwards (typically a bounded oscillation, e.g. momentum or too large a step on
      a saturating network), however far. This test is made at the end only, because
      momentum methods may rise transiently on the way down.

    Every solver carries the keyword-only stopping fields, declared here once:

    - `rtol`, `atol`: stop when ‖∇_z Σ_i F_i‖ ≤ atol + rtol·(its feedforward value).
      Default rtol = 1e-6 (1e-5 for the first-order `GradientDescent` and `OptaxSolver`),
      atol = 0. Setting `rtol = atol = 0` runs the full budget (the reference
      implementation's fixed-budget behaviour), still reporting the residual reached.
    - `max_steps`: the step budget, in the solver's own steps. Default 10 000 (each
      solver documents its own).
    - `divergence_factor`: report divergence as soon as the energy exceeds this
      multiple of its initial value. Default 1e4.

    A subclass changes the default of `rtol` or `max_steps` with a class keyword, e.g.
    `class MySolver(pcscale.AbstractInferenceSolver, max_steps=100)`.

    Every solver also takes three keyword-only fields that the loop enforces alike:

    - `stall_window`: the loop ends with `RESULTS.stalled` when, for this many
      consecutive steps, neither the residual fell below (1 − `stall_margin`) times its
      best value so far nor the energy fell below its best value by more than its
      rounding error (64·eps·|F|): a solve that cannot progress (typically at the
      rounding floor of the dtype, docs/inference.md) stops promptly and reports the
      residual it reached, instead of spending its whole budget. Default None: the
      solver class's `default_stall_window` (many cheap steps for first-order methods,
      a few for Newton). 0 turns the test off.
    - `max_time`: a wall-clock budget in seconds for one solve; the loop then ends with
      `RESULTS.max_time`. Default None (no limit). The loop reads the host's clock about
      once a second; on a CPU a loop that waits for the host's answer runs about 10%
      slower per step, so set it only when you need it (docs/inference.md).
    - `progress`: print a line (step, relative residual, energy, elapsed time) to
      standard error every 10 s while one solve runs. Default False; the command line
      turns it on. It costs nothing measurable (the host is told, never asked).

    A solver implements `init(model, fn, z, energy, grad, tolerance)` and
    `step(model, fn, z, energy, grad, state)`: `model` is the
    [`PCModel`][pcscale.PCModel] being solved (for preconditioners built from its
    structure) and `fn` maps activities to Σ_i F_i and its gradient (with `fn.value`
    the energy alone).

    A solver whose `step` returns an energy and gradient obtained by a recurrence
    rather than by evaluating the energy (conjugate gradients) sets the class variable
    `exact_values = False`; the loop then re-evaluates the gradient before accepting a
    claim of convergence, so `converged` always means the true residual met the
    tolerance.
    """

    # The fields `_stopping_field` makes, written out so that type checkers see that they
    # are keyword-only.
    rtol: float = eqx.field(default=1e-6, kw_only=True, converter=to_float)
    atol: float = eqx.field(default=0.0, kw_only=True, converter=to_float)
    max_steps: int = eqx.field(default=10_000, kw_only=True)
    divergence_factor: float = eqx.field(default=1e4, kw_only=True, converter=to_float)
    stall_window: int | None = eqx.field(default=None, kw_only=True)
    max_time: float | None = eqx.field(default=None, kw_only=True, converter=to_optional_float)
    progress: bool = eqx.field(default=False, kw_only=True, static=True)

    exact_values: ClassVar[bool] = True
    # Steps without progress before `stalled`, and the relative residual decrease that
    # counts as progress (see the class docstring).
    default_stall_window: ClassVar[int] = 200
    stall_margin: ClassVar[float] = 1e-3
    # The rough cost of one step in gradient evaluations, which spaces progress reports.
    step_cost: ClassVar[int] = 1
    # Whether every step is meant to lower the energy (or the solver ends below where it
    # started), so that ending above the start energy with a larger residual is
    # divergence; False for general optax transformations (Adam, momentum).
    descends: ClassVar[bool] = True

    def __init_subclass__(cls, *, rtol: float | None = None, max_steps: int | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        # The class's own annotations, which the dataclass machinery reads when the class
        # is built, with the re-declared fields added.
        annotations = dict(inspect.get_annotations(cls))
        for name, default in (("rtol", rtol), ("max_steps", max_steps)):
            if default is not None:
                annotations[name] = _STOPPING_TYPES[name]
                setattr(cls, name, _stopping_field(name, default))
        cls.__annotations__ = annotations

    def __check_init__(self):
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if not (is_finite_real(value) and value >= 0):
                raise ValueError(
                    f"`{name}` must be a non-negative finite float, got {value!r}; e.g. {name}=1e-5, "
                    "or 0 to run the full step budget."
                )
        steps = self.max_steps
        if not (isinstance(steps, numbers.Integral) and not isinstance(steps, bool) and steps >= 0):
            raise ValueError(f"`max_steps` must be a non-negative int, got {steps!r}; e.g. max_steps=1000.")
        factor = self.divergence_factor
        if not (is_finite_real(factor) and factor > 1):
            raise ValueError(
                f"`divergence_factor` must be a finite float > 1, got {factor!r}; the default is 1e4."
            )
        window = self.stall_window
        if window is not None and not (
            isinstance(window, numbers.Integral) and not isinstance(window, bool) and window >= 0
        ):
            raise ValueError(
                f"`stall_window` must be None (the solver's default) or a non-negative int, got "
                f"{window!r}; e.g. stall_window=100, or 0 to turn stall detection off."
            )
        limit = self.max_time
        if limit is not None and not (is_finite_real(limit) and limit > 0):
            raise ValueError(
                f"`max_time` must be None (no limit) or a positive, finite number of seconds, got "
                f"{limit!r}; e.g. max_time=60.0."
            )
        if not isinstance(self.progress, bool):
            raise TypeError(f"`progress` must be a bool, got {self.progress!r}; e.g. progress=True.")

    @property
    def window(self) -> int | Array:
        """The stall window in force (`stall_window`, or the class default); an array
        inside `infer`, where the solver's numbers are traced."""
        return type(self).default_stall_window if self.stall_window is None else self.stall_window

    @abc.abstractmethod
    def init(
        self, model: PCModel, fn: EnergyAndGrad, z: Activities, energy: Array, grad: Activities,
        tolerance: Array,
    ) -> Any:
        """Solver state, from the starting activities, their summed energy and gradient,
        and the absolute residual the loop will stop at (second-order solvers use it to
        size inner solves)."""

    @abc.abstractmethod
    def step(
        self, model: PCModel, fn: EnergyAndGrad, z: Activities, energy: Array, grad: Activities, state: Any
    ) -> tuple[Activities, Array, Activities, Any, Cost]:
        """One update. Returns the new activities, their summed energy and gradient (so
        the loop never re-evaluates), the new state and the [`Cost`][pcscale.Cost] of
        the step."""

    def stalled(self, state: Any) -> Bool[Array, ""]:
        """Whether the solver can make no further progress from `state` (e.g. a line
        search found no acceptable step); the loop then ends with `RESULTS.stalled`."""
        return jnp.array(False)
