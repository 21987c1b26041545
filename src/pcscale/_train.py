"""Jitted PC and BP training steps, and one training loop that compares them."""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable, Iterable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jaxtyping import Array, Float, PyTree

from ._custom_types import Activities, BatchX, BatchY
from ._equilibrium import AbstractInferenceMethod, inference_method
from ._health import ADVICE, TrainingFailure, final_failure, step_failure
from ._model import PCModel
from ._precise import full_precision, precise_jit
from ._sharding import batch_sharding, check_mesh, follow_batch, replicate, shard_array
from ._solution import RESULTS
from ._solver import AbstractInferenceSolver
from ._step import BPStepMetrics, ComparisonMetrics, PCStepMetrics, bp_update, comparison_update, pc_update
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

    **Returns:** `(model, opt_state, BPStepMetrics)`.
    """
    _check_optimiser(optimiser)
    x, y = _as_array(x, "x"), _as_array(y, "y")
    y, _, _ = follow_batch(x, y)
    arguments = (model, opt_state, x, y, optimiser)
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


@precise_jit
def _comparison_step(pc_model, bp_model, pc_state, bp_state, x, y, optimiser, method, reference, allow_diverged,
                     sharding, z0=None):
    x, y = validated(pc_model, x, y, z0)
    return comparison_update(pc_model, bp_model, pc_state, bp_state, x, y, optimiser, method, reference,
                             allow_diverged, sharding, _warm_start(pc_model, z0, "warm start"))


@precise_jit
def _final_losses(pc_model, bp_model, x, y):
    x, y = validated(pc_model, x, y)
    return pc_model.loss(x, y), bp_model.loss(x, y)


class _History:
    """Host buffers for every leaf of the step metrics, preallocated for all steps from
    the metrics' own shapes and dtypes: memory is fixed after the first step."""

    def __init__(self, shapes: ComparisonMetrics, steps: int):
        leaves, self.structure = jax.tree.flatten(shapes)
        self.leaves = [np.zeros((steps,) + tuple(leaf.shape), leaf.dtype) for leaf in leaves]
        self.wall_time = np.zeros(steps)
        self.ran = 0

    def fill(self, t: int, metrics: ComparisonMetrics, seconds: float) -> ComparisonMetrics:
        values = jax.tree.leaves(jax.device_get(metrics))
        for buffer, value in zip(self.leaves, values):
            buffer[t] = value
        self.wall_time[t], self.ran = seconds, t + 1
        return jax.tree.unflatten(self.structure, values)

    def stacked(self) -> tuple[ComparisonMetrics, Array]:
        leaves = [jnp.asarray(buffer[: self.ran]) for buffer in self.leaves]
        return jax.tree.unflatten(self.structure, leaves), jnp.asarray(self.wall_time[: self.ran])


class TrainingRun(eqx.Module):
    """What [`train`][pcscale.train] returns: the trained PC model, its BP twin, and
    `history`, a [`ComparisonMetrics`][pcscale.ComparisonMetrics] whose every leaf is
    stacked over steps (axis 0 = step t, measured before update t). `final_pc_loss` and
    `final_bp_loss` are the losses at θ_T, on the last batch used.

    `failure` is None for a healthy run, else a
    [`TrainingFailure`][pcscale.TrainingFailure] with the first failing step and the
    reason (a non-finite or diverging loss, a refused update: the policy of
    docs/training.md); training stopped there, so `history` holds the steps up to and
    including that step (or all of them if only the final losses failed). Check
    `run.failed` before using the numbers. `wall_time`: seconds per step (step 0
    includes compilation)."""

    pc_model: PCModel
    bp_model: PCModel
    history: ComparisonMetrics
    final_pc_loss: Float[Array, ""]
    final_bp_loss: Float[Array, ""]
    wall_time: Float[Array, " steps"] | None = None
    failure: TrainingFailure | None = eqx.field(default=None, static=True)

    @property
    def failed(self) -> bool:
        """Whether training failed (see `failure`)."""
        return self.failure is not None

    @property
    def converged_fraction(self) -> float:
        """The fraction of PC steps whose inference met its tolerance: only those
        steps' weight gradients were taken at a certified equilibrium."""
        return float(jnp.mean(self.history.pc.inference.result == RESULTS.converged))


def _is_batch(data) -> bool:
    """Whether `data` is one fixed batch (x, y) rather than an iterable of batches."""
    return isinstance(data, tuple) and len(data) == 2 and not isinstance(data[0], tuple)


def _batches(data, steps: int, mesh: Mesh | None):
    def placed(x, y, name):
        x, y = as_float_array(x, f"{name}[0]"), as_float_array(y, f"{name}[1]")
        if mesh is None:  # a batch the caller split is followed, as by pc_step
            return x, follow_batch(x, y)[0]
        return shard_array(x, mesh, f"{name}[0]"), shard_array(y, mesh, f"{name}[1]")

    if _is_batch(data):
        x, y = placed(*data, "data")
        for _ in range(steps):
            yield x, y
        return
    iterator = iter(data)
    for step in range(steps):
        try:
            x, y = next(iterator)
        except StopIteration:
            raise ValueError(
                f"`data` ran out of batches after {step} steps but `steps={steps}`; pass a "
                "longer iterable or a fixed batch (x, y)."
            ) from None
        yield placed(x, y, f"batch {step} of data")


def train(
    model: PCModel,
    data: tuple[Array, Array] | Iterable[tuple[Array, Array]],
    *,
    optimiser: optax.GradientTransformation,
    solver: AbstractInferenceSolver | AbstractInferenceMethod,
    steps: int,
    allow_diverged: bool = False,
    warm_start: bool = False,
    progress: bool = True,
    mesh: Mesh | None = None,
    reference: AbstractInferenceMethod | None = None,
    description: str | None = None,
    on_step: Callable[[int], None] | None = None,
    warn: bool = True,
) -> TrainingRun:
    """Train `model` by PC and a copy of it (its BP twin) by BP, side by side, from the
    same initial weights with the same optimiser, comparing gradients at every step in
    both modes (lockstep and separate trajectories). Only scalar and per-layer metrics
    are kept; gradients are discarded after each step.

    **Arguments:**

    - `model`: the [`PCModel`][pcscale.PCModel] at θ_0 (also the BP twin's start).
    - `data`: a fixed batch `(x, y)` used at every step (the paper's protocol), or an
      iterable of `(x, y)` batches.
    - `optimiser`: from [`make_optimiser`][pcscale.make_optimiser]; used for both twins.
    - `solver`: the inference solver, or an inference method such as
      [`pcscale.theory.ClosedForm`][pcscale.theory.ClosedForm] (exact, linear networks).
    - `steps`: number of training steps T ≥ 1.
    - `allow_diverged`: see [`pc_step`][pcscale.pc_step].
    - `warm_start`: with a fixed batch, start each PC step's inference from the previous
      step's equilibrium activities instead of the feedforward state (the first step, and
      the step after a diverged solve, start cold). The tolerance stays relative to the
      feedforward residual at the current weights, so every step certifies the same
      thing at fewer evaluations when the weights change little (see `pc_step`). An
      iterable of batches is refused: each batch has its own activities.
    - `progress`: show a progress bar.
    - `mesh`: a device mesh ([`make_data_mesh`][pcscale.make_data_mesh]) to train data parallel:
      every batch is split over its devices (the batch size must be divisible by their
      number) and the weights and optimiser states are replicated; the result equals
      the one-device run up to the order of floating-point sums.
    - `reference`: an exact method (e.g. `pcscale.theory.ClosedForm()` for a linear
      network) to check every PC step against: `history.reference` then holds its
      energy and the cosine of the PC gradient with its gradient.
    - `description`: label of the progress bar and of the warnings (e.g. a cell's name);
      a labelled bar is cleared when training ends.
    - `on_step`: called with t after every step (e.g. to sample memory).
    - `warn`: warn about solves that missed their tolerance, refused updates and a
      training failure (False for a caller that reports them itself, as the experiments
      do in their tables; the failure is in `run.failure` either way).

    Every step's metrics are copied into host buffers preallocated for all `steps`
    (shapes from the step's metrics type), with the step's wall time.

    **Returns:** a [`TrainingRun`][pcscale.TrainingRun].
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive int, got {steps!r}; e.g. steps=100.")
    if warm_start and not _is_batch(data):
        raise ValueError(
            f"`warm_start=True` needs a fixed batch `data=(x, y)`, got {type(data).__name__}, an iterable of "
            "batches: one batch's equilibrium activities are no start for another batch's. Pass a fixed "
            "batch, or warm_start=False."
        )
    method = inference_method(solver)
    if reference is not None:
        reference = inference_method(reference, "reference")
    _check_optimiser(optimiser)
    from ._progress import progress_bar

    if mesh is not None:
        mesh = check_mesh(mesh)
        model = replicate(model, mesh)
    pc_model, bp_model = model, model
    pc_state = bp_state = optimiser.init(eqx.filter(model, eqx.is_array))
    fixed, label = _is_batch(data), description or "PC vs BP"
    bar = progress_bar(total=steps, disable=not progress, desc=label, unit="step", leave=description is None)
    history, failure, initial, z0 = None, None, None, None
    for step, (x, y) in enumerate(_batches(data, steps, mesh)):
        arguments = (pc_model, bp_model, pc_state, bp_state, x, y, optimiser, method, reference,
                     bool(allow_diverged), batch_sharding(x), z0)
        if step == 0:  # once, before the first solve: checks and warnings of the methods
            for chosen in (method, reference):
                if chosen is not None:
                    chosen.prepare(model, x, y, stacklevel=4)
        start = time.perf_counter()
        pc_model, bp_model, pc_state, bp_state, metrics, activities = _comparison_step(*arguments)
        if history is None:  # shapes and dtypes from the first step's metrics
            history = _History(jax.eval_shape(lambda m: m, metrics), steps)
        metrics = history.fill(step, jax.block_until_ready(metrics), time.perf_counter() - start)
        failure, initial = _check_step(step, metrics, initial, fixed)
        if warm_start:  # a diverged solve's activities are no start: the next step starts cold
            z0 = None if metrics.pc.inference.result == RESULTS.diverged else activities
        if progress:
            bar.set_postfix(loss=f"{float(metrics.pc.loss):.4g}", cos=f"{float(metrics.lockstep.cosine):.4f}",
                            infer=int(metrics.pc.inference.steps))
        bar.update(1)
        if on_step is not None:
            on_step(step)
        if failure is not None:  # with a fixed batch every later step starts from the same state
            break
    bar.close()
    stacked, wall_time = history.stacked()
    prefix = f"{description}: " if description else ""
    if warn:
        _warn_unconverged(stacked, fixed, prefix)
    # (x, y) is the last batch used: the final losses are measured on it.
    final_pc, final_bp = _final_losses(pc_model, bp_model, x, y)
    if failure is None:
        failure = final_failure(steps, pc_loss=float(final_pc), bp_loss=float(final_bp),
                                initial_pc_loss=initial[0], initial_bp_loss=initial[1])
    if failure is not None and warn:
        ran = history.ran
        stopped = f"; training stopped there (history holds {ran} of {steps} steps)" if ran < steps else ""
        warnings.warn(f"{prefix}training {failure}{stopped}. Fix: {ADVICE}. See TrainingRun.failure and history.",
                      stacklevel=2)
    return TrainingRun(pc_model=pc_model, bp_model=bp_model, history=stacked, final_pc_loss=final_pc,
                       final_bp_loss=final_bp, wall_time=wall_time, failure=failure)


def _warn_unconverged(history: ComparisonMetrics, fixed: bool, prefix: str) -> None:
    ran = len(history.bp_loss)
    unconverged = int(jnp.sum(history.pc.inference.result != RESULTS.converged))
    if unconverged:
        warnings.warn(
            f"{prefix}inference did not meet its tolerance in {unconverged} of {ran} PC steps, so "
            "those weight gradients were not taken at a certified equilibrium; see "
            "history.pc.inference.relative_residual and .result, TrainingRun.converged_fraction, "
            "or use a faster solver (pcscale.auto_solver).",
            stacklevel=3,
        )
    refused, skipped = int(jnp.sum(~history.pc.updated)), int(jnp.sum(~history.bp_updated))
    if (refused or skipped) and not fixed:  # with a fixed batch, a refusal is a training failure
        warnings.warn(
            f"{prefix}{refused} of {ran} PC updates were refused (diverged inference, or a non-finite gradient or "
            f"new weights) and {skipped} BP updates skipped; see history.pc.updated, "
            "history.pc.inference.result and history.bp_updated.",
            stacklevel=3,
        )


def _check_step(step: int, metrics: ComparisonMetrics, initial, fixed_batch: bool):
    """The step's failure under the shared policy (pcscale._health), and the losses at
    t = 0 it compares with; `metrics` are host values."""
    values = {"pc_loss": metrics.pc.loss, "bp_loss": metrics.bp_loss, "pc_energy": metrics.pc.energy,
              "pc_updated": metrics.pc.updated, "bp_updated": metrics.bp_updated,
              "result": metrics.pc.inference.result._value}
    initial = (float(values["pc_loss"]), float(values["bp_loss"])) if initial is None else initial
    failure = step_failure(step, values, initial_pc_loss=initial[0], initial_bp_loss=initial[1],
                           fixed_batch=fixed_batch)
    return failure, initial
