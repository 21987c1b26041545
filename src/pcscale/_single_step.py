"""The public single steps: `pc_step` (one jitted PC training step, optionally from a
warm start) and `bp_step` (one BP step, near a plain jitted optax step's cost)."""

from __future__ import annotations

import functools
import logging

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import PyTree

from ._custom_types import Activities, BatchX, BatchY
from ._equilibrium import AbstractInferenceMethod, inference_method
from ._model import PCModel
from ._precise import full_precision, precise_jit
from ._sharding import follow_batch
from ._solver import AbstractInferenceSolver
from ._step import BPStepMetrics, PCStepMetrics, bp_update, pc_update
from ._validation import as_float_array, cast_to, check_finite, check_opt_state, validated


def _check_optimiser(optimiser) -> None:
    if not isinstance(optimiser, optax.GradientTransformation):
        raise TypeError(
            f"`optimiser` must be an optax.GradientTransformation, got {type(optimiser).__name__}; "
            "build it with pcscale.make_optimiser(model, pcscale.Adam(1e-3)) (one call serves "
            "the PC model and its BP twin)."
        )


def _warm_start(model, z0, name: str):
    """Validated starting activities in the model's dtype (MixedPrecision returns float64
    activities for a float32 model), or None: the feedforward state."""
    if z0 is None:
        return None
    return tuple(check_finite(cast_to(z_l, model.dtype), f"{name}[{i}]") for i, z_l in enumerate(z0))


@precise_jit
def _pc_step(model, opt_state, x, y, optimiser, method, allow_diverged, sharding, z0=None):
    check_opt_state(model, optimiser, opt_state)  # at trace time only: shapes are static
    x, y = validated(model, x, y, z0)
    z0 = _warm_start(model, z0, "z0")
    model, opt_state, found, metrics = pc_update(model, opt_state, x, y, optimiser, method, allow_diverged,
                                                 sharding, z0)
    return model, opt_state, metrics, found.activities


def pc_step(
    model: PCModel,
    opt_state: PyTree,
    x: BatchX,
    y: BatchY,
    *,
    optimiser: optax.GradientTransformation,
    solver: AbstractInferenceSolver | AbstractInferenceMethod,
    allow_diverged: bool = False,
    z0: Activities | None = None,
    return_activities: bool = False,
) -> tuple[PCModel, PyTree, PCStepMetrics] | tuple[PCModel, PyTree, PCStepMetrics, Activities | None]:
    """One jitted PC training step: inference from the feedforward state (or a warm start
    `z0`), the weight gradient ∇_θF at the returned activities, then an optimiser update.

    A warm start certifies the same thing as a cold one: the solver's `rtol` stays
    relative to the residual at the feedforward state of the current weights (one more
    gradient evaluation, counted in `metrics.inference.grad_evals`), and
    `metrics.inference.initial_energy` and `.initial_residual` are the feedforward ones.
    Carry a step's equilibrium into the next with `return_activities=True` (see
    "Warm starts" in docs/training.md; [`train`][pcscale.train] does this with
    `warm_start=True`).

    If inference diverged, the step refuses to update (weights and optimiser state are
    returned unchanged and `metrics.updated` is False) unless `allow_diverged=True`. A
    non-finite gradient is never applied.

    Data parallel: pass `x` and `y` split over a device mesh
    ([`shard_batch`][pcscale.shard_batch]) and the step runs on every device of it,
    activities split and weights replicated (see docs/scaling.md).

    **Arguments:**

    - `model`, `x`, `y`: as for [`infer`][pcscale.infer].
    - `opt_state`: `optimiser.init(eqx.filter(model, eqx.is_array))`.
    - `optimiser`: from [`make_optimiser`][pcscale.make_optimiser].
    - `solver`: the inference solver, or an inference method such as
      [`pcscale.theory.ClosedForm`][pcscale.theory.ClosedForm] (linear networks).
    - `allow_diverged`: update even from a diverged inference state.
    - `z0`: starting activities, a tuple of batched arrays shaped like
      `model.init_activities(x)` (cast to the model's dtype); default the feedforward
      state. An exact method (`ClosedForm`) ignores it.
    - `return_activities`: also return the equilibrium activities at θ_t (None for a
      method that never forms them, such as `ClosedForm`).

    **Returns:** `(model, opt_state, PCStepMetrics)`, or with `return_activities=True`
    `(model, opt_state, PCStepMetrics, activities)`.
    """
    method = inference_method(solver)
    _check_optimiser(optimiser)
    x, y = as_float_array(x, "x"), as_float_array(y, "y")
    if z0 is not None:
        if isinstance(z0, list):
            z0 = tuple(z0)
        if not isinstance(z0, tuple):
            raise TypeError(
                f"`z0` must be a tuple of batched activity arrays (one per hidden layer), got "
                f"{type(z0).__name__}; pass model.init_activities(x) or the activities returned by "
                "pc_step(..., return_activities=True)."
            )
        z0 = tuple(as_float_array(z_l, f"z0[{i}]") for i, z_l in enumerate(z0))
    y, z0, sharding = follow_batch(x, y, z0)
    model, opt_state, metrics, activities = _pc_step(model, opt_state, x, y, optimiser, method,
                                                     bool(allow_diverged), sharding, z0)
    if return_activities:
        return model, opt_state, metrics, activities
    return model, opt_state, metrics


@precise_jit
def _bp_step(model, opt_state, x, y, optimiser):
    check_opt_state(model, optimiser, opt_state)  # at trace time only: shapes are static
    x, y = validated(model, x, y)
    model, opt_state, _, metrics = bp_update(model, opt_state, x, y, optimiser)
    return model, opt_state, metrics


@functools.partial(jax.jit, static_argnums=4)
@full_precision
def _lean_bp_step(model, opt_state, x, y, optimiser):
    """`_bp_step` for `bp_step`'s common case, near a plain jitted step's cost: `jax.jit`
    (no `eqx.filter_jit` partition of the model and state and recombination of its
    outputs on every call, ~0.3 ms for the 784 → 128 × 8 MLP), the input checks as flags
    instead of `eqx.error_if`, and a refused update left for the host to drop instead of
    a select over every weight and state leaf. Returns `(proposed model, proposed state,
    metrics, [x and y finite, accept])`."""
    check_opt_state(model, optimiser, opt_state)  # at trace time only: shapes are static
    x, y = model._check(x, y)  # validated's static checks and casts
    # One sum each: a NaN or inf makes it non-finite, and finite data whose sum overflows
    # only sends the call to `_bp_step`, which checks the data exactly.
    inputs_finite = jnp.isfinite(jnp.sum(x)) & jnp.isfinite(jnp.sum(y))
    model, opt_state, _, metrics = bp_update(model, opt_state, x, y, optimiser, keep_refused=False)
    return model, opt_state, metrics, jnp.stack([inputs_finite, metrics.updated])


class _CallbackFailed(logging.Filter):
    """Hides JAX's log of a failed check inside the lean BP step (`eqx.error_if`), which
    the step then reports itself, as `eqx.filter_jit` does."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "jax.pure_callback failed"


def _as_array(value, name: str):
    """`as_float_array`, returning a JAX array of a numeric dtype as it is without its
    conversion path (measured at ~35 µs a call before a step's dispatch)."""
    if isinstance(value, jax.Array) and value.dtype.kind in "biufc":
        return value
    return as_float_array(value, name)


def bp_step(
    model: PCModel, opt_state: PyTree, x: BatchX, y: BatchY, *, optimiser: optax.GradientTransformation
) -> tuple[PCModel, PyTree, BPStepMetrics]:
    """One jitted BP step on the same model: ∇_θ𝓛 of the feedforward pass, then an
    optimiser update (skipped, and `metrics.updated` False, if the gradient is not
    finite). Arguments as for [`pc_step`][pcscale.pc_step]; a sharded batch makes it
    data parallel in the same way.

    It costs about what a plain `jax.jit`-ed optax step of the same network costs
    (benchmarks/step_time.py: 1.06–1.09× on a CPU). To get there it reads on the host
    whether the update was accepted (a refused update returns the caller's own weights
    and optimiser state), so each call waits for its step to finish and successive
    calls do not overlap on an accelerator; inside [`train`][pcscale.train] the steps
    run in one jitted program each and this does not apply.

    **Returns:** `(model, opt_state, BPStepMetrics)`.
    """
    _check_optimiser(optimiser)
    x, y = _as_array(x, "x"), _as_array(y, "y")
    y, _, _ = follow_batch(x, y)
    arguments = (model, opt_state, x, y, optimiser)
    if not jnp.issubdtype(jnp.result_type(y), jnp.floating):
        # Integer labels are checked inside the program (one-hot rows, eqx.error_if): a
        # failing check under plain jax.jit leaves JAX's runtime an error token that
        # breaks later programs, so they take the eqx.filter_jit path.
        return _bp_step(*arguments)
    # Every case the lean step does not finish itself goes to `_bp_step` (eqx.filter_jit),
    # which raises the error with its own message or runs the step: a leaf jax.jit cannot
    # take (a function or string in the model or state) or a check failing at trace time
    # (TypeError), a check failing inside the program (eqx.error_if: JaxRuntimeError, its
    # log hidden), a non-finite x or y, and a call inside the caller's own trace.
    callback_logger, silence = logging.getLogger("jax._src.callback"), _CallbackFailed()
    callback_logger.addFilter(silence)
    try:
        new_model, new_state, metrics, flags = _lean_bp_step(*arguments)
        inputs_finite, accept = (False, False) if isinstance(flags, jax.core.Tracer) else np.asarray(flags)
    except (TypeError, jax.errors.JaxRuntimeError):
        inputs_finite = False
    finally:
        callback_logger.removeFilter(silence)
    if not inputs_finite:
        return _bp_step(*arguments)
    if not accept:  # refused: the old weights and optimiser state, untouched
        return model, opt_state, metrics
    return new_model, new_state, metrics
