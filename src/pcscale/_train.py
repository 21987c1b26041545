"""One training loop that trains a PC model and its BP twin side by side and compares them
(the single steps `pc_step` and `bp_step` are in `_single_step`)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jaxtyping import Array, Float

from ._equilibrium import AbstractInferenceMethod, inference_method
from ._health import ADVICE, TrainingFailure, final_failure, step_failure
from ._model import PCModel
from ._precise import precise_jit
from ._sharding import batch_sharding, check_mesh, follow_batch, replicate, shard_array
from ._single_step import _check_optimiser, _warm_start
from ._solution import RESULTS
from ._solver import AbstractInferenceSolver
from ._step import ComparisonMetrics, comparison_update
from ._validation import as_float_array, validated


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
        for buffer, value in zip(self.leaves, values, strict=True):  # every step's metrics: one structure
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
        x, y = placed(*data, name="data")
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
    # `steps` ≥ 1 and every step has a batch (or raised), so the loop body ran.
    assert history is not None and initial is not None
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
