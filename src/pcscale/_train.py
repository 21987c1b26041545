"""Jitted PC and BP training steps, and a training loop that compares them."""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from jaxtyping import Array, Bool, Float, PyTree

from ._compare import GradientAlignment, compare_gradients, equilibrium_comparison
from ._gradients import energy_gradients, loss_gradients
from ._health import ADVICE, TrainingFailure, final_failure, step_failure
from ._infer import solve_activities, tree_norm
from ._custom_types import BatchX, BatchY
from ._model import PCModel
from ._precision import warn_if_uncertifiable
from ._sharding import batch_sharding, check_mesh, follow_batch, replicate, shard_array
from ._solution import RESULTS, InferenceStats
from ._solver import AbstractInferenceSolver
from ._solver._base import with_traced_numbers
from ._validation import as_float_array, check_opt_state, validated


class PCStepMetrics(eqx.Module):
    """Metrics of one PC step, all measured at θ_t before the update.

    - `energy`: F at the final activities; `loss`: the feedforward (BP) loss 𝓛(θ_t).
    - `grad_norm`: ‖∇_θ F‖.
    - `inference`: [`InferenceStats`][pcscale.InferenceStats] of the solve.
    - `updated`: False when the update was refused (diverged inference, or a non-finite
      gradient, unless `allow_diverged`).
    """

    energy: Float[Array, ""]
    loss: Float[Array, ""]
    grad_norm: Float[Array, ""]
    inference: InferenceStats
    updated: Bool[Array, ""]


class BPStepMetrics(eqx.Module):
    """Metrics of one BP step at θ_t: `loss`, `grad_norm`, `updated` (False for a
    non-finite gradient, which is skipped)."""

    loss: Float[Array, ""]
    grad_norm: Float[Array, ""]
    updated: Bool[Array, ""]


def _all_finite(tree) -> Bool[Array, ""]:
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _guarded_update(model, opt_state, grads, optimiser, ok):
    """Optimiser update, applied only if `ok` holds and the gradient, the new weights and
    the new optimiser state are all finite (an infinite learning rate turns a finite
    gradient into non-finite weights); a refused step keeps the old weights and
    optimiser state. Returns the new model and state, ‖grads‖ and whether the update was
    applied."""
    grads = eqx.filter(grads, eqx.is_array)
    grad_norm = tree_norm(grads)
    params = eqx.filter(model, eqx.is_array)
    updates, new_state = optimiser.update(grads, opt_state, params)
    new_params = eqx.filter(eqx.apply_updates(model, updates), eqx.is_array)
    accept = jnp.isfinite(grad_norm) & ok & _all_finite(new_params) & _all_finite(new_state)
    keep = lambda new, old: jnp.where(accept, new, old)  # noqa: E731
    model = eqx.combine(jax.tree.map(keep, new_params, params), model)
    opt_state = jax.tree.map(lambda new, old: keep(new, old) if eqx.is_array(new) else new, new_state, opt_state)
    return model, opt_state, grad_norm, accept


def _not_diverged(result, allow_diverged: bool):
    return jnp.array(True) if allow_diverged else result != RESULTS.diverged


def _check_optimiser(optimiser) -> None:
    if not isinstance(optimiser, optax.GradientTransformation):
        raise TypeError(
            f"`optimiser` must be an optax.GradientTransformation, got {type(optimiser).__name__}; "
            "build it with pcscale.make_optimiser(model, pcscale.Adam(1e-3)) (one call serves "
            "the PC model and its BP twin)."
        )


def _check_solver(solver) -> None:
    if not isinstance(solver, AbstractInferenceSolver):
        raise TypeError(
            f"`solver` must be a pcscale inference solver, got {type(solver).__name__}; e.g. "
            "pcscale.GradientDescent(step_size=0.1)."
        )


@eqx.filter_jit
def _pc_step(model, opt_state, x, y, optimiser, solver, allow_diverged, sharding):
    check_opt_state(model, optimiser, opt_state)  # at trace time only: shapes are static
    x, y = validated(model, x, y)
    solution = solve_activities(model, x, y, solver, sharding=sharding)
    energy, grads = energy_gradients(model, solution.activities, x, y)
    model, opt_state, grad_norm, accept = _guarded_update(
        model, opt_state, grads, optimiser, _not_diverged(solution.result, allow_diverged)
    )
    loss = solution.initial_energy / model.output_precision
    return model, opt_state, PCStepMetrics(energy, loss, grad_norm, solution.stats, accept)


def pc_step(
    model: PCModel,
    opt_state: PyTree,
    x: BatchX,
    y: BatchY,
    *,
    optimiser: optax.GradientTransformation,
    solver: AbstractInferenceSolver,
    allow_diverged: bool = False,
) -> tuple[PCModel, PyTree, PCStepMetrics]:
    """One jitted PC training step: inference from the feedforward state, the weight
    gradient ∇_θF at the returned activities, then an optimiser update.

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
    - `solver`: the inference solver.
    - `allow_diverged`: update even from a diverged inference state.

    **Returns:** `(model, opt_state, PCStepMetrics)`.
    """
    _check_solver(solver)
    _check_optimiser(optimiser)
    x, y = as_float_array(x, "x"), as_float_array(y, "y")
    y, _, sharding = follow_batch(x, y)
    return _pc_step(model, opt_state, x, y, optimiser, with_traced_numbers(solver), bool(allow_diverged), sharding)


@eqx.filter_jit
def _bp_step(model, opt_state, x, y, optimiser):
    check_opt_state(model, optimiser, opt_state)  # at trace time only: shapes are static
    x, y = validated(model, x, y)
    loss, grads = loss_gradients(model, x, y)
    model, opt_state, grad_norm, accept = _guarded_update(model, opt_state, grads, optimiser, True)
    return model, opt_state, BPStepMetrics(loss, grad_norm, accept)


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
    x, y = as_float_array(x, "x"), as_float_array(y, "y")
    y, _, _ = follow_batch(x, y)
    return _bp_step(model, opt_state, x, y, optimiser)


class ComparisonMetrics(eqx.Module):
    """Per-step metrics of a PC model trained beside its BP twin, at θ_t before update t.

    - `pc`: [`PCStepMetrics`][pcscale.PCStepMetrics] of the PC model.
    - `bp_loss`: the BP twin's loss 𝓛(θ_t^BP); `bp_updated`: False when its gradient was
      not finite and the update was skipped.
    - `lockstep`: alignment of ∇F(θ_t^PC) with ∇𝓛(θ_t^PC) (same weights).
    - `trajectory`: alignment of ∇F(θ_t^PC) with ∇𝓛(θ_t^BP) (separate trajectories).
    - `energy_loss_ratio`: F(z*; θ_t^PC)/𝓛(θ_t^PC).
    """

    pc: PCStepMetrics
    bp_loss: Float[Array, ""]
    bp_updated: Bool[Array, ""]
    lockstep: GradientAlignment
    trajectory: GradientAlignment
    energy_loss_ratio: Float[Array, ""]


@eqx.filter_jit
def _comparison_step(pc_model, bp_model, pc_state, bp_state, x, y, optimiser, solver, allow_diverged, sharding):
    x, y = validated(pc_model, x, y)
    comparison, pc_grads, _ = equilibrium_comparison(pc_model, x, y, solver, sharding)
    bp_loss, bp_grads = loss_gradients(bp_model, x, y)
    trajectory = compare_gradients(pc_grads, bp_grads)
    pc_model, pc_state, grad_norm, accept = _guarded_update(
        pc_model, pc_state, pc_grads, optimiser, _not_diverged(comparison.inference.result, allow_diverged)
    )
    bp_model, bp_state, _, bp_accept = _guarded_update(bp_model, bp_state, bp_grads, optimiser, True)
    metrics = ComparisonMetrics(
        pc=PCStepMetrics(comparison.energy, comparison.loss, grad_norm, comparison.inference, accept),
        bp_loss=bp_loss,
        bp_updated=bp_accept,
        lockstep=comparison.alignment,
        trajectory=trajectory,
        energy_loss_ratio=comparison.energy_loss_ratio,
    )
    return pc_model, bp_model, pc_state, bp_state, metrics


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
    `run.failed` before using the numbers."""

    pc_model: PCModel
    bp_model: PCModel
    history: ComparisonMetrics
    final_pc_loss: Float[Array, ""]
    final_bp_loss: Float[Array, ""]
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
    solver: AbstractInferenceSolver,
    steps: int,
    allow_diverged: bool = False,
    progress: bool = True,
    mesh: Mesh | None = None,
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
    - `solver`: the inference solver.
    - `steps`: number of training steps T ≥ 1.
    - `allow_diverged`: see [`pc_step`][pcscale.pc_step].
    - `progress`: show a progress bar.
    - `mesh`: a device mesh ([`make_data_mesh`][pcscale.make_data_mesh]) to train data parallel:
      every batch is split over its devices (the batch size must be divisible by their
      number) and the weights and optimiser states are replicated; the result equals
      the one-device run up to the order of floating-point sums.

    **Returns:** a [`TrainingRun`][pcscale.TrainingRun].
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive int, got {steps!r}; e.g. steps=100.")
    _check_solver(solver)
    _check_optimiser(optimiser)
    from ._progress import progress_bar

    if mesh is not None:
        mesh = check_mesh(mesh)
        model = replicate(model, mesh)
    pc_model, bp_model = model, model
    traced_solver = with_traced_numbers(solver)
    params = eqx.filter(model, eqx.is_array)
    pc_state = bp_state = optimiser.init(params)
    history = []
    failure, initial, fixed = None, None, _is_batch(data)
    bar = progress_bar(total=steps, disable=not progress, desc="PC vs BP", unit="step")
    for step, (x, y) in enumerate(_batches(data, steps, mesh)):
        if step == 0:  # before the first solve, once: is the tolerance certifiable?
            warn_if_uncertifiable(model, x, y, solver, stacklevel=3)
        pc_model, bp_model, pc_state, bp_state, metrics = _comparison_step(
            pc_model, bp_model, pc_state, bp_state, x, y, optimiser, traced_solver, bool(allow_diverged),
            batch_sharding(x),
        )
        history.append(metrics)
        failure, initial = _check_step(step, metrics, initial, fixed)
        if failure is not None:
            bar.update(1)
            break
        if progress and (step % 10 == 0 or step == steps - 1):
            bar.set_postfix(
                loss=f"{float(metrics.pc.loss):.4g}",
                cos=f"{float(metrics.lockstep.cosine):.4f}",
                infer=int(metrics.pc.inference.steps),
            )
        bar.update(1)
    bar.close()
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *history)
    ran = len(history)
    unconverged = int(jnp.sum(stacked.pc.inference.result != RESULTS.converged))
    if unconverged:
        warnings.warn(
            f"inference did not meet its tolerance in {unconverged} of {ran} PC steps, so "
            "those weight gradients were not taken at a certified equilibrium; see "
            "history.pc.inference.relative_residual and .result, TrainingRun.converged_fraction, "
            "or use a faster solver (pcscale.auto_solver).",
            stacklevel=2,
        )
    refused, skipped = int(jnp.sum(~stacked.pc.updated)), int(jnp.sum(~stacked.bp_updated))
    if (refused or skipped) and not fixed:  # with a fixed batch, a refusal is the failure below
        warnings.warn(
            f"{refused} of {ran} PC updates were refused (diverged inference, or a non-finite gradient or "
            f"new weights) and {skipped} BP updates skipped; see history.pc.updated, "
            "history.pc.inference.result and history.bp_updated.",
            stacklevel=2,
        )
    # (x, y) is the last batch used: the final losses are measured on it.
    final_pc, final_bp = pc_model.loss(x, y), bp_model.loss(x, y)
    if failure is None:
        failure = final_failure(steps, pc_loss=float(final_pc), bp_loss=float(final_bp),
                                initial_pc_loss=initial[0], initial_bp_loss=initial[1])
    if failure is not None:
        stopped = f"; training stopped there (history holds {ran} of {steps} steps)" if ran < steps else ""
        warnings.warn(f"training {failure}{stopped}. Fix: {ADVICE}. See TrainingRun.failure and history.",
                      stacklevel=2)
    return TrainingRun(
        pc_model=pc_model,
        bp_model=bp_model,
        history=stacked,
        final_pc_loss=final_pc,
        final_bp_loss=final_bp,
        failure=failure,
    )


def _check_step(step: int, metrics: ComparisonMetrics, initial, fixed_batch: bool):
    """The step's failure under the shared policy (pcscale._health), and the losses at
    t = 0 it compares with."""
    values = jax.device_get({"pc_loss": metrics.pc.loss, "bp_loss": metrics.bp_loss, "pc_energy": metrics.pc.energy,
                             "pc_updated": metrics.pc.updated, "bp_updated": metrics.bp_updated,
                             "result": metrics.pc.inference.result._value})
    initial = (float(values["pc_loss"]), float(values["bp_loss"])) if initial is None else initial
    failure = step_failure(step, values, initial_pc_loss=initial[0], initial_bp_loss=initial[1],
                           fixed_batch=fixed_batch)
    return failure, initial
